"""The data-module shape the recipes share: a training and a validation dataset, batched."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset


class TrainValDataModule(pl.LightningDataModule):
    """Shuffled training batches and ordered validation batches of two datasets.

    Subclasses build the datasets from their own arguments and save those with
    ``save_hyperparameters()``, which must include ``batch_size`` (read when a loader is made,
    so that a tuned batch size applies).

    Args:
        train_data: the training dataset.
        val_data: the validation dataset.
        val_batch_size: the validation batch size; None: the training ``batch_size``.
    """

    def __init__(
        self, train_data: Dataset[Any], val_data: Dataset[Any], val_batch_size: int | None = None
    ) -> None:
        super().__init__()
        self.train_data, self.val_data = train_data, val_data
        self.val_batch_size = val_batch_size

    def train_dataloader(self) -> DataLoader[Any]:
        # num_workers=0 keeps procedural provenance in this process (procedural describers).
        return DataLoader(self.train_data, batch_size=self.hparams["batch_size"], shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        batch_size = self.val_batch_size or self.hparams["batch_size"]
        return DataLoader(self.val_data, batch_size=batch_size)
