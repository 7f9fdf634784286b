"""Words and phrases shared by the prompt grammar, the edit grammar and the scene describer.

Text becomes a list of :class:`Word` (every word classified, unknown ones reported together),
then phrases: :class:`ObjectSpec` for "two small red stars", :class:`BackgroundSpec` for
"on a dotted blue background". Unset fields are sampled when a phrase is realised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lightning_maia.errors import GrammarError
from lightning_maia.world._scene import Background, SceneObject, place_object
from lightning_maia.world._vocabulary import (
    BACKGROUND_PATTERNS,
    BACKGROUND_TEXTURES,
    COLOURS,
    NAMED_BACKGROUNDS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
    SYNONYMS,
    vocabulary_text,
)

#: Most objects one scene may hold (the scene sampler's bound).
MAX_OBJECTS = 6

#: Background pattern -> the object texture that draws it on a shape.
PATTERN_TO_TEXTURE: dict[str, str] = {
    "plain": "solid",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checked",
}
TEXTURE_TO_PATTERN = {texture: pattern for pattern, texture in PATTERN_TO_TEXTURE.items()}
#: Background pattern -> the adjective the describer writes before a colour.
PATTERN_ADJECTIVES: dict[str, str] = {
    "plain": "plain",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checker",
    "noise": "noisy",
}

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_PATTERN_WORDS = {
    **{texture: TEXTURE_TO_PATTERN[texture] for texture in OBJECT_TEXTURES},
    **{pattern: pattern for pattern in BACKGROUND_PATTERNS},
    **{adjective: pattern for pattern, adjective in PATTERN_ADJECTIVES.items()},
    **{
        word: TEXTURE_TO_PATTERN[texture]
        for word, texture in SYNONYMS.items()
        if texture in TEXTURE_TO_PATTERN
    },
    "checkerboard": "checker",
    "chequer": "checker",
}


def _same(kind: str, value: str, words: str) -> dict[str, tuple[str, str]]:
    """Lexicon entries giving each of the space-separated ``words`` one kind and value."""
    return dict.fromkeys(words.split(), (kind, value))


def _themselves(kind: str, words: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Lexicon entries whose value is the word itself."""
    return {word: (kind, word) for word in words}


_PROMPT_WORDS: dict[str, tuple[str, str]] = {
    **_themselves("shape", SHAPES),
    **_same("shape", "", "shape object thing item"),
    **_themselves("colour", COLOURS),
    **_themselves("size", SIZES),
    **_themselves("named", NAMED_BACKGROUNDS),
    **{word: ("pattern", pattern) for word, pattern in _PATTERN_WORDS.items()},
    **{word: ("count", str(n)) for word, n in _NUMBERS.items()},
    **_same("count", "1", "a an single"),
    **_same("background", "background", "background backdrop ground"),
    **_themselves("on", ("on", "against", "over", "atop", "onto")),
    **_themselves("sep", (",", "and", "with")),
    **_same("filler", "", "the of in image picture photo photograph showing shows there is are"),
    **_same("filler", "", "colour color coloured colored shaped texture textured pattern"),
    **_same("filler", "", "patterned sized size empty blank some"),
}
_EDIT_WORDS: dict[str, tuple[str, str]] = {
    **_same("verb", "make", "make turn change replace paint recolour swap set"),
    **_same("verb", "remove", "remove delete erase"),
    **_same("verb", "add", "add put insert draw place include"),
    **_same("verb", "move", "move shift slide"),
    **_same("verb", "rotate", "rotate spin tilt"),
    **_themselves("it", ("it", "this", "that", "them", "they")),
    **_themselves("link", ("to", "into", "for", "by", "be", "as", "look", "like", "so")),
    **{word: ("ordinal", str(n)) for n, word in enumerate(_ORDINALS)},
    "last": ("ordinal", "-1"),
    **_same("comparative", "1", "bigger larger greater"),
    **_same("comparative", "-1", "smaller tinier littler"),
    **_themselves("direction", ("left", "right", "up", "down", "top", "bottom", "centre")),
    **_same("direction", "centre", "center middle"),
    **_same("filler", "", "please degree degrees slightly scene instead"),
}


@dataclass(frozen=True)
class Word:
    """One classified word: ``kind`` is its role, ``value`` its canonical form."""

    text: str
    kind: str
    value: str
    plural: bool = False


def grammar_error(reason: str, unknown_words: Iterable[str] = ()) -> GrammarError:
    """A GrammarError whose message gives the reason and the whole vocabulary."""
    return GrammarError(f"{reason}\n{vocabulary_text()}", unknown_words)


