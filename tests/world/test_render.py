import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._render import (
    COLOUR_OFFSETS,
    LEVELS,
    NAMED_OFFSETS,
    PALETTE,
    nearest_colours,
    render_batch,
    render_scene,
    render_scenes,
)
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject, SceneSampler
from lightning_maia.world._vocabulary import (
    BACKGROUND_TEXTURES,
    COLOURS,
    NAMED_BACKGROUNDS,
    OBJECT_TEXTURES,
    SHAPES,
    SIZES,
)

GREY = Background("plain", "grey")


def one(shape="circle", colour="red", texture="solid", size="large", **where) -> Scene:
    return Scene((SceneObject(shape, colour, texture, size, **where),), GREY)


def random_scenes(count: int, seed: int = 0, **sampler) -> list[Scene]:
    rng = np.random.default_rng(seed)
    sampling = SceneSampler(**{"max_objects": 4, **sampler})
    return [sampling.sample(rng) for _ in range(count)]


def test_red_circle_mask_is_exactly_the_red_pixels_and_its_area_is_pi_r_squared():
    rendering = render_scene(one(), 64)
    mask = rendering.object_masks[0]
    pixels = rendering.image.permute(1, 2, 0)
    assert (pixels[mask] == torch.tensor([220, 40, 40], dtype=torch.uint8)).all()
    assert (pixels[~mask] == torch.tensor([128, 128, 128], dtype=torch.uint8)).all()
    radius = SIZES["large"] * 64 / 2
    # Pixel-centre sampling misses at most a fraction of the pixels along the rim.
    tolerance = 0.25 * 2 * math.pi * radius
    assert abs(int(mask.sum()) - math.pi * radius**2) < tolerance
    assert torch.equal(rendering.background_mask, ~mask)


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize("diameter", ["small", "medium", "large"])
def test_circle_area_scales_with_the_image(size, diameter):
    rendering = render_scene(one(size=diameter), size)
    radius = SIZES[diameter] * size / 2
    area = int(rendering.object_masks[0].sum())
    assert abs(area - math.pi * radius**2) < 0.25 * 2 * math.pi * radius


def test_masks_partition_the_image_and_object_pixels_keep_their_colour_family():
    for scene in random_scenes(60, seed=1):
        rendering = render_scene(scene, 64)
        stacked = torch.stack([*rendering.object_masks, rendering.background_mask])
        assert (stacked.sum(dim=0) == 1).all()
        names = nearest_colours(rendering.image)
        for obj, mask in zip(scene.objects, rendering.object_masks, strict=True):
            assert set(names[mask.numpy()]) <= {obj.colour}
        background = rendering.background_mask.numpy()
        assert set(names[background]) <= {scene.background.colour}


def test_an_object_paints_only_inside_its_mask():
    for scene in random_scenes(60, seed=2):
        rendering = render_scene(scene, 64)
        for index, mask in enumerate(rendering.object_masks):
            without = scene.with_objects(scene.objects[:index] + scene.objects[index + 1 :])
            other = render_scene(without, 64)
            assert torch.equal(rendering.image[:, ~mask], other.image[:, ~mask])


def test_every_palette_shade_reads_as_its_own_colour():
    for name, offset in COLOUR_OFFSETS.items():
        shades = torch.from_numpy(PALETTE[offset : offset + LEVELS].T[:, :, None].copy())
        assert nearest_colours(shades).ravel().tolist() == [name] * LEVELS
    for name, offset in NAMED_OFFSETS.items():
        tones = torch.from_numpy(PALETTE[offset : offset + LEVELS].T[:, :, None].copy())
        assert nearest_colours(tones).ravel().tolist() == [NAMED_BACKGROUNDS[name]] * LEVELS


@pytest.mark.parametrize("texture", OBJECT_TEXTURES)
def test_textures_use_two_shades_of_the_colour_except_solid(texture):
    rendering = render_scene(one("square", "blue", texture), 128)
    pixels = rendering.image.permute(1, 2, 0)[rendering.object_masks[0]]
    distinct = {tuple(p) for p in pixels.tolist()}
    base, shade = PALETTE[COLOUR_OFFSETS["blue"]], PALETTE[COLOUR_OFFSETS["blue"] + LEVELS - 1]
    expected = {tuple(base.tolist())} if texture == "solid" else {tuple(base), tuple(shade)}
    assert distinct == {tuple(int(v) for v in colour) for colour in expected}


@pytest.mark.parametrize("texture", BACKGROUND_TEXTURES)
def test_backgrounds_stay_in_their_colour_family(texture):
    scene = Scene((), Background(texture, "purple"), seed=5)
    names = nearest_colours(render_scene(scene, 96).image)
    assert set(names.ravel()) == {scene.background.colour}


