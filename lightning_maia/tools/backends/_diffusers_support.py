"""Pure helpers of the diffusers backends: option checks, devices and dtypes, image batches.

Nothing here imports diffusers (constructing a backend must not), and nothing holds state; the
backends in :mod:`~lightning_maia.tools.backends._diffusers_backend` are the only callers.

>>> round_up(13, 8), check_dtype("float16")
(16, torch.float16)
>>> list(runs_of_same_size([ImageItem(torch.zeros(3, 2, 2))] * 3, batch_size=2))
[[0, 1], [2]]
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.tools.backends._base import ImageItem

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_CHOICES = "'auto', 'float32', 'float16', 'bfloat16' or one of those torch dtypes"
_DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# A hub id is "name" or "owner/name"; anything else that names no folder is a missing path.
_HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model_source(model: str | os.PathLike[str], local_files_only: bool) -> None:
    """Fail at construction for a path that names no folder (a hub id is checked on load)."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigurationError(f"`model` must be a folder with a pipeline, got file {text!r}")
        return
    if not _HUB_ID_PATTERN.fullmatch(text):
        raise ConfigurationError(
            f"`model` {text!r} is not a folder and not a hub id; nothing is downloaded"
            + (" (local_files_only=True)" if local_files_only else "")
        )


def check_device(device: str | torch.device | None) -> str | None:
    """``device`` as text after checking its form and that CUDA exists when named."""
    if device is None:
        return None
    text = str(device)
    if not _DEVICE_PATTERN.fullmatch(text):
        raise bad_option("device", _DEVICE_CHOICES, device)
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"`device` is {text!r} but CUDA is not available")
    return text


def check_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    """``dtype`` as a torch dtype, ``"auto"`` or None; a name such as ``"float16"`` converted."""
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise bad_option("dtype", _DTYPE_CHOICES, dtype)


@overload
def check_positive(name: str, value: int, *, optional: Literal[False]) -> int: ...
@overload
def check_positive(name: str, value: int | None, *, optional: bool = True) -> int | None: ...
def check_positive(name: str, value: int | None, *, optional: bool = True) -> int | None:
    """``value`` when it is a positive integer (or None, when ``optional``); else fail."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_option(name, "a positive integer" + (" or None" if optional else ""), value)
    return value


def check_same_length(**sequences: Sequence[Any]) -> None:
    """Fail unless every keyword sequence has the same length, naming each length."""
    lengths = {name: len(values) for name, values in sequences.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{count} {name}" for name, count in lengths.items())
        names = ", ".join(lengths)
        raise ConfigurationError(f"need one entry each in {names}: got {shown}")


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: ``"auto"`` or None pick CUDA, then MPS, then the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None) -> torch.dtype:
    """A torch dtype as is; otherwise float16 on an accelerator and float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    on_accelerator = device is not None and device.type in {"cuda", "mps"}
    return torch.float16 if on_accelerator else torch.float32


def dtype_keyword(diffusers: Any) -> str:
    """The name of ``from_pretrained``'s dtype argument in this diffusers release."""
    # diffusers renamed from_pretrained's `torch_dtype` to `dtype`; older releases know only it.
    helpers = getattr(getattr(diffusers, "utils", None), "deprecation_utils", None)
    return "dtype" if hasattr(helpers, "_resolve_dtype") else "torch_dtype"


def is_instruct_pix2pix(pipeline: Any) -> bool:
    """Whether the pipeline's class is an InstructPix2Pix pipeline."""
    return "InstructPix2Pix" in type(pipeline).__name__


def takes_image(pipeline: Any) -> bool:
    """Whether calling the pipeline accepts an ``image`` (an image-to-image pipeline)."""
    try:
        return "image" in inspect.signature(pipeline.__call__).parameters
    except (TypeError, ValueError):
        return False


def round_up(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= size``."""
    return -(-size // multiple) * multiple


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, antialiased resize of a (B, 3, H, W) batch; unchanged when it already fits."""
    if tuple(images.shape[-2:]) == size:
        return images
    resized = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp(0, 1)


def runs_of_same_size(images: Sequence[ImageItem], batch_size: int) -> Iterator[list[int]]:
    """Indices of consecutive images that share a size, at most ``batch_size`` at a time."""
    run: list[int] = []
    for index, item in enumerate(images):
        if run and (images[run[0]].image.shape != item.image.shape or len(run) == batch_size):
            yield run
            run = []
        run.append(index)
    if run:
        yield run


def to_display_batch(images: Any) -> Tensor:
    """Pipeline output (a tensor, a NumPy batch or PIL images) as float (B, 3, H, W) in [0, 1]."""
    if isinstance(images, Tensor):
        batch = images.detach().float().cpu()
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.shape[1] not in (1, 3, 4) and batch.shape[-1] in (1, 3, 4):
            batch = batch.permute(0, 3, 1, 2)
    else:
        arrays = [np.asarray(image) for image in images]
        batch = torch.stack([_channels_first(array) for array in arrays])
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return batch[:, :3].contiguous().clamp(0, 1)


def _channels_first(array: np.ndarray[Any, Any]) -> Tensor:
    image = torch.from_numpy(np.array(array))  # a copy: PIL arrays are read-only
    if image.dtype == torch.uint8:
        image = image.float() / 255
    image = image.float()
    if image.ndim == 2:
        image = image.unsqueeze(-1)
    return image.permute(2, 0, 1)
