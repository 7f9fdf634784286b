"""Highlighted regions as every backend shows them, and the concepts a description names.

A region is a mask over an image: a (H, W) tensor, bool or a float map cut at 0.5, resized to
the image (nearest) when its size differs (:func:`region_mask`). Backends dim what lies outside
it (:func:`dim_outside`), crop to its bounding box grown by a margin (:func:`crop_to_region`),
and hand the result to a model, as a PIL image where the model wants one (:func:`to_pil`). A
mask that selects no pixel is described as :data:`EMPTY_REGION_TEXT`, without asking a model.
Each backend passes its own dimming and margin, so one backend's defaults never leak into
another's.

What a model says about a region is matched against a concept vocabulary by
:func:`match_concepts`, the one matcher every backend uses.

>>> import torch
>>> image, mask = torch.ones(3, 4, 4), torch.zeros(4, 4, dtype=torch.bool)
>>> mask[1, 1:3] = True
>>> dim_outside(image, mask, dim=0.5)[0, 1].tolist()
[0.5, 1.0, 1.0, 0.5]
>>> region_box(mask, margin=0.5)
RegionBox(top=0, bottom=3, left=0, right=4)
>>> match_concepts("Two striped Dogs by fire hydrants", ["dog", "fire hydrant", "texture=striped"])
('dog', 'fire hydrant', 'texture=striped')
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lightning_maia._display import to_uint8
from lightning_maia.errors import bad_option
from lightning_maia.exemplars import mask_images

#: The description of a region whose mask selects no pixel; no model is asked about it.
EMPTY_REGION_TEXT = "nothing highlighted"

# Letters and digits (any script): "dog's" reads as "dog", "s"; "fire_hydrant" as two words.
_WORD = re.compile(r"[^\W_]+")


# --- regions -----------------------------------------------------------------------------------


class RegionBox(NamedTuple):
    """A box of rows ``top:bottom`` and columns ``left:right`` (ends exclusive), in pixels."""

    #: The first row inside the box.
    top: int
    #: The row after the last one inside the box.
    bottom: int
    #: The first column inside the box.
    left: int
    #: The column after the last one inside the box.
    right: int


def region_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """``mask`` as a bool (height, width) tensor: a float mask cut at 0.5, resized (nearest).

    >>> region_mask(torch.tensor([[0.9, 0.1], [0.2, 0.7]]), 2, 4).int().tolist()
    [[1, 1, 0, 0], [0, 0, 1, 1]]
    """
    inside = _selected(mask)
    if tuple(inside.shape) != (height, width):
        resized = F.interpolate(inside[None, None].float(), size=(height, width), mode="nearest")
        inside = resized[0, 0] > 0.5
    return inside


def _selected(mask: Tensor) -> Tensor:
    """The bool (H, W) selection of a mask at its own size."""
    if mask.ndim != 2:
        raise bad_option(
            "mask", "a (H, W) tensor or None", f"a tensor of shape {tuple(mask.shape)}"
        )
    return mask if mask.dtype == torch.bool else mask > 0.5


def is_empty_region(mask: Tensor | None) -> bool:
    """Whether ``mask`` selects no pixel at its own size (None selects the whole image)."""
    if mask is None:
        return False
    return not bool(_selected(mask).any())


def dim_outside(image: Tensor, mask: Tensor | None, dim: float) -> Tensor:
    """``image`` (C, H, W) with every pixel outside ``mask`` scaled by ``dim`` (None: as is).

    The arithmetic is :func:`lightning_maia.exemplars.mask_images`, the exemplars' display.
    """
    if mask is None:
        return image
    inside = region_mask(mask, image.shape[-2], image.shape[-1]).to(image.device)
    dimmed = mask_images(image[None], inside[None], dim)[0]
    # mask_images computes in float32; keep a half-precision image in its own dtype.
    return dimmed.to(image.dtype) if image.is_floating_point() else dimmed


def region_box(mask: Tensor, margin: float = 0.0) -> RegionBox | None:
    """The bounding box of ``mask`` grown by ``margin`` times its longer side on every side.

    The growth is rounded up to whole pixels and the box clipped to the mask; None when the mask
    selects nothing. A float mask selects ``> 0.5``.

    >>> mask = torch.zeros(10, 10, dtype=torch.bool)
    >>> mask[4:6, 3:7] = True
    >>> region_box(mask, margin=0.2)  # 2 x 4 box, grown by ceil(0.2 * 4) = 1 pixel
    RegionBox(top=3, bottom=7, left=2, right=8)
    """
    inside = _selected(mask)
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    columns = torch.nonzero(inside.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    # The epsilon keeps float error from adding a pixel: 0.14 * 50 is 7.000000000000001.
    pad = math.ceil(margin * max(bottom - top, right - left) - 1e-9)
    height, width = inside.shape
    return RegionBox(
        max(top - pad, 0), min(bottom + pad, height), max(left - pad, 0), min(right + pad, width)
    )


def crop_to_region(image: Tensor, mask: Tensor, margin: float) -> Tensor | None:
    """``image`` cut to the :func:`region_box` of ``mask`` (resized to the image) grown by
    ``margin``; None when the mask selects nothing.

    >>> image = torch.arange(16.0).reshape(1, 4, 4)
    >>> crop_to_region(image, torch.tensor([[0.0, 0.0], [0.0, 1.0]]), margin=0.0).tolist()
    [[[10.0, 11.0], [14.0, 15.0]]]
    """
    box = region_box(region_mask(mask, image.shape[-2], image.shape[-1]), margin)
    if box is None:
        return None
    return image[..., box.top : box.bottom, box.left : box.right]


def to_pil(image: Tensor) -> Image.Image:
    """A display image (float (3, H, W) in [0, 1], or (1, H, W); uint8 in [0, 255]) as RGB PIL.

    Values are clamped to [0, 1] and rounded to 8 bits; a single channel is shown as grey, NaN
    as 0 (:func:`lightning_maia._display.to_uint8`, as the loggers and the report encode it).

    >>> to_pil(torch.ones(3, 2, 5)).size
    (5, 2)
    """
    return Image.fromarray(to_uint8(image), mode="RGB")


# --- concepts ----------------------------------------------------------------------------------


def concept_phrase(term: str) -> str:
    """The words a vocabulary term stands for; a procedural ``attribute=value`` by its value.

    >>> concept_phrase("texture=polka_dots"), concept_phrase("fire hydrant")
    ('polka dots', 'fire hydrant')
    """
    return " ".join(term.split("=", 1)[-1].replace("_", " ").split())


def text_words(text: str) -> list[str]:
    """The lower-cased words of ``text``: runs of letters and digits.

    >>> text_words("The dog's ball, 2 fire_hydrants")
    ['the', 'dog', 's', 'ball', '2', 'fire', 'hydrants']
    """
    return _WORD.findall(text.lower())


def same_word(first: str, second: str) -> bool:
    """Whether two lower-case words are one word, singular or plural (-s, -es, -ies).

    >>> same_word("dogs", "dog"), same_word("bus", "buses"), same_word("skies", "sky")
    (True, True, True)
    >>> same_word("cat", "category")
    False
    """
    return first == second or not _forms(first).isdisjoint(_forms(second))


def _forms(word: str) -> frozenset[str]:
    # The word and its possible singulars: "dogs" -> dog, "buses" -> bus, "skies" -> sky.
    forms = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
    return frozenset(forms)


def match_concepts(text: str, vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The vocabulary terms that ``text`` names, in vocabulary order, each once.

    Terms match as whole words (a phrase as consecutive words), case-insensitively, and in
    singular or plural (-s, -es, -ies): "dog" matches "Dogs", "bus" matches "buses", "sky"
    matches "skies", but "cat" not "category". A procedural-world term ``attribute=value`` is
    looked for by its value, with underscores as spaces (``texture=polka_dots``: "polka dots").

    >>> match_concepts("A red bus and two skies", ["Bus", "sky", "red car", "red"])
    ('Bus', 'sky', 'red')
    >>> match_concepts("a category of caterpillars", ["cat"])
    ()
    """
    words = text_words(text)
    found: list[str] = []
    for term in dict.fromkeys(vocabulary):
        phrase = text_words(concept_phrase(term))
        if phrase and any(
            all(same_word(words[start + offset], part) for offset, part in enumerate(phrase))
            for start in range(len(words) - len(phrase) + 1)
        ):
            found.append(term)
    return tuple(found)
