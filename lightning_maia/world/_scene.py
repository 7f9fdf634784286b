"""Scenes of the procedural world: objects on a background, and the concepts they carry.

A scene is plain, frozen data; rendering, text and datasets build on it. Positions are object
centres in [0, 1] image coordinates (x to the right, y down).

>>> scene = Scene(objects=(SceneObject("star", "red", "striped"),), background=Background("grass"))
>>> sorted(str(c) for c in scene.concepts())  # doctest: +NORMALIZE_WHITESPACE
['background=grass', 'background_colour=green', 'colour=red', 'shape=star',
 'size=medium', 'texture=striped']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    NAMED_BACKGROUNDS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)

#: The attributes a concept can name. Object attributes first, then background ones.
OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "texture", "size")
BACKGROUND_ATTRIBUTES: tuple[str, ...] = ("background", "background_colour")
ATTRIBUTES: tuple[str, ...] = OBJECT_ATTRIBUTES + BACKGROUND_ATTRIBUTES

_ALLOWED: dict[str, Sequence[str]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": OBJECT_TEXTURES,
    "size": tuple(SIZES),
    "background": BACKGROUND_TEXTURES,
    "background_colour": tuple(COLOURS),
}


@dataclass(frozen=True, order=True)
class Concept:
    """One attribute value that a region of an image can show, e.g. ``shape=star``.

    >>> Concept.parse("colour=red")
    Concept(attribute='colour', value='red')
    >>> Concept("background", "grass").phrase
    'grass background'
    """

    attribute: str
    value: str

    def __post_init__(self) -> None:
        if self.attribute not in _ALLOWED:
            raise bad_option("attribute", ", ".join(ATTRIBUTES), self.attribute)
        if self.value not in _ALLOWED[self.attribute]:
            raise bad_option(self.attribute, ", ".join(_ALLOWED[self.attribute]), self.value)

    @classmethod
    def parse(cls, text: str) -> Concept:
        """Parse ``attribute=value``."""
        attribute, sep, value = text.partition("=")
        if not sep:
            raise bad_option("concept", "attribute=value, e.g. 'shape=star'", text)
        return cls(attribute.strip(), value.strip())

    @property
    def is_background(self) -> bool:
        return self.attribute in BACKGROUND_ATTRIBUTES

    @property
    def phrase(self) -> str:
        """Words for the concept as a person would say them."""
        if self.attribute == "background":
            return f"{self.value} background"
        if self.attribute == "background_colour":
            return f"{self.value} background colour"
        if self.attribute == "texture":
            return f"{self.value} texture" if self.value != "solid" else "solid fill"
        if self.attribute == "size":
            return f"{self.value} objects"
        return self.value

    def __str__(self) -> str:
        return f"{self.attribute}={self.value}"


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene."""

    shape: str
    colour: str
    texture: str = "solid"
    size: str = "medium"
    #: Centre, as fractions of the image width and height.
    x: float = 0.5
    y: float = 0.5
    #: Rotation in degrees, counter-clockwise.
    rotation: float = 0.0

    def __post_init__(self) -> None:
        Concept("shape", self.shape)
        Concept("colour", self.colour)
        Concept("texture", self.texture)
        Concept("size", self.size)
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise bad_option("position", "x and y in [0, 1]", (self.x, self.y))

    def concepts(self) -> tuple[Concept, ...]:
        return (
            Concept("shape", self.shape),
            Concept("colour", self.colour),
            Concept("texture", self.texture),
            Concept("size", self.size),
        )

    def has(self, concept: Concept) -> bool:
        return not concept.is_background and getattr(self, concept.attribute) == concept.value


@dataclass(frozen=True)
class Background:
    """What lies behind the objects: a pattern in a colour, or a named scene-like background.

    A named background (snow, grass, sand, water) fixes its own colour.

    >>> Background("snow").colour
    'white'
    """

    texture: str = "plain"
    colour: str = ""

    def __post_init__(self) -> None:
        Concept("background", self.texture)
        if self.texture in NAMED_BACKGROUNDS:
            object.__setattr__(self, "colour", NAMED_BACKGROUNDS[self.texture])
        elif not self.colour:
            object.__setattr__(self, "colour", "grey")
        Concept("background_colour", self.colour)

    def concepts(self) -> tuple[Concept, ...]:
        return (Concept("background", self.texture), Concept("background_colour", self.colour))

    def has(self, concept: Concept) -> bool:
        if concept.attribute == "background":
            return self.texture == concept.value
        return concept.attribute == "background_colour" and self.colour == concept.value


