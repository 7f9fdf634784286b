"""A user's own data, end to end: real handwriting with a colour shortcut, for LightningCLI.

:class:`TintedDigitsClassifier` is a small convolutional backbone pretrained on balanced tinted
digits (every colour with every digit) to tell the digit, frozen, and a fresh linear head; its
features still carry colour, as a pretrained backbone's features carry more than its task
needs. :class:`TintedDigitsDataModule` trains the head on digits drawn in their class's colour
with probability ``shortcut`` and validates on balanced colours. ``configs/tinted_digits.yaml``
runs the :class:`SpuriousFeatureRemover` on it with the retrieval designer: no procedural world.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_maia.bench._tinted_digits import COLOURS, TintedDigits
from lightning_maia.recipes._data_modules import TrainValDataModule


class DigitsBackbone(nn.Module):
    """Three convolutions and a global average pool: ``features`` are the head's input."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x)).flatten(1)


#: Pretraining runs on one thread: fast on a busy CPU, and one seed gives one set of weights.
PRETRAIN_THREADS = 1
#: The side digits are drawn at (the scans are 8x8).
SIZE = 12


def pretrain_backbone(
    classes: int = 4,
    *,
    width: int = 32,
    epochs: int = 40,
    seed: int = 0,
    size: int = SIZE,
    colour_weight: float = 0.0,
) -> DigitsBackbone:
    """A backbone trained to tell the digit on the ``pretrain`` split, where every colour goes
    with every digit (balanced data); deterministic per seed. Its features still carry colour
    (the input is coloured): the shortcut a head trained on biased data can take.
    ``colour_weight`` > 0 adds a colour head's loss, so the features carry colour more strongly
    (as a backbone pretrained on a broader task would)."""
    data = TintedDigits.split("pretrain", classes=classes, copies=2, size=size, seed=seed)
    colours = torch.tensor([COLOURS.index(c) for c in data.colours])
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            backbone = DigitsBackbone(width)
            head = nn.Linear(width, classes)
            colour_head = nn.Linear(width, len(COLOURS))
            parameters = [*backbone.parameters(), *head.parameters()]
            if colour_weight:
                parameters += list(colour_head.parameters())
            optimiser = torch.optim.Adam(parameters, lr=3e-3)
            for _ in range(epochs):
                for batch in torch.randperm(len(data), generator=generator).split(64):
                    features = backbone(data.images[batch])
                    loss = F.cross_entropy(head(features), data.labels[batch])
                    if colour_weight:
                        colour_loss = F.cross_entropy(colour_head(features), colours[batch])
                        loss = loss + colour_weight * colour_loss
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return backbone.eval().requires_grad_(False)


class TintedDigitsClassifier(pl.LightningModule):
    """The frozen pretrained backbone and a linear head trained with Lightning."""

    def __init__(
        self,
        classes: int = 4,
        lr: float = 0.01,
        width: int = 32,
        backbone_epochs: int = 40,
        backbone_seed: int = 0,
        backbone_colour_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = [str(i) for i in range(classes)]
        self.backbone = pretrain_backbone(
            classes, width=width, epochs=backbone_epochs, seed=backbone_seed,
            colour_weight=backbone_colour_weight,
        )  # fmt: skip
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Sequence[Any], _: int) -> Tensor:
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss, prog_bar=False)
        return loss

    def validation_step(self, batch: Sequence[Any], _: int) -> None:
        accuracy = (self(batch[0]).argmax(1) == batch[1]).float().mean()
        self.log("val_accuracy", accuracy, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.head.parameters(), lr=self.hparams["lr"])


class TintedDigitsDataModule(TrainValDataModule):
    """Training digits with a colour shortcut; validation digits in every colour in turn."""

    def __init__(
        self,
        classes: int = 4,
        shortcut: float = 0.95,
        seed: int = 0,
        copies: int = 2,
        batch_size: int = 64,
    ) -> None:
        super().__init__(
            TintedDigits.split(
                "train", classes=classes, shortcut=shortcut, copies=copies, size=SIZE, seed=seed
            ),
            TintedDigits.split("val", classes=classes, copies=classes, size=SIZE, seed=seed),
            val_batch_size=256,
        )
        self.save_hyperparameters()
