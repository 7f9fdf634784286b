"""``lightning-maia bench spurious --quick``: the JSON it writes, on a tiny setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_maia.bench import _spurious as spurious_bench
from lightning_maia.bench._spurious import ROWS, TABLE_KEYS, Settings
from lightning_maia.cli import main
from lightning_maia.recipes import shapes_backbone
from lightning_maia.recipes.shapes_backbone import CACHE_ENV, BackboneConfig

TINY = Settings(
    seeds=1,
    train=96,
    val=32,
    test=32,
    holdout=64,
    top=6,
    random_draws=2,
    erm_epochs=1,
    exemplars_k=4,
    backbone=BackboneConfig(widths=(4, 4, 8, 8), images=64, epochs=1, batch_size=32),
)


@pytest.mark.slow
def test_quick_bench_writes_every_row_and_reuses_the_cached_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(spurious_bench, "QUICK", TINY)
    out = tmp_path / "spurious.json"
    assert main(["bench", "spurious", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())

    assert set(TABLE_KEYS) <= set(figures)
    for key in ("balanced_accuracy", "worst_group_accuracy"):
        assert list(figures[key]) == list(ROWS)
        assert set(figures[key]["random_k"]) == {"mean", "std"}
        numbers = [v for row, v in figures[key].items() if row != "random_k"]
        assert all(0.0 <= v <= 1.0 for v in numbers)
    assert figures["seeds"] == [0]
    assert figures["units_judged"] == 6
    assert 0 <= figures["k"] <= 6
    (seed,) = figures["per_seed"]
    assert sum(seed["verdicts"].values()) == 6
    assert set(seed["verdicts"]) <= {"core", "spurious", "unclear"}
    assert figures["seconds"] > 0
    # Every refit row took its C from the grid on the validation split; DFR from its own grid.
    assert set(seed["c"]) == {"erm_all", "l1_top50", "l1_topk", "maia", "erasure", "dfr"}
    assert all(seed["c"][row] in spurious_bench.C_GRID for row in seed["c"] if row != "dfr")
    assert (
        float(max(seed["dfr_tuning_worst_group"], key=seed["dfr_tuning_worst_group"].get))
        == (seed["c"]["dfr"])
    )
    assert seed["rows"]["erm_head"] == {
        key: seed["erm_head"][key] for key in ("balanced_accuracy", "worst_group_accuracy")
    }
    assert set(figures["goals"]) >= {"maia_vs_erm_head", "maia_at_least_erm_head"}
    assert len(figures["backbone_sha256"]) == 1 and len(figures["backbone_sha256"][0]) == 64
    assert figures["commit"] is None or len(figures["commit"]) == 40
    assert len(list((tmp_path / "cache").glob("shapes-backbone-*.pt"))) == 1

    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached backbone was not used")

    monkeypatch.setattr(shapes_backbone, "pretrain_backbone", no_pretraining)
    again = spurious_bench.run(quick=True, seed=0)
    assert again["balanced_accuracy"] == figures["balanced_accuracy"]  # pinned seeds


def test_unknown_agent_is_named() -> None:
    with pytest.raises(Exception, match="`agent` can be scientist"):
        spurious_bench.run(quick=True, agent="oracle")


def test_unknown_suite_is_named() -> None:
    with pytest.raises(Exception, match="`suite` can be standard, shortcut"):
        spurious_bench.run(quick=True, suite="entangled")


def test_the_shortcut_setting_runs_through_the_suite_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lightning_maia import cli

    calls: list[dict[str, object]] = []

    def recorded(
        quick: bool = False, seed: int = 0, agent: str = "scientist", suite: str = "standard"
    ) -> dict[str, object]:
        calls.append({"quick": quick, "seed": seed, "agent": agent, "suite": suite})
        return {}

    monkeypatch.setattr(spurious_bench, "run", recorded)
    assert cli.main(["bench", "spurious", "--suite", "shortcut", "--quick", "--seed", "3"]) == 0
    assert calls == [{"quick": True, "seed": 3, "agent": "scientist", "suite": "shortcut"}]
    # Training data of the shortcut setting leaves 1 in 100 items off the shortcut.
    assert spurious_bench.SUITES == {"standard": 0.95, "shortcut": 0.99}
