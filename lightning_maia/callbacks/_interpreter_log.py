"""What UnitInterpreter writes after a run: the HTML reports, tables and exemplar images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from lightning_maia.analysis._interpretation import Interpretation, UnitRun
from lightning_maia.exemplars import mask_images
from lightning_maia.reporting._adapters import LoggerAdapter
from lightning_maia.reporting._html_report import UnitSection, sections_from_toolbox, write_report


def log_interpretation(
    result: Interpretation,
    root: Path,
    history: dict[str, list[dict[str, Any]]],
    drift: pd.DataFrame,
    adapters: Sequence[LoggerAdapter],
    step: int,
    agent: str,
    task: str,
) -> tuple[list[UnitSection], Path]:
    """Write ``<root>/epoch-NNN/report.html`` and ``<root>/report.html`` (the latest run), and
    log the report table, the drift table, exemplar panels and the report to ``adapters``.
    Returns the report sections and the latest report's path."""
    epoch = result.epoch
    sections = [
        sections_from_toolbox(run.report, run.toolbox, history=history.get(run.report.unit, []))
        for run in result.runs
    ]
    epoch_report = write_report(
        root / f"epoch-{epoch:03d}" / "report.html",
        sections,
        title=f"UnitInterpreter — epoch {epoch}",
        meta={"agent": agent, "task": task, "epoch": str(epoch)},
    )
    latest = write_report(
        root / "report.html",
        sections,
        title="UnitInterpreter — latest run",
        meta={"agent": agent, "epoch": str(epoch)},
    )
    frame = result.to_dataframe()
    for adapter in adapters:
        adapter.log_table("maia/unit_reports", frame, step)
        adapter.log_table("maia/drift", drift, step)
        for run in result.runs:
            images, captions = exemplar_panel(run)
            if images:
                adapter.log_images(f"maia/exemplars/{run.unit.spec}", images, step, captions)
        adapter.log_file(epoch_report, step)
    return sections, latest


def exemplar_panel(run: UnitRun) -> tuple[list[Tensor], list[str]]:
    """The exemplar images the agent saw (masked to the unit's map), with their activations."""
    images, captions = [], []
    for stored in run.toolbox.images:
        if stored.source != "exemplar":
            continue
        image = stored.image
        if stored.mask is not None:
            image = mask_images(image[None], stored.mask[None])[0]
        images.append(image)
        captions.append(f"{stored.id}: {stored.activation:.3f}")
    return images, captions
