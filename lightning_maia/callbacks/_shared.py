"""What the three callbacks share: when to skip, where files go, the exemplar data."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger("lightning_maia")

ON_ERROR = ("warn", "raise")


def should_skip(trainer: pl.Trainer) -> bool:
    """Sanity checking and ``fast_dev_run`` never run the agent."""
    return bool(trainer.sanity_checking or getattr(trainer, "fast_dev_run", False))


def output_root(trainer: pl.Trainer, output_dir: str | Path | None) -> Path:
    """Where reports and images go: ``output_dir``, else ``<log_dir>/maia``."""
    if output_dir is not None:
        return Path(output_dir)
    base = trainer.log_dir or trainer.default_root_dir
    return Path(base) / "maia"


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
