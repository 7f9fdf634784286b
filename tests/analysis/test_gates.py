"""--fail-on conditions: parsing, evaluation both ways, clear errors."""

from __future__ import annotations

import pytest

from lightning_maia.analysis._gates import evaluate_gates, parse_gate
from lightning_maia.errors import ConfigurationError

FIGURES = {"spurious_units": 2.0, "auroc.maia": 0.82, "flagged_rate": 0.1, "label_drift": 0.0}


@pytest.mark.parametrize(
    ("condition", "passed", "message"),
    [
        ("spurious_units>0", False, "failed: spurious_units = 2"),
        ("spurious_units>2", True, "passed: spurious_units = 2"),
        ("spurious_units>=2", False, "failed: spurious_units = 2"),
        ("auroc.maia<0.8", True, "passed: auroc.maia = 0.82"),
        ("auroc.maia < 0.9", False, "failed: auroc.maia = 0.82"),
        ("flagged_rate==0.1", False, "failed: flagged_rate = 0.1"),
        ("label_drift", True, "passed: label_drift = 0"),
    ],
)
def test_each_condition_passes_or_fails(condition: str, passed: bool, message: str) -> None:
    (check,) = evaluate_gates([condition], FIGURES)
    assert (check.name, check.passed, check.message) == (condition.strip(), passed, message)


def test_bare_metric_means_greater_than_zero() -> None:
    gate = parse_gate("label_drift")
    assert (gate.metric, gate.op, gate.threshold) == ("label_drift", ">", 0.0)


@pytest.mark.parametrize("condition", ["spurious_units >", "> 3", "a b", "auroc=0.5", ""])
def test_malformed_conditions_name_the_option(condition: str) -> None:
    with pytest.raises(ConfigurationError, match="`--fail-on` takes METRIC OP NUMBER"):
        parse_gate(condition)


def test_unknown_metrics_list_what_the_audit_has() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"unknown figure\(s\) aurok; this audit has: "
        r"auroc.maia, flagged_rate, label_drift, spurious_units",
    ):
        evaluate_gates(["aurok<0.5"], FIGURES)
