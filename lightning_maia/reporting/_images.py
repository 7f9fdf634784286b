"""Image grids and PNG files for the loggers, and the HTML report's inline PNGs, without
torchvision.

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

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lightning_maia._display import to_display, to_uint8
from lightning_maia.errors import bad_option
from lightning_maia.exemplars import mask_images
from lightning_maia.reporting._report_content import ReportImage


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


# -- the HTML report's images ---------------------------------------------------------

#: Images wider or taller than this are shrunk to it (pixels) before encoding.
MAX_IMAGE_SIDE = 256
#: How much of its brightness a pixel outside an image's mask keeps.
MASK_DIM = 0.25


class _Encoder:
    """PNG data URIs, each image encoded once per page however often it is shown."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[str, int, int]] = {}
        self._keep: list[ReportImage] = []  # holds the images so that their ids stay unique

    def encode(self, image: ReportImage) -> tuple[str, int, int]:
        key = id(image)
        if key not in self._done:
            png, width, height = encode_png(image)
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            self._done[key] = (uri, width, height)
            self._keep.append(image)
        return self._done[key]


def encode_png(image: ReportImage) -> tuple[bytes, int, int]:
    """PNG bytes of ``image`` (masked and shrunk to :data:`MAX_IMAGE_SIDE`), width and height."""
    if isinstance(image.image, bytes) and image.mask is None:
        with Image.open(io.BytesIO(image.image)) as decoded:
            return image.image, decoded.width, decoded.height
    pixels = _as_chw(image.image)
    if image.mask is not None:
        mask = torch.as_tensor(image.mask).bool()
        if tuple(mask.shape) != tuple(pixels.shape[-2:]):
            mask = F.interpolate(mask[None, None].float(), size=pixels.shape[-2:], mode="nearest")[
                0, 0
            ].bool()
        pixels = mask_images(pixels[None], mask[None], dim=MASK_DIM)[0]
    array = (pixels.clamp(0.0, 1.0).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    picture = Image.fromarray(array, mode="RGB")
    if max(picture.size) > MAX_IMAGE_SIDE:
        picture.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), picture.width, picture.height


def _as_chw(image: Tensor | np.ndarray | bytes) -> Tensor:
    """Float (3, H, W) in [0, 1] from a tensor or array ((3|1, H, W) or (H, W)) or PNG bytes."""
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as decoded:
            array = np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)
    pixels = torch.as_tensor(image).detach().float().cpu()
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise bad_option("image", "a (3, H, W), (1, H, W) or (H, W) image", tuple(pixels.shape))
    return pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
