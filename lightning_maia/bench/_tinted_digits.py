"""Tinted digits: scikit-learn's real handwriting (``load_digits``), drawn in a colour that a
split may plant as a shortcut for the class.

Every item is one 8x8 scan scaled up to ``size`` and drawn in one named colour
(:func:`~lightning_maia.tools.realdata._colours.tint`: the colour's hue at full saturation,
the ink's intensity as brightness, so the background stays black). ``metadata`` holds the
attribute columns ``digit`` and ``colour`` (and the group index), so the real-data designers and
describers read them like any user's table. Nothing is downloaded: the scans ship with
scikit-learn.

>>> data = TintedDigits.split("test", classes=3, seed=0)
>>> image, label = data[0]
>>> tuple(image.shape), list(data.metadata.columns)
((3, 24, 24), ['digit', 'colour', 'group'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lightning_maia.errors import bad_option
from lightning_maia.tools.realdata._colours import tint

#: Colours drawn, in class order: class ``c`` has shortcut colour ``COLOURS[c]``.
COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta")
#: Share of the digit scans in each split (by scan, so no scan is in two splits).
SPLITS: dict[str, tuple[float, float]] = {
    "pretrain": (0.0, 0.35),
    "train": (0.35, 0.6),
    "val": (0.6, 0.75),
    "test": (0.75, 1.0),
}


def _scans(classes: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < classes
    return digits.images[keep].astype(np.float32) / 16.0, digits.target[keep].astype(np.int64)


class TintedDigits(Dataset[tuple[Tensor, int]]):
    """Items ``(image, digit)``; see the module docstring.

    Args:
        scans: (N, 8, 8) ink intensities in [0, 1]; labels: (N,) digits.
        colours: (N,) the colour name of each item.
        size: the side the scans are scaled to.
    """

    def __init__(
        self, scans: np.ndarray, labels: np.ndarray, colours: Sequence[str], size: int = 24
    ):
        if not len(scans) == len(labels) == len(colours):
            raise bad_option("colours", f"one colour per scan ({len(scans)})", len(colours))
        ink = torch.as_tensor(scans, dtype=torch.float32)[:, None]
        ink = F.interpolate(ink, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        self.images = torch.stack(
            [tint(i.clamp(0, 1), c) for i, c in zip(ink, colours, strict=True)]
        )
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.colours = list(colours)
        self.class_names = [str(int(d)) for d in sorted(set(labels.tolist()))]
        names = list(COLOURS)
        self.groups = torch.tensor(
            [int(y) * len(names) + names.index(c) for y, c in zip(labels, colours, strict=True)]
        )

    @classmethod
    def split(
        cls,
        name: str,
        *,
        classes: int = 6,
        shortcut: float | None = None,
        copies: int = 1,
        size: int = 24,
        seed: int = 0,
    ) -> TintedDigits:
        """One split: ``shortcut=p`` draws class ``c``'s colour with probability ``p`` (else one
        of the others, evenly); None draws every colour evenly; ``copies`` draws each scan that
        many times (for a balanced test, every colour once per copy in turn)."""
        if name not in SPLITS:
            raise bad_option("name", ", ".join(SPLITS), name)
        if not 2 <= classes <= len(COLOURS):
            raise bad_option("classes", f"2 to {len(COLOURS)}", classes)
        scans, labels = _scans(classes)
        order = np.random.default_rng(1234).permutation(len(labels))  # splits fixed across seeds
        low, high = SPLITS[name]
        chosen = order[int(low * len(order)) : int(high * len(order))]
        rng = np.random.default_rng(seed + 97 * list(SPLITS).index(name))
        palette = list(COLOURS[:classes])
        picked_scans, picked_labels, colours = [], [], []
        for copy in range(copies):
            for position, index in enumerate(chosen):
                label = int(labels[index])
                if shortcut is None:
                    colour = (
                        palette[(position + copy) % classes]
                        if copies > 1
                        else palette[int(rng.integers(classes))]
                    )
                elif rng.random() < shortcut:
                    colour = palette[label]
                else:
                    others = [c for c in palette if c != palette[label]]
                    colour = others[int(rng.integers(len(others)))]
                picked_scans.append(scans[index])
                picked_labels.append(label)
                colours.append(colour)
        return cls(np.stack(picked_scans), np.asarray(picked_labels), colours, size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def metadata(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "digit": [str(int(y)) for y in self.labels],
                "colour": self.colours,
                "group": self.groups.tolist(),
            }
        )

    def group(self, index: int) -> int:
        return int(self.groups[index])

    def data_hash(self) -> str:
        """A short hash of the images and labels (for benchmark records)."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update((self.images * 255).round().to(torch.uint8).numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()


def shortcut_share(data: TintedDigits) -> float:
    """The share of items drawn in their class's shortcut colour."""
    palette = list(COLOURS)
    return float(
        np.mean([palette[int(y)] == c for y, c in zip(data.labels, data.colours, strict=True)])
    )


__all__ = ["COLOURS", "TintedDigits", "shortcut_share"]
