"""CI gates: ``--fail-on`` conditions over an audit's figures, each a pass/fail check.

A condition is ``METRIC OP NUMBER`` (``spurious_units>0``, ``auroc.maia<0.75``,
``flagged_rate>=0.2``) or a bare metric, meaning ``METRIC>0`` (``label_drift``). The check
fails when the condition holds.

>>> figures = {"spurious_units": 2, "auroc.maia": 0.9}
>>> [(c.name, c.passed) for c in evaluate_gates(["spurious_units>0", "auroc.maia<0.75"], figures)]
[('spurious_units>0', False), ('auroc.maia<0.75', True)]
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from lightning_maia.errors import ConfigurationError, closest_names
from lightning_maia.reporting._junit import CheckResult

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d*)?))?\s*$")


@dataclass(frozen=True)
class Gate:
    """One parsed condition."""

    text: str
    metric: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)


def parse_gate(text: str) -> Gate:
    """Parse one condition; a malformed one raises ConfigurationError naming ``--fail-on``."""
    match = _CONDITION.match(text)
    if match is None:
        raise ConfigurationError(
            f"`--fail-on` takes METRIC OP NUMBER (e.g. 'spurious_units>0', 'auroc.maia<0.75') "
            f"or a bare METRIC, got {text!r}"
        )
    metric, op, number = match.groups()
    return Gate(text.strip(), metric, op or ">", float(number) if number else 0.0)


def evaluate_gates(
    conditions: Sequence[str],
    figures: Mapping[str, float],
    known: Collection[str] | None = None,
) -> list[CheckResult]:
    """One check per condition: passed unless the condition holds on ``figures``.

    ``known`` are the figures the run could report (checked before it ran): a gate on one of
    them that the run did not report (e.g. an AUROC without labels) fails, saying so, since
    it cannot be shown to pass. Without ``known``, a figure not in ``figures`` is a usage error
    that lists at most the 5 closest names.
    """
    gates = [parse_gate(text) for text in conditions]
    unknown = sorted({g.metric for g in gates} - set(figures) - set(known or ()))
    if unknown:
        names = sorted(figures)
        listed = ", ".join(names) if len(names) <= 5 else closest_names(unknown[0], names)
        raise ConfigurationError(
            f"`--fail-on` names unknown figure(s) {', '.join(unknown)}; this audit has: "
            f"{listed or 'none'}"
        )
    checks = []
    for gate in gates:
        if gate.metric not in figures:
            checks.append(
                CheckResult(gate.text, False, f"failed: {gate.metric} was not reported by this run")
            )
            continue
        value = float(figures[gate.metric])
        holds = gate.holds(value)
        verdict = "failed" if holds else "passed"
        checks.append(CheckResult(gate.text, not holds, f"{verdict}: {gate.metric} = {value:g}"))
    return checks
