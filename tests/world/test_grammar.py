from collections import Counter
from dataclasses import astuple, fields

import numpy as np
import pytest
import torch

from lightning_maia.errors import GrammarError
from lightning_maia.world._grammar import apply_edit, parse_prompt
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import Background, Scene, SceneObject, SceneSampler
from lightning_maia.world._text import describe_scene
from lightning_maia.world._vocabulary import (
    BACKGROUND_PATTERNS,
    COLOURS,
    SIZES,
    vocabulary_text,
)


def objects(scene: Scene) -> list[tuple[str, str, str, str]]:
    return [(o.size, o.colour, o.texture, o.shape) for o in scene.objects]


def content(scene: Scene) -> tuple[Counter, tuple[str, str]]:
    """What a description must preserve: the object multiset and the background."""
    return Counter(objects(scene)), (scene.background.texture, scene.background.colour)


def changed_fields(before: Scene, after: Scene) -> set[tuple[object, str]]:
    diff = {
        ("background", f.name)
        for f in fields(Background)
        if getattr(before.background, f.name) != getattr(after.background, f.name)
    }
    for index, (a, b) in enumerate(zip(before.objects, after.objects, strict=True)):
        diff |= {
            (index, f.name) for f in fields(SceneObject) if getattr(a, f.name) != getattr(b, f.name)
        }
    if before.seed != after.seed:
        diff.add(("scene", "seed"))
    return diff


@pytest.mark.parametrize(
    ("prompt", "expected_objects", "background"),
    [
        (
            "a red striped circle on a dotted blue background",
            [(None, "red", "striped", "circle")],
            ("dots", "blue"),
        ),
        ("two small yellow stars", [("small", "yellow", None, "star")] * 2, None),
        ("a square on snow", [(None, None, None, "square")], ("snow", "white")),
        ("a blue heart", [(None, "blue", None, "heart")], None),
        (
            "three stars and a red ring on grass",
            [(None, None, None, "star")] * 3 + [(None, "red", None, "ring")],
            ("grass", "green"),
        ),
        (
            "a large green star on a white checker background",
            [("large", "green", None, "star")],
            ("checker", "white"),
        ),
        ("a circle, red", [(None, "red", None, "circle")], None),
        ("A big Red BOX against the ocean", [("large", "red", None, "square")], ("water", "blue")),
        (
            "an orange hexagon with a striped background",
            [(None, "orange", None, "hexagon")],
            ("stripes", None),
        ),
        ("stars with stripes", [(None, None, "striped", "star")] * 2, None),
        ("a gray plus, polka dotted", [(None, "grey", "dotted", "cross")], None),
        (
            "a violet rhombus and a tiny doughnut on the beach",
            [(None, "purple", None, "diamond"), ("small", None, None, "ring")],
            ("sand", "yellow"),
        ),
        ("4 crosses", [(None, None, None, "cross")] * 4, None),
        ("six boxes", [(None, None, None, "square")] * 6, None),
        ("a plain grey background", [], ("plain", "grey")),
        ("two star-shaped objects on grass", [(None, None, None, "star")] * 2, ("grass", "green")),
        ("a red shape", [(None, "red", None, None)], None),
        (
            "a small purple solid shape on noise",
            [("small", "purple", "solid", None)],
            ("noise", None),
        ),
    ],
)
def test_prompts_fix_what_they_say(prompt, expected_objects, background):
    for seed in range(5):
        scene = parse_prompt(prompt, seed=seed)
        assert len(scene.objects) == len(expected_objects)
        for got, expected in zip(objects(scene), expected_objects, strict=True):
            assert all(e is None or g == e for g, e in zip(got, expected, strict=True)), (
                got,
                expected,
            )
        if background is not None:
            texture, colour = background
            assert scene.background.texture == texture
            assert colour is None or scene.background.colour == colour


