"""The procedural world's vocabulary: every shape, colour, texture, size and background it knows.

The grammar accepts these words, their plurals and the synonyms listed here; anything else is an
error that names the unknown words and prints :func:`vocabulary_text`.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "heart",
    "ring",
    "diamond",
    "hexagon",
)

#: Object and background colours, as sRGB. Far apart so that a colour is never mistaken for another.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 215, 40),
    "green": (50, 165, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "brown": (125, 80, 40),
    "grey": (128, 128, 128),
}

#: How an object is filled.
OBJECT_TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checked")

#: Abstract background patterns, drawn in the background's colour.
BACKGROUND_PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checker", "noise")

#: Scene-like backgrounds with a colour and texture of their own.
NAMED_BACKGROUNDS: dict[str, str] = {
    "snow": "white",
    "grass": "green",
    "sand": "yellow",
    "water": "blue",
}

BACKGROUND_TEXTURES: tuple[str, ...] = BACKGROUND_PATTERNS + tuple(NAMED_BACKGROUNDS)

#: Object diameter as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.2, "medium": 0.32, "large": 0.46}

#: Synonyms the grammar maps onto the canonical words above.
SYNONYMS: dict[str, str] = {
    "gray": "grey",
    "violet": "purple",
    "magenta": "pink",
    "dot": "dotted",
    "spotted": "dotted",
    "polka": "dotted",
    "stripy": "striped",
    "stripe": "striped",
    "checkered": "checked",
    "chequered": "checked",
    "plaid": "checked",
    "plain": "solid",
    "filled": "solid",
    "box": "square",
    "rectangle": "square",
    "rhombus": "diamond",
    "plus": "cross",
    "donut": "ring",
    "doughnut": "ring",
    "annulus": "ring",
    "tiny": "small",
    "little": "small",
    "big": "large",
    "huge": "large",
    "sea": "water",
    "ocean": "water",
    "lake": "water",
    "lawn": "grass",
    "meadow": "grass",
    "beach": "sand",
    "desert": "sand",
    "snowfield": "snow",
}


def vocabulary_text() -> str:
    """The whole vocabulary in a few lines, fit to show a user or an agent.

    >>> "star" in vocabulary_text() and "snow" in vocabulary_text()
    True
    """
    return "\n".join(
        [
            "shapes: " + ", ".join(SHAPES),
            "colours: " + ", ".join(COLOURS),
            "object textures: " + ", ".join(OBJECT_TEXTURES),
            "sizes: " + ", ".join(SIZES),
            "backgrounds: " + ", ".join(BACKGROUND_TEXTURES) + " (patterns take a colour)",
            "synonyms: " + ", ".join(f"{k}={v}" for k, v in SYNONYMS.items()),
        ]
    )
