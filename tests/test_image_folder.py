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


def test_attribute_csv_becomes_the_metadata_table_in_item_order(tmp_path: Path) -> None:
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.new("RGB", (4, 4), (index * 80, 0, 0)).save(tmp_path / name / f"{index}.png")
    # Rows in any order, with one extra row for a file the folder does not have.
    rows = [
        (f"{n}/{i}.png", "dark" if i == 0 else "light") for n in ("dog", "cat") for i in (2, 1, 0)
    ]
    csv = tmp_path / "attributes.csv"
    csv.write_text("file,tone\n" + "".join(f"{f},{t}\n" for f, t in rows) + "gone.png,dark\n")
    folder = ImageFolder(tmp_path, size=2, attributes=csv)
    assert folder.metadata is not None
    assert list(folder.metadata.columns) == ["class", "tone"]
    assert folder.metadata.to_dict("list") == {
        "class": ["cat"] * 3 + ["dog"] * 3,
        "tone": ["dark", "light", "light"] * 2,
    }
    train, val = folder.split(0.5, seed=0)
    for part in (train, val):
        assert part.metadata is not None and len(part.metadata) == len(part)
        for i in range(len(part)):
            name = part.item_name(i)
            assert part.metadata.loc[i, "class"] == name.split("/")[0]
            assert part.metadata.loc[i, "tone"] == ("dark" if name.endswith("0.png") else "light")


def test_attribute_rows_missing_or_without_a_file_column_are_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for index in range(2):
        Image.new("RGB", (4, 4)).save(tmp_path / "a" / f"{index}.png")
    (tmp_path / "part.csv").write_text("file,tone\na/0.png,dark\n")
    with pytest.raises(ConfigurationError, match=r"no row for 1 of 2 images, e.g. \['a/1.png'\]"):
        ImageFolder(tmp_path, attributes=tmp_path / "part.csv")
    (tmp_path / "bad.csv").write_text("path,tone\na/0.png,dark\n")
    with pytest.raises(ConfigurationError, match="`attributes` can be a table with a `file`"):
        ImageFolder(tmp_path, attributes=tmp_path / "bad.csv")
    with pytest.raises(ConfigurationError, match="no such CSV file"):
        ImageFolder(tmp_path, attributes=tmp_path / "none.csv")
