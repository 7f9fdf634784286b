"""Images an agent works with, each under a stable id and with its provenance.

Ids are short and predictable (``exemplar-3``, ``gen-7``, ``edit-2``, ``mask-5``) so an agent
can pass the output of one tool into another, and a replay of the same calls gives the same ids.
An image from the procedural world carries its scene (looked up by content in the toolbox's
provenance store when not given).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from lightning_maia.errors import UnknownImageError
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.world._scene import Scene
from lightning_maia.world.provenance import ProvenanceStore, resolve_store

_PREFIX = {"exemplar": "exemplar", "text2image": "gen", "edit": "edit", "mask": "mask"}


@dataclass
class StoredImage:
    """One image and where it came from."""

    id: str
    #: Display image, float (3, H, W) in [0, 1].
    image: Tensor
    #: ``exemplar``, ``text2image``, ``edit`` or ``mask`` (an image with its highlighted region).
    source: str
    scene: Scene | None = None
    #: Bool (H, W): the region a unit highlighted, where known.
    mask: Tensor | None = None
    prompt: str | None = None
    instruction: str | None = None
    seed: int | None = None
    parent: str | None = None
    dataset_index: int | None = None
    #: The unit's activation on this image, once measured.
    activation: float | None = None

    def item(self) -> ImageItem:
        return ImageItem(self.image, self.scene, self.mask, self.dataset_index)

    def provenance(self) -> str:
        """One line on where the image came from."""
        if self.source == "exemplar":
            return f"dataset item {self.dataset_index}"
        if self.source == "text2image":
            return f"text2image {self.prompt!r} (seed {self.seed})"
        if self.source == "edit":
            return f"edit of {self.parent}: {self.instruction!r} (seed {self.seed})"
        return f"highlighted region of {self.parent}"


class ImageStore:
    """All images of one toolbox, by id; scenes not given are read from ``store`` (default: the
    default provenance store)."""

    def __init__(self, store: ProvenanceStore | None = None) -> None:
        self.store = resolve_store(store)
        self._images: dict[str, StoredImage] = {}
        self._counters: dict[str, int] = {}

    def add(self, image: Tensor, source: str, **provenance: object) -> StoredImage:
        if source not in _PREFIX:
            raise ValueError(f"unknown image source {source!r}")
        self._counters[source] = self._counters.get(source, 0) + 1
        image_id = f"{_PREFIX[source]}-{self._counters[source]}"
        stored = StoredImage(id=image_id, image=image, source=source, **provenance)  # type: ignore[arg-type]
        if stored.scene is None:
            stored.scene = self.store.lookup(image)
        self._images[image_id] = stored
        return stored

    def get(self, image_id: str) -> StoredImage:
        if image_id not in self._images:
            known = list(self._images)
            shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
            raise UnknownImageError(
                f"no image with id {image_id!r}; known ids: {shown or 'none yet'}"
            )
        return self._images[image_id]

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def __iter__(self) -> Iterator[StoredImage]:
        return iter(self._images.values())

    def __len__(self) -> int:
        return len(self._images)
