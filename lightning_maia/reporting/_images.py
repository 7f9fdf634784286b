"""Image grids and PNG files for the loggers, without torchvision.

Display images are float tensors (3, H, W) in [0, 1] (a single channel (1, H, W) is shown as
grey; uint8 tensors in [0, 255] are taken as they are). Pixels are clamped to [0, 1] and rounded
to 8 bits once, here, so every logger stores the same bytes.

>>> grid = make_grid(torch.ones(3, 3, 2, 2), ncol=2, padding=1)
>>> tuple(grid.shape)
(3, 7, 7)
>>> to_pil_image(grid).getpixel((1, 1)), to_pil_image(grid).getpixel((0, 0))
((255, 255, 255), (0, 0, 0))
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lightning_maia.errors import bad_option


def make_grid(
    images: Tensor | Sequence[Tensor], ncol: int = 8, padding: int = 2, pad_value: float = 0.0
) -> Tensor:
    """Images tiled row by row, ``ncol`` to a row, ``padding`` pixels around and between them.

    ``images`` is a (N, C, H, W) tensor or a sequence of (C, H, W) tensors; images of different
    sizes sit in the top-left corner of cells as large as the largest one. The grid is
    (3, rows * (H + padding) + padding, min(ncol, N) * (W + padding) + padding), float in [0, 1];
    the padding and unused cells hold ``pad_value``.

    >>> make_grid([torch.zeros(3, 1, 1), torch.ones(3, 1, 1)], ncol=2, padding=1)[0].tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    if ncol < 1:
        raise bad_option("ncol", "a positive int", ncol)
    if padding < 0:
        raise bad_option("padding", "a non-negative int", padding)
    tiles = [to_display(image) for image in images]
    if not tiles:
        raise bad_option("images", "at least one image", "none")
    height = max(tile.shape[1] for tile in tiles)
    width = max(tile.shape[2] for tile in tiles)
    columns = min(ncol, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = torch.full(
        (3, rows * (height + padding) + padding, columns * (width + padding) + padding),
        float(pad_value),
    )
    for index, tile in enumerate(tiles):
        top = (index // columns) * (height + padding) + padding
        left = (index % columns) * (width + padding) + padding
        grid[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    return grid


def to_display(image: Tensor) -> Tensor:
    """``image`` as float (3, H, W) in [0, 1] on the CPU: grey expanded, uint8 scaled, NaN as 0.

    >>> to_display(torch.tensor([[[0, 255]]], dtype=torch.uint8)).tolist()
    [[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]
    """
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise bad_option(
            "image", "a (3, H, W) or (1, H, W) tensor", f"a tensor of shape {tuple(image.shape)}"
        )
    pixels = image.detach().to("cpu")
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 255.0
    pixels = torch.nan_to_num(pixels.float(), nan=0.0).clamp(0.0, 1.0)
    return pixels.expand(3, -1, -1).contiguous()


def to_uint8(image: Tensor) -> np.ndarray:
    """``image`` as a (H, W, 3) uint8 array, each channel rounded to the nearest of 256 levels.

    >>> to_uint8(torch.full((3, 1, 1), 0.5)).tolist()
    [[[128, 128, 128]]]
    """
    pixels = (to_display(image) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def to_pil_image(image: Tensor) -> Image.Image:
    """``image`` as an RGB PIL image."""
    return Image.fromarray(to_uint8(image))


def to_png_bytes(image: Tensor) -> bytes:
    """``image`` encoded as PNG.

    >>> to_png_bytes(torch.zeros(3, 2, 2))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buffer = io.BytesIO()
    to_pil_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write ``image`` as a PNG file at ``path`` (its folders made as needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png_bytes(image))
    return path
