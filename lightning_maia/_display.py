"""Display images as pixels: one conversion for every place that shows or encodes an image.

A display image is a tensor (3, H, W) or (1, H, W): float in [0, 1], or uint8 in [0, 255]. The
loggers, the HTML report and the images handed to a vision-language model all round it to 8 bits
here, the same way (grey expanded to three channels, values clamped, NaN shown as 0), so the
same image gives the same bytes wherever it goes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lightning_maia.errors import bad_option


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


__all__ = ["to_display", "to_uint8"]
