"""What is known about an image, found by its content: one store, passed to what reads it.

Images the tools, the synthetic neurons and the real-data backends handle are plain tensors. What
is known about one — the procedural scene it renders, where it came from, the attribute values
of a real image, the dataset row it shows, the edit that made it — is an :class:`ImageFacts` in a
:class:`ProvenanceStore`, keyed by a hash of the image's uint8 pixels (any copy of the pixels, a
float version in [0, 1] included, quantised with ``(x * 255).round()``, finds the same facts).

**Design.** The store is explicit: procedural datasets, the toolbox, the backends, the synthetic
neurons and the class-bias audit each take the store they write to or read from as ``store=``.
Left out, it is :data:`PROVENANCE`, the process's default store, so code that never names a
store shares one as before. Give one private store to everything that must agree on an image
(a dataset, the neurons that read its items, a toolbox and its backends); the toolbox refuses
backends bound to another store.

**DataLoader workers.** A worker renders in its own memory, so what it registers never reaches
the main process. Procedural items therefore have a worker-safe *sample id* (``dataset seed,
split and configuration + index``, see :meth:`ProceduralDataset.sample_id
<lightning_maia.world._datasets.ProceduralDataset.sample_id>`) from which the main process
re-derives the scene without rendering: :meth:`ProvenanceStore.admit` registers received images
under the facts their ids name. The exemplar pass admits every batch it reads (it knows each
item's dataset index), so ``compute_exemplars`` and the toolbox work with ``num_workers > 0``;
datasets built with ``sample_ids=True`` also carry the id in each sample, ``(image, label, id)``,
for a loop of your own (pass the ids to the synthetic neurons' ``forward`` or to ``admit``).

**Transforms.** A dataset ``transform`` makes a new image that no longer is its scene's
rendering: its facts keep the origin (``... after its transform``) but no scene, so a synthetic
neuron refuses it saying so, and a procedural tool finds no scene. For a model of your own, give
its normalisation as ``Subject(preprocess=...)`` rather than as the dataset's transform (tools
then handle the renderings); synthetic neurons answer renderings only, so read their data
without ``transform``.

>>> from lightning_maia.world import Scene
>>> store = ProvenanceStore(max_entries=2)
>>> rendering = render_and_register(Scene(seed=3), 16, origin="doctest", store=store)
>>> store.lookup(rendering.image) == rendering.scene, store.origin(rendering.float_image())
(True, 'doctest')
>>> before, after = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
>>> record = EditRecord(before, after, "recolour", "colour", "red", "blue")
>>> _ = store.register_attributes(after, {"colour": "blue"}, edit=record)
>>> store.facts(after).edit.changed, store.facts(before)
('colour: red -> blue', None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

import torch
from torch import Tensor

from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.world._render import Rendering, Size, render_scene
from lightning_maia.world._scene import Scene

#: Separates a sample id's source from its index: ``<source>#<index>``.
ID_SEPARATOR = "#"
#: Ends the origin of a dataset item that went through the dataset's ``transform``.
TRANSFORMED = " after its transform"


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
    """What is known about one image. Procedural images have a scene; real ones attributes."""

    #: The scene whose rendering has these pixels (None: not a procedural rendering).
    scene: Scene | None = None
    #: Free text naming what made the image (a dataset item, a tool call, an edit).
    origin: str = ""
    #: Attribute -> value, e.g. ``{"digit": "3", "colour": "red"}`` (None: none registered).
    attributes: Mapping[str, str] | None = None
    #: The dataset row the image shows (for an edit: the row of the image it was made from).
    dataset_index: int | None = None
    #: The edit that made the image, if one did.
    edit: EditRecord | None = None

    def concepts(self) -> tuple[str, ...]:
        """The attributes as sorted ``attribute=value`` concepts."""
        return tuple(sorted(f"{a}={v}" for a, v in (self.attributes or {}).items()))


class ProvenanceSource(Protocol):
    """A dataset whose items the main process can re-derive from a sample id, without pixels."""

    @property
    def source_id(self) -> str:
        """The part of every sample id that names this dataset (equal across processes)."""
        ...

    def facts_of(self, index: int) -> ImageFacts:
        """What is known about item ``index`` as it is served (scene, origin)."""
        ...


def is_provenance_source(value: object) -> TypeGuard[ProvenanceSource]:
    """Whether ``value`` is a :class:`ProvenanceSource` (checked on its type, so that a dataset
    still being built is not asked for its ``source_id``)."""
    kind = type(value)
    return hasattr(kind, "source_id") and callable(getattr(kind, "facts_of", None))


def image_key(image: Tensor) -> str:
    """The store key of a uint8 (3, H, W) image, or a float one in [0, 1].

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