def test_a_colour_only_background_samples_a_pattern_and_keeps_the_colour():
    textures = {parse_prompt("a star on a blue background", seed=s).background for s in range(30)}
    assert {b.colour for b in textures} == {"blue"}
    assert {b.texture for b in textures} == set(BACKGROUND_PATTERNS)


def test_open_attributes_are_sampled_from_the_seed():
    scenes = [parse_prompt("a circle", seed=seed) for seed in range(40)]
    assert parse_prompt("a circle", seed=3) == scenes[3]
    assert parse_prompt("a circle", seed=np.random.default_rng(3)) == scenes[3]
    assert len({s.objects[0].colour for s in scenes}) >= 8
    assert {s.objects[0].size for s in scenes} == set(SIZES)
    assert len({s.background.texture for s in scenes}) >= 6


def test_sampled_colours_avoid_the_background_and_named_colours_shape_the_background():
    for seed in range(40):
        scene = parse_prompt("two circles on grass", seed=seed)
        assert all(o.colour != "green" for o in scene.objects)
        assert parse_prompt("a yellow star", seed=seed).background.colour != "yellow"


def test_objects_are_placed_without_overlap():
    for seed in range(20):
        scene = parse_prompt("three small circles", seed=seed)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= SIZES["small"]


def test_descriptions_parse_back_to_the_same_scene_content():
    rng = np.random.default_rng(0)
    sampler = SceneSampler(min_objects=1, max_objects=6)
    scenes = [sampler.sample(rng) for _ in range(250)] + [Scene((), Background("dots", "pink"))]
    for scene in scenes:
        text = describe_scene(scene)
        assert content(parse_prompt(text, seed=1)) == content(scene), text


@pytest.mark.parametrize(
    ("prompt", "unknown"),
    [
        ("a red circle on a flurble background", ["flurble"]),
        ("a zorb and a blorp", ["zorb", "blorp"]),
        ("seven stars", ["seven"]),
        ("7 stars", ["7"]),
        ("a noisy circle", ["noisy"]),
        ("a grass star", ["grass"]),
        ("a red blue circle", ["blue"]),
        ("a circle on a large background", ["large"]),
        ("a circle on a green snow background", ["snow"]),
    ],
)
def test_errors_name_the_words_they_cannot_use(prompt, unknown):
    with pytest.raises(GrammarError) as caught:
        parse_prompt(prompt)
    assert list(caught.value.unknown_words) == unknown
    assert all(word in str(caught.value) for word in unknown)
    assert vocabulary_text() in str(caught.value)


def test_empty_and_too_crowded_prompts_are_errors():
    with pytest.raises(GrammarError, match="nothing to draw"):
        parse_prompt("the")
    with pytest.raises(GrammarError, match="at most 6"):
        parse_prompt("four stars and three rings")


BASE = Scene(
    (
        SceneObject("circle", "red", "solid", "small", 0.3, 0.3, 10.0),
        SceneObject("star", "blue", "striped", "large", 0.7, 0.7, -5.0),
    ),
    Background("stripes", "green"),
    seed=99,
)


