"""Small LightningModules and data for callback tests (importable by spawned DDP workers)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_maia.world import NeuronSpec, ShapesWorld, SyntheticNeuronLayer
from lightning_maia.world._scene import Concept


class ShapesClassifier(pl.LightningModule):
    """A small CNN that classifies ShapesWorld shapes."""

    def __init__(self, classes: int = 9, width: int = 8, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self(images), labels))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class SwitchingNeurons(pl.LightningModule):
    """A unit whose meaning flips after the first epoch: stars, then red things."""

    def __init__(self) -> None:
        super().__init__()
        self.neurons = _Switch()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neurons(x) + 0 * self.weight

    def on_train_epoch_start(self) -> None:
        self.neurons.phase = min(self.current_epoch, 1)

    def training_step(self, batch, batch_idx):
        return (self.weight**2).sum() + 0 * self(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Switch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.phase = 0
        self.layers = nn.ModuleList(
            [
                SyntheticNeuronLayer([NeuronSpec("mono", (Concept("shape", "star"),))], seed=0),
                SyntheticNeuronLayer([NeuronSpec("mono", (Concept("colour", "red"),))], seed=0),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[self.phase](x)


def shapes_loaders(train: int = 96, val: int = 96, batch_size: int = 32, seed: int = 0):
    """Train and validation loaders over ShapesWorld (num_workers=0 keeps provenance)."""
    train_loader = DataLoader(
        ShapesWorld(size=train, seed=seed), batch_size=batch_size, shuffle=True
    )
    val_loader = DataLoader(
        ShapesWorld(size=val, seed=seed + 1, split="val"), batch_size=batch_size
    )
    return train_loader, val_loader


class ShapesDataModule(pl.LightningDataModule):
    """ShapesWorld train/val loaders, for LightningCLI configs in tests."""

    def __init__(self, train: int = 64, val: int = 64, batch_size: int = 32) -> None:
        super().__init__()
        self.train, self.val, self.batch_size = train, val, batch_size

    def train_dataloader(self) -> DataLoader:
        return shapes_loaders(self.train, self.val, self.batch_size)[0]

    def val_dataloader(self) -> DataLoader:
        return shapes_loaders(self.train, self.val, self.batch_size)[1]