def _lookup(stem: str, lexicon: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if stem in lexicon:
        return lexicon[stem]
    canonical = SYNONYMS.get(stem)
    return lexicon.get(canonical) if canonical is not None else None


def _classify(token: str, lexicon: dict[str, tuple[str, str]]) -> Word | None:
    if token.isdigit():
        return Word(token, "number", str(int(token)))
    found = _lookup(token, lexicon)
    if found is not None:
        return Word(token, *found)
    # Plurals: "stars", "crosses", "boxes"; only shapes and patterns take them.
    for stem in (token[:-1], token[:-2]) if token.endswith("s") else ():
        found = _lookup(stem, lexicon)
        if found is not None and found[0] in ("shape", "pattern"):
            return Word(token, *found, plural=found[0] == "shape")
    return None


def tokenize(text: str, *, edits: bool = False) -> list[Word]:
    """Classify every word of ``text``; a GrammarError names all the words it does not know.

    >>> [(w.kind, w.value) for w in tokenize("Two big boxes on snow")]
    [('count', '2'), ('size', 'large'), ('shape', 'square'), ('on', 'on'), ('named', 'snow')]
    """
    lexicon = {**_PROMPT_WORDS, **_EDIT_WORDS} if edits else _PROMPT_WORDS
    tokens = re.findall(r"[a-z0-9]+|,", re.sub(r"[;:]", ",", text.lower()))
    words, unknown = [], []
    for token in tokens:
        word = _classify(token, lexicon)
        if word is None:
            unknown.append(token)
        elif word.kind != "filler":
            words.append(word)
    if unknown:
        quoted = ", ".join(repr(word) for word in unknown)
        raise grammar_error(f"unknown words in {text!r}: {quoted}", unknown)
    if not words:
        raise grammar_error(f"nothing to {'do' if edits else 'draw'} in {text!r}")
    return words


@dataclass
class ObjectSpec:
    """An object phrase; None fields are sampled when it is realised."""

    shape: str | None = None
    colour: str | None = None
    texture: str | None = None
    size: str | None = None
    count: int | None = None
    plural: bool = False

    def add(self, word: Word) -> None:
        """Take in one attribute word; two different values for one field are an error."""
        if word.kind == "shape":
            self._set("shape", word.value or None, word)
            self.plural = self.plural or word.plural
        elif word.kind in ("colour", "size"):
            self._set(word.kind, word.value, word)
        elif word.kind == "pattern":
            if word.value not in PATTERN_TO_TEXTURE:
                raise grammar_error(
                    f"{word.text!r} is a background pattern, not an object texture", [word.text]
                )
            self._set("texture", PATTERN_TO_TEXTURE[word.value], word)
        elif word.kind in ("count", "number"):
            count = int(word.value)
            if not 1 <= count <= MAX_OBJECTS:
                raise grammar_error(
                    f"a scene holds 1 to {MAX_OBJECTS} objects, not {count}", [word.text]
                )
            # An article never overrides a count that a number gave.
            if self.count is None or word.text not in ("a", "an", "single"):
                self._set("count", count, word)
        else:
            raise grammar_error(f"{word.text!r} does not describe an object", [word.text])

    def _set(self, name: str, value: object, word: Word) -> None:
        current = getattr(self, name)
        if current is not None and current != value and value is not None:
            raise grammar_error(
                f"two {name}s for one object: {current} and {word.text}", [word.text]
            )
        if value is not None:
            setattr(self, name, value)

    @property
    def total(self) -> int:
        if self.count is not None:
            return self.count
        return 2 if self.plural else 1


@dataclass
class BackgroundSpec:
    """A background phrase; None fields are sampled when it is realised."""

    texture: str | None = None
    colour: str | None = None

    def add(self, word: Word) -> None:
        if word.kind in ("background", "on", "sep") or (word.kind == "count" and word.value == "1"):
            return
        if word.kind == "colour":
            value, name = word.value, "colour"
        elif word.kind in ("pattern", "named"):
            value, name = word.value, "texture"
        else:
            raise grammar_error(f"{word.text!r} does not describe a background", [word.text])
        current = getattr(self, name)
        if current is not None and current != value:
            raise grammar_error(f"two background {name}s: {current} and {word.text}", [word.text])
        setattr(self, name, value)
        named_colour = NAMED_BACKGROUNDS.get(self.texture or "")
        if named_colour and self.colour not in (None, named_colour):
            raise grammar_error(
                f"a {self.texture} background is {named_colour}, not {self.colour}", [word.text]
            )


def parse_phrases(words: Sequence[Word]) -> tuple[list[ObjectSpec], BackgroundSpec]:
    """Split words at commas, "and", "with" and "on" into object and background phrases."""
    segments: list[tuple[Word | None, list[Word]]] = [(None, [])]
    for word in words:
        if word.kind in ("sep", "on"):
            segments.append((word, []))
        else:
            segments[-1][1].append(word)
    objects: list[ObjectSpec] = []
    background = BackgroundSpec()
    last: ObjectSpec | BackgroundSpec | None = None
    for connector, segment in segments:
        if not segment:
            continue
        kinds = {word.kind for word in segment}
        if "shape" in kinds:
            objects.extend(_object_phrases(segment))
            last = objects[-1]
        elif kinds & {"background", "named"} or (connector is not None and connector.kind == "on"):
            last = background
            for word in segment:
                background.add(word)
        elif last is not None:
            # "a circle, red" and "a circle with stripes": the words finish the last phrase.
            for word in segment:
                last.add(word)
        else:
            objects.extend(_object_phrases(segment))
            last = objects[-1]
    if sum(spec.total for spec in objects) > MAX_OBJECTS:
        raise grammar_error(f"a scene holds at most {MAX_OBJECTS} objects")
    return objects, background


def _object_phrases(segment: Sequence[Word]) -> list[ObjectSpec]:
    """Object phrases of one segment; words after the last shape still describe it."""
    specs: list[ObjectSpec] = []
    pending, trailing = ObjectSpec(), []
    for position, word in enumerate(segment):
        if (
            word.kind == "shape"
            and not word.value
            and position
            and segment[position - 1].kind == "shape"
        ):
            # "a star shape", "star-shaped objects": the noun repeats the shape before it.
            specs[-1].plural = specs[-1].plural or word.plural
            continue
        pending.add(word)
        trailing.append(word)
        if word.kind == "shape":
            specs.append(pending)
            pending, trailing = ObjectSpec(), []
    if not specs:
        return [pending]
    for word in trailing:
        specs[-1].add(word)
    return specs


def realise_background(
    spec: BackgroundSpec, rng: np.random.Generator, avoid: Iterable[str] = ()
) -> Background:
    """A background from a phrase, sampling what it leaves open; sampled colours skip ``avoid``."""
    avoided = set(avoid)
    colours = [name for name in COLOURS if name not in avoided] or list(COLOURS)
    texture = spec.texture
    if texture is None:
        # A colour alone rules out named backgrounds, whose colour is their own.
        choices = [
            name
            for name in BACKGROUND_TEXTURES
            if name in BACKGROUND_PATTERNS
            or (spec.colour is None and NAMED_BACKGROUNDS[name] not in avoided)
        ]
        texture = choices[int(rng.integers(len(choices)))]
    colour = spec.colour or colours[int(rng.integers(len(colours)))]
    return Background(texture, colour)


def realise_objects(
    spec: ObjectSpec,
    background: Background,
    rng: np.random.Generator,
    placed: Sequence[SceneObject],
) -> list[SceneObject]:
    """``spec.total`` objects placed off ``placed``, sampling what the phrase leaves open."""
    # Sampled colours skip the background's, so that an object never vanishes into it.
    colours = [name for name in COLOURS if name != background.colour]
    made: list[SceneObject] = []
    for _ in range(spec.total):
        shape = spec.shape or str(SHAPES[int(rng.integers(len(SHAPES)))])
        colour = spec.colour or colours[int(rng.integers(len(colours)))]
        texture = spec.texture or str(OBJECT_TEXTURES[int(rng.integers(len(OBJECT_TEXTURES)))])
        size = spec.size or list(SIZES)[int(rng.integers(len(SIZES)))]
        x, y = place_object(rng, SIZES[size], [*placed, *made])
        rotation = round(float(rng.uniform(-30.0, 30.0)), 2)
        made.append(SceneObject(shape, colour, texture, size, x, y, rotation))
    return made


def object_phrase(obj: SceneObject, article: str = "a") -> str:
    """The canonical words for one object: article, size, colour, texture, shape.

    >>> object_phrase(SceneObject("star", "red", "striped", "small"))
    'a small red striped star'
    """
    return f"{article} {obj.size} {obj.colour} {obj.texture} {obj.shape}".strip()


def background_phrase(background: Background, article: str = "a") -> str:
    """The canonical words for a background.

    >>> background_phrase(Background("dots", "blue")), background_phrase(Background("grass"))
    ('a dotted blue background', 'a grass background')
    """
    if background.texture in NAMED_BACKGROUNDS:
        return f"{article} {background.texture} background".strip()
    adjective = PATTERN_ADJECTIVES[background.texture]
    return f"{article} {adjective} {background.colour} background".strip()


def join_phrases(phrases: Sequence[str]) -> str:
    """ "a, b and c".

    >>> join_phrases(["a star", "a ring", "a cross"])
    'a star, a ring and a cross'
    """
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