@dataclass(frozen=True)
class Scene:
    """Objects drawn in order (later ones on top) over a background; ``seed`` places patterns."""

    objects: tuple[SceneObject, ...] = ()
    background: Background = field(default_factory=Background)
    seed: int = 0

    def concepts(self) -> frozenset[Concept]:
        found = set(self.background.concepts())
        for obj in self.objects:
            found.update(obj.concepts())
        return frozenset(found)

    def has(self, concept: Concept) -> bool:
        if concept.is_background:
            return self.background.has(concept)
        return any(obj.has(concept) for obj in self.objects)

    def with_objects(self, objects: Sequence[SceneObject]) -> Scene:
        return replace(self, objects=tuple(objects))

    def with_background(self, background: Background) -> Scene:
        return replace(self, background=background)


Weights = Mapping[str, float] | Sequence[str] | None


def _choice(rng: np.random.Generator, name: str, allowed: Sequence[str], weights: Weights) -> str:
    """Draw one value; ``weights`` is None (uniform), a subset of values, or value -> weight."""
    if weights is None:
        values, probs = list(allowed), None
    elif isinstance(weights, Mapping):
        unknown = [v for v in weights if v not in allowed]
        if unknown or not weights:
            raise bad_option(name, ", ".join(allowed), unknown or weights)
        values = list(weights)
        total = float(sum(weights.values()))
        if total <= 0 or any(w < 0 for w in weights.values()):
            raise bad_option(name, "non-negative weights with a positive sum", dict(weights))
        probs = [w / total for w in weights.values()]
    else:
        values = list(weights)
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise bad_option(name, ", ".join(allowed), unknown or values)
        probs = None
    return str(values[int(rng.choice(len(values), p=probs))])


@dataclass(frozen=True)
class SceneSampler:
    """Random scenes with controllable marginals.

    Each attribute takes None (uniform over the vocabulary), a list of allowed values, or a
    mapping of value to weight. Objects are placed without overlapping where possible.

    >>> sampler = SceneSampler(shapes=["star"], backgrounds={"grass": 1.0})
    >>> scene = sampler.sample(np.random.default_rng(0))
    >>> scene.objects[0].shape, scene.background.texture
    ('star', 'grass')
    """

    shapes: Weights = None
    colours: Weights = None
    textures: Weights = None
    sizes: Weights = None
    backgrounds: Weights = None
    background_colours: Weights = None
    min_objects: int = 1
    max_objects: int = 1
    rotate: bool = True

    def __post_init__(self) -> None:
        if not (1 <= self.min_objects <= self.max_objects <= 6):
            raise bad_option(
                "min_objects/max_objects",
                "1 <= min_objects <= max_objects <= 6",
                (self.min_objects, self.max_objects),
            )

    def sample_object(
        self, rng: np.random.Generator, placed: Sequence[SceneObject] = ()
    ) -> SceneObject:
        shape = _choice(rng, "shapes", SHAPES, self.shapes)
        colour = _choice(rng, "colours", tuple(COLOURS), self.colours)
        texture = _choice(rng, "textures", OBJECT_TEXTURES, self.textures)
        size = _choice(rng, "sizes", tuple(SIZES), self.sizes)
        x, y = place_object(rng, SIZES[size], placed)
        rotation = float(rng.uniform(-30.0, 30.0)) if self.rotate else 0.0
        return SceneObject(shape, colour, texture, size, x, y, rotation)

    def sample_background(self, rng: np.random.Generator) -> Background:
        texture = _choice(rng, "backgrounds", BACKGROUND_TEXTURES, self.backgrounds)
        colour = _choice(rng, "background_colours", tuple(COLOURS), self.background_colours)
        return Background(texture, colour)

    def sample(self, rng: np.random.Generator) -> Scene:
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        objects: list[SceneObject] = []
        for _ in range(count):
            objects.append(self.sample_object(rng, objects))
        background = self.sample_background(rng)
        return Scene(tuple(objects), background, seed=int(rng.integers(0, 2**31 - 1)))


def place_object(
    rng: np.random.Generator, diameter: float, placed: Sequence[SceneObject], tries: int = 20
) -> tuple[float, float]:
    """A centre that keeps the object inside the image and, where possible, off the others."""
    margin = diameter / 2 + 0.02
    best, best_gap = (0.5, 0.5), -np.inf
    for _ in range(tries):
        x, y = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
        gap = min(
            (np.hypot(x - o.x, y - o.y) - (diameter + SIZES[o.size]) / 2 for o in placed),
            default=np.inf,
        )
        if gap > 0:
            return round(x, 4), round(y, 4)
        if gap > best_gap:
            best, best_gap = (round(x, 4), round(y, 4)), gap
    return best
