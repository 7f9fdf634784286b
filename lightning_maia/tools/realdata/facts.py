"""What is known about real images the tools made: their attributes and the edit behind them.

Real images carry no procedural scene, so the real-data backends register what they know in a
process-wide, bounded registry keyed by the image's content (the key of
:func:`~lightning_maia.world.provenance.image_key`): the attribute values a retrieved image has
(its metadata row), and for an edited image an :class:`EditRecord` saying exactly what changed.
Describers read the attributes back; the remover's erasure reads the edit records.

>>> import torch
>>> registry = FactsRegistry()
>>> before, after = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
>>> record = EditRecord(before, after, "recolour", "colour", "red", "blue")
>>> _ = registry.register(after, {"colour": "blue"}, edit=record)
>>> registry.lookup(after).edit.changed, registry.lookup(before)
('colour: red -> blue', None)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from lightning_maia.errors import bad_option
from lightning_maia.world.provenance import image_key


@dataclass(frozen=True)
class EditRecord:
    """One edit as data: the images before and after, and exactly what changed."""

    #: Display image (3, H, W) in [0, 1] before the edit.
    before: Tensor = field(repr=False)
    #: ... and after it.
    after: Tensor = field(repr=False)
    #: The operation, e.g. ``recolour``, ``grayscale``, ``occlude``, ``retrieve``.
    operation: str
    #: The attribute the edit changed, e.g. ``colour``.
    attribute: str
    #: Its value before (``""`` when unknown) ...
    from_value: str
    #: ... and after.
    to_value: str

    @property
    def changed(self) -> str:
        """``attribute: from -> to`` in words."""
        return f"{self.attribute}: {self.from_value or '?'} -> {self.to_value}"


@dataclass(frozen=True)
class ImageFacts:
    """What the real-data backends know about one image."""

    #: Attribute -> value, e.g. ``{"digit": "3", "colour": "red"}``.
    attributes: Mapping[str, str]
    #: The dataset row the image shows (for an edit: the row of the image it was made from).
    dataset_index: int | None = None
    #: The edit that made the image, if one did.
    edit: EditRecord | None = None

    def concepts(self) -> tuple[str, ...]:
        """The attributes as sorted ``attribute=value`` concepts."""
        return tuple(sorted(f"{a}={v}" for a, v in self.attributes.items()))


class FactsRegistry:
    """A thread-safe, least-recently-used map from image content to its :class:`ImageFacts`."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise bad_option("max_entries", "a positive int", max_entries)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, ImageFacts] = OrderedDict()
        self._lock = threading.Lock()

    def register(
        self,
        image: Tensor,
        attributes: Mapping[str, str],
        *,
        dataset_index: int | None = None,
        edit: EditRecord | None = None,
    ) -> ImageFacts:
        facts = ImageFacts(dict(attributes), dataset_index, edit)
        key = image_key(image)
        with self._lock:
            self._entries[key] = facts
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return facts

    def lookup(self, image: Tensor) -> ImageFacts | None:
        """The facts of ``image``, or None when it was never registered (or evicted)."""
        key = image_key(image)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The registry every real-data backend shares.
FACTS = FactsRegistry()
