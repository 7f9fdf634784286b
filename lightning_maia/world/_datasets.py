"""Datasets of the procedural world, rendered on the fly, with ground truth for every item.

Every dataset here is a map-style torch ``Dataset`` whose item ``i`` is ``(image, label)``: a
float32 ``(3, H, W)`` image in [0, 1] and an int class label. Item ``i`` depends only on
``(seed, split, i)`` -- its scene is drawn from ``np.random.default_rng([seed, split_offset, i])``
-- so two instances with the same arguments agree item by item, in any order, in any process.

Each rendered item is registered in the dataset's provenance store (``store=``, by default
:data:`~lightning_maia.world.provenance.PROVENANCE`) with an origin such as
``"ShapesWorld[seed=0,split=train][17]"``, so tools and synthetic neurons can read the scene
behind an image. Registration happens in the process that renders; for DataLoader workers every
item also has a worker-safe :meth:`~ProceduralDataset.sample_id` from which the main process
re-derives its scene (:meth:`~lightning_maia.world.provenance.ProvenanceStore.admit`). The
exemplar pass admits what it reads, so ``num_workers > 0`` works there; ``sample_ids=True`` makes
items ``(image, label, sample_id)`` for loops of your own. A ``transform`` makes a new image
without a scene (see :mod:`lightning_maia.world.provenance`): give a model's normalisation as
``Subject(preprocess=...)`` instead.

``metadata`` gives one row per item, computed from scenes without rendering.

**Why one file.** The shared dataset machinery (:class:`ProceduralDataset`: seeds, rendering,
provenance, sample ids, metadata) and the two datasets built directly on it; ``BiasedShapes`` is
in :mod:`lightning_maia.world._subgroups`.

>>> data = ShapesWorld(size=8, seed=0)
>>> image, label = data[3]
>>> tuple(image.shape), image.dtype, data.class_names[label] == data.scene(3).objects[0].shape
((3, 64, 64), torch.float32, True)
>>> list(data.metadata.columns[:4])
['index', 'split', 'label', 'class_name']
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import (
    ATTRIBUTES,
    Background,
    Scene,
    SceneSampler,
    Weights,
)
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    NAMED_BACKGROUNDS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)
from lightning_maia.world.provenance import (
    ID_SEPARATOR,
    TRANSFORMED,
    ImageFacts,
    ProvenanceStore,
    image_key,
    resolve_store,
)

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack

#: The second entry of every item's seed sequence, so splits never share an item.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "holdout": 3}

#: Attributes of a dataset that do not change its scenes, left out of its source id.
_NOT_SCENE_CONFIG = frozenset({"transform", "store", "sample_ids", "_metadata", "_source_id"})

#: ``len()`` of an unbounded :class:`ShapesWorld` (``size=None``); the largest int32 index.
UNBOUNDED_SIZE = 2**31 - 1

Transform = Callable[[torch.Tensor], torch.Tensor]


class ItemOptions(TypedDict, total=False):
    """The keyword options every procedural dataset takes besides the settings of its scenes
    (one definition for :class:`ShapesWorld`, :class:`SpuriousShapes` and ``BiasedShapes``)."""

    #: Applied to each rendered image; a changed image is a new one, without a scene.
    transform: Transform | None
    #: Where rendered items are registered and sample ids resolve (None: the process default).
    store: ProvenanceStore | None
    #: Items are ``(image, label, sample_id)`` when True, ``(image, label)`` otherwise.
    sample_ids: bool


_ITEM_OPTIONS = frozenset(ItemOptions.__annotations__)

_VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": OBJECT_TEXTURES,
    "size": tuple(SIZES),
    "background": BACKGROUND_TEXTURES,
    "background_colour": tuple(COLOURS),
}


def attribute_value(scene: Scene, attribute: str) -> str:
    """The value of ``attribute`` in ``scene``: of its first (main) object, or of its background.

    >>> attribute_value(Scene(background=Background("grass")), "background_colour")
    'green'
    """
    if attribute == "background":
        return scene.background.texture
    if attribute == "background_colour":
        return scene.background.colour
    if not scene.objects:
        raise bad_option("scene", "a scene with at least one object", scene)
    return str(getattr(scene.objects[0], attribute))


def sample_scene(
    rng: np.random.Generator,
    shape: str,
    background: str,
    *,
    colours: Sequence[str] | None = None,
    textures: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
) -> Scene:
    """One object of ``shape`` on ``background``, other attributes uniform over what is allowed.

    The object never takes its background's colour, so it always stands out (unless the allowed
    colours leave no other choice).

    >>> scene = sample_scene(np.random.default_rng(0), "star", "snow", colours=["white", "red"])
    >>> scene.objects[0].colour, scene.background.colour
    ('red', 'white')
    """
    allowed = list(colours) if colours is not None else list(COLOURS)
    if background in NAMED_BACKGROUNDS:
        visible = [c for c in allowed if c != NAMED_BACKGROUNDS[background]]
        allowed = visible or allowed
    sampler = SceneSampler(shapes=[shape], colours=allowed, textures=textures, sizes=sizes)
    obj = sampler.sample_object(rng)
    if background in NAMED_BACKGROUNDS:
        backdrop = Background(background)
    else:
        others = [c for c in COLOURS if c != obj.colour]
        backdrop = Background(background, others[int(rng.integers(len(others)))])
    return Scene((obj,), backdrop, seed=int(rng.integers(0, 2**31 - 1)))


class ProceduralDataset(Dataset[Any]):
    """Shared machinery: deterministic scenes per index, rendering, provenance and metadata.

    Subclasses implement :meth:`_draw` (scene and label of one item from its generator) and may
    add metadata columns in :meth:`_extra_columns`. Their scene-defining settings are plain
    attributes (their ``repr`` goes into :attr:`source_id`), set in ``__init__``.
    """

    class_names: list[str]

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        split: str,
        image_size: int,
        **options: Unpack[ItemOptions],
    ) -> None:
        unknown = sorted(set(options) - _ITEM_OPTIONS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        if split not in SPLIT_OFFSETS:
            raise bad_option("split", ", ".join(SPLIT_OFFSETS), split)
        if not isinstance(size, int) or size < 1:
            raise bad_option("size", "a positive int", size)
        if not isinstance(seed, int) or seed < 0:
            raise bad_option("seed", "a non-negative int", seed)
        if not isinstance(image_size, int) or image_size < 8:
            raise bad_option("image_size", "an int >= 8", image_size)
        self.size = size
        self.seed = seed
        self.split = split
        self.image_size = image_size
        self.transform = options.get("transform")
        #: Where rendered items are registered, and where their sample ids resolve.
        self.store = resolve_store(options.get("store"))
        #: Items are ``(image, label, sample_id)`` when True, ``(image, label)`` otherwise.
        self.sample_ids = bool(options.get("sample_ids", False))
        self._metadata: pd.DataFrame | None = None
        self._source_id: str | None = None
        self.store.add_source(self)

    def __len__(self) -> int:
        return self.size

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        return index

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_OFFSETS[self.split], index])

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Scene, int]:
        raise NotImplementedError

    def _extra_columns(self, index: int, scene: Scene, label: int) -> dict[str, Any]:
        return {}

    def item_scene_and_label(self, index: int) -> tuple[Scene, int]:
        """The ground truth of item ``index``, without rendering it."""
        index = self._check_index(index)
        return self._draw(index, self._rng(index))

    def scene(self, index: int) -> Scene:
        """The scene of item ``index``."""
        return self.item_scene_and_label(index)[0]

    def origin(self, index: int) -> str:
        """The provenance origin of item ``index``, e.g. ``ShapesWorld[seed=0,split=train][17]``."""
        return f"{type(self).__name__}[seed={self.seed},split={self.split}][{index}]"

    @property
    def source_id(self) -> str:
        """The dataset part of every sample id: class, seed and split, and a hash of the settings
        that define its scenes (equal in every process that builds the same dataset).

        >>> ShapesWorld(size=4, seed=1).source_id.startswith("ShapesWorld[seed=1,split=train]@")
        True
        """
        if self._source_id is None:
            settings = sorted(
                (name, repr(value))
                for name, value in vars(self).items()
                if name not in _NOT_SCENE_CONFIG
            )
            digest = hashlib.blake2b(repr(settings).encode(), digest_size=6).hexdigest()
            self._source_id = f"{type(self).__name__}[seed={self.seed},split={self.split}]@{digest}"
        return self._source_id

    def sample_id(self, index: int) -> str:
        """The worker-safe id of item ``index``: ``<source_id>#<index>``; the main process
        re-derives the item's scene from it (:meth:`ProvenanceStore.admit`)."""
        return f"{self.source_id}{ID_SEPARATOR}{self._check_index(index)}"

    def facts_of(self, index: int) -> ImageFacts:
        """What the store knows about item ``index`` as served: its scene and origin, or (with a
        ``transform``) its origin alone, since a transformed image is not the scene's rendering."""
        index = self._check_index(index)
        if self.transform is not None:
            return ImageFacts(None, self.origin(index) + TRANSFORMED)
        return ImageFacts(self.scene(index), self.origin(index))

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        index = self._check_index(index)
        scene, label = self._draw(index, self._rng(index))
        rendering = render_scene(scene, self.image_size)
        key = self.store.register(rendering.image, scene, self.origin(index))
        image = rendering.float_image().to(torch.float32)
        if self.transform is not None:
            image = self.transform(image)
            # A transform that changed the pixels made a new image: known by origin, no scene.
            if _is_image(image) and image_key(image) != key:
                self.store.register(image, None, self.origin(index) + TRANSFORMED)
        if self.sample_ids:
            return image, label, self.sample_id(index)
        return image, label

    @property
    def metadata(self) -> pd.DataFrame:
        """One row per item: index, split, label, class name, main object, background, extras."""
        if self._metadata is None:
            rows = []
            for index in range(self.size):
                scene, label = self._draw(index, self._rng(index))
                obj = scene.objects[0]
                rows.append(
                    {
                        "index": index,
                        "split": self.split,
                        "label": label,
                        "class_name": self.class_names[label],
                        "shape": obj.shape,
                        "colour": obj.colour,
                        "texture": obj.texture,
                        "size": obj.size,
                        "x": obj.x,
                        "y": obj.y,
                        "rotation": obj.rotation,
                        "n_objects": len(scene.objects),
                        "background": scene.background.texture,
                        "background_colour": scene.background.colour,
                        **self._extra_columns(index, scene, label),
                    }
                )
            self._metadata = pd.DataFrame(rows)
        return self._metadata.copy()

    def __getstate__(self) -> dict[str, Any]:
        return dict(vars(self))

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.store.add_source(self)  # a copy in another process resolves its own ids there

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, seed={self.seed}, split={self.split!r})"


