"""A seeded suite of synthetic neurons with ground truth: the benchmark's units.

The suite has ``n_mono`` single-concept neurons, then ``n_or`` OR neurons, then ``n_and`` AND
neurons, in that channel order:

- **mono** over shapes, colours, object textures and backgrounds (33 concepts), then object
  sizes and background colours (14 more). Past those 47, concepts repeat as new *variants*
  (``NeuronSpec.variant``; own gain and noise), as a real network holds several units for one
  concept.
- **or** over two of the 33 primary concepts, alternating same-attribute pairs ("stars OR
  circles") and cross-attribute pairs ("stars OR grass background").
- **and** cycling through colour + shape ("red stars"), texture + shape ("striped stars") and
  shape + background ("stars on a grass background").

No spec repeats; different seeds draw different suites.

:func:`build_hard_suite` makes the same kinds harder and adds kinds outside the scientist's
grammar (see :func:`hard_neuron_specs`); its probe images (:func:`hard_probe_sampler`) hold
up to three objects and correlate concepts with each other, so exemplars show distractors.

>>> model = build_neuron_suite(seed=0)
>>> [sum(s.kind == kind for s in model.specs) for kind in ("mono", "or", "and")]
[50, 25, 25]
>>> len(set(model.specs)), model.neurons.out_channels
(100, 100)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    NEURONS_DISTRACTOR_RATE,
    NEURONS_DISTRACTORS,
    NEURONS_HARD_NOISE,
    NEURONS_HARD_PER_KIND_FULL,
    NEURONS_NOISE_STD,
)
from lightning_maia.world._neurons import NeuronSpec, SyntheticNeuronModel
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject, SceneSampler
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)

PRIMARY_CONCEPTS: tuple[Concept, ...] = (
    *(Concept("shape", v) for v in SHAPES),
    *(Concept("colour", v) for v in COLOURS),
    *(Concept("texture", v) for v in OBJECT_TEXTURES),
    *(Concept("background", v) for v in BACKGROUND_TEXTURES),
)
SECONDARY_CONCEPTS: tuple[Concept, ...] = (
    *(Concept("size", v) for v in SIZES),
    *(Concept("background_colour", v) for v in COLOURS),
)

_AND_PAIRS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("colour", tuple(COLOURS), "shape", SHAPES),
    ("texture", OBJECT_TEXTURES, "shape", SHAPES),
    ("shape", SHAPES, "background", BACKGROUND_TEXTURES),
)


def _mono_specs(rng: np.random.Generator, count: int) -> list[NeuronSpec]:
    primary = [PRIMARY_CONCEPTS[i] for i in rng.permutation(len(PRIMARY_CONCEPTS))]
    secondary = [SECONDARY_CONCEPTS[i] for i in rng.permutation(len(SECONDARY_CONCEPTS))]
    ordered = primary + secondary
    return [
        NeuronSpec("mono", (ordered[i % len(ordered)],), variant=i // len(ordered))
        for i in range(count)
    ]


def _or_specs(rng: np.random.Generator, count: int) -> list[NeuronSpec]:
    pairs = list(itertools.combinations(PRIMARY_CONCEPTS, 2))
    same = [p for p in pairs if p[0].attribute == p[1].attribute]
    cross = [p for p in pairs if p[0].attribute != p[1].attribute]
    same = [same[i] for i in rng.permutation(len(same))]
    cross = [cross[i] for i in rng.permutation(len(cross))]
    # Alternate the two pools; once one runs dry the other fills the rest.
    chosen = [p for pair in itertools.zip_longest(same, cross) for p in pair if p is not None]
    return [NeuronSpec("or", pair) for pair in chosen[:count]]


def _and_specs(rng: np.random.Generator, count: int) -> list[NeuronSpec]:
    pools = []
    for first, first_values, second, second_values in _AND_PAIRS:
        pool = [
            (Concept(first, a), Concept(second, b))
            for a, b in itertools.product(first_values, second_values)
        ]
        pools.append([pool[i] for i in rng.permutation(len(pool))])
    chosen = [p for group in itertools.zip_longest(*pools) for p in group if p is not None]
    return [NeuronSpec("and", pair) for pair in chosen[:count]]


#: The most OR and AND neurons a suite can hold without repeating a spec.
MAX_OR = len(PRIMARY_CONCEPTS) * (len(PRIMARY_CONCEPTS) - 1) // 2
MAX_AND = sum(len(a) * len(b) for _, a, _, b in _AND_PAIRS)


def sample_neuron_specs(
    seed: int = 0, n_mono: int = 50, n_or: int = 25, n_and: int = 25
) -> list[NeuronSpec]:
    """The specs of :func:`build_neuron_suite`, mono then or then and.

    >>> [s.name for s in sample_neuron_specs(seed=3, n_mono=1, n_or=0, n_and=1)] != [
    ...     s.name for s in sample_neuron_specs(seed=4, n_mono=1, n_or=0, n_and=1)]
    True
    """
    if not isinstance(seed, int) or seed < 0:
        raise bad_option("seed", "a non-negative int", seed)
    for name, value, most in (
        ("n_mono", n_mono, None),
        ("n_or", n_or, MAX_OR),
        ("n_and", n_and, MAX_AND),
    ):
        if not isinstance(value, int) or value < 0 or (most is not None and value > most):
            allowed = "a non-negative int" + (f" up to {most}" if most is not None else "")
            raise bad_option(name, allowed, value)
    if n_mono + n_or + n_and == 0:
        raise bad_option("n_mono + n_or + n_and", "at least one neuron", 0)
    # One generator per kind, so changing one count leaves the other kinds' draws alone.
    mono = _mono_specs(np.random.default_rng([seed, 0]), n_mono)
    ors = _or_specs(np.random.default_rng([seed, 1]), n_or)
    ands = _and_specs(np.random.default_rng([seed, 2]), n_and)
    return mono + ors + ands


def build_neuron_suite(
    seed: int = 0,
    n_mono: int = 50,
    n_or: int = 25,
    n_and: int = 25,
    *,
    stride: int = 4,
    noise_std: float = NEURONS_NOISE_STD,
) -> SyntheticNeuronModel:
    """A :class:`SyntheticNeuronModel` of ``n_mono + n_or + n_and`` neurons, named ``neurons:i``."""
    specs = sample_neuron_specs(seed, n_mono, n_or, n_and)
    return SyntheticNeuronModel(specs, seed=seed, stride=stride, noise_std=noise_std)


#: Activation noise of the hard suite (one model per level; the standard suite has 0.02).
HARD_NOISE = NEURONS_HARD_NOISE
#: Out-of-grammar neurons per hard kind: not, or3, position, relative_size.
HARD_PER_KIND = NEURONS_HARD_PER_KIND_FULL
#: Distractor correlations of the hard probe data, and how often each holds.
DISTRACTORS = NEURONS_DISTRACTORS
DISTRACTOR_RATE = NEURONS_DISTRACTOR_RATE

_OBJECT_PRIMARY = tuple(c for c in PRIMARY_CONCEPTS if not c.is_background)


def hard_neuron_specs(seed: int = 0, per_kind: int = HARD_PER_KIND) -> list[NeuronSpec]:
    """``per_kind`` neurons of each kind outside the grammar: not, or3, position, relative_size.

    >>> [s.name for s in hard_neuron_specs(0, per_kind=1)][2:]
    ['position:left', 'relative_size:largest']
    """
    if not isinstance(per_kind, int) or per_kind < 0:
        raise bad_option("per_kind", "a non-negative int", per_kind)
    rng = np.random.default_rng([seed, 3])
    negated = [_OBJECT_PRIMARY[i] for i in rng.permutation(len(_OBJECT_PRIMARY))[:per_kind]]
    specs = [NeuronSpec("not", (c,)) for c in negated]
    triples: list[tuple[Concept, ...]] = []
    while len(triples) < per_kind:
        picked = tuple(PRIMARY_CONCEPTS[i] for i in rng.choice(len(PRIMARY_CONCEPTS), 3, False))
        if set(picked) not in [set(t) for t in triples]:
            triples.append(picked)
    specs += [NeuronSpec("or3", triple) for triple in triples]
    specs += [NeuronSpec("position", (), variant=v) for v in range(per_kind)]
    specs += [NeuronSpec("relative_size", (), variant=v) for v in range(per_kind)]
    return specs


@dataclass(frozen=True)
class Distractor:
    """In the probe data, an object showing ``cue`` also shows ``companion`` ``rate`` of the
    time (on itself, or as the scene's background)."""

    cue: Concept
    companion: Concept
    rate: float


def sample_distractors(seed: int = 0, count: int = DISTRACTORS) -> list[Distractor]:
    """``count`` correlations from an object concept to a concept of another attribute, no
    cue or companion used twice."""
    rng = np.random.default_rng([seed, 4])
    used: set[Concept] = set()
    chosen: list[Distractor] = []
    for index in rng.permutation(len(_OBJECT_PRIMARY)):
        cue = _OBJECT_PRIMARY[index]
        if cue in used:
            continue
        others = [
            c
            for c in PRIMARY_CONCEPTS
            if c.attribute != cue.attribute and c not in used and c.attribute != "texture"
        ]
        companion = others[int(rng.integers(len(others)))]
        used |= {cue, companion}
        chosen.append(Distractor(cue, companion, DISTRACTOR_RATE))
        if len(chosen) == count:
            break
    return chosen


@dataclass(frozen=True)
class DistractorSampler(SceneSampler):
    """A :class:`SceneSampler` whose objects carry the given :class:`Distractor` correlations."""

    distractors: Sequence[Distractor] = ()

    def sample(self, rng: np.random.Generator) -> Scene:
        scene = super().sample(rng)
        objects: list[SceneObject] = []
        background = scene.background
        for obj in scene.objects:
            for distractor in self.distractors:
                if not obj.has(distractor.cue) or rng.random() >= distractor.rate:
                    continue
                companion = distractor.companion
                if companion.attribute == "background":
                    background = Background(companion.value, background.colour)
                else:
                    changes: dict[str, Any] = {companion.attribute: companion.value}
                    obj = replace(obj, **changes)
            objects.append(obj)
        return Scene(tuple(objects), background, seed=scene.seed)


def hard_probe_sampler(seed: int = 0) -> DistractorSampler:
    """The hard suite's probe scenes: one to three objects, :func:`sample_distractors` held."""
    return DistractorSampler(max_objects=3, distractors=tuple(sample_distractors(seed)))


def build_hard_suite(
    seed: int = 0,
    n_mono: int = 50,
    n_or: int = 25,
    n_and: int = 25,
    *,
    per_kind: int = HARD_PER_KIND,
    noise_std: float = HARD_NOISE[0],
    stride: int = 4,
) -> SyntheticNeuronModel:
    """The standard kinds at ``noise_std`` followed by :func:`hard_neuron_specs`."""
    specs = sample_neuron_specs(seed, n_mono, n_or, n_and) + hard_neuron_specs(seed, per_kind)
    return SyntheticNeuronModel(specs, seed=seed, stride=stride, noise_std=noise_std)
