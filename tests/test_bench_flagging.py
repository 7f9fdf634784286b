"""`lightning-maia bench flagging`: the JSON keys and their meaning, on a tiny backbone and tiny
splits (the backbone cache points at tmp_path)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lightning_maia import cli
from lightning_maia.bench import BENCHMARKS, flagging
from lightning_maia.bench.spurious import Settings as SpuriousSettings
from lightning_maia.recipes.shapes_backbone import CACHE_ENV, BackboneConfig
from lightning_maia.world.subgroups import DEFAULT_CLASSES

TINY = flagging.Sizes(checked_units=2, biased_train=96, biased_test=60, epochs=1)
TINY_SPURIOUS = SpuriousSettings(
    seeds=1, train=96, val=8, test=64, holdout=64, top=4, erm_epochs=1, exemplars_k=4,
    backbone=BackboneConfig(widths=(4, 4, 4, 8), images=32, epochs=1),
)  # fmt: skip


def test_quick_writes_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "backbones"))
    monkeypatch.setattr(flagging, "QUICK", TINY)
    monkeypatch.setattr(flagging, "SPURIOUS", TINY_SPURIOUS)
    out = tmp_path / "flagging.json"
    assert cli.main(["bench", "flagging", "--quick", "--out", str(out)]) == 0
    assert BENCHMARKS["flagging"] == "lightning_maia.bench.flagging"
    # The backbone was pretrained into the cache the test named, nowhere else.
    assert len(list((tmp_path / "backbones").glob("shapes-backbone-*.pt"))) == 1
    figures = json.loads(out.read_text())
    assert set(flagging.TABLE_KEYS) <= set(figures)
    for kind in ("auroc", "aupr_error"):
        assert set(figures[kind]) == {"msp", "margin", "energy", "entropy", "maia"}
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in figures[kind].values())
    assert 0.0 <= figures["bias_recovery"] <= 1.0
    assert set(figures["bias_false_positives"]) == set(DEFAULT_CLASSES)
    assert all(isinstance(n, int) and n >= 0 for n in figures["bias_false_positives"].values())
    assert set(figures["goals"]) == {
        "maia_beats_msp_by_0.05",
        "bias_recovery_0.9",
        "false_positives_per_class_at_most_1",
    }
    bias = figures["class_bias"]
    assert set(bias["recovered"]) == {
        "circle that is not red",
        "square that is not on a snow background",
        "triangle that is not on a water background",
        "star that is not large",
    }
    assert figures["bias_recovery"] == sum(bias["recovered"].values()) / 4
    false_positives = sum(s["false_positive"] for s in bias["subgroups"])
    assert false_positives == sum(figures["bias_false_positives"].values())
    assert all(not (s["planted"] and s["false_positive"]) for s in bias["subgroups"])
    detection = figures["error_detection"]
    assert 0.0 <= detection["test_accuracy"] <= 1.0
    assert detection["error_rate"] == pytest.approx(1.0 - detection["test_accuracy"])
    assert detection["units_judged"] == 2
    assert figures["quick"] is True and figures["sizes"]["biased_test"] == 60


def test_an_unknown_agent_is_named() -> None:
    with pytest.raises(ValueError, match="`agent` can be scientist, got 'vlm'"):
        flagging.run(quick=True, agent="vlm")
