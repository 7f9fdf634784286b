"""What the callbacks can see of the training data at ``setup``."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset


def train_dataset_at_setup(trainer: pl.Trainer, split: str = "train") -> Dataset[Any] | None:
    """The training (or ``val``) dataset as setup can see it: a datamodule's, or the loader
    given to ``fit``; None when it cannot be known yet (the run-time check then applies)."""
    try:
        # Lightning builds the loaders after setup; its data source already holds the recipe.
        loop: Any = trainer.fit_loop if split == "train" else trainer.fit_loop.epoch_loop.val_loop
        loader = loop._data_source.dataloader()
    except Exception:
        return None
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    return loader.dataset if isinstance(loader, DataLoader) else None