@pytest.mark.parametrize(
    ("instruction", "changes", "check"),
    [
        ("make the circle blue", {(0, "colour")}, lambda s: s.objects[0].colour == "blue"),
        ("make it bigger", {(0, "size")}, lambda s: s.objects[0].size == "medium"),
        ("make the star smaller", {(1, "size")}, lambda s: s.objects[1].size == "medium"),
        (
            "replace the background with dots",
            {("background", "texture")},
            lambda s: s.background.texture == "dots",
        ),
        (
            "change the background to grass",
            {("background", "texture")},
            lambda s: s.background.texture == "grass",
        ),
        (
            "make the background red",
            {("background", "colour")},
            lambda s: s.background.colour == "red",
        ),
        ("make the star dotted", {(1, "texture")}, lambda s: s.objects[1].texture == "dotted"),
        ("turn the circle into a square", {(0, "shape")}, lambda s: s.objects[0].shape == "square"),
        ("move the star to the left", {(1, "x")}, lambda s: s.objects[1].x < 0.7),
        ("move the circle down", {(0, "y")}, lambda s: s.objects[0].y > 0.3),
        (
            "rotate the star by 30 degrees",
            {(1, "rotation")},
            lambda s: s.objects[1].rotation == 25.0,
        ),
        (
            "make the red circle checked",
            {(0, "texture")},
            lambda s: s.objects[0].texture == "checked",
        ),
        ("make the second object pink", {(1, "colour")}, lambda s: s.objects[1].colour == "pink"),
        (
            "add stripes to the circle",
            {(0, "texture")},
            lambda s: s.objects[0].texture == "striped",
        ),
        (
            "change the colour of the object to yellow",
            {(0, "colour")},
            lambda s: s.objects[0].colour == "yellow",
        ),
    ],
)
def test_edits_change_exactly_one_attribute(instruction, changes, check):
    edited = apply_edit(BASE, instruction)
    assert changed_fields(BASE, edited) == changes
    assert check(edited)


def test_plural_targets_edit_every_match():
    edited = apply_edit(BASE, "make the objects white")
    assert [o.colour for o in edited.objects] == ["white", "white"]


def test_remove_and_add_keep_the_other_objects_untouched():
    removed = apply_edit(BASE, "remove the circle")
    assert removed.objects == BASE.objects[1:]
    assert removed.background == BASE.background
    added = apply_edit(BASE, "add a green star", seed=4)
    assert added.objects[:2] == BASE.objects
    assert added.objects[2].shape == "star"
    assert added.objects[2].colour == "green"
    assert added.seed == BASE.seed
    assert apply_edit(BASE, "add a green star", seed=4) == added


def test_an_edit_is_a_counterfactual_that_differs_only_inside_the_object():
    before = render_scene(BASE, 64)
    after = render_scene(apply_edit(BASE, "make the circle purple"), 64)
    circle = before.object_masks[0]
    assert torch.equal(before.image[:, ~circle], after.image[:, ~circle])
    assert not torch.equal(before.image[:, circle], after.image[:, circle])
    assert torch.equal(after.object_masks[0], circle)


def test_a_named_background_given_a_colour_becomes_plain():
    grass = BASE.with_background(Background("grass"))
    assert apply_edit(grass, "make the background red").background == Background("plain", "red")
    assert apply_edit(grass, "replace the background with stripes").background == Background(
        "stripes", "green"
    )


@pytest.mark.parametrize(
    ("instruction", "message", "unknown"),
    [
        ("remove the square", "a small red solid circle and a large blue striped star", ["square"]),
        ("make the green circle blue", "there is no green circle", ["green", "circle"]),
        ("make the star bigger", "already large", ["bigger"]),
        ("make it smaller", "already small", ["smaller"]),
        ("fly the circle", "unknown words", ["fly"]),
        ("the circle blue", "an edit starts with", ["circle"]),
        ("make the circle", "say what to change", []),
        ("make the circle noise", "cannot change an object", ["noise"]),
        ("move the star to the moon", "unknown words", ["moon"]),
        ("move the star blue", "say where", ["blue"]),
    ],
)
def test_edit_errors_say_what_is_wrong(instruction, message, unknown):
    with pytest.raises(GrammarError, match=message) as caught:
        apply_edit(BASE, instruction)
    assert list(caught.value.unknown_words) == unknown


def test_edits_on_an_empty_scene_name_what_is_present():
    with pytest.raises(GrammarError, match="no objects"):
        apply_edit(Scene(), "make it red")
    assert apply_edit(Scene(), "add two rings").objects[1].shape == "ring"


def test_every_colour_word_parses_to_itself():
    for colour in COLOURS:
        assert parse_prompt(f"a {colour} ring").objects[0].colour == colour
        assert astuple(apply_edit(BASE, f"make it {colour}").objects[0])[1] == colour
