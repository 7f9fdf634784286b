"""Folders of real photographs for tests: crops of scikit-learn's two sample photos.

``load_sample_images()`` ships ``china.jpg`` (a temple) and ``flower.jpg`` (a dahlia), both
427 x 640; crops of each become one class, written as PNG and JPEG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

CLASSES = ("china", "flower")


def write_photo_folder(root: Path, per_class: int = 6, side: int = 64) -> Path:
    """``root/china/*.png|jpg`` and ``root/flower/*.png|jpg``: ``per_class`` crops each, taken
    on a grid so that they differ; returns ``root``."""
    photos = load_sample_images().images
    for name, photo in zip(CLASSES, photos, strict=True):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for index in range(per_class):
            top = (index * 53) % (height - side)
            left = (index * 97) % (width - side)
            crop = np.ascontiguousarray(photo[top : top + side, left : left + side])
            suffix = "png" if index % 2 == 0 else "jpg"
            Image.fromarray(crop).save(folder / f"{name}_{index:02d}.{suffix}")
    return root
