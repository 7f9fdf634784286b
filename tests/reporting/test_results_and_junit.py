"""Saved results round-trip into the same report; JUnit XML validates against its schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import xmlschema

from lightning_maia.agents._records import UnitReport
from lightning_maia.errors import ConfigurationError
from lightning_maia.reporting._html_report import render_report
from lightning_maia.reporting._junit import CheckResult, junit_xml, write_junit
from lightning_maia.reporting._report_content import ReportImage, UnitSection
from lightning_maia.reporting._results_store import load_results, save_results
from lightning_maia.tools._results import Experiment

SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "data" / "junit.xsd")


def section() -> UnitSection:
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    report = UnitReport(
        "layer4:17",
        "describe_unit",
        "scientist",
        label="red <things>",
        concepts=("colour=red",),
        evidence=[Experiment("colour", ["gen-1"], activations={"gen-1": 0.9})],
    )
    return UnitSection(
        report,
        exemplars=[ReportImage(red, "dataset item 3", 1.5)],
        experiment_images={"gen-1": ReportImage(red, "text2image 'a red star'", 0.9)},
        history=[{"epoch": 0, "label": "red <things>", "changed": False}],
        score=0.8,
    )


def test_saved_results_render_the_same_report(tmp_path: Path) -> None:
    original = section()
    save_results(tmp_path, [original], {"model": "m"})
    assert (tmp_path / "reports.csv").read_text().splitlines()[1].startswith("layer4:17,")
    (loaded,), meta = load_results(tmp_path)
    assert meta == {"model": "m"}
    assert loaded.report.label == "red <things>" and loaded.score == 0.8
    assert loaded.report.evidence[0].activations == {"gen-1": 0.9}
    assert loaded.exemplars[0].activation == 1.5
    assert render_report([loaded], "t", meta) == render_report([original], "t", meta)


def test_loading_bad_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no saved results at"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not a results file"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"format": 99, "units": []}')
    with pytest.raises(ConfigurationError, match="results format 99"):
        load_results(tmp_path)


def test_junit_xml_validates_and_counts_failures(tmp_path: Path) -> None:
    checks = [
        CheckResult("spurious_units>0", False, "failed: spurious_units = 3", 0.5),
        CheckResult("auroc.maia<0.75", True, "passed: auroc.maia = 0.91", 0.25),
        CheckResult('label <drift> & "more"', True, "passed"),
    ]
    path = write_junit(tmp_path / "out" / "checks.xml", "lightning-maia audit", checks)
    SCHEMA.validate(str(path))
    document = SCHEMA.to_dict(str(path))
    suite = document["testsuite"][0]
    assert (suite["@tests"], suite["@failures"]) == ("3", "1")
    names = [case["@name"] for case in suite["testcase"]]
    assert names == ["spurious_units>0", "auroc.maia<0.75", 'label <drift> & "more"']
    assert suite["testcase"][0]["failure"][0]["@message"] == "failed: spurious_units = 3"


def test_an_empty_suite_is_still_valid() -> None:
    SCHEMA.validate(junit_xml("empty", []))
