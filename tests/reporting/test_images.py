"""Image grids and PNG files: exact layout, padding, rounding and a lossless round trip."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_maia.errors import ConfigurationError
from lightning_maia.reporting._images import (
    make_grid,
    save_png,
    to_display,
    to_png_bytes,
    to_uint8,
)


def solid(red: float, green: float, blue: float, height: int = 2, width: int = 3) -> torch.Tensor:
    return torch.tensor([red, green, blue]).view(3, 1, 1).expand(3, height, width).clone()


def test_grid_places_images_row_by_row_with_padding_between_and_around() -> None:
    images = torch.stack([solid(1, 0, 0), solid(0, 1, 0), solid(0, 0, 1)])

    grid = make_grid(images, ncol=2, padding=1, pad_value=0.5)

    # 2 rows of (2 + 1) plus 1; 2 columns of (3 + 1) plus 1.
    assert tuple(grid.shape) == (3, 7, 9)
    assert torch.equal(grid[:, 1:3, 1:4], solid(1, 0, 0))
    assert torch.equal(grid[:, 1:3, 5:8], solid(0, 1, 0))
    assert torch.equal(grid[:, 4:6, 1:4], solid(0, 0, 1))
    covered = torch.zeros(7, 9, dtype=torch.bool)
    for top, left in ((1, 1), (1, 5), (4, 1)):
        covered[top : top + 2, left : left + 3] = True
    # Padding lines and the unused fourth cell hold the pad value, nothing else does.
    assert torch.all(grid[:, ~covered] == 0.5)
    assert not torch.any(grid[:, covered] == 0.5)


def test_grid_of_fewer_images_than_columns_is_one_row_as_wide_as_the_images() -> None:
    grid = make_grid([solid(1, 1, 1)], ncol=8, padding=2)

    assert tuple(grid.shape) == (3, 6, 7)
    assert torch.equal(grid[:, 2:4, 2:5], solid(1, 1, 1))
    assert grid.sum().item() == 3 * 2 * 3  # padding is black by default


def test_grid_puts_smaller_images_top_left_in_cells_of_the_largest_size() -> None:
    big, small = solid(1, 0, 0, height=3, width=3), solid(0, 0, 1, height=1, width=2)

    grid = make_grid([big, small], ncol=2, padding=0)

    assert tuple(grid.shape) == (3, 3, 6)
    assert torch.equal(grid[:, :, :3], big)
    assert torch.equal(grid[:, :1, 3:5], solid(0, 0, 1, height=1, width=2))
    assert grid[:, 1:, 3:].sum().item() == 0 and grid[:, :1, 5].sum().item() == 0


def test_grey_and_uint8_images_become_float_rgb() -> None:
    grey = torch.tensor([[[0.25, 1.0]]])
    pixels = torch.tensor([[[0, 255]], [[51, 0]], [[255, 102]]], dtype=torch.uint8)

    assert to_display(grey).tolist() == [[[0.25, 1.0]]] * 3
    expected = torch.tensor([[[0.0, 1.0]], [[0.2, 0.0]], [[1.0, 0.4]]])
    assert to_display(pixels).dtype == torch.float32
    assert torch.equal(to_display(pixels), expected)


def test_pixels_are_clamped_rounded_and_nan_is_black() -> None:
    image = torch.tensor([[[-1.0, 2.0, float("nan"), 0.5, 0.498]]]).expand(3, 1, 5)

    assert to_uint8(image)[0, :, 0].tolist() == [0, 255, 0, 128, 127]


def test_png_round_trip_is_lossless_for_8_bit_values() -> None:
    image = torch.randint(0, 256, (3, 5, 7)).float() / 255.0

    decoded = np.asarray(Image.open(io.BytesIO(to_png_bytes(image))))

    assert decoded.shape == (5, 7, 3)
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, to_uint8(image))
    assert np.array_equal(decoded.transpose(2, 0, 1), (image * 255).round().numpy())


def test_save_png_makes_folders_and_writes_the_png(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "red.png"

    written = save_png(solid(1, 0, 0), target)

    assert written == target
    assert np.asarray(Image.open(target)).tolist() == [[[255, 0, 0]] * 3] * 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_grid([solid(1, 1, 1)], ncol=0), "`ncol` can be a positive int"),
        (lambda: make_grid([solid(1, 1, 1)], padding=-1), "`padding` can be a non-negative"),
        (lambda: make_grid([]), "`images` can be at least one image"),
        (lambda: make_grid([torch.zeros(2, 2)]), "`image` can be a (3, H, W) or (1, H, W)"),
        (lambda: to_png_bytes(torch.zeros(4, 2, 2)), "got 'a tensor of shape (4, 2, 2)'"),
    ],
)
def test_bad_arguments_name_the_option(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        call()
    assert message in str(raised.value)