def _is_image(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[0] == 3


def _allowed_values(attribute: str, weights: Weights) -> list[str]:
    """The values a sampler can draw for ``attribute``, in vocabulary order."""
    vocabulary = _VOCABULARY[attribute]
    if weights is None:
        return list(vocabulary)
    if isinstance(weights, Mapping):
        chosen = {value for value, weight in weights.items() if weight > 0}
    else:
        chosen = set(weights)
    return [value for value in vocabulary if value in chosen]


_SAMPLER_FIELD = {
    "shape": "shapes",
    "colour": "colours",
    "texture": "textures",
    "size": "sizes",
    "background": "backgrounds",
    "background_colour": "background_colours",
}


class ShapesWorld(ProceduralDataset):
    """Random scenes from a :class:`SceneSampler`, labelled by one attribute of the main object.

    ``label`` picks the class attribute (shape, colour, texture, size, background or
    background_colour); ``class_names`` lists the values the sampler can draw, in vocabulary
    order. With several objects per scene, the first object is the main one.

    ``size=None`` makes the dataset unbounded: it stays map-style (every index has its item, so
    determinism per index holds) with ``len() == UNBOUNDED_SIZE``. Read it sequentially or with
    ``RandomSampler(data, replacement=True, num_samples=n)``: items are already random, and a
    shuffling sampler would build a permutation of 2**31 indices. It has no ``metadata``.

    >>> data = ShapesWorld(size=None, seed=1, label="background")
    >>> image, label = data[10**9]
    >>> len(data) == UNBOUNDED_SIZE, data.class_names[label] == data.scene(10**9).background.texture
    (True, True)
    """

    def __init__(
        self,
        size: int | None = 2000,
        seed: int = 0,
        image_size: int = 64,
        sampler: SceneSampler | None = None,
        label: str = "shape",
        *,
        split: str = "train",
        **options: Unpack[ItemOptions],
    ) -> None:
        length = UNBOUNDED_SIZE if size is None else size
        super().__init__(length, seed=seed, split=split, image_size=image_size, **options)
        if label not in ATTRIBUTES:
            raise bad_option("label", ", ".join(ATTRIBUTES), label)
        self.unbounded = size is None
        self.sampler = sampler if sampler is not None else SceneSampler()
        self.label = label
        self.class_names = _allowed_values(label, getattr(self.sampler, _SAMPLER_FIELD[label]))
        self._label_of = {name: i for i, name in enumerate(self.class_names)}

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Scene, int]:
        scene = self.sampler.sample(rng)
        return scene, self._label_of[attribute_value(scene, self.label)]

    @property
    def metadata(self) -> pd.DataFrame:
        if self.unbounded:
            raise ConfigurationError(
                "an unbounded ShapesWorld (size=None) has no metadata; give it a finite size"
            )
        return super().metadata


