"""All three callbacks at their defaults under real 2-process DDP (gloo, CPU) give the answers of
one process: ``strategy="ddp"`` (the script launched again per rank) and ``"ddp_spawn"``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_fit.py")
ROOT = Path(__file__).resolve().parents[2]


def fit(strategy: str, out: Path) -> list[dict[str, Any]]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), strategy, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = 1 if strategy == "single" else 2
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(ranks)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    (found,) = fit("single", tmp_path_factory.mktemp("single"))
    return found


def _numbers(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items() if isinstance(v, (int, float))} for row in rows]


def _labels(history: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {unit: [row["label"] for row in rows] for unit, rows in history.items()}


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_three_callbacks_at_defaults_match_one_process(
    strategy: str, one_process: dict[str, Any], tmp_path: Path
) -> None:
    ranks = fit(strategy, tmp_path)
    single = one_process
    assert single["head_type"] == "MaskedHead"  # the remover's erase changed the head
    zero, one = ranks
    # UnitInterpreter: rank zero studied the same units and got the same labels.
    assert _labels(zero["interpreter_history"]) == _labels(single["interpreter_history"])
    assert len(single["interpreter_history"]) == 4
    for found in ranks:
        assert found["world_size"] == 2
        # SpuriousFeatureRemover: the same figures and the same head on every rank.
        assert len(found["remover_history"]) == 1
        for ours, theirs in zip(
            _numbers(found["remover_history"]), _numbers(single["remover_history"]), strict=True
        ):
            assert ours == pytest.approx(theirs, abs=1e-4)
        assert found["head_type"] == "MaskedHead"
        for key, value in single["head"].items():
            torch.testing.assert_close(found["head"][key], value, atol=1e-4, rtol=1e-4)
        # MisclassificationFlagger: the same summary.
        for ours, theirs in zip(
            _numbers(found["flagger_history"]), _numbers(single["flagger_history"]), strict=True
        ):
            assert ours == pytest.approx(theirs, abs=1e-4)
        # Every rank sees the same monitorable figures as one process, the remover's too.
        metrics = found["callback_metrics"]
        assert metrics.keys() == single["callback_metrics"].keys()
        assert {"maia/units_described", "maia/flagged_rate"} <= metrics.keys()
        assert "maia/spurious/after_accuracy" in metrics and "maia/spurious/epoch" not in metrics
        assert metrics == pytest.approx(single["callback_metrics"], abs=1e-4)
    for key, value in zero["head"].items():
        assert torch.equal(one["head"][key], value), key
    maia = Path(zero["log_dir"]) / "maia"
    for report in (
        "report.html",
        "epoch-000/report.html",
        "spurious/report.html",
        "flagger/epoch-000/report.html",
    ):
        assert (maia / report).is_file(), report
