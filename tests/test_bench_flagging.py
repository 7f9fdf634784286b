"""`lightning-maia bench flagging`: the JSON keys and their meaning, on a tiny backbone and tiny
splits (the backbone cache points at tmp_path)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lightning_maia import cli
from lightning_maia.analysis._risk import L2_CANDIDATES, MAIA_FEATURES
from lightning_maia.bench import BENCHMARKS
from lightning_maia.bench import _flagging as flagging
from lightning_maia.bench._spurious import Settings as SpuriousSettings
from lightning_maia.recipes.shapes_backbone import CACHE_ENV, BackboneConfig
from lightning_maia.world._subgroups import DEFAULT_CLASSES

TINY = flagging.Sizes(
    checked_units=2, biased_train=96, biased_test=60, epochs=1, seeds=2, bootstrap=20
)
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
    assert BENCHMARKS["flagging"] == "lightning_maia.bench._flagging"
    # A backbone per seed was pretrained into the cache the test named, nowhere else.
    assert len(list((tmp_path / "backbones").glob("shapes-backbone-*.pt"))) == 2
    figures = json.loads(out.read_text())
    assert figures["seeds"] == [0, 1] and set(figures["backbone_sha256"]) == {"0", "1"}
    assert set(flagging.TABLE_KEYS) <= set(figures)
    for kind in ("auroc", "aupr_error"):
        assert set(figures[kind]) == {"msp", "margin", "energy", "entropy", "maia"}
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in figures[kind].values())
    assert 0.0 <= figures["bias_recovery"] <= 1.0
    assert set(figures["bias_false_positives"]) == set(DEFAULT_CLASSES)
    assert all(isinstance(n, int) and n >= 0 for n in figures["bias_false_positives"].values())
    assert set(figures["goals"]) == {
        "maia_auroc_beats_msp_by_0.03",
        "maia_aupr_beats_msp_by_0.08",
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
    # Per seed: the figures, and bootstrap intervals that hold them (where defined).
    runs = detection["per_seed"]
    assert [r["seed"] for r in runs] == [0, 1]
    for kind in ("auroc", "aupr_error"):
        mean = {name: sum(r[kind][name] for r in runs) / 2 for name in figures[kind]}
        assert figures[kind] == pytest.approx(mean, nan_ok=True)
        assert figures["maia_minus_msp"][kind] == pytest.approx(
            mean["maia"] - mean["msp"], nan_ok=True
        )
        for run in runs:
            intervals = run["intervals_95"][kind]
            assert set(intervals) == {*figures[kind], "maia_minus_msp"}
            for name, (low, high) in intervals.items():
                floor = -1.0 if name == "maia_minus_msp" else 0.0
                assert math.isnan(low) or floor <= low <= high <= 1.0, (kind, name)
    assert figures["quick"] is True and figures["sizes"]["biased_test"] == 60
    for run in runs:
        # The counterfactual feature is reported alone and in the ablations; the combination's
        # L2 strength was chosen on the holdout split among the candidates.
        assert 0.0 <= run["counterfactual_auroc"] <= 1.0 or math.isnan(run["counterfactual_auroc"])
        assert {"msp+counterfactual", "msp+reliance+subgroup"} <= set(run["ablations"])
        assert len(run["l2_chosen_on_holdout"]) == 1
        assert run["l2_chosen_on_holdout"][0] in L2_CANDIDATES
        assert set(run["coefficients"]) == {*MAIA_FEATURES, "intercept"}


def test_bootstrap_intervals_of_a_perfect_and_a_reversed_score() -> None:
    errors = torch.tensor([0, 1] * 10)
    perfect = errors.float() + 0.01 * torch.arange(20)
    intervals = flagging.bootstrap_intervals(
        {"maia": perfect, "msp": -perfect}, errors, resamples=50, seed=0
    )
    expected = {"maia": [1.0, 1.0], "msp": [0.0, 0.0], "maia_minus_msp": [1.0, 1.0]}
    assert {k: pytest.approx(v) for k, v in intervals["auroc"].items()} == expected
    assert intervals["aupr_error"]["maia"] == pytest.approx([1.0, 1.0])
    low, high = intervals["aupr_error"]["msp"]
    assert 0.0 < low <= high < 1.0  # a reversed score's AUPR is about the error rate


def test_an_unknown_agent_is_named() -> None:
    with pytest.raises(ValueError, match="`agent` can be scientist, got 'vlm'"):
        flagging.run(quick=True, agent="vlm")
