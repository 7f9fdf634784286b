"""The audit's ``spurious`` and ``flagging`` tasks, run on a loaded model without training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from lightning_maia._options import Backends, Output
from lightning_maia.analysis._risk import SCORES
from lightning_maia.analysis._spurious_options import SearchBudget
from lightning_maia.callbacks.misclassification_flagger import (
    MisclassificationFlagger,
    remover_spurious_directions,
    remover_spurious_units,
)
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover

#: The figures each task can report (what ``--fail-on`` may name), checked before any work.
_HEAD_METRICS = ("accuracy", "balanced_accuracy", "worst_group_accuracy")
TASK_FIGURES: dict[str, tuple[str, ...]] = {
    "interpret": ("units_described", "units_undescribed", "units_failed", "mean_score"),
    # label_drift and label_drift_compared join with `--baseline`.
    "spurious": (
        "units_judged",
        "units_failed",
        "units_spurious",
        "units_core",
        "units_kept",
        "erased_dimensions",
        "spurious_units",
        *(f"{when}_{name}" for when in ("before", "after") for name in _HEAD_METRICS),
    ),
    "flagging": (
        "flagged_rate",
        "subgroups_found",
        "spurious_units",
        *(f"{kind}_{score}" for kind in ("auroc", "aupr_error") for score in SCORES),
    ),
}


@dataclass
class AuditData:
    """The data of an audit: what is interpreted and flagged, and the spurious task's split."""

    loader: DataLoader[Any]
    #: Training data the spurious task refits the head on (None: the task cannot run).
    train: Dataset[Any] | None = None
    #: Held-out data the spurious task measures the refit head on.
    held_out: Dataset[Any] | None = None


def _trainer(out: Path) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=out,
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )


def spurious_task(
    options: Any, model: pl.LightningModule, data: AuditData, state: dict[str, Any]
) -> tuple[dict[str, float], str]:
    """Judge the head's input units and refit without the spurious ones (figures only: the
    audited checkpoint is not changed). Returns the figures and, when the task could not do
    its job (no unit judged), why."""
    assert data.train is not None  # AuditOptions.check and the loading made sure of it
    held_out = data.held_out if data.held_out is not None else data.loader.dataset
    remover = SpuriousFeatureRemover(
        class_names=state.get("class_names"),
        candidate_attributes=tuple(options.spurious_attributes),
        dataset=data.train,
        val_dataset=held_out,
        budget=SearchBudget(k=options.max_units * 3),
        backends=Backends(
            agent=state.get("agent"),
            designer=options.designer,
            generator=state.get("generator"),
            editor=state.get("editor"),
            describer=state.get("describer"),
        ),
        output=Output(output_dir=str(options.out / "spurious"), progress=False),
        preprocess=state.get("preprocess"),
        seed=options.seed,
    )
    trainer = _trainer(options.out)
    trainer.validate(model, dataloaders=data.loader, verbose=False)  # sets up the strategy
    remover.setup(trainer, model, "validate")
    figures = remover.run(trainer, model) or {}
    state["remover"] = remover
    found = {
        key: float(value)
        for key, value in figures.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    found["spurious_units"] = found.get("units_spurious", 0.0)
    problem = ""
    if figures.get("status") == "failed":
        problem = str(figures.get("failure_reason") or "the task failed")
        if not found.get("units_judged"):
            problem += " (the describer could not read these images: give `--describer`)"
    return found, problem


def flagging_task(
    options: Any, model: pl.LightningModule, data: AuditData, state: dict[str, Any]
) -> tuple[dict[str, float], str]:
    """Score every validation input; the flagged rate, subgroups and AUROC/AUPR per score."""
    remover = state.get("remover")
    flagger = MisclassificationFlagger(
        when="manual",
        class_names=state.get("class_names"),
        candidate_attributes=tuple(options.spurious_attributes),
        preprocess=state.get("preprocess"),
        seed=options.seed,
        backends=Backends(
            agent=state.get("agent"),
            generator=state.get("generator"),
            editor=state.get("editor"),
            describer=state.get("describer"),
            designer=options.designer,
        ),
        output=Output(output_dir=str(options.out / "flagging")),
    )
    units = remover_spurious_units([remover]) if remover is not None else None
    directions = (
        remover_spurious_directions([remover], model) if units and remover is not None else None
    )
    dataset = data.held_out if data.held_out is not None else data.loader.dataset
    result = flagger.flag(model, dataset, remover_units=units, spurious_directions=directions)
    state["flagging"] = (result, dataset)
    summary = result.summary()
    return {key: float(value) for key, value in summary.items() if math.isfinite(value)}, ""
