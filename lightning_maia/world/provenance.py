"""Where an image came from, found by its content.

Images that the tools and the synthetic neurons handle are plain tensors; to read their ground
truth, the procedural world registers every image it makes in a process-wide, bounded registry
keyed by a hash of the image's uint8 pixels. Any copy of the pixels (a float version in [0, 1]
included, quantised with ``(x * 255).round()``) finds the same scene.

Limitation: the registry lives in one process. DataLoader worker processes register the images
they render in their own memory, where the main process cannot see them, so procedural datasets
used with synthetic neurons need ``num_workers=0`` (a neuron that misses an image raises an error
saying so).

>>> from lightning_maia.world.scene import Scene
>>> registry = ProvenanceRegistry(max_entries=2)
>>> rendering = render_and_register(Scene(seed=3), 16, origin="doctest", registry=registry)
>>> registry.lookup(rendering.image) == rendering.scene, registry.origin(rendering.float_image())
(True, 'doctest')
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lightning_maia.errors import bad_option
from lightning_maia.world.render import Rendering, Size, render_scene
from lightning_maia.world.scene import Scene


@dataclass(frozen=True)
class ProvenanceEntry:
    """What is known about one registered image."""

    #: The scene whose rendering has these pixels.
    scene: Scene
    #: Free text naming what made the image (a dataset item, a tool call, an edit).
    origin: str = ""


def image_key(image: torch.Tensor) -> str:
    """The registry key of a uint8 (3, H, W) image, or a float one in [0, 1].

    >>> image_key(torch.zeros(3, 2, 2)) == image_key(torch.zeros(3, 2, 2, dtype=torch.uint8))
    True
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise bad_option("image", "a (3, H, W) tensor", tuple(image.shape))
    if image.dtype != torch.uint8:
        image = (image.detach().float() * 255.0).round().clamp_(0, 255).to(torch.uint8)
    pixels = image.detach().cpu().contiguous().numpy()
    digest = hashlib.blake2b(digest_size=16)
    # The shape goes into the hash so that equal bytes at another size never collide.
    digest.update(repr(tuple(pixels.shape)).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class ProvenanceRegistry:
    """A thread-safe, least-recently-used map from image content to the scene that made it."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise bad_option("max_entries", "a positive int", max_entries)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, ProvenanceEntry] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, image: torch.Tensor, scene: Scene, origin: str = "") -> str:
        """Remember that ``image`` shows ``scene``; returns the image's key."""
        key = image_key(image)
        with self._lock:
            self._entries[key] = ProvenanceEntry(scene, origin)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return key

    def entry(self, image: torch.Tensor) -> ProvenanceEntry | None:
        """Scene and origin of ``image``, or None when it was never registered (or evicted)."""
        key = image_key(image)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        return found

    def lookup(self, image: torch.Tensor) -> Scene | None:
        found = self.entry(image)
        return None if found is None else found.scene

    def origin(self, image: torch.Tensor) -> str | None:
        found = self.entry(image)
        return None if found is None else found.origin

    def __contains__(self, image: object) -> bool:
        return isinstance(image, torch.Tensor) and self.entry(image) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The registry every part of the library shares.
PROVENANCE = ProvenanceRegistry()


def render_and_register(
    scene: Scene,
    size: Size = 64,
    origin: str = "",
    registry: ProvenanceRegistry | None = None,
) -> Rendering:
    """Render ``scene`` and register its image (in :data:`PROVENANCE` unless told otherwise)."""
    rendering = render_scene(scene, size)
    (PROVENANCE if registry is None else registry).register(rendering.image, scene, origin)
    return rendering
