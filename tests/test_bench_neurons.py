"""`lightning-maia bench neurons --quick`: the JSON keys and shape, the agent option."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lightning_maia import cli
from lightning_maia.bench.neurons import netdissect_report
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.units import Unit
from lightning_maia.world import Concept, NeuronSpec, ShapesWorld, SyntheticNeuronModel


def test_quick_writes_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "neurons.json"
    assert cli.main(["bench", "neurons", "--agent", "scientist", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {"accuracy", "predictive_auroc", "seconds_per_unit", "images_per_unit", "n_neurons"} <= (
        set(figures)
    )
    accuracy = figures["accuracy"]
    assert set(accuracy) == {"scientist", "netdissect", "exemplars_only"}
    assert figures["agent"] == "scientist"
    for by_kind in accuracy.values():
        assert set(by_kind) == {"mono", "or", "and", "all"}
        assert all(0.0 <= value <= 1.0 for value in by_kind.values())
    assert figures["n_neurons"] == 20
    assert figures["kinds"] == {"mono": 10, "or": 5, "and": 5}
    assert 0.5 <= figures["predictive_auroc"] <= 1.0
    assert 0 < figures["seconds_per_unit"] < 10
    assert figures["images_per_unit"] > 15
    # The scientist beats NetDissect where one concept cannot say it all.
    assert accuracy["scientist"]["and"] > accuracy["netdissect"]["and"]
    assert accuracy["scientist"]["or"] > accuracy["netdissect"]["or"]
    # The file's keys are sorted; the figures as run() returns them (and the table) put the
    # agent first and the kinds in order.
    printed = capsys.readouterr().out
    assert re.search(r'accuracy +\{"scientist": \{"mono": ', printed)
    assert "predictive_auroc" in printed


def test_unknown_agent_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["bench", "neurons", "--quick", "--agent", "gpt"]) == cli.EXIT_USAGE
    assert "`agent` can be scientist, exemplars_only, got 'gpt'" in capsys.readouterr().err


def test_netdissect_labels_the_best_overlapping_concept() -> None:
    specs = [
        NeuronSpec("mono", (Concept("background", "grass"),)),
        NeuronSpec("and", (Concept("colour", "red"), Concept("shape", "star"))),
    ]
    model = SyntheticNeuronModel(specs)
    data = ShapesWorld(size=300, seed=0)
    result = compute_exemplars(model, data, ["neurons:*"], k=8, num_workers=0, progress=False)
    grass = netdissect_report(result, data, Unit("neurons", 0))
    assert (grass.agent, grass.logic, grass.concepts) == (
        "netdissect",
        "single",
        ("background=grass",),
    )
    assert grass.description.startswith("best IoU with the exemplar masks: background=grass")
    # One concept cannot name an AND unit: NetDissect picks one of the two.
    red_star = netdissect_report(result, data, Unit("neurons", 1))
    assert red_star.logic == "single"
    assert red_star.concepts[0] in ("colour=red", "shape=star")
