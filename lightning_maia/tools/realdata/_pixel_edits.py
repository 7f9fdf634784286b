"""Edits that need no weights, as pure functions on display images (3, H, W) in [0, 1].

Each changes one thing and leaves the rest of the image bit for bit as it was:

- :func:`recolour` sets the hue of the pixels in a region (saturation and brightness kept);
- :func:`grayscale` takes the colour out of a region (brightness kept);
- :func:`occlude` fills a region; :func:`keep_only` fills everything but it;
- :func:`swap_background` puts another image behind a foreground mask;
- :func:`crop` cuts a box out and scales it back to the full size; :func:`flip` mirrors.

A region is a bool (H, W) mask; None is the whole image.

>>> import torch
>>> image = torch.rand(3, 4, 4)
>>> mask = torch.zeros(4, 4, dtype=torch.bool); mask[:2] = True
>>> edited = occlude(image, mask)
>>> bool((edited[:, :2] == 0.5).all()), bool((edited[:, 2:] == image[:, 2:]).all())
(True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_maia.errors import bad_option
from lightning_maia.tools.realdata._colours import hsv_to_rgb, hue_of, rgb_to_hsv


def _region(image: Tensor, mask: Tensor | None) -> Tensor:
    if image.ndim != 3 or image.shape[0] != 3:
        raise bad_option("image", "a (3, H, W) display image", tuple(image.shape))
    if mask is None:
        return torch.ones(image.shape[-2:], dtype=torch.bool, device=image.device)
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise bad_option(
            "mask", f"a bool mask of shape {tuple(image.shape[-2:])}", tuple(mask.shape)
        )
    return mask.bool().to(image.device)


def recolour(image: Tensor, colour: str | float, mask: Tensor | None = None) -> Tensor:
    """The image with the hue of every pixel in ``mask`` set to ``colour`` (a name of
    :data:`~lightning_maia.tools.realdata._colours.COLOUR_HUES` or degrees); saturation and
    value are kept, so gray, white and black pixels stay as they are."""
    region = _region(image, mask)
    hue = hue_of(colour) if isinstance(colour, str) else float(colour) % 360.0
    hsv = rgb_to_hsv(image)
    hsv[0] = torch.where(region, torch.full_like(hsv[0], hue), hsv[0])
    return torch.where(region, hsv_to_rgb(hsv), image.float())


def grayscale(image: Tensor, mask: Tensor | None = None) -> Tensor:
    """The image with the pixels in ``mask`` made gray at their own value (brightness)."""
    region = _region(image, mask)
    value = image.float().max(0).values
    return torch.where(region, value.expand(3, -1, -1), image.float())


def occlude(image: Tensor, mask: Tensor | None, fill: float = 0.5) -> Tensor:
    """The image with the region in ``mask`` filled with gray ``fill``."""
    region = _region(image, mask)
    return torch.where(region, torch.full_like(image.float(), fill), image.float())


def keep_only(image: Tensor, mask: Tensor | None, fill: float = 0.5) -> Tensor:
    """The image with everything outside ``mask`` filled with gray ``fill``."""
    region = _region(image, mask)
    return torch.where(region, image.float(), torch.full_like(image.float(), fill))


def swap_background(image: Tensor, foreground: Tensor, background: Tensor) -> Tensor:
    """``image`` inside the ``foreground`` mask, ``background`` (resized to fit) outside it."""
    region = _region(image, foreground)
    if background.shape[-2:] != image.shape[-2:]:
        background = F.interpolate(
            background.float()[None], size=tuple(image.shape[-2:]), mode="bilinear",
            align_corners=False,
        )[0]  # fmt: skip
    return torch.where(region, image.float(), background.float().clamp(0.0, 1.0))


def bounding_box(mask: Tensor) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` (exclusive) of the True pixels of a non-empty mask."""
    rows = torch.nonzero(mask.bool().any(1)).flatten()
    cols = torch.nonzero(mask.bool().any(0)).flatten()
    if len(rows) == 0:
        raise bad_option("mask", "a mask with at least one pixel set", "an empty mask")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop(image: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """The ``(top, left, bottom, right)`` box of the image, scaled back to its full size."""
    top, left, bottom, right = box
    height, width = image.shape[-2:]
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise bad_option("box", f"(top, left, bottom, right) inside {height}x{width}", box)
    part = image.float()[:, top:bottom, left:right]
    return F.interpolate(part[None], size=(height, width), mode="bilinear", align_corners=False)[
        0
    ].clamp(0.0, 1.0)


def centre_box(image: Tensor, share: float) -> tuple[int, int, int, int]:
    """The central box holding ``share`` of the image's side."""
    if not 0.0 < share <= 1.0:
        raise bad_option("share", "a share in (0, 1]", share)
    height, width = image.shape[-2:]
    h, w = max(1, round(height * share)), max(1, round(width * share))
    top, left = (height - h) // 2, (width - w) // 2
    return top, left, top + h, left + w


def flip(image: Tensor, horizontal: bool = True) -> Tensor:
    """The image mirrored left-right (or top-bottom)."""
    return image.float().flip(-1 if horizontal else -2)
