"""``lightning-maia bench realdata --quick``: the JSON it writes, on a tiny setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_maia.bench import _realdata as realdata_bench
from lightning_maia.bench._realdata import ROWS, TABLE_KEYS, Settings
from lightning_maia.cli import main

TINY = Settings(seeds=2, top=6, erm_epochs=2, random_draws=5, copies=1)


@pytest.mark.slow
def test_quick_bench_writes_every_key_the_issue_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realdata_bench, "QUICK", TINY)
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
