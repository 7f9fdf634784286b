"""Saved results: reports as JSON, their images as PNG files beside them.

A results folder holds ``results.json`` (meta, and per unit the report, its image files with
captions and activations, and its label history), ``reports.csv`` (one row per report) and
``images/``. ``load_results`` gives back the sections that ``render_report`` draws, so
``lightning-maia report`` re-renders a report without the model or the data. An audit also
saves its checks, gates and flagged inputs (``audit`` in results.json, thumbnails under
``images/flagged/``); :func:`load_audit` reads them back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_maia._atomic import write_bytes_atomically as write_atomically
from lightning_maia.agents._records import UnitReport, reports_to_dataframe
from lightning_maia.errors import ConfigurationError
from lightning_maia.reporting._audit_sections import AuditFindings, FlaggedInput, flagged_rows
from lightning_maia.reporting._images import encode_png
from lightning_maia.reporting._report_content import ReportImage, UnitSection

RESULTS_FILE = "results.json"
FORMAT = 1


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unit"


def _save_image(folder: Path, root: Path, name: str, image: ReportImage) -> dict[str, Any]:
    png, _, _ = encode_png(image)
    path = folder / f"{_safe(name)}.png"
    write_atomically(path, png)
    return {
        "file": str(path.relative_to(root)),
        "caption": image.caption,
        "activation": image.activation,
        "description": image.description,
    }


def save_results(
    directory: str | Path,
    sections: Sequence[UnitSection],
    meta: Mapping[str, str] | None = None,
    *,
    audit: AuditFindings | None = None,
) -> Path:
    """Write ``sections`` (reports and images) and an audit's findings under ``directory``;
    returns results.json."""
    root = Path(directory)
    units = []
    for position, section in enumerate(sections):
        folder = root / "images" / f"{position:03d}-{_safe(section.report.unit)}"
        units.append(
            {
                "report": section.report.to_dict(),
                "score": section.score,
                "history": section.history,
                "exemplars": [
                    _save_image(folder, root, f"exemplar-{rank + 1}", image)
                    for rank, image in enumerate(section.exemplars)
                ],
                "experiment_images": {
                    image_id: _save_image(folder, root, image_id, image)
                    for image_id, image in section.experiment_images.items()
                },
            }
        )
    payload: dict[str, Any] = {"format": FORMAT, "meta": dict(meta or {}), "units": units}
    if audit is not None:
        payload["audit"] = audit.to_dict()
        if audit.flagged is not None:
            rows = flagged_rows(audit.flagged)
            for position, (row, item) in enumerate(zip(rows, audit.flagged, strict=True)):
                if item.image is not None:
                    folder = root / "images" / "flagged"
                    row["image"] = _save_image(folder, root, f"{position:03d}", item.image)
            payload["audit"]["flagged"] = rows
    frame = reports_to_dataframe([s.report for s in sections])
    write_atomically(root / "reports.csv", frame.to_csv(index=False).encode())
    path = root / RESULTS_FILE
    write_atomically(path, json.dumps(payload, indent=1, default=str).encode())
    return path


def _load_image(root: Path, entry: Mapping[str, Any]) -> ReportImage:
    return ReportImage(
        image=(root / entry["file"]).read_bytes(),
        caption=entry.get("caption", ""),
        activation=entry.get("activation"),
        description=entry.get("description", ""),
    )


def load_results(directory: str | Path) -> tuple[list[UnitSection], dict[str, str]]:
    """The sections and meta saved by :func:`save_results`."""
    root = Path(directory)
    path = root / RESULTS_FILE if root.is_dir() else root
    root = path.parent
    if not path.exists():
        raise ConfigurationError(
            f"no saved results at {path}: expected a folder with {RESULTS_FILE}"
        )
    try:
        payload = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigurationError(f"{path} is not a results file: {error}") from error
    if payload.get("format") != FORMAT:
        raise ConfigurationError(
            f"{path} has results format {payload.get('format')!r}; "
            f"this version reads format {FORMAT}"
        )
    sections = [
        UnitSection(
            report=UnitReport.from_dict(unit["report"]),
            exemplars=[_load_image(root, e) for e in unit.get("exemplars", [])],
            experiment_images={
                image_id: _load_image(root, e)
                for image_id, e in unit.get("experiment_images", {}).items()
            },
            history=list(unit.get("history", [])),
            score=unit.get("score"),
        )
        for unit in payload["units"]
    ]
    return sections, dict(payload.get("meta", {}))


def load_audit(directory: str | Path) -> AuditFindings | None:
    """The audit findings saved by :func:`save_results` (None when the results hold none)."""
    root = Path(directory)
    path = root / RESULTS_FILE if root.is_dir() else root
    if not path.exists():
        return None
    data = json.loads(path.read_text()).get("audit")
    if data is None:
        return None
    flagged = None
    if "flagged" in data:
        flagged = [
            FlaggedInput(
                **{k: v for k, v in row.items() if k != "image"},
                image=_load_image(path.parent, row["image"]) if row.get("image") else None,
            )
            for row in data["flagged"]
        ]
    return AuditFindings.from_dict(data, flagged)
