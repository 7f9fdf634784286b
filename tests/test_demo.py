"""The end-to-end demo, in a reduced size: all three callbacks run and leave their reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_maia import cli
from lightning_maia.recipes import _demo as demo
from lightning_maia.recipes.shapes_backbone import BackboneConfig

SMALL = BackboneConfig(widths=(8, 8, 16, 32), images=400, epochs=1)


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    original = demo.run_demo

    def small_demo(*args, **kwargs):
        return original(*args, **kwargs, backbone=SMALL)

    monkeypatch.setattr(demo, "run_demo", small_demo)
    out = tmp_path / "demo"
    assert (
        cli.main(["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "lightning-maia demo" in printed and "units described:" in printed
    assert (out / "interpret" / "report.html").exists()
    # It prints the report.html files themselves; the flagger's is named by the last epoch (3).
    printed_reports = {
        line.split(" report: ")[0].strip(): Path(line.split(" report: ")[1])
        for line in printed.splitlines()
        if " report: " in line
    }
    assert printed_reports == {
        "interpret": out / "interpret" / "report.html",
        "spurious": out / "spurious" / "spurious" / "report.html",
        "flagging": out / "flagging" / "flagger" / "epoch-003" / "report.html",
    }
    assert all(path.is_file() for path in printed_reports.values())
    assert list(out.glob("logs/version_*/metrics.csv"))
    assert list((tmp_path / "cache").iterdir()), "the backbone was cached for the next run"
