"""A shapes dataset with planted subgroup biases, and the subgroups an audit should find.

A **planted subgroup** is a pair (class, attribute) with a set of *train values*. In the
``train`` split of :class:`BiasedShapes`:

- every item of that class has its attribute in the train values (circles are only red), and
- no item of another class does (nothing else is red),

so the attribute value is a perfect shortcut for the class in train. In ``val``, ``test`` and
``holdout`` every attribute is uniform and independent of the class. The planted subgroup is the
set of items **of that class whose attribute is NOT in the train values** ("circles that are not
red"): they never occur in train, and a model that took the shortcut scores low on them. An
audit found a planted subgroup when it names the class together with the attribute (e.g.
"fails on non-red circles"); :meth:`PlantedSubgroup.contains` decides membership of one scene,
and the ``in_planted_subgroup`` / ``planted_subgroup`` metadata columns mark every item (always
False / empty in train, by construction).

>>> test = BiasedShapes("test", size=600)
>>> rows = test.metadata
>>> sorted(set(rows[rows.in_planted_subgroup].class_name))
['circle', 'square', 'star', 'triangle']
>>> [s.description for s in test.planted_subgroups][:2]
['circle that is not red', 'square that is not on a snow background']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.world._datasets import (
    ItemOptions,
    ProceduralDataset,
    Unpack,
    attribute_value,
    check_values,
    sample_scene,
)
from lightning_maia.world._scene import Concept, Scene
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)

#: Attributes a subgroup bias can be planted on (the class itself is the shape).
BIASABLE_ATTRIBUTES: tuple[str, ...] = ("colour", "texture", "size", "background")

_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "texture": OBJECT_TEXTURES,
    "size": tuple(SIZES),
    "background": BACKGROUND_TEXTURES,
}


@dataclass(frozen=True)
class PlantedSubgroup:
    """A class whose ``attribute`` only takes ``train_values`` in train (and no other class's does).

    The subgroup itself -- what scores low at test time -- is the items of ``class_name`` whose
    attribute is not in ``train_values``.

    >>> bias = PlantedSubgroup("circle", "colour", ("red",))
    >>> bias.description, str(bias.class_concept), [str(c) for c in bias.train_concepts]
    ('circle that is not red', 'shape=circle', ['colour=red'])
    """

    #: The class (a shape) the bias is planted in.
    class_name: str
    #: The attribute the class is confined by in train: colour, texture, size or background.
    attribute: str
    #: The only values the attribute takes for this class in train; no other class takes them.
    train_values: tuple[str, ...]

    def __post_init__(self) -> None:
        Concept("shape", self.class_name)
        if self.attribute not in BIASABLE_ATTRIBUTES:
            raise bad_option("attribute", ", ".join(BIASABLE_ATTRIBUTES), self.attribute)
        if isinstance(self.train_values, str):
            object.__setattr__(self, "train_values", (self.train_values,))
        values = tuple(self.train_values)
        allowed = _VALUES[self.attribute]
        # At least one value must stay outside train, or the subgroup would be empty.
        if not values or any(v not in allowed for v in values) or len(values) >= len(allowed):
            raise bad_option(
                "train_values", f"a non-empty strict subset of {', '.join(allowed)}", values
            )
        object.__setattr__(self, "train_values", values)

    @property
    def class_concept(self) -> Concept:
        return Concept("shape", self.class_name)

    @property
    def train_concepts(self) -> tuple[Concept, ...]:
        return tuple(Concept(self.attribute, v) for v in self.train_values)

    @property
    def description(self) -> str:
        """The subgroup in words, e.g. ``circle that is not red``."""
        values = " or ".join(self.train_values)
        if self.attribute == "background":
            return f"{self.class_name} that is not on a {values} background"
        return f"{self.class_name} that is not {values}"

    def contains(self, scene: Scene) -> bool:
        """Whether the scene's main object is of the class with an attribute outside train."""
        return (
            attribute_value(scene, "shape") == self.class_name
            and attribute_value(scene, self.attribute) not in self.train_values
        )


DEFAULT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")

#: Four biased classes; cross and heart stay unbiased as controls.
DEFAULT_BIASES: tuple[PlantedSubgroup, ...] = (
    PlantedSubgroup("circle", "colour", ("red",)),
    PlantedSubgroup("square", "background", ("snow",)),
    # A texture bias was not learnable: stripes barely show on the small and medium objects
    # left to triangles once stars hold every large size, so a background one stands here.
    PlantedSubgroup("triangle", "background", ("water",)),
    PlantedSubgroup("star", "size", ("large",)),
)


class BiasedShapes(ProceduralDataset):
    """Shapes with planted subgroup biases in train, unbiased elsewhere.

    The class is the shape (``classes``, default six). ``biases`` (default
    :data:`DEFAULT_BIASES`) confine some classes in train, as the module docstring explains;
    every other attribute is uniform over the values left to the class. In ``val``, ``test``
    and ``holdout`` everything is uniform, so each planted subgroup appears there. The object
    never takes its background's colour.

    >>> train = BiasedShapes("train", size=300)
    >>> rows = train.metadata
    >>> circles = rows.class_name == "circle"
    >>> set(rows[circles].colour), "red" in set(rows[~circles].colour)
    ({'red'}, False)
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 2000,
        seed: int = 0,
        image_size: int = 64,
        biases: Sequence[PlantedSubgroup] | None = None,
        *,
        classes: Sequence[str] = DEFAULT_CLASSES,
        **options: Unpack[ItemOptions],
    ) -> None:
        super().__init__(size, seed=seed, split=split, image_size=image_size, **options)
        check_values("classes", classes, SHAPES, minimum=2)
        self.class_names = list(classes)
        self.planted_subgroups = list(DEFAULT_BIASES if biases is None else biases)
        self._train_allowed = _train_allowed_values(self.class_names, self.planted_subgroups)

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Scene, int]:
        label = int(rng.integers(len(self.class_names)))
        allowed = self._train_allowed[label] if self.split == "train" else _VALUES
        backgrounds = allowed["background"]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        scene = sample_scene(
            rng,
            self.class_names[label],
            background,
            colours=allowed["colour"],
            textures=allowed["texture"],
            sizes=allowed["size"],
        )
        return scene, label

    def subgroup_of(self, scene: Scene) -> PlantedSubgroup | None:
        """The planted subgroup the scene belongs to, if any."""
        return next((s for s in self.planted_subgroups if s.contains(scene)), None)

    def _extra_columns(self, index: int, scene: Scene, label: int) -> dict[str, Any]:
        subgroup = self.subgroup_of(scene)
        return {
            "in_planted_subgroup": subgroup is not None,
            "planted_subgroup": "" if subgroup is None else subgroup.description,
        }


def _train_allowed_values(
    classes: Sequence[str], biases: Sequence[PlantedSubgroup]
) -> list[dict[str, tuple[str, ...]]]:
    """Per class, the values each attribute may take in train; checks the biases fit together."""
    seen: set[tuple[str, str]] = set()
    for bias in biases:
        if not isinstance(bias, PlantedSubgroup):
            raise bad_option("biases", "a sequence of PlantedSubgroup", bias)
        if bias.class_name not in classes:
            raise bad_option("biases", f"subgroups of the classes {', '.join(classes)}", bias)
        if (bias.class_name, bias.attribute) in seen:
            raise bad_option("biases", "one bias per (class, attribute)", bias)
        seen.add((bias.class_name, bias.attribute))
    allowed_per_class = []
    for name in classes:
        allowed: dict[str, tuple[str, ...]] = {}
        for attribute, values in _VALUES.items():
            own = [b for b in biases if b.class_name == name and b.attribute == attribute]
            taken = {
                v
                for b in biases
                if b.class_name != name and b.attribute == attribute
                for v in b.train_values
            }
            choices = own[0].train_values if own else values
            allowed[attribute] = tuple(v for v in choices if v not in taken)
            if not allowed[attribute]:
                raise bad_option(
                    "biases",
                    f"train values that leave {name} some {attribute}",
                    [b for b in biases if b.attribute == attribute],
                )
        allowed_per_class.append(allowed)
    return allowed_per_class
