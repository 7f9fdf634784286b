import pytest
import torch
import torch.nn.functional as F

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject
from lightning_maia.world._text import (
    common_concepts,
    describe_region,
    describe_scene,
    region_concepts,
    summarize_concepts,
)

STAR = SceneObject("star", "red", "striped", "small", 0.25, 0.25)
CIRCLE = SceneObject("circle", "blue", "solid", "large", 0.7, 0.7)
SCENE = Scene((STAR, CIRCLE), Background("grass"), seed=3)


@pytest.mark.parametrize(
    ("scene", "text"),
    [
        (SCENE, "a small red striped star and a large blue solid circle on a grass background"),
        (Scene((), Background("checker", "white")), "a checker white background"),
        (
            Scene((CIRCLE, STAR, CIRCLE), Background("noise", "black")),
            "two large blue solid circles and a small red striped star on a noisy black background",
        ),
        (
            Scene((SceneObject("cross", "pink"),) * 3, Background("plain", "grey")),
            "three medium pink solid crosses on a plain grey background",
        ),
    ],
)
def test_describe_scene_is_canonical(scene, text):
    assert describe_scene(scene) == text


def test_an_object_mask_names_that_object_only():
    rendering = render_scene(SCENE, 64)
    star, circle = rendering.object_masks
    assert region_concepts(rendering, star) == frozenset(STAR.concepts())
    assert region_concepts(rendering, circle) == frozenset(CIRCLE.concepts())
    assert region_concepts(rendering, rendering.background_mask) == frozenset(
        SCENE.background.concepts()
    )
    assert region_concepts(rendering, star | rendering.background_mask) == frozenset(
        STAR.concepts() + SCENE.background.concepts()
    )
    assert region_concepts(rendering, torch.zeros(64, 64, dtype=torch.bool)) == frozenset()


def test_an_object_counts_by_its_share_of_the_region_or_of_itself():
    rendering = render_scene(SCENE, 64)
    star, circle = rendering.object_masks
    circle_pixels = circle.nonzero()
    region = star.clone()
    # A few circle pixels: under 10% of the region and under half of the circle.
    few = circle_pixels[: int(star.sum()) // 20]
    region[few[:, 0], few[:, 1]] = True
    assert region_concepts(rendering, region) == frozenset(STAR.concepts())
    # Half of the circle counts, though the circle then dominates the region anyway.
    half = circle_pixels[: (len(circle_pixels) + 1) // 2]
    region[half[:, 0], half[:, 1]] = True
    assert Concept("shape", "circle") in region_concepts(rendering, region)
    # Half of an object counts even when it is a small share of a large region.
    big = rendering.background_mask | circle
    star_half = star.nonzero()[: (int(star.sum()) + 1) // 2]
    big[star_half[:, 0], star_half[:, 1]] = True
    assert float(star.sum()) / 2 / float(big.sum()) < 0.1
    assert Concept("shape", "star") in region_concepts(rendering, big)


def test_masks_at_other_resolutions_and_float_masks_are_resized():
    rendering = render_scene(SCENE, 64)
    circle = rendering.object_masks[1]
    larger = F.interpolate(circle[None, None].float(), size=(128, 128), mode="nearest")[0, 0]
    assert region_concepts(rendering, larger.bool()) == frozenset(CIRCLE.concepts())
    assert region_concepts(rendering, larger) == frozenset(CIRCLE.concepts())
    assert region_concepts(rendering, circle[None].float()) == frozenset(CIRCLE.concepts())
    coarse = F.avg_pool2d(circle[None, None].float(), 4)[0, 0]
    assert Concept("shape", "circle") in region_concepts(rendering, coarse)


def test_describe_region_reads_the_scene():
    rendering = render_scene(SCENE, 64)
    star, circle = rendering.object_masks
    assert describe_region(rendering, star) == "a small red striped star"
    assert describe_region(rendering, rendering.background_mask) == "the grass background"
    assert (
        describe_region(rendering, star | circle | rendering.background_mask)
        == "a small red striped star and a large blue solid circle on a grass background"
    )
    assert describe_region(rendering, torch.zeros(64, 64)) == "nothing highlighted"


def test_a_region_below_every_threshold_is_described_by_what_it_overlaps_most():
    rendering = render_scene(SCENE, 64)
    assert describe_region(rendering, rendering.background_mask, min_fraction=1.0) == (
        "the grass background"
    )
    mixed = rendering.object_masks[1] | rendering.background_mask
    assert region_concepts(rendering, mixed, min_fraction=1.0) == frozenset(CIRCLE.concepts())


def test_common_concepts_and_summary():
    star, grass, red = (
        Concept("shape", "star"),
        Concept("background", "grass"),
        Concept("colour", "red"),
    )
    sets = [frozenset({star, grass, red})] * 8 + [frozenset({grass, red})] + [frozenset({grass})]
    assert common_concepts(sets) == [(grass, 1.0), (red, 0.9), (star, 0.8)]
    assert common_concepts(sets, min_share=0.85) == [(grass, 1.0), (red, 0.9)]
    assert summarize_concepts(sets, min_share=0.85) == (
        "common to at least 9 of 10: grass background (100%), red (90%)"
    )
    assert summarize_concepts([frozenset({star}), frozenset({red})]) == "nothing common to 80% of 2"
    assert summarize_concepts([]) == "no regions to compare"
    assert common_concepts([]) == []


@pytest.mark.parametrize("share", [0.0, 1.5, -0.2])
def test_shares_and_fractions_are_checked(share):
    with pytest.raises(ConfigurationError, match="min_share"):
        common_concepts([frozenset()], min_share=share)
    rendering = render_scene(SCENE, 32)
    with pytest.raises(ConfigurationError, match="min_fraction"):
        region_concepts(rendering, rendering.background_mask, min_fraction=share)


def test_masks_must_be_two_dimensional():
    rendering = render_scene(SCENE, 32)
    with pytest.raises(ConfigurationError, match="mask"):
        region_concepts(rendering, torch.zeros(2, 32, 32))