class SpuriousShapes(ProceduralDataset):
    """Shapes whose background is a spurious cue in train and independent of class elsewhere.

    The class is the shape; class ``i`` is paired with ``backgrounds[i]``. In ``train`` an item
    of class ``i`` lies on its own background with probability ``p`` and on one of the other
    backgrounds, uniformly, otherwise. In ``val`` and ``holdout`` class and background are
    independent and uniform; ``test`` is exactly balanced by construction: item ``i`` belongs to
    group ``i % n_groups``, so every (class, background) group has ``size // n_groups`` or one
    more items. Colour, texture, size, position and rotation are uniform (the object never takes
    its background's colour).

    ``group = class_index * len(backgrounds) + background_index``; ``group_names[g]`` reads
    e.g. ``"circle on snow"``. This balanced ``test`` split is the one MAIA's Spawrious
    experiment uses.

    >>> test = SpuriousShapes("test", size=32)
    >>> test.metadata.groupby("group").size().tolist() == [2] * 16
    True
    """

    spurious_attribute = "background"

    def __init__(
        self,
        split: str = "train",
        size: int = 2000,
        p: float = 0.95,
        classes: Sequence[str] = ("circle", "square", "triangle", "star"),
        backgrounds: Sequence[str] = ("snow", "grass", "sand", "water"),
        seed: int = 0,
        image_size: int = 64,
        **options: Unpack[ItemOptions],
    ) -> None:
        super().__init__(size, seed=seed, split=split, image_size=image_size, **options)
        if not 0.0 <= p <= 1.0:
            raise bad_option("p", "a probability in [0, 1]", p)
        check_values("classes", classes, SHAPES, minimum=2)
        check_values("backgrounds", backgrounds, BACKGROUND_TEXTURES, minimum=2)
        if len(backgrounds) < len(classes):
            raise bad_option(
                "backgrounds", f"at least one per class ({len(classes)})", tuple(backgrounds)
            )
        self.p = float(p)
        self.class_names = list(classes)
        self.backgrounds = list(backgrounds)
        self.group_names = [f"{c} on {b}" for c in self.class_names for b in self.backgrounds]

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def group(self, index: int) -> int:
        """The (class, background) group of item ``index``."""
        scene, label = self.item_scene_and_label(index)
        return label * len(self.backgrounds) + self.backgrounds.index(scene.background.texture)

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Scene, int]:
        n_classes, n_backgrounds = len(self.class_names), len(self.backgrounds)
        if self.split == "test":
            label, background = divmod(index % self.n_groups, n_backgrounds)
        elif self.split == "train":
            label = int(rng.integers(n_classes))
            if rng.random() < self.p:
                background = label
            else:
                background = int(rng.integers(n_backgrounds - 1))
                background += background >= label  # skip the class's own background
        else:
            label, background = int(rng.integers(n_classes)), int(rng.integers(n_backgrounds))
        scene = sample_scene(rng, self.class_names[label], self.backgrounds[background])
        return scene, label

    def _extra_columns(self, index: int, scene: Scene, label: int) -> dict[str, Any]:
        background = self.backgrounds.index(scene.background.texture)
        group = label * len(self.backgrounds) + background
        return {
            "group": group,
            "group_name": self.group_names[group],
            "spurious_match": background == label,
        }


def check_values(
    name: str, values: Sequence[str], allowed: Sequence[str], *, minimum: int = 1
) -> None:
    """Values must come from ``allowed``, be distinct, and number at least ``minimum``."""
    if (
        isinstance(values, str)
        or len(values) < minimum
        or len(set(values)) != len(values)
        or any(v not in allowed for v in values)
    ):
        raise bad_option(
            name, f"at least {minimum} distinct values from {', '.join(allowed)}", values
        )
