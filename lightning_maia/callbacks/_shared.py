"""What the three callbacks share: when to skip, where files go, the exemplar data."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger("lightning_maia")

ON_ERROR = ("warn", "raise")


def should_skip(trainer: pl.Trainer) -> bool:
    """Sanity checking and ``fast_dev_run`` never run the agent."""
    return bool(trainer.sanity_checking or getattr(trainer, "fast_dev_run", False))


def output_root(trainer: pl.Trainer, output_dir: str | Path | None) -> Path:
    """Where reports and images go: ``output_dir``, else ``<log_dir>/maia``.

    Under DDP ``trainer.log_dir`` is a collective call (rank zero broadcasts it), so call this on
    every rank at the same point (the callbacks do it in ``setup``), never from rank zero alone.
    """
    if output_dir is not None:
        return Path(output_dir)
    base = trainer.log_dir or trainer.default_root_dir
    return Path(base) / "maia"


def finished_epoch(trainer: pl.Trainer) -> int:
    """The epoch a run at fit end describes: the last one trained (``current_epoch`` has moved
    one past it by ``on_fit_end``)."""
    return max(trainer.current_epoch - 1, 0)


def log_figures(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    figures: Mapping[str, float],
    *,
    at_fit_end: bool = False,
) -> None:
    """Make ``figures`` (equal on every rank: broadcast them first) monitorable, as ``self.log``.

    At an epoch end they go through ``pl_module.log``, so they reach ``trainer.callback_metrics``
    (EarlyStopping, ModelCheckpoint) and the loggers at Lightning's own step. Lightning refuses
    ``self.log`` in ``on_fit_end``, so there they are put into ``trainer.callback_metrics`` on
    every rank and written by rank zero to the loggers at the step (and with the ``epoch``) of the
    last epoch's metrics.
    """
    if not figures:
        return
    if not at_fit_end:
        for name, value in figures.items():
            # Equal on every rank, so syncing changes nothing; it keeps Lightning's DDP check quiet.
            pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True)
        return
    trainer.callback_metrics.update(
        {name: torch.tensor(float(value)) for name, value in figures.items()}
    )
    if trainer.is_global_zero:
        row = {name: float(value) for name, value in figures.items()}
        for logger in trainer.loggers:
            logger.log_metrics(
                {**row, "epoch": finished_epoch(trainer)}, step=max(trainer.global_step - 1, 0)
            )
            logger.save()


def validation_dataset(trainer: pl.Trainer) -> Dataset[Any] | None:
    """The dataset of the (first) validation dataloader, when the trainer has one."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, DataLoader):
        dataset: Dataset[Any] = loaders.dataset
        return dataset
    return None


@contextmanager
def detached_from_trainer(module: pl.LightningModule) -> Iterator[None]:
    """Detach the trainer for a moment, e.g. to deep-copy the module without it."""
    trainer = module._trainer
    module._trainer = None
    try:
        yield
    finally:
        module._trainer = trainer


def snapshot(module: pl.LightningModule) -> pl.LightningModule:
    """A copy of the module's current weights that training cannot change under a worker."""
    with detached_from_trainer(module):
        copied = copy.deepcopy(module)
    copied.eval()
    return copied
