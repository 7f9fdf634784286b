"""What UnitInterpreter writes after a run: the HTML reports, tables and exemplar images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from lightning_maia.analysis._interpretation import Interpretation, UnitRun
from lightning_maia.exemplars import mask_images
from lightning_maia.reporting._adapters import LoggerAdapter
from lightning_maia.reporting._html_report import UnitSection, sections_from_toolbox, write_report
from lightning_maia.reporting._results_store import write_atomically


@dataclass
class WrittenRun:
    """A run whose reports are on disk (:func:`write_interpretation`), not yet logged."""

    result: Interpretation
    sections: list[UnitSection]
    #: ``<root>/epoch-NNN/report.html``.
    epoch_report: Path
    #: ``<root>/report.html``, a copy of the epoch's report.
    latest: Path
    #: The run's numbers for the trainer's loggers.
    summary: dict[str, float]
    #: The drift table as of this run (a later run may be written before this one is logged).
    drift: pd.DataFrame


def write_interpretation(
    result: Interpretation,
    root: Path,
    history: dict[str, list[dict[str, Any]]],
    agent: str,
    task: str,
    summary: dict[str, float],
    drift: pd.DataFrame,
) -> WrittenRun:
    """Write ``<root>/epoch-NNN/report.html`` and ``<root>/report.html`` (the latest run).

    Rendering encodes every image of every section, the costly part of recording a run, so
    it is done once and the latest report is a copy (atomic, as both writes are). It touches
    no logger, so background mode runs it on the worker thread, off the training path."""
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
    latest = root / "report.html"
    write_atomically(latest, epoch_report.read_bytes())
    return WrittenRun(result, sections, epoch_report, latest, summary, drift)


def log_to_adapters(written: WrittenRun, adapters: Sequence[LoggerAdapter], step: int) -> None:
    """Log the report table, the drift table, exemplar panels and the epoch's report to
    ``adapters`` (on the training thread: loggers are not promised to be thread-safe)."""
    frame = written.result.to_dataframe()
    for adapter in adapters:
        adapter.log_table("maia/unit_reports", frame, step)
        adapter.log_table("maia/drift", written.drift, step)
        for run in written.result.runs:
            images, captions = exemplar_panel(run)
            if images:
                adapter.log_images(f"maia/exemplars/{run.unit.spec}", images, step, captions)
        adapter.log_file(written.epoch_report, step)


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
