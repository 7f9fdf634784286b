"""Experiment designers: concept strings to prompts and edits, for the scientist agent.

The scientist reasons over concept strings (what a describer's ``Description.concepts`` holds);
a designer turns them into what the image tools take. :class:`ProceduralDesigner` serves the
procedural world (``attribute=value`` concepts and its grammar); a captioner or VLM world can
plug in another designer with the same methods.

>>> import numpy as np
>>> designer = ProceduralDesigner()
>>> rng = np.random.default_rng(0)
>>> designer.prompts(["colour=red", "shape=star", "background=snow"], [], 1, rng)
['a small red checked star on snow']
>>> designer.removal_edit("colour=red", ["colour=blue"], ["colour=red", "shape=star"], rng)
'make it orange'
>>> designer.label(["colour=red", "shape=star"], "and")
'red stars'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from lightning_maia._cycle import Cycle
from lightning_maia.errors import ConfigurationError
from lightning_maia.world._neurons import NeuronSpec
from lightning_maia.world._scene import ATTRIBUTES, Concept
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    NAMED_BACKGROUNDS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)

#: How a description's concepts combine, as the scientist reports them.
LOGICS: tuple[str, ...] = ("single", "or", "and")


@runtime_checkable
class ExperimentDesigner(Protocol):
    """Concept strings to prompts and edit instructions for the image tools."""

    name: str

    def can_design(self, concept: str) -> bool:
        """Whether the designer can put ``concept`` into (or take it out of) an image."""
        ...

    def attribute_of(self, concept: str) -> str:
        """The attribute ``concept`` gives a value of (concepts of one attribute exclude
        each other on one object), e.g. ``shape`` for ``shape=star``."""
        ...

    def values(self, attribute: str) -> list[str]:
        """Every concept of ``attribute`` the designer can draw, e.g. every ``shape=...``."""
        ...

    def attributes(self) -> tuple[str, ...]:
        """The attributes an audit varies by default, e.g. shape, colour, background."""
        ...

    def class_concept(self, class_name: str) -> str | None:
        """The concept that a class name stands for (``circle`` -> ``shape=circle``), if any."""
        ...

    def neutral_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
        """Prompts for varied images that together cover the vocabulary (the base rates)."""
        ...

    def prompts(
        self,
        present: Sequence[str],
        absent: Sequence[str],
        count: int,
        rng: np.random.Generator,
    ) -> list[str] | None:
        """``count`` prompts for images showing every ``present`` concept and, where the world
        allows it, none of ``absent``; everything else varied. None when ``present`` cannot
        occur together in one image."""
        ...

    def removal_edit(
        self,
        concept: str,
        avoid: Sequence[str],
        context: Sequence[str],
        rng: np.random.Generator,
    ) -> str | None:
        """An instruction that changes exactly ``concept``'s attribute of an image holding
        ``context`` to a value outside ``avoid``; None when no edit can."""
        ...

    def label(self, concepts: Sequence[str], logic: str) -> str:
        """Short words for a description, e.g. ``red stars`` or ``stars OR grass background``."""
        ...


_OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "texture", "size")
_VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": OBJECT_TEXTURES,
    "size": tuple(SIZES),
    "background": BACKGROUND_TEXTURES,
    "background_colour": tuple(COLOURS),
}


def _parse(concept: str) -> Concept | None:
    try:
        return Concept.parse(concept)
    except ConfigurationError:
        return None


class ProceduralDesigner:
    """Designs experiments in the procedural world: one object on a background per image.

    Every prompt names all six attributes (shape, colour, texture, size, background and its
    colour), so what an experiment holds fixed or varies is exact; values left free are drawn
    evenly (a shuffled cycle), so eight images cover eight different values where possible.
    An object never shares its background's colour, so it always stays visible.
    """

    name = "procedural"

    def can_design(self, concept: str) -> bool:
        return _parse(concept) is not None

    def attribute_of(self, concept: str) -> str:
        parsed = _parse(concept)
        return parsed.attribute if parsed is not None else concept

    def values(self, attribute: str) -> list[str]:
        return [f"{attribute}={value}" for value in _VOCABULARY.get(attribute, ())]

    def attributes(self) -> tuple[str, ...]:
        # A background's colour mostly restates its texture (snow is white): left to callers.
        return ("shape", "colour", "texture", "size", "background")

    def class_concept(self, class_name: str) -> str | None:
        name = class_name.strip().lower()
        for attribute in ("shape", "colour", "texture", "size", "background"):
            if name in _VOCABULARY[attribute]:
                return f"{attribute}={name}"
        return name if _parse(name) is not None else None

    # -- prompts --------------------------------------------------------------------------

    def neutral_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
        return self.prompts([], [], count, rng) or []

    def prompts(
        self,
        present: Sequence[str],
        absent: Sequence[str],
        count: int,
        rng: np.random.Generator,
    ) -> list[str] | None:
        fixed: dict[str, str] = {}
        for text in present:
            concept = _parse(text)
            if concept is None or fixed.get(concept.attribute, concept.value) != concept.value:
                return None
            fixed[concept.attribute] = concept.value
        banned: dict[str, set[str]] = {attribute: set() for attribute in ATTRIBUTES}
        for text in absent:
            concept = _parse(text)
            if concept is not None and concept.attribute not in fixed:
                banned[concept.attribute].add(concept.value)
        allowed = {
            attribute: [fixed[attribute]]
            if attribute in fixed
            else [v for v in _VOCABULARY[attribute] if v not in banned[attribute]]
            or list(_VOCABULARY[attribute])
            for attribute in ATTRIBUTES
        }
        if not self._backgrounds_possible(allowed, fixed):
            return None
        cycles = {attribute: Cycle(values, rng) for attribute, values in allowed.items()}
        prompts = []
        for _ in range(count):
            if "colour" in fixed:
                colour = cycles["colour"].next()
                background = self._background(cycles, allowed, avoid_colour=colour)
            else:
                background = self._background(cycles, allowed, avoid_colour=None)
                colour = cycles["colour"].next(exclude=(background[1],))
            obj = {
                attribute: cycles[attribute].next() for attribute in ("shape", "texture", "size")
            }
            prompts.append(_prompt({**obj, "colour": colour}, *background))
        return prompts

    @staticmethod
    def _backgrounds_possible(allowed: Mapping[str, list[str]], fixed: Mapping[str, str]) -> bool:
        texture, colour = fixed.get("background"), fixed.get("background_colour")
        if texture in NAMED_BACKGROUNDS and colour is not None:
            return NAMED_BACKGROUNDS[texture] == colour
        if colour is not None and texture is None:
            return any(
                t not in NAMED_BACKGROUNDS or NAMED_BACKGROUNDS[t] == colour
                for t in allowed["background"]
            )
        return True

    @staticmethod
    def _background(
        cycles: Mapping[str, Cycle],
        allowed: Mapping[str, list[str]],
        avoid_colour: str | None,
    ) -> tuple[str, str]:
        """A background texture and colour within ``allowed``, off ``avoid_colour`` if it can.

        A named background brings its own colour; where that colour is not allowed (or is the
        object's), another texture is drawn.
        """
        textures, colours = allowed["background"], allowed["background_colour"]

        def colour_ok(colour: str) -> bool:
            return colour in colours and colour != avoid_colour

        usable = [
            t for t in textures if t not in NAMED_BACKGROUNDS or colour_ok(NAMED_BACKGROUNDS[t])
        ]
        if not usable:  # an absence the world cannot honour: keep the presences, drop it
            usable = [t for t in textures if NAMED_BACKGROUNDS.get(t, colours[0]) in colours]
            usable = usable or textures
        texture = cycles["background"].next(include=usable)
        if texture in NAMED_BACKGROUNDS:
            return texture, NAMED_BACKGROUNDS[texture]
        exclude = () if avoid_colour is None else (avoid_colour,)
        return texture, cycles["background_colour"].next(exclude=exclude)

    # -- edits ----------------------------------------------------------------------------

    def removal_edit(
        self,
        concept: str,
        avoid: Sequence[str],
        context: Sequence[str],
        rng: np.random.Generator,
    ) -> str | None:
        target = _parse(concept)
        if target is None:
            return None
        facts = {c.attribute: c.value for c in map(_parse, context) if c is not None}
        banned = {target.value} | {
            c.value for c in map(_parse, avoid) if c is not None and c.attribute == target.attribute
        }
        if target.attribute in ("colour", "background_colour"):
            # Keep the object and its background apart, so the object stays visible.
            other = "background_colour" if target.attribute == "colour" else "colour"
            banned.add(facts.get(other, ""))
        if target.attribute == "background":
            banned |= {t for t, c in NAMED_BACKGROUNDS.items() if c == facts.get("colour")}
        choices = [v for v in _VOCABULARY[target.attribute] if v not in banned]
        if not choices:
            return None
        value = choices[int(rng.integers(len(choices)))]
        if target.attribute == "shape":
            return f"make it a {value}"
        if target.attribute in ("colour", "texture", "size"):
            return f"make it {value}"
        if target.attribute == "background":
            return f"change the background to {value}"
        return f"change the background to {value}"

    # -- words ----------------------------------------------------------------------------

    def label(self, concepts: Sequence[str], logic: str) -> str:
        parsed = [_parse(c) for c in concepts]
        if parsed and all(p is not None for p in parsed):
            kind = {"single": "mono"}.get(logic, logic)
            try:
                return NeuronSpec(kind, tuple(p for p in parsed if p is not None)).description
            except ConfigurationError:
                pass
        joiner = {"or": " OR ", "and": " AND "}.get(logic, ", ")
        return joiner.join(concepts)


#: Background pattern -> the adjective the grammar reads before a colour.
_PATTERN_ADJECTIVES: dict[str, str] = {
    "plain": "plain",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checker",
    "noise": "noisy",
}


def _prompt(obj: Mapping[str, str], texture: str, colour: str) -> str:
    thing = f"a {obj['size']} {obj['colour']} {obj['texture']} {obj['shape']}"
    if texture in NAMED_BACKGROUNDS:
        return f"{thing} on {texture}"
    return f"{thing} on a {_PATTERN_ADJECTIVES[texture]} {colour} background"
