"""The audit's own sections of the HTML report: one row per check and gate (passed or failed,
with its reason), the figures the gates read, and the flagged inputs with their reasons and
thumbnails. Every string is HTML-escaped (reasons and class names come from the data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_maia.reporting._html_report import _e, _figure, _number, _table
from lightning_maia.reporting._images import _Encoder
from lightning_maia.reporting._junit import CheckResult
from lightning_maia.reporting._report_content import ReportImage


@dataclass
class FlaggedInput:
    """One input the flagger flagged."""

    #: The item's name: its file for an image folder, else its dataset index.
    name: str
    label: str
    prediction: str
    #: MAIA's risk (a probability of error).
    risk: float
    reason: str
    correct: bool | None = None
    image: ReportImage | None = None


@dataclass
class AuditFindings:
    """What the audit adds to the report beyond the unit sections."""

    checks: list[CheckResult] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    #: The riskiest flagged inputs, riskiest first (None: the flagging task did not run).
    flagged: list[FlaggedInput] | None = None
    #: How many inputs were flagged in all (more than ``flagged`` may show).
    flagged_total: int = 0
    scored_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": [vars(check) for check in self.checks],
            "figures": dict(self.figures),
            "flagged_total": self.flagged_total,
            "scored_total": self.scored_total,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], flagged: list[FlaggedInput] | None
    ) -> AuditFindings:
        return cls(
            checks=[CheckResult(**check) for check in data.get("checks", [])],
            figures={k: float(v) for k, v in data.get("figures", {}).items()},
            flagged=flagged,
            flagged_total=int(data.get("flagged_total", 0)),
            scored_total=int(data.get("scored_total", 0)),
        )


def render_audit(findings: AuditFindings, encoder: _Encoder) -> str:
    """The checks-and-gates section, then the flagged-inputs section (when flagging ran)."""
    parts = [_checks(findings)]
    if findings.flagged is not None:
        parts.append(_flagged(findings, encoder))
    return "\n".join(parts)


def _checks(findings: AuditFindings) -> str:
    rows = []
    for check in findings.checks:
        badge = "ok" if check.passed else "failed"
        word = "passed" if check.passed else "failed"
        rows.append(
            ("<tr>" if check.passed else '<tr class="failed">')
            + f'<td class="check-name">{_e(check.name)}</td>'
            + f'<td><span class="badge {badge}">{word}</span></td>'
            + f'<td class="check-message">{_e(check.message)}</td>'
            + f'<td class="num">{_number(check.seconds, 1)}</td></tr>'
        )
    failed = sum(not check.passed for check in findings.checks)
    verdict = (
        f'<p class="verdict failed">{failed} of {len(findings.checks)} checks failed</p>'
        if failed
        else f'<p class="verdict ok">all {len(findings.checks)} checks passed</p>'
    )
    body = _table(["check", "result", "why", "seconds"], rows, ["seconds"]) if rows else ""
    figures = [
        f'<tr><th>{_e(name)}</th><td class="num">{_number(value, 4)}</td></tr>'
        for name, value in sorted(findings.figures.items())
    ]
    return (
        '<section class="audit" id="checks"><h2>Checks and gates</h2>'
        f"{verdict}{body or '<p class=empty>No checks ran.</p>'}"
        + ("<h3>Figures</h3>" + _table([], figures) if figures else "")
        + "</section>"
    )


def _flagged(findings: AuditFindings, encoder: _Encoder) -> str:
    flagged = findings.flagged or []
    shown = f"; the {len(flagged)} riskiest shown" if len(flagged) < findings.flagged_total else ""
    head = (
        f'<p class="flag-count">{findings.flagged_total} of {findings.scored_total} inputs '
        f"flagged{shown}</p>"
    )
    if not flagged:
        return (
            '<section class="audit" id="flagged"><h2>Flagged inputs</h2>'
            f'{head}<p class="empty">No input was flagged.</p></section>'
        )
    rows, figures = [], []
    for item in flagged:
        correct = "—" if item.correct is None else ("yes" if item.correct else "no")
        rows.append(
            '<tr class="flagged-input">'
            f'<td class="input-name">{_e(item.name)}</td><td>{_e(item.label)}</td>'
            f"<td>{_e(item.prediction)}</td><td>{_e(correct)}</td>"
            f'<td class="num">{_number(item.risk)}</td>'
            f'<td class="flag-reason">{_e(item.reason)}</td></tr>'
        )
        if item.image is not None:
            figures.append(_figure(encoder, item.image, item.name, None, item.reason, 0.0))
    table = _table(["input", "label", "prediction", "correct", "risk", "reason"], rows, ["risk"])
    grid = f'<div class="grid flagged">{"".join(figures)}</div>' if figures else ""
    return (
        f'<section class="audit" id="flagged"><h2>Flagged inputs</h2>{head}{table}{grid}</section>'
    )


def flagged_inputs(
    table: Any, dataset: Any, top_n: int, images: bool = True
) -> tuple[list[FlaggedInput], int]:
    """The ``top_n`` riskiest flagged rows of a flagger's table, named by the dataset's
    ``item_name`` where it has one; and how many were flagged in all."""
    flagged = table[table["flagged"]]
    name_of = getattr(dataset, "item_name", None)
    found = []
    for row in flagged.head(top_n).to_dict("records"):
        index = int(row["index"])
        picture = None
        if images:
            item = dataset[index]
            pixels = item[0] if isinstance(item, (tuple, list)) else item
            denormalize = getattr(dataset, "denormalize", None)
            if denormalize is not None:
                pixels = denormalize(pixels[None])[0]
            picture = ReportImage(pixels.float().clamp(0.0, 1.0))  # the reason is its text
        found.append(
            FlaggedInput(
                name=name_of(index) if callable(name_of) else f"dataset item {index}",
                label=str(row["label"]),
                prediction=str(row["prediction"]),
                risk=float(row["maia"]),
                reason=str(row["reason"]),
                correct=bool(row["correct"]),
                image=picture,
            )
        )
    return found, len(flagged)


def flagged_rows(flagged: Sequence[FlaggedInput]) -> list[dict[str, Any]]:
    """The flagged inputs without their images (for results.json)."""
    return [{k: v for k, v in vars(item).items() if k != "image"} for item in flagged]
