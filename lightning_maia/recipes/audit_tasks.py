"""The audit's ``spurious`` and ``flagging`` tasks, run on a loaded model without training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lightning_maia.callbacks.misclassification_flagger import (
    MisclassificationFlagger,
    remover_spurious_units,
)
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.errors import ConfigurationError


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
    options: Any,
    model: pl.LightningModule,
    loader: DataLoader[Any],
    datamodule: Any,
    state: dict[str, Any],
) -> dict[str, float]:
    """Judge the head's input units and refit without the spurious ones (figures only: the
    audited checkpoint is not changed)."""
    if datamodule is None or not hasattr(datamodule, "train_dataloader"):
        raise ConfigurationError(
            "the `spurious` task refits the head on training data: give `--datamodule` or a "
            "`--config` whose data has a train_dataloader"
        )
    datamodule.setup("fit")
    train = datamodule.train_dataloader()
    remover = SpuriousFeatureRemover(
        k=options.max_units * 3,
        class_names=options.class_names,
        candidate_attributes=tuple(options.spurious_attributes),
        dataset=train.dataset,
        val_dataset=loader.dataset,
        output_dir=str(options.out / "spurious"),
        seed=options.seed,
        progress=False,
    )
    trainer = _trainer(options.out)
    trainer.validate(model, dataloaders=loader, verbose=False)  # sets up the strategy
    remover.setup(trainer, model, "validate")
    figures = remover.run(trainer, model) or {}
    state["remover"] = remover
    found = {
        key: float(value)
        for key, value in figures.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    found["spurious_units"] = found.get("units_spurious", 0.0)
    return found


def flagging_task(
    options: Any,
    model: pl.LightningModule,
    loader: DataLoader[Any],
    datamodule: Any,
    state: dict[str, Any],
) -> dict[str, float]:
    """Score every validation input; the flagged rate, subgroups and AUROC/AUPR per score."""
    remover = state.get("remover")
    flagger = MisclassificationFlagger(
        when="manual",
        class_names=options.class_names,
        candidate_attributes=tuple(options.spurious_attributes),
        output_dir=str(options.out / "flagging"),
        seed=options.seed,
    )
    units = remover_spurious_units([remover]) if remover is not None else None
    result = flagger.flag(model, loader.dataset, remover_units=units)
    summary = result.summary()
    return {key: float(value) for key, value in summary.items() if math.isfinite(value)}
