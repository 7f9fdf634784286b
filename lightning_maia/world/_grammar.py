"""Text to scenes, and text edits of scenes: the procedural world's text-to-image and image editing.

Prompts describe objects and a background in everyday words; whatever a prompt leaves open is
sampled from the seed. Edits change one thing in a scene and keep the rest, seed and positions
included, so that an edited scene is a counterfactual of the original. Words outside
:func:`~lightning_maia.world._vocabulary.vocabulary_text` raise :class:`GrammarError` naming them.

>>> scene = parse_prompt("a red striped circle on a dotted blue background")
>>> obj = scene.objects[0]
>>> (obj.shape, obj.colour, obj.texture), (scene.background.texture, scene.background.colour)
(('circle', 'red', 'striped'), ('dots', 'blue'))
>>> edited = apply_edit(scene, "make the circle green")
>>> edited.objects[0].colour, edited.objects[0].x == obj.x, edited.seed == scene.seed
('green', True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lightning_maia.world._phrases import (
    MAX_OBJECTS,
    PATTERN_TO_TEXTURE,
    Word,
    grammar_error,
    join_phrases,
    object_phrase,
    parse_phrases,
    realise_background,
    realise_objects,
    tokenize,
)
from lightning_maia.world._scene import Background, Scene, SceneObject
from lightning_maia.world._vocabulary import NAMED_BACKGROUNDS, SIZES

__all__ = ["apply_edit", "parse_prompt"]

Seed = int | np.random.Generator

_VERBS = "make, turn, change, replace, remove, add, move or rotate"
#: Where "move ... to the left" puts the object's centre, as fractions of the image.
_POSITIONS: dict[str, tuple[str, float]] = {
    "left": ("x", 0.25),
    "right": ("x", 0.75),
    "up": ("y", 0.25),
    "top": ("y", 0.25),
    "down": ("y", 0.75),
    "bottom": ("y", 0.75),
}


def _generator(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def parse_prompt(text: str, seed: Seed = 0) -> Scene:
    """The scene a prompt describes; attributes it leaves open are drawn from ``seed``.

    >>> scene = parse_prompt("two small yellow stars on grass", seed=1)
    >>> [(o.size, o.colour, o.shape) for o in scene.objects], scene.background.texture
    ([('small', 'yellow', 'star'), ('small', 'yellow', 'star')], 'grass')
    >>> parse_prompt("a purple hexagon, striped", seed=2).objects[0].texture
    'striped'
    """
    object_specs, background_spec = parse_phrases(tokenize(text))
    rng = _generator(seed)
    # Objects keep the colours the prompt gave them; the background avoids those colours.
    named_colours = [spec.colour for spec in object_specs if spec.colour is not None]
    background = realise_background(background_spec, rng, avoid=named_colours)
    objects: list[SceneObject] = []
    for spec in object_specs:
        objects.extend(realise_objects(spec, background, rng, objects))
    return Scene(tuple(objects), background, seed=int(rng.integers(0, 2**31 - 1)))


@dataclass(frozen=True)
class _Target:
    """What an edit points at: ``head`` is a shape, "it" or "background"."""

    head: Word
    qualifiers: tuple[Word, ...]

    @property
    def is_background(self) -> bool:
        return self.head.kind == "background"

    @property
    def text(self) -> str:
        return " ".join(word.text for word in (*self.qualifiers, self.head))


def apply_edit(scene: Scene, instruction: str, seed: Seed = 0) -> Scene:
    """``scene`` changed as ``instruction`` says, everything else (seed, positions) kept.

    "it", "the object" and "the shape" mean the first object; a plural ("the stars", "them")
    means every match. Objects that an edit adds draw what the instruction leaves open from
    ``seed``. A colour given to a named background (grass, snow, ...) makes it plain.

    >>> scene = parse_prompt("a small red solid circle on a plain grey background")
    >>> apply_edit(scene, "make it bigger").objects[0].size
    'medium'
    >>> apply_edit(scene, "replace the background with stripes").background
    Background(texture='stripes', colour='grey')
    >>> apply_edit(scene, "remove the star")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lightning_maia.errors.GrammarError: there is no star in the scene; it has a small red ...
    """
    words = tokenize(instruction, edits=True)
    verb, rest = words[0], words[1:]
    if verb.kind != "verb":
        raise grammar_error(f"an edit starts with {_VERBS}, got {verb.text!r}", [verb.text])
    if verb.value == "add":
        return _add(scene, rest, _generator(seed))
    target, changes = _split_target(rest)
    if target.is_background:
        if verb.value != "make":
            raise grammar_error(
                f"{verb.text!r} does not apply to the background; say 'change the background to'",
                [verb.text],
            )
        return scene.with_background(_edit_background(scene.background, changes))
    chosen = _resolve(scene, target)
    if verb.value == "remove":
        if changes:
            raise grammar_error("say only what to remove", [word.text for word in changes])
        return scene.with_objects([o for i, o in enumerate(scene.objects) if i not in chosen])
    edit = {"make": _edit_object, "move": _move, "rotate": _rotate}[verb.value]
    return scene.with_objects(
        [edit(o, changes) if i in chosen else o for i, o in enumerate(scene.objects)]
    )


def _split_target(words: Sequence[Word]) -> tuple[_Target, list[Word]]:
    """The words naming what to edit, and the words saying how ("into a square", "blue")."""
    heads = [i for i, word in enumerate(words) if word.kind in ("shape", "it", "background")]
    if not heads:
        raise grammar_error("say what to edit: an object (the circle, it) or the background")
    position = heads[0]
    qualifiers = tuple(words[:position])
    for word in qualifiers:
        if word.kind not in ("colour", "size", "pattern", "ordinal", "count"):
            raise grammar_error(f"{word.text!r} does not pick out an object", [word.text])
    changes = [w for w in words[position + 1 :] if w.kind not in ("link", "sep", "count", "on")]
    return _Target(words[position], qualifiers), changes


def _matches(obj: SceneObject, target: _Target) -> bool:
    head = target.head
    if head.kind == "shape" and head.value and obj.shape != head.value:
        return False
    for word in target.qualifiers:
        if word.kind in ("colour", "size") and getattr(obj, word.kind) != word.value:
            return False
        if word.kind == "pattern" and obj.texture != PATTERN_TO_TEXTURE.get(word.value):
            return False
    return True


def _resolve(scene: Scene, target: _Target) -> set[int]:
    """Indices of the objects ``target`` names; an error lists the objects present."""
    present = join_phrases([object_phrase(o) for o in scene.objects]) or "no objects"
    matches = [i for i, obj in enumerate(scene.objects) if _matches(obj, target)]
    if not matches:
        unknown = [w.text for w in (*target.qualifiers, target.head) if w.kind != "it"]
        raise grammar_error(
            f"there is no {target.text} in the scene; it has {present}", unknown or [target.text]
        )
    ordinals = [int(w.value) for w in target.qualifiers if w.kind == "ordinal"]
    if ordinals:
        if not -len(matches) <= ordinals[0] < len(matches):
            raise grammar_error(f"there is no {target.text} in the scene; it has {present}")
        return {matches[ordinals[0]]}
    if target.head.plural or target.head.value in ("them", "they"):
        return set(matches)
    return {matches[0]}


def _edit_object(obj: SceneObject, changes: Sequence[Word]) -> SceneObject:
    if not changes:
        raise grammar_error("say what to change: a colour, texture, size or shape")
    updates: dict[str, str] = {}
    sizes = list(SIZES)
    for word in changes:
        if word.kind == "shape" and word.value:
            field, value = "shape", word.value
        elif word.kind in ("colour", "size"):
            field, value = word.kind, word.value
        elif word.kind == "pattern" and word.value in PATTERN_TO_TEXTURE:
            field, value = "texture", PATTERN_TO_TEXTURE[word.value]
        elif word.kind == "comparative":
            step = sizes.index(updates.get("size", obj.size)) + int(word.value)
            if not 0 <= step < len(sizes):
                raise grammar_error(f"the {obj.shape} is already {obj.size}", [word.text])
            field, value = "size", sizes[step]
        else:
            raise grammar_error(f"{word.text!r} cannot change an object", [word.text])
        if updates.get(field, value) != value and word.kind != "comparative":
            raise grammar_error(
                f"two {field}s in one edit: {updates[field]} and {value}", [word.text]
            )
        updates[field] = value
    return replace(
        obj,
        shape=updates.get("shape", obj.shape),
        colour=updates.get("colour", obj.colour),
        texture=updates.get("texture", obj.texture),
        size=updates.get("size", obj.size),
    )


def _edit_background(background: Background, changes: Sequence[Word]) -> Background:
    if not changes:
        raise grammar_error("say what the background becomes: a colour, pattern or grass, ...")
    texture, colour = background.texture, background.colour
    named = [w for w in changes if w.kind == "named"]
    for word in changes:
        if word.kind == "colour":
            if named:
                raise grammar_error(f"a {named[0].value} background has its own colour")
            colour = word.value
            texture = "plain" if texture in NAMED_BACKGROUNDS else texture
        elif word.kind in ("pattern", "named"):
            texture = word.value
        else:
            raise grammar_error(f"{word.text!r} cannot change the background", [word.text])
    return Background(texture, colour)


def _move(obj: SceneObject, changes: Sequence[Word]) -> SceneObject:
    if not changes or any(w.kind != "direction" for w in changes):
        wrong = [w.text for w in changes if w.kind != "direction"]
        raise grammar_error("say where: left, right, up, down, top, bottom or centre", wrong)
    position = {"x": obj.x, "y": obj.y}
    for word in changes:
        if word.value in _POSITIONS:
            axis, value = _POSITIONS[word.value]
            position[axis] = value
    # "centre" centres along every axis no other word of the edit names ("top centre").
    if any(word.value in ("centre", "middle") for word in changes):
        named_axes = {_POSITIONS[w.value][0] for w in changes if w.value in _POSITIONS}
        position.update({axis: 0.5 for axis in ("x", "y") if axis not in named_axes})
    margin = SIZES[obj.size] / 2 + 0.02
    x, y = (min(max(position[axis], margin), 1 - margin) for axis in ("x", "y"))
    return replace(obj, x=x, y=y)


def _rotate(obj: SceneObject, changes: Sequence[Word]) -> SceneObject:
    angles = [float(w.value) for w in changes if w.kind == "number"]
    others = [w.text for w in changes if w.kind != "number"]
    if others or len(angles) > 1:
        raise grammar_error("say the angle as a number of degrees", others)
    angle = angles[0] if angles else 45.0
    return replace(obj, rotation=(obj.rotation + angle + 180.0) % 360.0 - 180.0)


def _add(scene: Scene, words: Sequence[Word], rng: np.random.Generator) -> Scene:
    # "add stripes to the circle" edits the circle; "add a star" adds one.
    for position, word in enumerate(words):
        if word.kind == "link" and word.value == "to":
            target, _ = _split_target(words[position + 1 :])
            instruction = [w for w in words[:position] if w.kind not in ("count", "sep")]
            if target.is_background:
                return scene.with_background(_edit_background(scene.background, instruction))
            chosen = _resolve(scene, target)
            return scene.with_objects(
                [
                    _edit_object(o, instruction) if i in chosen else o
                    for i, o in enumerate(scene.objects)
                ]
            )
    specs, background = parse_phrases(words)
    if background.texture is not None or background.colour is not None:
        raise grammar_error("`add` adds objects; say 'change the background to ...' for that")
    objects = list(scene.objects)
    for spec in specs:
        objects.extend(realise_objects(spec, scene.background, rng, objects))
    if len(objects) > MAX_OBJECTS:
        raise grammar_error(f"a scene holds at most {MAX_OBJECTS} objects")
    return scene.with_objects(objects)
