"""Synthetic neurons with ground truth: single-concept, OR and AND units over exact masks.

MAIA's paper scored unit descriptions on synthetic neurons built from segmentation masks; here
the masks are exact. A neuron reads the scene behind each image from its provenance store
(``store=``, by default :data:`~lightning_maia.world.provenance.PROVENANCE`), renders it once at
the image's resolution and answers with an activation map at ``stride`` (64 px -> 16 x 16 at
stride 4). Images that come from DataLoader workers are found once their sample ids are
admitted: the exemplar pass does so itself; a loop of your own passes ``forward(images,
sample_ids)`` (datasets with ``sample_ids=True`` carry them).

**Response function.** For an image whose scene has visible object masks ``O_k`` and
background mask ``B`` (disjoint, covering the image), let ``P_k`` and ``P_B`` be their
coverage per cell (area-average pooling with kernel = stride = ``stride``, in [0, 1]). Each
instance has a strength that grows with how much of it is visible::

    s_k = 0.75 + 0.25 * min(1, |O_k| / (pi * (0.46 * H / 2) ** 2))   # vs a large object's disc
    s_B = 0.75 + 0.25 * |B| / (H * W)

``match_k`` / ``match_B`` (0 or 1) say whether the neuron's ground truth holds for object ``k``
/ for the background (see :class:`NeuronSpec`). The activation of neuron ``n`` at cell ``c`` is::

    a_n(c) = g_n * (sum_k match_k s_k P_k(c) + match_B s_B P_B(c)
                    + d_n * sum_k (1 - match_k) P_k(c))
             + noise_std * e_n(image, c)

with gain ``g_n ~ U[0.7, 1.3]``, off-concept gain ``d_n ~ U[0.02, 0.07]`` (a weak response to
any other object, below 10% of the on-concept peak) both drawn from ``(seed, spec.name)``, and
``e_n`` a standard normal drawn from a hash of the image's pixels, the neuron and the cell, so
repeated calls, batches and processes agree. With the default ``noise_std = 0.02`` a neuron
peaks near ``g_n`` (0.5 to 1.3) where its concept is, and stays under about 0.16 elsewhere.

**Why one file.** One model in one file: the response function above, the spec it reads, the
noise it hashes and the layer that computes it; the suites that build neurons are in
:mod:`lightning_maia.world._neuron_suite`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import ATTRIBUTES, Concept, Scene
from lightning_maia.world._vocabulary import NAMED_BACKGROUNDS, SIZES
from lightning_maia.world.provenance import TRANSFORMED, ProvenanceStore, image_key, resolve_store

KINDS: tuple[str, ...] = ("mono", "or", "and")
#: Kinds outside the scientist's single / or / and grammar (the hard suite): NOT one object
#: concept, OR of three concepts, objects in the left half, the larger objects of a scene.
HARD_KINDS: tuple[str, ...] = ("not", "or3", "position", "relative_size")
#: How many concepts each kind takes.
CONCEPT_COUNTS: dict[str, int] = {
    "mono": 1,
    "or": 2,
    "and": 2,
    "not": 1,
    "or3": 3,
    "position": 0,
    "relative_size": 0,
}


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def _object_phrase(concepts: Sequence[Concept]) -> str:
    """E.g. ``large red striped stars``; without a shape, ``... objects``."""
    values = {c.attribute: c.value for c in concepts}
    words = [values[a] for a in ("size", "colour", "texture") if a in values]
    words.append(_plural(values["shape"]) if "shape" in values else "objects")
    return " ".join(words)


def _background_phrase(concepts: Sequence[Concept]) -> str:
    """E.g. ``grass background``, ``red background``, ``red stripes background``."""
    values = {c.attribute: c.value for c in concepts}
    words = [values[a] for a in ("background_colour", "background") if a in values]
    return " ".join([*words, "background"])


def _phrase(concepts: Sequence[Concept]) -> str:
    objects = [c for c in concepts if not c.is_background]
    backgrounds = [c for c in concepts if c.is_background]
    if objects and backgrounds:
        return f"{_object_phrase(objects)} on a {_background_phrase(backgrounds)}"
    return _object_phrase(objects) if objects else _background_phrase(backgrounds)


@dataclass(frozen=True)
class NeuronSpec:
    """The ground truth of one synthetic neuron.

    - ``mono``: fires on the pixels of its one concept (the objects that have it, or the
      background when the background has it).
    - ``or``: fires on the pixels of either concept.
    - ``and``: fires only where both hold: on objects having both object concepts; on objects
      having the object concept when the background has the background concept; on the
      background when it has both background concepts. Never for one concept alone.

    Outside the scientist's grammar (:data:`HARD_KINDS`):

    - ``not``: fires on objects that lack its one object concept;
    - ``or3``: fires on the pixels of any of three concepts;
    - ``position``: fires on objects whose centre lies in the left half (no concepts);
    - ``relative_size``: fires on the largest objects of a scene whose objects differ in size
      (no concepts).

    Concepts are kept in a canonical order, so ``or(a, b) == or(b, a)``. ``variant`` tells apart
    several neurons with one ground truth (they differ in gain and noise).

    >>> spec = NeuronSpec("and", (Concept("shape", "star"), Concept("background", "grass")))
    >>> spec.description, spec.name
    ('stars on a grass background', 'and:shape=star&background=grass')
    >>> NeuronSpec("or", (Concept.parse("shape=star"), Concept.parse("colour=red"))).description
    'stars OR red objects'
    """

    #: mono, or, and, or one of HARD_KINDS.
    kind: str
    #: One concept for mono and not, two for or / and, three for or3, none for position and
    #: relative_size.
    concepts: tuple[Concept, ...]
    #: Ground truth in words; derived from the concepts when left empty.
    description: str = ""
    #: Tells apart neurons with the same kind and concepts.
    variant: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CONCEPT_COUNTS:
            raise bad_option("kind", ", ".join(CONCEPT_COUNTS), self.kind)
        concepts = tuple(self.concepts)
        if any(not isinstance(c, Concept) for c in concepts):
            raise bad_option("concepts", "Concept objects", concepts)
        wanted = CONCEPT_COUNTS[self.kind]
        if len(concepts) != wanted or len(set(concepts)) != wanted:
            raise bad_option("concepts", f"{wanted} distinct concept(s) for {self.kind}", concepts)
        _check_not_degenerate(self.kind, concepts)
        if self.kind == "not" and concepts[0].is_background:
            raise bad_option("concepts", "an object concept for not", concepts)
        concepts = tuple(sorted(concepts, key=lambda c: (ATTRIBUTES.index(c.attribute), c.value)))
        object.__setattr__(self, "concepts", concepts)
        if not self.description:
            if self.kind in ("or", "or3"):
                text = " OR ".join(_phrase([c]) for c in concepts)
            elif self.kind == "not":
                text = f"objects that are not {_phrase(concepts)}"
            elif self.kind == "position":
                text = "objects in the left half of the image"
            elif self.kind == "relative_size":
                text = "the largest objects of a scene whose objects differ in size"
            else:
                text = _phrase(concepts)
            object.__setattr__(self, "description", text)

    @property
    def concept_set(self) -> frozenset[Concept]:
        return frozenset(self.concepts)

    @property
    def name(self) -> str:
        """E.g. ``mono:shape=star``, ``or:shape=star|colour=red``, ``and:shape=star&colour=red``.

        A ``#variant`` suffix follows when ``variant`` is not 0.
        """
        joiner = {"and": "&"}.get(self.kind, "|")
        body = {"position": "left", "relative_size": "largest"}.get(self.kind)
        suffix = f"#{self.variant}" if self.variant else ""
        text = body or joiner.join(str(c) for c in self.concepts)
        return f"{self.kind}:{text}{suffix}"

    def matches(self, scene: Scene) -> tuple[list[bool], bool]:
        """Whether the ground truth holds for each object of ``scene``, and for its background."""
        background = scene.background
        objects = scene.objects
        if self.kind == "not":
            return [not obj.has(self.concepts[0]) for obj in objects], False
        if self.kind == "position":
            return [obj.x < 0.5 for obj in objects], False
        if self.kind == "relative_size":
            sizes = [SIZES[obj.size] for obj in objects]
            if len(set(sizes)) < 2:
                return [False] * len(objects), False
            return [size == max(sizes) for size in sizes], False
        if self.kind == "and":
            on_objects = [c for c in self.concepts if not c.is_background]
            context = all(background.has(c) for c in self.concepts if c.is_background)
            if not on_objects:
                return [False] * len(scene.objects), context
            hits = [context and all(obj.has(c) for c in on_objects) for obj in scene.objects]
            return hits, False
        hits = [any(obj.has(c) for c in self.concepts) for obj in scene.objects]
        return hits, any(background.has(c) for c in self.concepts)


def _check_not_degenerate(kind: str, concepts: tuple[Concept, ...]) -> None:
    """Reject pairs that never fire together or that reduce to one concept."""
    if len(concepts) != 2:
        return
    first, second = concepts
    if kind == "and" and first.attribute == second.attribute:
        raise bad_option("concepts", "an AND of two different attributes", concepts)
    named = next(
        (c for c in concepts if c.attribute == "background" and c.value in NAMED_BACKGROUNDS), None
    )
    colour = next((c for c in concepts if c.attribute == "background_colour"), None)
    # A named background fixes its colour: AND is mono or never, OR is mono on the colour.
    if (
        named is not None
        and colour is not None
        and (kind == "and" or NAMED_BACKGROUNDS[named.value] == colour.value)
    ):
        raise bad_option(
            "concepts", "no AND of a named background and a colour, nor OR with its own", concepts
        )


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash, element-wise (wrapping arithmetic on uint64)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _normal_noise(neuron_keys: np.ndarray, image_hash: int, cells: int) -> np.ndarray:
    """Standard normals (C, cells), a pure function of (neuron key, image hash, cell)."""
    with np.errstate(over="ignore"):
        base = _splitmix64(neuron_keys ^ np.uint64(image_hash))[:, None]
        counters = np.arange(2 * cells, dtype=np.uint64)[None, :]
        bits = _splitmix64(base + counters)
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
    u1, u2 = uniform[:, :cells], uniform[:, cells:]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class _Instances:
    """A scene rendered at one resolution, pooled per instance: objects first, background last."""

    pooled: torch.Tensor  # (K + 1, h * w)
    strengths: torch.Tensor  # (K + 1,)
    on: torch.Tensor  # (C, K + 1): 1 where the neuron's ground truth holds for the instance
    height: int
    width: int


class SyntheticNeuronLayer(nn.Module):
    """Many synthetic neurons computed at once; ``forward`` gives ``(N, C, h, w)`` maps.

    ``seed`` draws each neuron's gain and off-concept gain from ``(seed, spec.name)``. Images
    must come from the procedural world (registered in ``store``); renderings are cached in
    an LRU of ``cache_size`` scenes. Gains are frozen parameters, so ``.to(device)`` and
    ``next(module.parameters())`` work as on any layer.

    >>> from lightning_maia.world.provenance import render_and_register
    >>> from lightning_maia.world._scene import Background, Scene, SceneObject
    >>> layer = SyntheticNeuronLayer([NeuronSpec("mono", (Concept("shape", "star"),))])
    >>> star = Scene((SceneObject("star", "red", size="large"),), Background("grass"))
    >>> image = render_and_register(star, 64).float_image()[None]
    >>> maps = layer(image)
    >>> tuple(maps.shape), bool(maps.max() > 0.5), bool(maps[0, 0, 0, 0].abs() < 0.1)
    ((1, 1, 16, 16), True, True)
    """

    def __init__(
        self,
        specs: Sequence[NeuronSpec],
        seed: int = 0,
        stride: int = 4,
        noise_std: float = 0.02,
        cache_size: int = 512,
        store: ProvenanceStore | None = None,
    ) -> None:
        super().__init__()
        specs = list(specs)
        if not specs or any(not isinstance(s, NeuronSpec) for s in specs):
            raise bad_option("specs", "a non-empty sequence of NeuronSpec", specs)
        if not isinstance(stride, int) or stride < 1:
            raise bad_option("stride", "a positive int", stride)
        if not noise_std >= 0:
            raise bad_option("noise_std", "a non-negative float", noise_std)
        if not isinstance(cache_size, int) or cache_size < 1:
            raise bad_option("cache_size", "a positive int", cache_size)
        self.specs = specs
        self.seed = seed
        self.stride = stride
        self.noise_std = float(noise_std)
        self.cache_size = cache_size
        self.store = resolve_store(store)
        keys = [_hash64(f"{seed}:{spec.name}") for spec in specs]
        tuning = np.array([np.random.default_rng(key).uniform(size=2) for key in keys])
        gain = torch.tensor(0.7 + 0.6 * tuning[:, 0], dtype=torch.float32)
        off_gain = torch.tensor(0.02 + 0.05 * tuning[:, 1], dtype=torch.float32)
        self.gain = nn.Parameter(gain, requires_grad=False)
        self.off_gain = nn.Parameter(off_gain, requires_grad=False)
        self._noise_keys = np.array(keys, dtype=np.uint64)
        self._cache: OrderedDict[tuple[Scene, int, int], _Instances] = OrderedDict()

    @property
    def out_channels(self) -> int:
        return len(self.specs)

    def _instances(self, scene: Scene, height: int, width: int) -> _Instances:
        key = (scene, height, width)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        rendering = render_scene(scene, (height, width))
        masks = torch.stack([*rendering.object_masks, rendering.background_mask]).float()
        pooled = F.avg_pool2d(masks[None], self.stride, self.stride, ceil_mode=True)[0]
        areas = masks.flatten(1).sum(1)
        large_disc = math.pi * (SIZES["large"] * height / 2) ** 2
        strengths = 0.75 + 0.25 * (areas / large_disc).clamp(max=1.0)
        strengths[-1] = 0.75 + 0.25 * areas[-1] / (height * width)
        rows = [spec.matches(scene) for spec in self.specs]
        on = torch.tensor([[*hits, background] for hits, background in rows], dtype=torch.float64)
        found = _Instances(
            pooled.flatten(1).double(), strengths.double(), on, pooled.shape[1], pooled.shape[2]
        )
        self._cache[key] = found
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return found

    def _image_maps(self, image: torch.Tensor) -> torch.Tensor:
        facts = self.store.facts(image)
        if facts is not None and facts.scene is None:
            raise ConfigurationError(
                "synthetic neurons only answer renderings of procedural scenes, and this image "
                f"({facts.origin or 'registered without a scene'}) is not one"
                + (
                    ": a dataset transform makes a new image; read the dataset without "
                    "`transform`, so that the neurons see the rendering"
                    if facts.origin.endswith(TRANSFORMED)
                    else ""
                )
            )
        if facts is None or facts.scene is None:
            raise ConfigurationError(
                "synthetic neurons only answer images from the procedural world, and this image "
                "is not in their provenance store: render it with the world's renderer, tools "
                "or datasets (with the store the neurons were given); for images from "
                "DataLoader workers (num_workers>0), admit their sample ids first: build the "
                "dataset with sample_ids=True and call neurons(images, sample_ids) or "
                "store.admit(images, sample_ids) (compute_exemplars does this itself)"
            )
        scene = facts.scene
        instances = self._instances(scene, int(image.shape[1]), int(image.shape[2]))
        on = instances.on
        off = 1.0 - on
        off[:, -1] = 0.0  # the off-concept response is to other objects, not the background
        weights = on * instances.strengths + off * self.off_gain.detach().double().cpu()[:, None]
        maps = self.gain.detach().double().cpu()[:, None] * (weights @ instances.pooled)
        if self.noise_std > 0:
            cells = instances.height * instances.width
            image_hash = int(image_key(image)[:16], 16)
            noise = _normal_noise(self._noise_keys, image_hash, cells)
            maps = maps + self.noise_std * torch.from_numpy(noise)
        return maps.view(len(self.specs), instances.height, instances.width)

    def forward(
        self, images: torch.Tensor, sample_ids: Sequence[str] | None = None
    ) -> torch.Tensor:
        """``(N, C, h, w)`` maps of ``images``; ``sample_ids`` (one per image, from a dataset
        with ``sample_ids=True``) are admitted into the store first, for images rendered in
        DataLoader workers."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise bad_option("images", "a float (N, 3, H, W) batch in [0, 1]", tuple(images.shape))
        if sample_ids is not None:
            self.store.admit(images.detach(), sample_ids)
        maps = [self._image_maps(image) for image in images.detach()]
        dtype = images.dtype if images.is_floating_point() else torch.float32
        return torch.stack(maps).to(device=images.device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"neurons={len(self.specs)}, seed={self.seed}, stride={self.stride}"


class SyntheticNeuron(SyntheticNeuronLayer):
    """One synthetic neuron: a layer of one channel, tuned exactly as in a larger layer.

    >>> SyntheticNeuron(NeuronSpec("mono", (Concept.parse("colour=red"),))).spec.description
    'red objects'
    """

    def __init__(
        self,
        spec: NeuronSpec,
        seed: int = 0,
        stride: int = 4,
        noise_std: float = 0.02,
        cache_size: int = 512,
        store: ProvenanceStore | None = None,
    ) -> None:
        super().__init__([spec], seed, stride, noise_std, cache_size, store)

    @property
    def spec(self) -> NeuronSpec:
        return self.specs[0]


class SyntheticNeuronModel(nn.Module):
    """A model whose child ``neurons`` holds the synthetic neurons, so ``"neurons:0-9"`` names them.

    ``specs[i]`` is the ground truth of channel ``i``; ``forward`` returns the maps.

    >>> model = SyntheticNeuronModel([NeuronSpec("mono", (Concept.parse("shape=star"),))])
    >>> model.specs[0].name, type(model.neurons).__name__
    ('mono:shape=star', 'SyntheticNeuronLayer')
    """

    def __init__(
        self,
        specs: Sequence[NeuronSpec],
        seed: int = 0,
        stride: int = 4,
        noise_std: float = 0.02,
        cache_size: int = 512,
        store: ProvenanceStore | None = None,
    ) -> None:
        super().__init__()
        self.neurons = SyntheticNeuronLayer(specs, seed, stride, noise_std, cache_size, store)

    @property
    def specs(self) -> list[NeuronSpec]:
        return self.neurons.specs

    def forward(
        self, images: torch.Tensor, sample_ids: Sequence[str] | None = None
    ) -> torch.Tensor:
        return self.neurons(images, sample_ids)
