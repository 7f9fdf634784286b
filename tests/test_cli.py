"""The lightning-maia command: bench writes JSON atomically (`all`: every file), usage errors
exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_maia import cli


def test_bench_world_quick_writes_its_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "nested" / "world.json"
    assert cli.main(["bench", "world", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {"images_per_second_64", "images_per_second_224", "images", "seconds"} <= set(figures)
    assert figures["images_per_second_64"] > 0
    assert not list(out.parent.glob("*.partial"))
    assert "images_per_second_64" in capsys.readouterr().out


def test_unknown_benchmark_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_maia.cli", "bench", "nope"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("lightning-maia")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "bench" in result.stdout


@pytest.mark.slow
def test_bench_exemplars_quick_writes_its_keys(tmp_path: Path) -> None:
    out = tmp_path / "exemplars.json"
    assert cli.main(["bench", "exemplars", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {"ratio_vs_inference", "units", "images", "peak_rss_mb", "seconds"} <= set(figures)
    assert figures["units"] == 512
    assert len(figures["ratios"]) == 3
    assert figures["ratio_vs_inference"] == sorted(figures["ratios"])[1]


def test_bench_all_writes_every_file_the_readme_quotes() -> None:
    args = cli._build_parser().parse_args(["bench", "all", "--out", "benchmarks"])
    jobs = {stem: (name, options["suite"]) for name, stem, options in cli._bench_jobs(args)}
    from lightning_maia.bench import BENCHMARKS

    assert set(jobs) == set(BENCHMARKS) | {"neurons_hard", "spurious_shortcut"}
    assert jobs["neurons_hard"] == ("neurons", "hard")
    assert jobs["spurious_shortcut"] == ("spurious", "shortcut")
    assert jobs["neurons"] == ("neurons", "standard")


def test_bench_one_name_runs_once_with_the_given_suite() -> None:
    args = cli._build_parser().parse_args(["bench", "neurons", "--suite", "hard"])
    assert [(n, s, o["suite"]) for n, s, o in cli._bench_jobs(args)] == [
        ("neurons", "neurons", "hard")
    ]
