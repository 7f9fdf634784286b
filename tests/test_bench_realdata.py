"""``lightning-maia bench realdata --quick``: the JSON it writes, on a tiny setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_maia.analysis._dfr import C_GRID
from lightning_maia.bench import _realdata as realdata_bench
from lightning_maia.bench._realdata import ROWS, SUITES, TABLE_KEYS, Settings, settings_for
from lightning_maia.cli import main
from lightning_maia.errors import ConfigurationError

TINY = Settings(seeds=2, setting=SUITES["standard"], top=6, erm_epochs=2, random_draws=5, copies=1)


def test_suites_set_the_data_and_the_quick_run_judges_fewer_units() -> None:
    standard, quick = settings_for(False, "standard"), settings_for(True, "standard")
    assert (standard.seeds, standard.top, standard.erm_epochs) == (3, 16, 20)
    assert (quick.seeds, quick.top, quick.erm_epochs) == (2, 12, 10)
    assert standard.setting.classes == 6
    assert settings_for(False, "four_digits").setting.classes == 4  # the first setting
    with pytest.raises(ConfigurationError, match="`suite` can be standard or four_digits"):
        settings_for(False, "hard")


@pytest.mark.slow
def test_quick_bench_writes_every_key_the_issue_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realdata_bench, "settings_for", lambda quick, suite: TINY)
    out = tmp_path / "realdata.json"
    assert main(["bench", "realdata", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(TABLE_KEYS) <= set(figures)
    for kind in ("balanced_accuracy", "worst_group_accuracy"):
        assert set(figures[kind]) == set(ROWS)
        assert all(
            0.0 <= row["mean"] <= 1.0 and row["std"] >= 0.0 for row in figures[kind].values()
        )
    assert figures["seeds"] == [0, 1]
    assert sum(figures["verdicts"].values()) == 2 * 6  # every judged unit has a verdict
    assert figures["verdicts"].get("failed", 0) == 0
    assert set(figures["flagging"]) == {"auroc", "aupr_error"}
    assert set(figures["goals"]["met_every_seed"]) == {
        "select_vs_erm", "erase_vs_erm", "vs_random_k", "vs_dfr", "flagging",
    }  # fmt: skip
    assert set(figures["data_hashes"]) == {"train", "holdout", "test"}
    assert len(figures["commit"]) in (7, 40) or figures["commit"] == "unknown"
    assert figures["per_seed"][0]["edit_pairs"] > 0  # erasure read the agent's recolours
    protocol = figures["protocol"]
    assert protocol["suite"] == "standard" and protocol["setting"]["classes"] == 6
    # The dfr row is DFR's own protocol: its L1 C comes from the paper's grid.
    assert all(seed["penalties"]["dfr"] in C_GRID for seed in figures["per_seed"])
    assert protocol["dfr_c_grid"] == list(C_GRID)