def test_later_objects_hide_earlier_ones():
    circle = SceneObject("circle", "red", size="large")
    square = SceneObject("square", "blue", size="small")
    rendering = render_scene(Scene((circle, square), GREY), 64)
    alone = render_scene(Scene((circle,), GREY), 64).object_masks[0]
    circle_mask, square_mask = rendering.object_masks
    assert not (circle_mask & square_mask).any()
    assert torch.equal(circle_mask | square_mask, alone)
    names = nearest_colours(rendering.image)
    assert set(names[square_mask.numpy()]) == {"blue"}
    assert square_mask.sum() > 0
    assert circle_mask.sum() < alone.sum()


def test_the_same_scene_renders_the_same_pixels_and_the_seed_moves_pattern_noise():
    scene = Scene((SceneObject("star", "red", "dotted"),), Background("noise", "green"), seed=7)
    first, second = render_scene(scene, 64), render_scene(scene, 64)
    assert torch.equal(first.image, second.image)
    assert torch.equal(first.object_masks[0], second.object_masks[0])
    reseeded = render_scene(replace(scene, seed=8), 64)
    assert not torch.equal(first.image, reseeded.image)
    assert torch.equal(first.object_masks[0], reseeded.object_masks[0])


def test_every_shape_has_its_own_silhouette():
    masks = {shape: render_scene(one(shape), 64).object_masks[0] for shape in SHAPES}
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                union = (masks[a] | masks[b]).sum()
                intersection = (masks[a] & masks[b]).sum()
                assert intersection / union < 0.9, (a, b)


def test_rotation_turns_shapes_counter_clockwise_and_leaves_circles_alone():
    circle = [render_scene(one("circle", rotation=r), 64).object_masks[0] for r in (0, 33)]
    assert torch.equal(*circle)
    upright = render_scene(one("triangle"), 64).object_masks[0]
    rows = upright.sum(dim=1).nonzero().ravel()
    assert upright[rows[0]].sum() < upright[rows[-1]].sum()  # apex up, base down
    left = render_scene(one("triangle", rotation=90.0), 64).object_masks[0]
    columns = left.sum(dim=0).nonzero().ravel()
    # Turned a quarter counter-clockwise, the apex points left.
    assert left[:, columns[0]].sum() < left[:, columns[-1]].sum()


def test_objects_on_the_border_are_clipped():
    rendering = render_scene(one("star", x=0.0, y=1.0), 64)
    mask = rendering.object_masks[0]
    assert 0 < mask.sum() < render_scene(one("star"), 64).object_masks[0].sum()
    assert mask[-1, 0]


def test_concept_masks_are_unions_of_visible_object_pixels():
    scene = Scene(
        (
            SceneObject("star", "red", "solid", "small", 0.2, 0.2),
            SceneObject("circle", "red", "striped", "small", 0.8, 0.8),
            SceneObject("star", "blue", "solid", "small", 0.2, 0.8),
        ),
        Background("grass"),
    )
    rendering = render_scene(scene, 64)
    star, circle, blue_star = rendering.object_masks
    assert torch.equal(rendering.concept_mask(Concept("colour", "red")), star | circle)
    assert torch.equal(rendering.concept_mask(Concept("shape", "star")), star | blue_star)
    assert torch.equal(
        rendering.concept_mask(Concept("background", "grass")), rendering.background_mask
    )
    assert torch.equal(
        rendering.concept_mask(Concept("background_colour", "green")), rendering.background_mask
    )
    assert not rendering.concept_mask(Concept("shape", "ring")).any()
    assert not rendering.concept_mask(Concept("background", "snow")).any()
    assert set(rendering.masks()) == set(scene.concepts())


def test_conversions_and_batches():
    scenes = random_scenes(5, seed=3)
    renderings = render_scenes(scenes, (48, 80))
    assert renderings[0].image.shape == (3, 48, 80)
    assert renderings[0].to_pil().size == (80, 48)
    floats = renderings[0].float_image()
    assert floats.dtype == torch.float32
    assert floats.min() >= 0.0
    assert floats.max() <= 1.0
    batch = render_batch(scenes, (48, 80))
    assert torch.equal(batch, torch.stack([r.float_image() for r in renderings]))


@pytest.mark.parametrize("size", [4, 0, (32,), "64", 12.5])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ConfigurationError, match="size"):
        render_scene(one(), size)


def test_all_colours_render_as_themselves_on_every_texture():
    for colour in COLOURS:
        for texture in OBJECT_TEXTURES:
            rendering = render_scene(one("hexagon", colour, texture), 64)
            names = nearest_colours(rendering.image)[rendering.object_masks[0].numpy()]
            assert set(names) == {colour}