class ProvenanceStore:
    """A thread-safe, least-recently-used map from image content to its :class:`ImageFacts`.

    Procedural writers register a scene and origin (:meth:`register`), real-data writers the
    attributes, dataset row and edit (:meth:`register_attributes`); each replaces its own part of
    an image's facts and keeps the other. Pickling the default store gives the default store of
    the receiving process; pickling another store copies its entries.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise bad_option("max_entries", "a positive int", max_entries)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, ImageFacts] = OrderedDict()
        self._lock = threading.Lock()
        self._sources: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- writing ----------------------------------------------------------------------------

    def _put(self, key: str, **fields: Any) -> ImageFacts:
        with self._lock:
            facts = dataclasses.replace(self._entries.get(key) or ImageFacts(), **fields)
            self._entries[key] = facts
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return facts

    def register(self, image: Tensor, scene: Scene | None, origin: str = "") -> str:
        """Remember that ``image`` shows ``scene`` (None: it shows no scene); returns its key."""
        key = image_key(image)
        self._put(key, scene=scene, origin=origin)
        return key

    def register_attributes(
        self,
        image: Tensor,
        attributes: Mapping[str, str],
        *,
        dataset_index: int | None = None,
        edit: EditRecord | None = None,
    ) -> ImageFacts:
        """Remember a real image's attribute values, dataset row and the edit that made it."""
        return self._put(
            image_key(image), attributes=dict(attributes), dataset_index=dataset_index, edit=edit
        )

    # -- reading ----------------------------------------------------------------------------

    def facts(self, image: Tensor) -> ImageFacts | None:
        """Everything known about ``image``, or None when it was never registered (or evicted)."""
        key = image_key(image)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        return found

    def lookup(self, image: Tensor) -> Scene | None:
        """The scene ``image`` renders, or None."""
        found = self.facts(image)
        return None if found is None else found.scene

    def origin(self, image: Tensor) -> str | None:
        found = self.facts(image)
        return None if found is None else found.origin

    def __contains__(self, image: object) -> bool:
        return isinstance(image, Tensor) and self.facts(image) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    # -- sample ids: worker-safe provenance --------------------------------------------------

    def add_source(self, source: ProvenanceSource) -> None:
        """Let :meth:`admit` resolve the sample ids of ``source`` (held weakly)."""
        if not is_provenance_source(source):
            raise bad_option("source", "a dataset with source_id and facts_of(index)", source)
        self._sources.add(source)

    def source(self, source_id: str) -> ProvenanceSource:
        """The known dataset whose sample ids start with ``source_id``."""
        for candidate in list(self._sources):
            if candidate.source_id == source_id:
                found: ProvenanceSource = candidate
                return found
        raise ConfigurationError(
            f"no dataset in this provenance store has the source id {source_id!r}: build the "
            "dataset in this process with the same arguments and this store (`store=`), or "
            "`store.add_source(dataset)`"
        )

    def admit(self, images: Tensor | Sequence[Tensor], sample_ids: Iterable[str]) -> None:
        """Register images that arrived with their sample ids (e.g. from DataLoader workers).

        An id names a dataset of this store and an item index (``<source>#<index>``); the item's
        facts are re-derived from the dataset, without rendering. An image already known with a
        scene keeps it.
        """
        ids = [str(sample_id) for sample_id in sample_ids]
        if len(ids) != len(images):
            raise bad_option("sample_ids", f"one id per image ({len(images)})", len(ids))
        sources: dict[str, ProvenanceSource] = {}
        for image, sample_id in zip(images, ids, strict=True):
            source_id, separator, index = sample_id.rpartition(ID_SEPARATOR)
            if not separator or not index.isdigit():
                raise bad_option("sample_ids", "ids of the form '<source>#<index>'", sample_id)
            if source_id not in sources:
                sources[source_id] = self.source(source_id)
            self.admit_item(image, sources[source_id], int(index))

    def admit_item(self, image: Tensor, source: ProvenanceSource, index: int) -> None:
        """Register ``image`` as item ``index`` of ``source`` (unless known with a scene)."""
        key = image_key(image)
        with self._lock:
            known = self._entries.get(key)
        if known is not None and known.scene is not None:
            return
        facts = source.facts_of(index)
        self._put(key, scene=facts.scene, origin=facts.origin)

    # -- pickling ---------------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        if self is PROVENANCE:
            return (default_store, ())
        with self._lock:
            entries = list(self._entries.items())
        return (_restored_store, (self.max_entries, entries))


def _restored_store(max_entries: int, entries: list[tuple[str, ImageFacts]]) -> ProvenanceStore:
    store = ProvenanceStore(max_entries)
    store._entries.update(entries)
    return store


#: The default store: what every part of the library uses when given no ``store``.
PROVENANCE = ProvenanceStore()


def default_store() -> ProvenanceStore:
    """:data:`PROVENANCE`, the store used where none is given."""
    return PROVENANCE


def resolve_store(store: ProvenanceStore | None) -> ProvenanceStore:
    """``store``, or the default store when None."""
    if store is None:
        return PROVENANCE
    if not isinstance(store, ProvenanceStore):
        raise bad_option("store", "a ProvenanceStore or None (the default store)", store)
    return store


def render_and_register(
    scene: Scene,
    size: Size = 64,
    origin: str = "",
    store: ProvenanceStore | None = None,
) -> Rendering:
    """Render ``scene`` and register its image (in :data:`PROVENANCE` unless told otherwise)."""
    rendering = render_scene(scene, size)
    resolve_store(store).register(rendering.image, scene, origin)
    return rendering
