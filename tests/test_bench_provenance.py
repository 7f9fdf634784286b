"""Every saved benchmark JSON records commit, dirty flag, seeds, argv, backbone hash and the
evaluation constants."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_maia import cli, evaluation_constants
from lightning_maia.bench._provenance import (
    PROVENANCE_KEYS,
    git_state,
    state_dict_sha256,
    write_bench_json,
)

REPO = Path(__file__).resolve().parents[1]


def test_bench_json_carries_commit_seeds_argv_and_backbone_keys(tmp_path: Path) -> None:
    out = tmp_path / "world.json"
    argv = ["bench", "world", "--quick", "--seed", "3", "--out", str(out)]
    assert cli.main(argv) == 0
    figures = json.loads(out.read_text())
    assert set(PROVENANCE_KEYS) <= set(figures)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert figures["commit"] == head.stdout.strip()
        assert isinstance(figures["dirty"], bool)
    assert figures["seeds"] == [3]
    assert figures["argv"] == ["lightning-maia", *argv]
    assert figures["backbone_sha256"] is None  # the world benchmark has no backbone
    assert figures["images_per_second_64"] > 0


def test_a_benchmarks_own_seeds_and_backbone_hash_are_kept(tmp_path: Path) -> None:
    figures = {"seeds": [0, 1, 2], "backbone_sha256": ["a", "b", "c"], "x": 1.5}
    written = write_bench_json(tmp_path / "f.json", figures, seed=0, argv=["prog"])
    assert json.loads((tmp_path / "f.json").read_text()) == written
    assert written["seeds"] == [0, 1, 2] and written["backbone_sha256"] == ["a", "b", "c"]
    assert written["x"] == 1.5 and written["argv"] == ["prog"]
    assert not list(tmp_path.glob("*.partial"))


def test_outside_a_checkout_commit_and_dirty_are_null(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None)


def test_a_checkout_reports_its_head_and_whether_the_source_changed(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    package = tmp_path / "pkg"
    package.mkdir()
    git("init", "-q")
    (package / "a.py").write_text("one\n")
    (tmp_path / "results.json").write_text("{}")
    git("add", "pkg/a.py", "results.json")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    # Results written or rewritten outside the source do not make it dirty.
    (tmp_path / "results.json").write_text('{"new": 1}')
    (tmp_path / "other.json").write_text("{}")
    assert git_state(package) == (head, False)
    (package / "new.py").write_text("x = 1\n")
    assert git_state(package) == (head, True)
    (package / "new.py").unlink()
    (package / "a.py").write_text("two\n")
    assert git_state(package) == (head, True)


def test_state_dict_hash_is_the_sha256_of_names_shapes_and_bytes() -> None:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.fill_(0.5)
    expected = hashlib.sha256()
    expected.update(b"bias|torch.float32|(1,)\n")
    expected.update(torch.tensor([0.5]).numpy().tobytes())
    expected.update(b"weight|torch.float32|(1, 2)\n")
    expected.update(torch.tensor([1.0, -2.0]).numpy().tobytes())
    assert state_dict_sha256(layer) == expected.hexdigest()
    with torch.no_grad():
        layer.bias.fill_(0.25)
    assert state_dict_sha256(layer) != expected.hexdigest()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int64, torch.bool])
def test_state_dict_hash_takes_every_dtype(dtype: torch.dtype) -> None:
    state = {"t": torch.ones(3, dtype=dtype)}
    assert len(state_dict_sha256(state)) == 64


def test_a_git_state_taken_before_the_run_is_what_is_written(tmp_path: Path) -> None:
    written = write_bench_json(
        tmp_path / "f.json", {}, seed=1, argv=["prog"], git=("a" * 40, False)
    )
    assert (written["commit"], written["dirty"], written["seeds"]) == ("a" * 40, False, [1])


def test_bench_json_records_the_evaluation_constants_it_ran_with(tmp_path: Path) -> None:
    out = tmp_path / "world.json"
    assert cli.main(["bench", "world", "--quick", "--out", str(out)]) == 0
    constants = json.loads(out.read_text())["constants"]
    assert constants == json.loads(json.dumps(evaluation_constants.as_dict()))
    # Values as the protocol fixes them (a changed constant changes every benchmark's JSON).
    assert constants["WORLD_REPEATS"] == 3 and constants["WORLD_SCENES_QUICK"] == [200, 50]
    assert constants["SCIENTIST_HIT_LEVEL"] == 0.5 and constants["HYPOTHESIS_MIN_AUROC"] == 0.8
    assert constants["NEURONS_FULL"] == [50, 25, 25, 2000]
    assert constants["NEURONS_VALIDATION_SEED_OFFSET"] == 1000
    assert constants["DFR_C_GRID"] == [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
    assert constants["SPURIOUS_SUITES"] == [["standard", 0.95], ["shortcut", 0.99]]
    assert constants["FAULTS_BOUNDS"][0] == ["wall_s", 90.0]
    # The world benchmark's images figure is computed from the recorded constants.
    figures = json.loads(out.read_text())
    assert figures["images"] == constants["WORLD_REPEATS"] * sum(constants["WORLD_SCENES_QUICK"])


def test_the_json_records_the_constants_as_they_are_when_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation_constants, "SCIENTIST_HIT_LEVEL", 0.6)
    written = write_bench_json(tmp_path / "f.json", {"x": 1}, seed=0, argv=["prog"])
    assert written["constants"]["SCIENTIST_HIT_LEVEL"] == 0.6
    assert json.loads((tmp_path / "f.json").read_text())["constants"]["SCIENTIST_HIT_LEVEL"] == 0.6
