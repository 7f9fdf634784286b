"""Colour names from pixels, and pixels of a named colour: HSV in torch, named hues.

>>> import torch
>>> red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
>>> colour_name(*rgb_to_hsv(red)[:, 0, 0].tolist())
'red'
>>> torch.allclose(hsv_to_rgb(rgb_to_hsv(red)), red)
True
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_maia.errors import bad_option

#: Named hues in degrees; a pixel takes the name of the nearest one.
COLOUR_HUES: dict[str, float] = {
    "red": 0.0,
    "orange": 30.0,
    "yellow": 60.0,
    "lime": 90.0,
    "green": 120.0,
    "teal": 160.0,
    "cyan": 190.0,
    "blue": 230.0,
    "purple": 275.0,
    "magenta": 315.0,
}
#: Below this saturation a pixel has no hue: it is white, gray or black.
MIN_SATURATION = 0.25
#: Below this value (brightness) a pixel is black whatever its hue.
MIN_VALUE = 0.15
#: Every colour name a pixel can get.
COLOUR_NAMES: tuple[str, ...] = (*COLOUR_HUES, "white", "gray", "black")


def rgb_to_hsv(image: Tensor) -> Tensor:
    """(3, H, W) RGB in [0, 1] to HSV: hue in degrees [0, 360), saturation and value in [0, 1]."""
    r, g, b = image.float().unbind(0)
    value, _ = image.float().max(0)
    low, _ = image.float().min(0)
    chroma = value - low
    safe = chroma.clamp_min(1e-12)
    hue = torch.where(
        value == r,
        ((g - b) / safe) % 6.0,
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(chroma > 0, hue * 60.0, torch.zeros_like(hue)) % 360.0
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    return torch.stack([hue, saturation, value])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """The inverse of :func:`rgb_to_hsv`."""
    hue, saturation, value = hsv.float().unbind(0)
    sector = (hue % 360.0) / 60.0

    def channel(n: float) -> Tensor:
        k = (n + sector) % 6.0
        return value - value * saturation * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))

    return torch.stack([channel(5.0), channel(3.0), channel(1.0)]).clamp(0.0, 1.0)


def hue_of(name: str) -> float:
    """The hue (degrees) of a colour name of :data:`COLOUR_HUES`."""
    if name not in COLOUR_HUES:
        raise bad_option("colour", "one of " + ", ".join(COLOUR_HUES), name)
    return COLOUR_HUES[name]


def colour_name(hue: float, saturation: float, value: float) -> str:
    """The name of one HSV colour: the nearest named hue, or white / gray / black."""
    if value < MIN_VALUE:
        return "black"
    if saturation < MIN_SATURATION:
        return "white" if value > 0.8 else "gray"
    distances = {n: min(abs(hue - h), 360.0 - abs(hue - h)) for n, h in COLOUR_HUES.items()}
    return min(distances, key=lambda n: distances[n])


def pixel_colour_names(image: Tensor) -> list[str]:
    """(H * W) colour names of every pixel of a (3, H, W) image, row by row."""
    hsv = rgb_to_hsv(image).flatten(1).T.tolist()
    return [colour_name(h, s, v) for h, s, v in hsv]


def tint(gray: Tensor, colour: str) -> Tensor:
    """A (H, W) intensity image in [0, 1] drawn in ``colour``: (3, H, W), hue of the colour,
    full saturation, value the intensity (so black stays black).

    >>> tint(torch.ones(1, 1), "blue").flatten().tolist() == hsv_to_rgb(
    ...     torch.tensor([230.0, 1.0, 1.0]).view(3, 1, 1)).flatten().tolist()
    True
    """
    hue = torch.full_like(gray.float(), hue_of(colour))
    return hsv_to_rgb(torch.stack([hue, torch.ones_like(hue), gray.float().clamp(0.0, 1.0)]))
