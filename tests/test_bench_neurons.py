"""`lightning-maia bench neurons --quick`: the JSON keys and shape, the agent option."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_maia import cli
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.bench._neurons import (
    compositional_report,
    netdissect_report,
    probe_masks,
    unit_thresholds,
)
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit
from lightning_maia.world import Concept, NeuronSpec, ShapesWorld, SyntheticNeuronModel
from lightning_maia.world._neurons import SyntheticNeuronLayer


def test_quick_writes_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "neurons.json"
    assert cli.main(["bench", "neurons", "--agent", "scientist", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {"accuracy", "predictive_auroc", "seconds_per_unit", "images_per_unit", "n_neurons"} <= (
        set(figures)
    )
    accuracy = figures["accuracy"]
    assert set(accuracy) == {
        "scientist",
        "netdissect",
        "netdissect_relative",
        "compositional",
        "compositional_relative",
        "exemplars_only",
    }
    assert figures["suite"] == "standard"
    assert set(figures["goals"]) == {"mono>=0.95", "or>=0.95", "and>=0.95", "met"}
    chosen = figures["compositional_min_gain"]["chosen"]
    assert set(chosen) == {"quantile", "relative"} and figures["validation_seed"] == 1000
    assert 0.5 <= figures["independent_auroc"] <= 1.0
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


def test_unknown_suite_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["bench", "neurons", "--quick", "--suite", "easy"]) == cli.EXIT_USAGE
    assert "`suite` can be standard, hard, got 'easy'" in capsys.readouterr().err


SPECS = [
    NeuronSpec("mono", (Concept("background", "grass"),)),
    NeuronSpec("and", (Concept("colour", "red"), Concept("shape", "star"))),
    NeuronSpec("or", (Concept("shape", "star"), Concept("shape", "circle"))),
]


@pytest.fixture(scope="module")
def probed() -> tuple[SyntheticNeuronModel, ShapesWorld, object]:
    model = SyntheticNeuronModel(SPECS)
    data = ShapesWorld(size=400, seed=0)
    result = compute_exemplars(model, data, ["neurons:*"], k=8, num_workers=0, progress=False)
    return model, data, probe_masks(model, data, unit_thresholds(result, len(SPECS)))


def test_probe_masks_cover_every_probe_image(probed: tuple) -> None:
    _, data, masks = probed
    cells = len(data) * 16 * 16
    assert masks.units["quantile"].shape == (3, cells)
    assert masks.concepts["background=grass"].shape == (cells,)
    # A quantile threshold of 0.99 keeps about 1% of every unit's cells over the probe set.
    assert 0.005 < masks.units["quantile"][1].mean() < 0.02


def test_netdissect_labels_the_best_overlapping_concept(probed: tuple) -> None:
    _, _, masks = probed
    grass = netdissect_report(masks, Unit("neurons", 0))
    assert (grass.agent, grass.logic, grass.concepts) == (
        "netdissect",
        "single",
        ("background=grass",),
    )
    assert grass.description.startswith("best IoU over the probe dataset: background=grass")
    # One concept cannot name an AND unit: NetDissect picks one concept, whatever it is.
    assert netdissect_report(masks, Unit("neurons", 1)).logic == "single"


def test_compositional_names_or_and_and_units(probed: tuple) -> None:
    _, _, masks = probed
    red_star = compositional_report(masks, Unit("neurons", 1), "relative", min_gain=0.05)
    assert (red_star.agent, red_star.logic) == ("compositional_relative", "and")
    assert set(red_star.concepts) == {"colour=red", "shape=star"}
    star_or_circle = compositional_report(masks, Unit("neurons", 2), "relative", min_gain=0.05)
    assert star_or_circle.logic == "or"
    assert set(star_or_circle.concepts) == {"shape=star", "shape=circle"}


class _OpaqueNeurons(nn.Module):
    """Answers as the neurons do, but holds them only in a closure: no attribute, child,
    parameter or buffer reaches their specs."""

    def __init__(self, layer: SyntheticNeuronLayer) -> None:
        super().__init__()

        def respond(images: torch.Tensor) -> torch.Tensor:
            return layer(images)

        self._respond = respond

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._respond(images)


class _OpaqueModel(nn.Module):
    def __init__(self, model: SyntheticNeuronModel) -> None:
        super().__init__()
        self.neurons = _OpaqueNeurons(model.neurons)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neurons(images)


def _reachable_specs(root: object) -> list[object]:
    """Every NeuronSpec reachable from ``root`` through instance attributes and containers."""
    found, seen, stack = [], set(), [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NeuronSpec):
            found.append(item)
        elif isinstance(item, dict):
            stack += list(item.values())
        elif isinstance(item, list | tuple | set):
            stack += list(item)
        elif isinstance(item, type) or inspect.isfunction(item) or inspect.ismethod(item):
            continue  # code, not state: a closure's cells are no attribute
        elif hasattr(item, "__dict__"):
            stack += list(vars(item).values())
    return found


def test_the_agent_never_reads_the_neurons_definitions() -> None:
    specs = [*SPECS, NeuronSpec("mono", (Concept("colour", "blue"),))]
    plain = SyntheticNeuronModel(specs)
    wrapped = _OpaqueModel(plain)
    assert _reachable_specs(plain) and not _reachable_specs(wrapped)
    data = ShapesWorld(size=300, seed=0)
    reports = []
    for model in (plain, wrapped):
        exemplars = compute_exemplars(
            model, data, ["neurons:*"], k=10, num_workers=0, progress=False
        )
        subject = Subject(model, ["neurons:*"])
        reports.append(
            [
                ScientistAgent(seed=0).run(
                    Toolbox(subject, Unit("neurons", i), exemplars=exemplars, seed=0), TaskSpec()
                )
                for i in range(len(specs))
            ]
        )

    def summary(report: object) -> tuple:
        return (report.label, report.description, report.logic, report.concepts, report.images)

    assert [summary(r) for r in reports[0]] == [summary(r) for r in reports[1]]
    assert all(r.ok for r in reports[1])
