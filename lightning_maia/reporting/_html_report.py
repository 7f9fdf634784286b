"""A self-contained HTML report of agent runs: one file, no external requests.

Images are inline PNG data URIs; CSS and a small UI script (expand/collapse, a ready mark) are
inline, and a Content-Security-Policy admits only that script (by hash) and ``data:`` images.
Every string that a model or a user wrote (labels, descriptions, observations, tool arguments,
captions, unit names, title, meta) is HTML-escaped; none reaches a script.

What the page shows is data in :mod:`lightning_maia.reporting._report_content`; the inline PNGs
come from :mod:`lightning_maia.reporting._images`. **Why one file.** What is left is the page's
HTML alone, one writer per part of the page read top-down, so that every place a string enters
the page (and is escaped) is in one file.

>>> from lightning_maia.agents._records import UnitReport
>>> report = UnitReport("layer4:17", "describe_unit", "scientist", label="<b>red</b> stars")
>>> page = render_report([UnitSection(report)], "epoch 3")
>>> 'id="unit-layer4-17"' in page, "&lt;b&gt;red&lt;/b&gt; stars" in page, "<b>red" in page
(True, True, False)
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_maia._atomic import write_text_atomically
from lightning_maia.agents._records import Step, UnitReport
from lightning_maia.errors import bad_option
from lightning_maia.reporting._images import _Encoder
from lightning_maia.reporting._report_content import FlaggedInput, ReportImage, UnitSection
from lightning_maia.reporting._report_content import (  # re-exported: callers import it here
    sections_from_toolbox as sections_from_toolbox,
)
from lightning_maia.tools._results import Experiment

if TYPE_CHECKING:
    from lightning_maia.reporting._audit_sections import AuditFindings

#: Images smaller than this (pixels) are drawn with ``image-rendering: pixelated``.
PIXELATED_BELOW = 128


def render_report(
    units: Sequence[UnitSection],
    title: str,
    meta: Mapping[str, str] | None = None,
    *,
    max_images_per_experiment: int = 48,
    audit: AuditFindings | None = None,
    flagged: Sequence[FlaggedInput] | None = None,
) -> str:
    """The report as one HTML document (see the module docstring).

    Args:
        units: one section per unit and task, in the order shown.
        title: the page title, e.g. "UnitInterpreter — epoch 3".
        meta: facts shown under the title (epoch, model, agent, ...).
        max_images_per_experiment: thumbnails per experiment; the rest are listed as text.
        audit: an audit's checks, gates and flagged inputs, shown before the units.
        flagged: inputs flagged as likely misclassified, listed with their reasons before the
            units (None: no such section).
    """
    if max_images_per_experiment < 0:
        raise bad_option(
            "max_images_per_experiment", "a non-negative integer", max_images_per_experiment
        )
    anchors = _unique_anchors([section.report.unit for section in units])
    encoder = _Encoder()
    parts = [_page_head(units, anchors, title, meta or {})]
    if audit is not None:
        from lightning_maia.reporting._audit_sections import render_audit

        parts.append(render_audit(audit, encoder))
    if flagged is not None:
        parts.append(_flagged_section(flagged, encoder))
    for section, anchor in zip(units, anchors, strict=True):
        parts.append(_unit_section(section, anchor, encoder, max_images_per_experiment))
    parts.append("<footer>lightning-maia report</footer>")
    values = {
        "csp": _e(_csp()),
        "title": _e(title),
        "unit_count": str(len(units)),
        "body": "\n".join(parts),
    }
    # One pass over the template: text substituted in is never scanned for placeholders.
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], _template())


def write_report(
    path: str | os.PathLike[str],
    units: Sequence[UnitSection],
    title: str,
    meta: Mapping[str, str] | None = None,
    *,
    max_images_per_experiment: int = 48,
    audit: AuditFindings | None = None,
    flagged: Sequence[FlaggedInput] | None = None,
) -> Path:
    """Render the report (see :func:`render_report`) and write it to ``path`` atomically:
    a temporary file beside it, then a rename, so a reader never sees half a report."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(
        units,
        title,
        meta,
        max_images_per_experiment=max_images_per_experiment,
        audit=audit,
        flagged=flagged,
    )
    write_text_atomically(target, text, encoding="utf-8", mode=0o644)  # a report is for sharing
    return target


