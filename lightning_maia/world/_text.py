"""Scenes to words: exact scene descriptions, the concepts under a mask, what regions share.

The procedural describer never guesses from pixels: it reads the scene behind a rendering and
the masks of its objects, so "describe the highlighted region" names the objects and background
that the region actually covers.

>>> from lightning_maia.world._grammar import parse_prompt
>>> from lightning_maia.world._render import render_scene
>>> scene = parse_prompt("a large red striped star on grass")
>>> describe_scene(scene)
'a large red striped star on a grass background'
>>> rendering = render_scene(scene, 64)
>>> describe_region(rendering, rendering.object_masks[0])
'a large red striped star'
>>> describe_region(rendering, rendering.background_mask)
'the grass background'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lightning_maia.errors import bad_option
from lightning_maia.world._phrases import background_phrase, join_phrases, object_phrase
from lightning_maia.world._render import Rendering
from lightning_maia.world._scene import Concept, Scene, SceneObject

__all__ = [
    "common_concepts",
    "describe_region",
    "describe_scene",
    "region_concepts",
    "summarize_concepts",
]

_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _objects_text(objects: Sequence[SceneObject]) -> str:
    """Objects in words, equal ones counted: "two small red solid stars and a ..."."""
    counts = Counter(object_phrase(obj, article="") for obj in objects)
    phrases = []
    for phrase, count in counts.items():
        if count == 1:
            phrases.append(f"a {phrase}")
        else:
            plural = phrase + ("es" if phrase.endswith(("s", "x")) else "s")
            phrases.append(f"{_COUNT_WORDS[count]} {plural}")
    return join_phrases(phrases)


def describe_scene(scene: Scene) -> str:
    """Canonical words for ``scene``: parsed back, they give the same objects and background.

    >>> from lightning_maia.world._scene import Background, SceneObject
    >>> describe_scene(Scene((SceneObject("cross", "blue"),) * 2, Background("dots", "pink")))
    'two medium blue solid crosses on a dotted pink background'
    """
    background = background_phrase(scene.background)
    if not scene.objects:
        return background
    return f"{_objects_text(scene.objects)} on {background}"


def _region_weights(rendering: Rendering, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as float weights in [0, 1] at the rendering's resolution."""
    region = torch.as_tensor(mask).detach().cpu()
    while region.dim() > 2 and region.shape[0] == 1:
        region = region[0]
    if region.dim() != 2:
        raise bad_option("mask", "an (H, W) tensor", tuple(region.shape))
    size = (rendering.height, rendering.width)
    if region.dtype == torch.bool:
        region = region.float()
        if tuple(region.shape) != size:
            region = F.interpolate(region[None, None], size=size, mode="nearest")[0, 0]
    else:
        region = region.float()
        if tuple(region.shape) != size:
            region = F.interpolate(region[None, None], size=size, mode="bilinear")[0, 0]
    return region.clamp(0.0, 1.0)


def _region_parts(
    rendering: Rendering, mask: torch.Tensor, min_fraction: float
) -> tuple[list[int], bool, dict[int, float]]:
    """Objects (indices) and whether the background count as inside the region.

    Also returns every part's share of the region (-1 stands for the background).
    """
    if not 0.0 < min_fraction <= 1.0:
        raise bad_option("min_fraction", "a number in (0, 1]", min_fraction)
    weights = _region_weights(rendering, mask)
    total = float(weights.sum())
    if total <= 0.0:
        return [], False, {}
    shares = {-1: float((weights * rendering.background_mask).sum()) / total}
    chosen = []
    for index, object_mask in enumerate(rendering.object_masks):
        area = int(object_mask.sum())
        if area == 0:
            continue
        inside = float((weights * object_mask).sum())
        shares[index] = inside / total
        if inside / total >= min_fraction or inside / area >= 0.5:
            chosen.append(index)
    return chosen, shares[-1] >= min_fraction, shares


def region_concepts(
    rendering: Rendering, mask: torch.Tensor, min_fraction: float = 0.1
) -> frozenset[Concept]:
    """Concepts whose pixels the region covers.

    An object counts when at least ``min_fraction`` of the region lies on it or at least half of
    its visible pixels lie in the region; the background counts when at least ``min_fraction`` of
    the region is background. ``mask`` is (H, W), bool or float weights in [0, 1], at any
    resolution (resized to the rendering: nearest for bool, bilinear for float).

    >>> from lightning_maia.world._grammar import parse_prompt
    >>> from lightning_maia.world._render import render_scene
    >>> rendering = render_scene(parse_prompt("a small blue solid ring on snow"), 32)
    >>> sorted(str(c) for c in region_concepts(rendering, rendering.background_mask))
    ['background=snow', 'background_colour=white']
    """
    objects, background, _ = _region_parts(rendering, mask, min_fraction)
    found: set[Concept] = set()
    for index in objects:
        found.update(rendering.scene.objects[index].concepts())
    if background:
        found.update(rendering.scene.background.concepts())
    return frozenset(found)


def describe_region(rendering: Rendering, mask: torch.Tensor, min_fraction: float = 0.1) -> str:
    """Words for what a region covers: its objects, and the background when it covers that.

    A non-empty region that reaches no threshold is described by the part it overlaps most.
    """
    objects, background, shares = _region_parts(rendering, mask, min_fraction)
    if not shares:
        return "nothing highlighted"
    if not objects and not background:
        largest = max(shares, key=lambda part: shares[part])
        objects, background = ([largest], False) if largest >= 0 else ([], True)
    scene = rendering.scene
    if not objects:
        return background_phrase(scene.background, article="the")
    words = _objects_text([scene.objects[index] for index in objects])
    return f"{words} on {background_phrase(scene.background)}" if background else words


def common_concepts(
    concept_sets: Sequence[frozenset[Concept]], min_share: float = 0.8
) -> list[tuple[Concept, float]]:
    """Concepts in at least ``min_share`` of the sets, with their share; most shared first.

    >>> star, grass = Concept("shape", "star"), Concept("background", "grass")
    >>> shared = common_concepts([frozenset({star, grass})] * 9 + [frozenset({grass})])
    >>> [(str(concept), share) for concept, share in shared]
    [('background=grass', 1.0), ('shape=star', 0.9)]
    """
    if not 0.0 < min_share <= 1.0:
        raise bad_option("min_share", "a number in (0, 1]", min_share)
    if not concept_sets:
        return []
    counts = Counter(concept for concepts in concept_sets for concept in set(concepts))
    total = len(concept_sets)
    # The small slack keeps 0.8 * 10 from missing 8 of 10 by float rounding.
    common = [(c, n / total) for c, n in counts.items() if n >= min_share * total - 1e-9]
    return sorted(common, key=lambda item: (-item[1], item[0]))


def summarize_concepts(concept_sets: Sequence[frozenset[Concept]], min_share: float = 0.8) -> str:
    """What the sets have in common, in one line.

    >>> star, grass = Concept("shape", "star"), Concept("background", "grass")
    >>> summarize_concepts([frozenset({star, grass})] * 9 + [frozenset({grass})])
    'common to at least 9 of 10: grass background (100%), star (90%)'
    """
    common = common_concepts(concept_sets, min_share)
    total = len(concept_sets)
    if total == 0:
        return "no regions to compare"
    if not common:
        return f"nothing common to {min_share:.0%} of {total}"
    fewest = round(min(share for _, share in common) * total)
    listed = ", ".join(f"{concept.phrase} ({share:.0%})" for concept, share in common)
    return f"common to at least {fewest} of {total}: {listed}"
