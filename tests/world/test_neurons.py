"""Synthetic neurons respond as their ground truth says: mono, OR, AND; exact and repeatable."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._datasets import ShapesWorld
from lightning_maia.world._neuron_suite import build_neuron_suite, sample_neuron_specs
from lightning_maia.world._neurons import (
    NeuronSpec,
    SyntheticNeuron,
    SyntheticNeuronLayer,
    SyntheticNeuronModel,
)
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject
from lightning_maia.world.provenance import ProvenanceStore, render_and_register

C = Concept.parse

RED_STAR = NeuronSpec("and", (C("colour=red"), C("shape=star")))
STAR_ON_GRASS = NeuronSpec("and", (C("shape=star"), C("background=grass")))
STAR_OR_GRASS = NeuronSpec("or", (C("shape=star"), C("background=grass")))
STARS = NeuronSpec("mono", (C("shape=star"),))
GRASS = NeuronSpec("mono", (C("background=grass"),))
SPECS = [RED_STAR, STAR_ON_GRASS, STAR_OR_GRASS, STARS, GRASS]


def scene(shape: str, colour: str, background: str, size: str = "large") -> Scene:
    """The main object at the left, and a small black heart as a distractor at the top right."""
    return Scene(
        (
            SceneObject(shape, colour, size=size, x=0.35, y=0.6),
            SceneObject("heart", "black", size="small", x=0.8, y=0.15),
        ),
        Background(background, "grey"),
    )


def image(shape: str, colour: str, background: str, size: str = "large") -> torch.Tensor:
    return render_and_register(scene(shape, colour, background, size), 64).float_image()


def peaks(layer: torch.nn.Module, *images: torch.Tensor) -> torch.Tensor:
    """Per image and neuron, the largest activation: (N, C)."""
    return layer(torch.stack(images)).flatten(2).amax(2)


@pytest.fixture(scope="module")
def layer() -> SyntheticNeuronLayer:
    return SyntheticNeuronLayer(SPECS, seed=0)


def test_maps_have_stride_four(layer: SyntheticNeuronLayer) -> None:
    maps = layer(image("star", "red", "grass")[None])
    assert maps.shape == (1, 5, 16, 16)
    assert maps.dtype == torch.float32
    odd = render_and_register(scene("star", "red", "snow"), (40, 66)).float_image()
    assert layer(odd[None]).shape == (1, 5, 10, 17)


def test_mono_fires_on_its_concept_only(layer: SyntheticNeuronLayer) -> None:
    on, off = peaks(layer, image("star", "blue", "snow"), image("circle", "blue", "snow"))
    assert on[3] > 0.6
    assert off[3] < 0.15 * on[3]
    grass, snow = peaks(layer, image("circle", "blue", "grass"), image("circle", "blue", "snow"))
    assert grass[4] > 0.6
    assert snow[4] < 0.15 * grass[4]


def test_and_is_silent_for_one_concept_alone(layer: SyntheticNeuronLayer) -> None:
    both, colour_only, shape_only = peaks(
        layer,
        image("star", "red", "snow"),
        image("circle", "red", "snow"),
        image("star", "blue", "snow"),
    )
    assert both[0] > 0.6
    assert colour_only[0] < 0.15 * both[0]
    assert shape_only[0] < 0.15 * both[0]
    on_grass, star_on_snow, circle_on_grass = peaks(
        layer,
        image("star", "blue", "grass"),
        image("star", "blue", "snow"),
        image("circle", "blue", "grass"),
    )
    assert on_grass[1] > 0.5
    assert star_on_snow[1] < 0.15 * on_grass[1]
    assert circle_on_grass[1] < 0.15 * on_grass[1]


def test_or_fires_for_each_concept_alone(layer: SyntheticNeuronLayer) -> None:
    star_only, grass_only, neither = peaks(
        layer,
        image("star", "blue", "snow"),
        image("circle", "blue", "grass"),
        image("circle", "blue", "snow"),
    )
    assert star_only[2] > 0.5
    assert grass_only[2] > 0.5
    assert neither[2] < 0.15 * min(star_only[2], grass_only[2])


def test_maps_localise_the_concept(layer: SyntheticNeuronLayer) -> None:
    rendering = render_and_register(scene("star", "red", "grass"), 64)
    maps = layer(rendering.float_image()[None])[0]
    for channel, spec in enumerate(SPECS):
        if spec.kind == "or":
            mask = rendering.concept_mask(C("shape=star")) | rendering.background_mask
        elif spec is GRASS:
            mask = rendering.background_mask
        else:
            mask = rendering.concept_mask(C("shape=star"))
        cell = int(maps[channel].argmax())
        row, column = divmod(cell, 16)
        assert mask[row * 4 : row * 4 + 4, column * 4 : column * 4 + 4].any()


def test_response_function_is_exact_without_noise() -> None:
    neuron = SyntheticNeuron(RED_STAR, seed=3, noise_std=0.0)
    rendering = render_and_register(scene("star", "red", "snow", size="medium"), 64)
    maps = neuron(rendering.float_image()[None])[0, 0]
    star_mask, heart_mask = (m.float() for m in rendering.object_masks)
    strength = 0.75 + 0.25 * min(1.0, float(star_mask.sum()) / (math.pi * (0.46 * 32) ** 2))
    gain, off_gain = float(neuron.gain[0]), float(neuron.off_gain[0])
    pooled_star = F.avg_pool2d(star_mask[None, None], 4)[0, 0]
    pooled_heart = F.avg_pool2d(heart_mask[None, None], 4)[0, 0]
    expected = gain * (strength * pooled_star + off_gain * pooled_heart)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert 0.7 <= gain <= 1.3
    assert 0.02 <= off_gain <= 0.07


def test_repeated_calls_batches_and_instances_agree(layer: SyntheticNeuronLayer) -> None:
    images = torch.stack([image("star", "red", "grass"), image("circle", "blue", "snow")])
    first = layer(images)
    assert torch.equal(first, layer(images))
    assert torch.equal(first[1:], layer(images[1:]))
    fresh = SyntheticNeuronLayer(SPECS, seed=0, cache_size=1)
    assert torch.equal(first, fresh(images))
    # A neuron alone is tuned as in the layer.
    assert torch.equal(first[:, 3:4], SyntheticNeuron(STARS, seed=0)(images))
    # Another seed tunes and noises the neurons differently.
    assert not torch.equal(first[:, 2], SyntheticNeuronLayer(SPECS, seed=1)(images)[:, 2])


def test_unknown_image_raises_a_clear_error(layer: SyntheticNeuronLayer) -> None:
    with pytest.raises(ConfigurationError, match="num_workers>0"):
        layer(torch.rand(1, 3, 64, 64))
    private = SyntheticNeuronLayer(SPECS, store=ProvenanceStore())
    with pytest.raises(ConfigurationError, match="procedural world"):
        private(image("star", "red", "grass")[None])
    with pytest.raises(ConfigurationError, match="`images`"):
        layer(torch.rand(3, 64, 64))


def test_model_reads_a_dataset_with_default_loader() -> None:
    model = SyntheticNeuronModel(SPECS)
    data = ShapesWorld(size=8, seed=2)
    images = torch.stack([data[i][0] for i in range(8)])
    maps = model(images)
    assert maps.shape == (8, 5, 16, 16)
    assert dict(model.named_children()).keys() == {"neurons"}
    assert model.specs == SPECS
    stars = [i for i in range(8) if data.scene(i).has(C("shape=star"))]
    others = [i for i in range(8) if i not in stars]
    peak = maps[:, 3].flatten(1).amax(1)
    assert all(peak[i] > 0.5 for i in stars)
    assert all(peak[i] < 0.15 for i in others)


# --- specs -------------------------------------------------------------------------------------


def test_spec_descriptions_and_names() -> None:
    assert RED_STAR.description == "red stars"
    assert RED_STAR.name == "and:shape=star&colour=red"
    assert STAR_ON_GRASS.description == "stars on a grass background"
    assert STAR_OR_GRASS.description == "stars OR grass background"
    assert NeuronSpec("mono", (C("shape=cross"),)).description == "crosses"
    assert NeuronSpec("and", (C("texture=striped"), C("shape=star"))).description == "striped stars"
    assert STAR_OR_GRASS.concept_set == {C("shape=star"), C("background=grass")}
    assert NeuronSpec("or", (C("background=grass"), C("shape=star"))) == STAR_OR_GRASS


@pytest.mark.parametrize(
    ("kind", "concepts"),
    [
        ("xor", ("shape=star", "colour=red")),
        ("mono", ("shape=star", "colour=red")),
        ("or", ("shape=star", "shape=star")),
        ("and", ("shape=star", "shape=circle")),
        ("and", ("background=snow", "background_colour=white")),
        ("or", ("background=snow", "background_colour=white")),
    ],
)
def test_degenerate_specs_are_refused(kind: str, concepts: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError, match=r"`(kind|concepts)`"):
        NeuronSpec(kind, tuple(C(c) for c in concepts))


# --- suite -------------------------------------------------------------------------------------


def test_suite_counts_uniqueness_and_seeds() -> None:
    model = build_neuron_suite(seed=0)
    kinds = [spec.kind for spec in model.specs]
    assert (kinds.count("mono"), kinds.count("or"), kinds.count("and")) == (50, 25, 25)
    assert len(set(model.specs)) == 100
    assert model.neurons.gain.shape == (100,)
    and_types = {frozenset(c.attribute for c in s.concepts) for s in model.specs if s.kind == "and"}
    assert and_types == {
        frozenset({"colour", "shape"}),
        frozenset({"texture", "shape"}),
        frozenset({"shape", "background"}),
    }
    or_specs = [s for s in model.specs if s.kind == "or"]
    same = sum(s.concepts[0].attribute == s.concepts[1].attribute for s in or_specs)
    assert (same, len(or_specs) - same) == (13, 12)
    mono_attributes = {s.concepts[0].attribute for s in model.specs if s.kind == "mono"}
    assert {"shape", "colour", "texture", "background"} <= mono_attributes
    assert sample_neuron_specs(0) == model.specs
    other = sample_neuron_specs(1)
    assert other != model.specs
    assert {s for s in other if s.kind != "mono"} != {s for s in model.specs if s.kind != "mono"}


def test_suite_bad_counts() -> None:
    with pytest.raises(ConfigurationError, match="`n_and`"):
        build_neuron_suite(n_and=10_000)
    with pytest.raises(ConfigurationError, match="`n_or`"):
        build_neuron_suite(n_or=-1)
