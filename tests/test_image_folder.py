"""ImageFolder reads class folders or a flat folder with PIL, and names bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_maia.errors import ConfigurationError
from lightning_maia.image_folder import ImageFolder


def test_class_folders_sorted_and_pixels_exact(tmp_path: Path) -> None:
    for name, colour in (("zebra", (0, 0, 255)), ("ant", (255, 0, 0))):
        (tmp_path / name).mkdir()
        Image.new("RGB", (6, 6), colour).save(tmp_path / name / "one.png")
    folder = ImageFolder(tmp_path, size=3)
    assert folder.class_names == ["ant", "zebra"]
    image, label = folder[0]
    assert label == 0 and torch.equal(image[0], torch.ones(3, 3))
    assert torch.equal(image[2], torch.zeros(3, 3))
    assert folder.cache_key == ImageFolder(tmp_path, size=3).cache_key


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 128).save(tmp_path / "grey.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path, size=2)
    assert len(folder) == 1 and folder[0][1] == -1 and folder[0][0].shape == (3, 2, 2)


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="`image_folder` must be a directory"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(ConfigurationError, match="`size` can be a positive integer, got 0"):
        ImageFolder(tmp_path, size=0)
