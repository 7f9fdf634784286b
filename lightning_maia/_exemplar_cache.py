"""The disk cache of exemplar results, keyed so that a stale entry can never be read back.

The key hashes every weight and buffer of the model (so changing any weight invalidates it), the
dataset's identity, the units and the options. A dataset's identity is its ``cache_key``
attribute where it has one (a string, or a method returning one), else its type, length and the
content of its first, middle and last items; a dataset whose content changes elsewhere should
define ``cache_key``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_maia._atomic import atomic_path
from lightning_maia.recording import TokenLayout
from lightning_maia.units import UnitSelection

log = logging.getLogger(__name__)

#: Bumped whenever the stored layout changes, so old files are never misread.
CACHE_FORMAT = 2


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        _hash_tensor(digest, value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _hash_value(digest, item)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _hash_value(digest, value[key])
    else:
        digest.update(repr(value).encode())


def model_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer of ``model`` (names, dtypes, shapes and values)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        if isinstance(tensor, Tensor):
            _hash_tensor(digest, tensor)
    return digest.hexdigest()


def dataset_fingerprint(dataset: Dataset[Any]) -> str:
    """The dataset's identity (see the module docstring)."""
    key = getattr(dataset, "cache_key", None)
    if callable(key):
        key = key()
    if isinstance(key, str):
        return f"key:{key}"
    digest = hashlib.blake2b(digest_size=16)
    length = len(dataset)  # type: ignore[arg-type]
    digest.update(f"{type(dataset).__module__}.{type(dataset).__qualname__}:{length}".encode())
    for index in sorted({0, length // 2, length - 1}):
        _hash_value(digest, dataset[index])
    return digest.hexdigest()


def exemplar_cache_key(
    model: nn.Module,
    dataset: Dataset[Any],
    selections: Sequence[UnitSelection],
    k: int,
    reduction: str,
    quantile: float,
    tokens: TokenLayout,
) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(model),
        "dataset": dataset_fingerprint(dataset),
        "units": [[s.layer, list(s.indices) if s.indices is not None else "*"] for s in selections],
        "k": k,
        "reduction": reduction,
        "quantile": quantile,
        "tokens": [tokens.drop_cls, tokens.fold_grid],
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ExemplarCache:
    """Exemplar results on disk, one file per key, written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"exemplars-{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file is recomputed, not fatal
            log.warning("ignoring unreadable exemplar cache %s (%s); recomputing", path, error)
            return None
        return state

    def save(self, key: str, state: dict[str, Any]) -> Path:
        path = self.path(key)
        # Streamed to an open file, not the partial path: torch would name the archive's folder
        # after the partial file's random name, and equal results would give different bytes.
        with atomic_path(path) as partial, partial.open("wb") as stream:
            torch.save(state, stream)
        return path
