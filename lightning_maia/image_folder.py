"""Images from a folder, read with PIL (no torchvision): ``root/CLASS/*.png`` or a flat folder.

Items are ``(float (3, size, size) in [0, 1], label)`` — display images, the input convention of
the library (a model's normalisation is the Subject's ``preprocess``); with class subfolders the
label is the class index (``class_names`` sorted), in a flat folder it is -1. Every item is named
by its file (``item_name``, ``origin``), and :meth:`ImageFolder.split` gives a seeded, stratified
train/validation split. ``attributes`` (a CSV file or a DataFrame with a ``file`` column, the
path relative to the folder) becomes the ``metadata`` table that the offline agent's retrieval
designer and table describer read; with class subfolders it gains a ``class`` column.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("cat", "dog"):
...     (root / name).mkdir()
...     Image.new("RGB", (10, 8), "red").save(root / name / "a.png")
>>> folder = ImageFolder(root, size=4)
>>> len(folder), folder.class_names, folder[1][0].shape, folder[1][1]
(2, ['cat', 'dog'], torch.Size([3, 4, 4]), 1)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_maia.errors import ConfigurationError, bad_option

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(Dataset[tuple[torch.Tensor, int]]):
    """Every image under ``root``, resized to ``size`` x ``size``."""

    def __init__(
        self, root: str | Path, size: int = 224, attributes: str | Path | pd.DataFrame | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigurationError(f"`image_folder` must be a directory, got {str(root)!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise bad_option("size", "a positive integer", size)
        self.size = size
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        self.class_names = [p.name for p in folders]
        self.items: list[tuple[Path, int]] = []
        if folders:
            for label, folder in enumerate(folders):
                self.items.extend((path, label) for path in _images_in(folder))
        else:
            self.items = [(path, -1) for path in _images_in(self.root)]
        if not self.items:
            raise ConfigurationError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(self.root)!r}"
            )
        self.split_name = ""
        self.metadata: pd.DataFrame | None = (
            None if attributes is None else self._attribute_table(attributes)
        )

    def _attribute_table(self, attributes: str | Path | pd.DataFrame) -> pd.DataFrame:
        """The attribute rows in item order (every image needs one)."""
        if isinstance(attributes, pd.DataFrame):
            frame = attributes.astype(str)
        else:
            if not Path(attributes).is_file():
                raise ConfigurationError(f"`attributes`: no such CSV file {str(attributes)!r}")
            frame = pd.read_csv(attributes, dtype=str)
        if "file" not in frame.columns:
            raise bad_option("attributes", "a table with a `file` column", list(frame.columns))
        rows = frame.drop_duplicates("file").set_index("file")
        names = [self.item_name(i) for i in range(len(self.items))]
        missing = [name for name in names if name not in rows.index]
        if missing:
            raise ConfigurationError(
                f"`attributes` has no row for {len(missing)} of {len(names)} images, e.g. "
                f"{missing[:3]} (the `file` column holds paths relative to {str(self.root)!r})"
            )
        table = rows.loc[names].reset_index(drop=True)
        if self.class_names and "class" not in table.columns:
            table.insert(0, "class", [self.class_names[label] for _, label in self.items])
        return table

    def item_name(self, index: int) -> str:
        """The item's file, relative to the folder (``cat/a.png``)."""
        return self.items[index][0].relative_to(self.root).as_posix()

    def origin(self, index: int) -> str:
        """A stable id of the item across runs (the flagger's item id)."""
        return f"{self.root.name}/{self.item_name(index)}"

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def split(self, val_fraction: float, seed: int = 0) -> tuple[ImageFolder, ImageFolder]:
        """Train and validation parts, ``val_fraction`` of each class in the latter (seeded;
        stratified where every class has two images or more)."""
        from sklearn.model_selection import train_test_split

        if isinstance(val_fraction, bool) or not 0.0 < float(val_fraction) < 1.0:
            raise bad_option("val_fraction", "a number in (0, 1)", val_fraction)
        if len(self.items) < 2:
            raise ConfigurationError(f"{str(self.root)!r} has one image: too few to split")
        labels = self.labels
        stratify = labels if min(labels.count(c) for c in set(labels)) >= 2 else None
        positions = list(range(len(self.items)))
        try:
            train, val = train_test_split(
                positions, test_size=val_fraction, random_state=seed, stratify=stratify
            )
        except ValueError:  # more classes than validation items: split without strata
            train, val = train_test_split(positions, test_size=val_fraction, random_state=seed)
        return self._part(sorted(train), "train"), self._part(sorted(val), "val")

    def _part(self, positions: list[int], name: str) -> ImageFolder:
        part = object.__new__(ImageFolder)
        part.__dict__.update(self.__dict__)
        part.items = [self.items[i] for i in positions]
        if self.metadata is not None:
            part.metadata = self.metadata.iloc[positions].reset_index(drop=True)
        part.split_name = name
        return part

    @property
    def cache_key(self) -> str:
        """Identity for the exemplar cache: the files, their sizes and modification times."""
        digest = hashlib.blake2b(digest_size=16)
        for path, label in self.items:
            stat = path.stat()
            digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return f"ImageFolder:{self.size}:{digest.hexdigest()}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
            array = np.asarray(rgb, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), label


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
