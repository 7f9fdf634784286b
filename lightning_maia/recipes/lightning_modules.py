"""LightningCLI-ready modules for the recipes' YAML configs (``recipes/configs/*.yaml``).

``python -m lightning_maia.recipes fit --config $(python -m lightning_maia.recipes path demo)``
trains the demo's model with all three callbacks from YAML alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lightning_maia.image_folder import ImageFolder
from lightning_maia.recipes._data_modules import TrainValDataModule
from lightning_maia.recipes.shapes_backbone import (
    BackboneConfig,
    ShapesBackboneClassifier,
    load_backbone,
)
from lightning_maia.world._datasets import SpuriousShapes

SHAPES = ("circle", "square", "triangle", "star")


class SpuriousShapesClassifier(ShapesBackboneClassifier):
    """The demo's model: the cached pretrained shapes backbone, frozen, and a fresh head."""

    def __init__(
        self,
        class_names: Sequence[str] = SHAPES,
        lr: float = 0.01,
        backbone_seed: int = 0,
        cache_dir: str | None = None,
        backbone_images: int = BackboneConfig.images,
        backbone_epochs: int = BackboneConfig.epochs,
        backbone_widths: tuple[int, int, int, int] = BackboneConfig.widths,
    ) -> None:
        config = BackboneConfig(
            widths=backbone_widths, images=backbone_images, epochs=backbone_epochs
        )
        super().__init__(
            num_classes=len(class_names),
            lr=lr,
            class_names=list(class_names),
            backbone=load_backbone(backbone_seed, config, cache_dir=cache_dir),
        )
        # Its own arguments, not the parent's: LightningCLI's `validate --ckpt_path` and
        # `load_from_checkpoint` rebuild this class from them (saving merges, so drop those).
        for inherited in ("num_classes", "widths"):
            self.hparams.pop(inherited, None)
        self.save_hyperparameters()


class SpuriousShapesDataModule(TrainValDataModule):
    """SpuriousShapes: training data where each shape mostly sits on its own background."""

    def __init__(
        self,
        train: int = 2000,
        val: int = 400,
        p: float = 0.95,
        seed: int = 0,
        batch_size: int = 128,
    ) -> None:
        super().__init__(
            SpuriousShapes("train", size=train, p=p, seed=seed),
            SpuriousShapes("test", size=val, p=p, seed=seed),
        )
        self.save_hyperparameters()


class ImageFolderDataModule(pl.LightningDataModule):
    """Validation images from a folder (class subfolders), read with PIL."""

    def __init__(self, root: str, image_size: int = 224, batch_size: int = 64) -> None:
        super().__init__()
        self.root, self.image_size, self.batch_size = Path(root), image_size, batch_size

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(ImageFolder(self.root, self.image_size), batch_size=self.batch_size)