def unit_anchor(unit: str) -> str:
    """The element id of a unit's section: ``"layer4:17"`` -> ``"unit-layer4-17"``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", unit).strip("-")
    return f"unit-{slug}" if slug else "unit"


def _unique_anchors(units: Sequence[str]) -> list[str]:
    anchors: list[str] = []
    for unit in units:
        anchor, count = unit_anchor(unit), 1
        while anchor in anchors:  # the same unit again (another task): number it
            count += 1
            anchor = f"{unit_anchor(unit)}-{count}"
        anchors.append(anchor)
    return anchors


# -- page template ---------------------------------------------------------------------------


@cache
def _template() -> str:
    return (
        resources.files("lightning_maia.reporting")
        .joinpath("templates/report.html")
        .read_text("utf-8")
    )


@cache
def _csp() -> str:
    script = re.search(r"<script>(.*?)</script>", _template(), re.DOTALL)
    if script is None:  # pragma: no cover - the packaged template holds its script
        raise RuntimeError("the report template has no script")
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode("utf-8")).digest()).decode()
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _table(head: Sequence[str], rows: Sequence[str], numeric: Sequence[str] = ()) -> str:
    """A table: ``head`` are escaped here, ``rows`` are finished ``<tr>`` elements."""
    cells = "".join(
        ('<th class="num">' if name in numeric else "<th>") + f"{_e(name)}</th>" for name in head
    )
    thead = f"<thead><tr>{cells}</tr></thead>" if head else ""
    return f'<div class="table-wrap"><table>{thead}<tbody>{"".join(rows)}</tbody></table></div>'


def _facts(facts: Mapping[str, str], kind: str) -> str:
    items = "".join(
        f"<div><dt>{_e(key)}</dt><dd>{_e(value)}</dd></div>" for key, value in facts.items()
    )
    return f'<dl class="{kind}">{items}</dl>'


def _status(report: UnitReport) -> str:
    kind = report.status if report.status in ("ok", "undescribed") else "failed"
    return f'<span class="badge {kind}">{_e(report.status)}</span>'


def _page_head(
    units: Sequence[UnitSection], anchors: Sequence[str], title: str, meta: Mapping[str, str]
) -> str:
    failed = sum(section.report.status == "failed" for section in units)
    undescribed = sum(section.report.status == "undescribed" for section in units)
    notes = [f"{failed} failed"] * bool(failed) + [f"{undescribed} undescribed"] * bool(undescribed)
    counts = f"{len(units)}" + (f" ({', '.join(notes)})" if notes else "")
    return (
        f'<header class="page-head" id="top"><h1>{_e(title)}</h1>'
        f"{_facts({**meta, 'units': counts}, 'meta')}{_summary_table(units, anchors)}"
        '<div class="toolbar"><button type="button" data-open="all">Expand all</button>'
        '<button type="button" data-open="none">Collapse all</button></div></header>'
    )


_SUMMARY = ("unit", "task", "label", "logic", "verdict", "score", "status", "rounds", "images")
_NUMERIC = ("score", "rounds", "images", "seconds", "cost (USD)")


def _summary_table(units: Sequence[UnitSection], anchors: Sequence[str]) -> str:
    if not units:
        return '<p class="empty">No units were reported.</p>'
    rows = []
    for section, anchor in zip(units, anchors, strict=True):
        report = section.report
        status = _status(report)
        if report.failure_reason:
            status += f'<span class="reason">{_e(report.failure_reason)}</span>'
        texts = [report.task, report.label or "—", report.logic, report.verdict or "—"]
        numbers = [
            _number(section.shown_score),
            str(report.rounds),
            str(report.images),
            _number(report.seconds, 1),
            _number(report.usage.cost_usd, 4),
        ]
        cells = (
            [f'<td><a href="#{_e(anchor)}">{_e(report.unit)}</a></td>']
            + [f"<td>{_e(text)}</td>" for text in texts]
            + [f'<td class="num">{numbers[0]}</td>', f"<td>{status}</td>"]
            + [f'<td class="num">{number}</td>' for number in numbers[1:]]
        )
        failed = report.status == "failed"
        rows.append(('<tr class="failed">' if failed else "<tr>") + f"{''.join(cells)}</tr>")
    return _table([*_SUMMARY, "seconds", "cost (USD)"], rows, _NUMERIC)


# -- flagged inputs (MisclassificationFlagger) ----------------------------------------------

_FLAGGED = ("image", "input", "label", "prediction", "risk", "reason")


def _flagged_section(flagged: Sequence[FlaggedInput], encoder: _Encoder) -> str:
    head = f'<section class="flagged" id="flagged-inputs"><h2>Flagged inputs ({len(flagged)})</h2>'
    if not flagged:
        return head + '<p class="empty">No input was flagged.</p></section>'
    rows = []
    for item in flagged:
        picture = "—"
        if item.image is not None:
            uri, width, height = encoder.encode(ReportImage(item.image))
            pixelated = ' class="pixelated"' if max(width, height) < PIXELATED_BELOW else ""
            picture = (
                f'<img src="{uri}" width="{width}" height="{height}"{pixelated} '
                f'alt="{_e(f"input {item.index}")}">'
            )
        cells = [
            f"<td>{picture}</td>",
            f'<td class="num">#{_e(item.index)}</td>',
            f"<td>{_e(item.label)}</td>",
            f"<td>{_e(item.prediction)}</td>",
            f'<td class="num">{_number(item.risk, 2)}</td>',
            f'<td class="reason">{_e(item.reason)}</td>',
        ]
        rows.append(f'<tr class="flagged-input">{"".join(cells)}</tr>')
    return head + _table(_FLAGGED, rows, ("input", "risk")) + "</section>"


# -- one unit --------------------------------------------------------------------------------


def _unit_section(section: UnitSection, anchor: str, encoder: _Encoder, max_images: int) -> str:
    report, usage = section.report, section.report.usage
    scale = _activation_scale(section)
    verdict = f'<span class="badge verdict">{_e(report.verdict)}</span>' if report.verdict else ""
    parts = [
        f'<section class="unit{" failed" if report.status == "failed" else ""}" id="{_e(anchor)}">',
        f'<div class="unit-head"><h2><a href="#{_e(anchor)}">{_e(report.unit)}</a>',
        f'<span class="badge task">{_e(report.task)}</span>{_status(report)}{verdict}</h2>',
        '<a class="top" href="#top">back to top</a></div>',
        f'<p class="label">{_e(report.label)}</p>'
        if report.label
        else '<p class="label none">no label</p>',
    ]
    if report.status == "undescribed":
        reason = _e(report.failure_reason or "no describer could describe the images")
        parts.append(f'<div class="notice">Not described: <span class="why">{reason}</span></div>')
    elif not report.ok:
        reason = _e(report.failure_reason or "no reason was given")
        parts.append(
            f'<div class="alert" role="alert">Run failed: <span class="why">{reason}</span></div>'
        )
    if report.description:
        parts.append(f'<p class="description">{_e(report.description)}</p>')
    if report.concepts:
        chips = "".join(f"<li>{_e(concept)}</li>" for concept in report.concepts)
        parts.append(f'<ul class="chips">{chips}</ul>')
    facts = {
        "agent": report.agent,
        "logic": report.logic,
        "verdict": report.verdict or "—",
        "score": _number(section.shown_score),
        "rounds": str(report.rounds),
        "images": str(report.images),
        "seconds": _number(report.seconds, 1),
        "tokens": f"{usage.prompt_tokens} + {usage.completion_tokens}",
        "cost (USD)": _number(usage.cost_usd, 4),
    }
    parts += [_facts(facts, "facts"), "<h3>Dataset exemplars</h3>"]
    figures = [
        _figure(encoder, image, f"#{rank}", image.activation, image.description, scale)
        for rank, image in enumerate(section.exemplars, start=1)
    ]
    parts.append(
        f'<div class="grid exemplars">{"".join(figures)}</div>' if figures else _EMPTY_EXEMPLARS
    )
    parts.append(f"<h3>Experiments ({len(report.evidence)})</h3>")
    parts += [_experiment(e, section, encoder, scale, max_images) for e in report.evidence]
    if not report.evidence:
        parts.append('<p class="empty">No experiments were logged.</p>')
    if report.details:
        rows = [
            f"<tr><th>{_e(k)}</th><td>{_e(_plain(v))}</td></tr>" for k, v in report.details.items()
        ]
        parts.append("<h3>Details</h3>" + _table([], rows))
    if section.history:
        parts.append("<h3>Label history (drift)</h3>" + _history_table(section.history))
    parts += [_step_log(report.steps), "</section>"]
    return "\n".join(parts)


_EMPTY_EXEMPLARS = '<p class="empty">No exemplars were recorded.</p>'


def _activation_scale(section: UnitSection) -> float:
    values = [image.activation for image in section.exemplars if image.activation is not None]
    values += [v for experiment in section.report.evidence for v in experiment.activations.values()]
    return max((v for v in values if math.isfinite(v)), default=0.0)


def _experiment(
    experiment: Experiment, section: UnitSection, encoder: _Encoder, scale: float, max_images: int
) -> str:
    figures: list[str] = []
    listed: list[str] = []
    for image_id in experiment.image_ids:
        activation = experiment.activations.get(image_id)
        image = section.experiment_images.get(image_id)
        if image is not None and len(figures) < max_images:
            activation = activation if activation is not None else image.activation
            description = experiment.descriptions.get(image_id, image.description)
            figures.append(_figure(encoder, image, image_id, activation, description, scale))
        else:
            listed.append(
                _e(image_id) + (f" {_number(activation)}" if activation is not None else "")
            )
    body = []
    if experiment.hypothesis:
        body.append(f'<p class="hypothesis"><b>Hypothesis</b> {_e(experiment.hypothesis)}</p>')
    if experiment.conclusion:
        body.append(f'<p class="conclusion"><b>Conclusion</b> {_e(experiment.conclusion)}</p>')
    if figures:
        body.append(f'<div class="grid">{"".join(figures)}</div>')
    if listed:
        body.append(
            f'<details class="more"><summary>{_plural(len(listed), "more image")}</summary>'
            f"<p>{', '.join(listed)}</p></details>"
        )
    count = len(experiment.image_ids)
    return (
        f'<details class="experiment" open><summary>{_e(experiment.title)}'
        f'<span class="count">{_plural(count, "image")}</span></summary>'
        f'<div class="body">{"".join(body)}</div></details>'
    )


def _figure(
    encoder: _Encoder,
    image: ReportImage,
    name: str,
    activation: float | None,
    description: str,
    scale: float,
) -> str:
    uri, width, height = encoder.encode(image)
    pixelated = ' class="pixelated"' if max(width, height) < PIXELATED_BELOW else ""
    alt = _e(f"{name}: {image.caption}" if image.caption else name)
    caption = [f'<span class="id">{_e(name)}</span>']
    if activation is not None:
        caption.append(f'<span class="act">{_number(activation)}</span>')
        if scale > 0 and math.isfinite(activation):
            percent = min(max(activation / scale, 0.0), 1.0) * 100
            caption.append(f'<span class="bar"><span style="width:{percent:.0f}%"></span></span>')
    if image.caption:
        caption.append(
            f'<span class="source" title="{_e(image.caption)}">{_e(image.caption)}</span>'
        )
    if description:
        caption.append(f'<span class="desc">{_e(description)}</span>')
    return (
        f'<figure class="thumb"><img src="{uri}" width="{width}" height="{height}"{pixelated} '
        f'alt="{alt}"><figcaption>{"".join(caption)}</figcaption></figure>'
    )


def _history_table(history: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for entry in history for key in entry if key != "changed"))
    rows = []
    for entry in history:
        changed = bool(entry.get("changed"))
        cells = "".join(f"<td>{_e(_plain(entry.get(column)))}</td>" for column in columns)
        mark = '<td class="mark">changed</td>' if changed else "<td></td>"
        rows.append(('<tr class="changed">' if changed else "<tr>") + f"{cells}{mark}</tr>")
    return _table([*columns, "changed"], rows)


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return _number(value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _step_log(steps: Sequence[Step]) -> str:
    items = []
    for step in steps:
        failed = step.error is not None or any(call.error is not None for call in step.tool_calls)
        timing = f"{_number(step.seconds, 2)} s, {step.usage.total_tokens} tokens"
        lines = [
            f'<div class="step-head">Step {step.index}<span class="timing">{timing}</span></div>',
            f"<pre>{_e(step.request)}</pre>",
        ]
        if step.error is not None:
            lines.append(f'<div class="error">Error: {_e(step.error)}</div>')
        for call in step.tool_calls:
            arguments = _e(json.dumps(call.arguments, default=str, ensure_ascii=False))
            lines.append(
                f'<div class="call"><span class="tool">{_e(call.tool)}</span><span class="timing">'
                f' {_number(call.seconds, 2)} s</span><pre class="arguments">{arguments}</pre>'
            )
            if call.error is not None:
                lines.append(f'<div class="error">Error: {_e(call.error)}</div>')
            lines.append(f"<pre>{_e(call.observation)}</pre></div>")
        items.append(('<li class="has-error">' if failed else "<li>") + f"{''.join(lines)}</li>")
    return (
        f'<details class="steps"><summary>Step log ({_plural(len(steps), "step")})</summary>'
        f'<ol class="steps">{"".join(items)}</ol></details>'
    )
