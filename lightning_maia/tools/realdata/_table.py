"""An attribute table over a dataset: one row of ``attribute -> value`` per item, and its images.

The table is what retrieval designs with ("every item whose colour is red and digit is 3") and
what a metadata describer reads. Build it from a pandas DataFrame aligned with the dataset
(row ``i`` describes item ``i``), from a dataset's own ``metadata`` frame, or from a
``group()``-style accessor that maps an index to its attributes.

>>> import pandas as pd, torch
>>> images = torch.zeros(4, 3, 2, 2)
>>> table = AttributeTable(pd.DataFrame({"digit": [0, 1, 0, 1], "colour": list("rrbb")}), images)
>>> table.values("colour"), table.match({"digit": "0"}, {"colour": {"r"}}).tolist()
(['b', 'r'], [2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_maia.errors import ConfigurationError, bad_option

ImageSource = Dataset[Any] | Tensor | Callable[[int], Tensor]


class AttributeTable:
    """Attribute values of every dataset item, and a way to fetch the item's display image.

    Args:
        frame: one row per item, in dataset order; each column an attribute (values become
            strings, so ``3`` and ``"3"`` are one value).
        images: the dataset (items ``(image, ...)`` or an image), an (N, 3, H, W) tensor, or a
            function from index to image.
        columns: the attributes to use (default: every column but ``group``-like bookkeeping).
        display_transform: maps a dataset image to a display image in [0, 1] (e.g. undoing a
            normalisation); the default clamps.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        images: ImageSource,
        *,
        columns: Sequence[str] | None = None,
        display_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise bad_option(
                "frame", "a pandas DataFrame of attribute columns", type(frame).__name__
            )
        chosen = list(columns) if columns is not None else [
            c for c in frame.columns if str(c) not in ("group", "index", "label_index")
        ]  # fmt: skip
        missing = [c for c in chosen if c not in frame.columns]
        if missing or not chosen:
            raise bad_option("columns", f"columns of the table: {list(frame.columns)}", missing)
        self.frame = frame[chosen].astype(str).reset_index(drop=True)
        self._images = images
        length = _length(images)
        if length is not None and length != len(self.frame):
            raise ConfigurationError(
                f"the attribute table has {len(self.frame)} rows but the images number {length}; "
                "give one row per dataset item, in dataset order"
            )
        self.display_transform = display_transform or (lambda image: image.clamp(0.0, 1.0))

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset[Any],
        *,
        columns: Sequence[str] | None = None,
        accessor: Callable[[int], Mapping[str, Any]] | None = None,
        display_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> AttributeTable:
        """The table of a dataset: its ``metadata`` DataFrame, or ``accessor(i)`` (a mapping of
        attributes, e.g. a dataset's ``attributes`` method) for every item."""
        if accessor is None:
            metadata = getattr(dataset, "metadata", None)
            if isinstance(metadata, pd.DataFrame):
                return cls(metadata, dataset, columns=columns, display_transform=display_transform)
            accessor = getattr(dataset, "attributes", None)
        if not callable(accessor):
            raise ConfigurationError(
                f"{type(dataset).__name__} has no `metadata` DataFrame and no `attributes(index)` "
                "method; pass `accessor=` (index -> {attribute: value}) or build an "
                "AttributeTable from a DataFrame"
            )
        rows = [dict(accessor(i)) for i in range(len(dataset))]  # type: ignore[arg-type]
        return cls(
            pd.DataFrame(rows), dataset, columns=columns, display_transform=display_transform
        )

    # -- reading --------------------------------------------------------------------------

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame)

    def values(self, attribute: str) -> list[str]:
        """The values ``attribute`` takes in the table, sorted."""
        if attribute not in self.frame.columns:
            return []
        return sorted(self.frame[attribute].unique().tolist(), key=_natural)

    def row(self, index: int) -> dict[str, str]:
        """The attributes of item ``index``."""
        return {str(k): str(v) for k, v in self.frame.iloc[int(index)].items()}

    def image(self, index: int) -> Tensor:
        """The display image (3, H, W) in [0, 1] of item ``index``."""
        source = self._images
        if isinstance(source, Tensor):
            raw = source[int(index)]
        elif callable(source) and not isinstance(source, Dataset):
            raw = source(int(index))
        else:
            item = source[int(index)]
            raw = item[0] if isinstance(item, (tuple, list)) else item
        return self.display_transform(torch.as_tensor(raw).float())

    def match(
        self,
        present: Mapping[str, str],
        absent: Mapping[str, set[str]] | None = None,
    ) -> np.ndarray:
        """Indices of the items with every ``present`` value and none of the ``absent`` ones
        (attributes the table lacks match nothing)."""
        keep = np.ones(len(self.frame), dtype=bool)
        for attribute, value in present.items():
            if attribute not in self.frame.columns:
                return np.zeros(0, dtype=np.int64)
            keep &= (self.frame[attribute] == str(value)).to_numpy()
        for attribute, values in (absent or {}).items():
            if attribute in self.frame.columns:
                keep &= ~self.frame[attribute].isin([str(v) for v in values]).to_numpy()
        return np.flatnonzero(keep)

    def best_matches(
        self,
        present: Mapping[str, str],
        absent: Mapping[str, set[str]] | None = None,
        prefer: Mapping[str, str] | None = None,
    ) -> np.ndarray:
        """:meth:`match`, narrowed to the items that also hold the most ``prefer`` values."""
        found = self.match(present, absent)
        if not prefer or len(found) == 0:
            return found
        agree = np.zeros(len(found), dtype=np.int64)
        for attribute, value in prefer.items():
            if attribute in self.frame.columns:
                agree += (self.frame[attribute].to_numpy()[found] == str(value)).astype(np.int64)
        return found[agree == agree.max()]


def _length(images: ImageSource) -> int | None:
    try:
        return len(images)  # type: ignore[arg-type]
    except TypeError:
        return None


def _natural(value: str) -> tuple[int, float | str]:
    """Numbers in numeric order before words in alphabetical order."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
