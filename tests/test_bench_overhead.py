"""``bench overhead``'s timeline of the last background study, on exact clock marks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_maia.bench._overhead import _last_study


def test_the_last_study_is_timed_from_its_own_requests_and_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    # The fit started at monotonic 100.0; wall time ran 1,000 s ahead of the monotonic clock.
    fit = {
        "started_clock": 100.0,
        "wall_minus_clock": 1000.0,
        "last_validation": 8.0,
        "training": 8.1,
        "total": 10.0,
    }
    os.utime(report, (1109.5, 1109.5))  # written at monotonic 109.5: 9.5 s into the fit
    # Two studies of 2 units: the last two requests are the last study's, whatever the order.
    requests = [103.0, 103.1, 108.6, 108.4]
    timeline = _last_study(fit, requests, report, units=2)
    assert timeline["last_validation_end_s"] == 8.0
    assert timeline["fit_end_s"] == 8.1
    assert timeline["first_request_s"] == pytest.approx(8.4)
    assert timeline["last_request_s"] == pytest.approx(8.6)
    assert timeline["last_report_written_s"] == pytest.approx(9.5)
    assert timeline["fit_returned_s"] == 10.0
    assert _last_study(fit, [], tmp_path / "missing.html", units=2)["last_report_written_s"] is None
