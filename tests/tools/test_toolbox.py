"""The Toolbox with procedural backends: every tool's contract, ids, errors, schemas."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_maia.errors import ConfigurationError, ToolError, UnknownImageError
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import TOOL_NAMES, Toolbox
from lightning_maia.units import Unit
from lightning_maia.world import NeuronSpec, ShapesWorld, SyntheticNeuronModel, render_scene
from lightning_maia.world._scene import Concept


@pytest.fixture(scope="module")
def star_model() -> SyntheticNeuronModel:
    """Channel 0 fires on stars; channel 1 on red stars (AND)."""
    return SyntheticNeuronModel(
        [
            NeuronSpec("mono", (Concept("shape", "star"),)),
            NeuronSpec("and", (Concept("colour", "red"), Concept("shape", "star"))),
        ],
        seed=0,
    )


@pytest.fixture(scope="module")
def dataset() -> ShapesWorld:
    return ShapesWorld(size=120, seed=3, image_size=64)


@pytest.fixture
def toolbox(star_model: SyntheticNeuronModel, dataset: ShapesWorld) -> Toolbox:
    return Toolbox(Subject(star_model, ["neurons:*"]), "neurons:0", exemplar_data=dataset, k=6)


def test_dataset_exemplars_are_stars_highest_first(toolbox: Toolbox, dataset: ShapesWorld) -> None:
    exemplars = toolbox.dataset_exemplars()
    assert [e.id for e in exemplars] == [f"exemplar-{i}" for i in range(1, 7)]
    activations = [e.activation for e in exemplars]
    assert activations == sorted(activations, reverse=True)
    for exemplar in exemplars:
        assert dataset.scene(exemplar.dataset_index).has(Concept("shape", "star"))
    assert toolbox.dataset_exemplars() == exemplars  # a second call adds nothing
    assert len(toolbox.images) == 6
    described = toolbox.describe_images([e.id for e in exemplars])
    assert all("shape=star" in d.concepts for d in described)
    summary = toolbox.summarize_images([e.id for e in exemplars])
    assert "shape=star" in summary.concepts
    assert "star" in str(summary)


def test_text2image_is_seeded_and_replayable(toolbox: Toolbox) -> None:
    first = toolbox.text2image(["a red star", "a blue circle on grass"], n_per_prompt=2, seed=7)
    assert [g.id for g in first] == ["gen-1", "gen-2", "gen-3", "gen-4"]
    assert [g.seed for g in first] == [7, 8, 9, 10]
    assert [g.prompt for g in first] == ["a red star"] * 2 + ["a blue circle on grass"] * 2
    again = toolbox.text2image(["a red star"], seed=7)
    assert torch.equal(toolbox.images.get(again[0].id).image, toolbox.images.get("gen-1").image)
    scene = toolbox.images.get("gen-3").scene
    assert scene is not None and scene.background.texture == "grass"
    drawn = toolbox.text2image(["a star"]) + toolbox.text2image(["a star"])
    assert drawn[0].seed != drawn[1].seed


def test_call_units_measures_and_highlights(toolbox: Toolbox) -> None:
    generated = toolbox.text2image(["a large yellow star on snow", "a large yellow square on snow"])
    calls = toolbox.call_units([g.id for g in generated])
    assert [c.id for c in calls] == ["gen-1", "gen-2"]
    star, square = calls
    assert star.activation > 0.5 > 0.2 > square.activation
    highlighted = toolbox.images.get(star.highlighted)
    assert highlighted.source == "mask" and highlighted.parent == "gen-1"
    assert highlighted.mask is not None and highlighted.mask.any()
    scene = highlighted.scene
    assert scene is not None
    star_pixels = render_scene(scene, 64).object_masks[0]
    # The mask covers the whole star, and (a coarse 16x16 map upsampled) not much more.
    assert bool((highlighted.mask & star_pixels).sum() == star_pixels.sum())
    assert int(highlighted.mask.sum()) < 3 * int(star_pixels.sum())
    (description,) = toolbox.describe_images([star.highlighted])
    assert "shape=star" in description.concepts


def test_edit_images_pairs_and_counterfactual(toolbox: Toolbox) -> None:
    (original,) = toolbox.text2image(["a large red star on sand"], seed=1)
    pairs = toolbox.edit_images(
        [original.id], ["make the star blue", "turn the star into a circle"]
    )
    assert [(p.original, p.edited) for p in pairs] == [("gen-1", "edit-1"), ("gen-1", "edit-2")]
    calls = toolbox.call_units([original.id, "edit-1", "edit-2"])
    assert calls[0].activation > 0.5 and calls[1].activation > 0.5  # colour does not matter
    assert calls[2].activation < 0.2  # shape does
    blue = toolbox.images.get("edit-1").scene
    assert blue is not None and blue.objects[0].colour == "blue"
    with pytest.raises(ToolError, match="2 instructions"):
        toolbox.edit_images(["gen-1", "edit-1", "edit-2"], ["a", "b"])


def test_log_experiment_attaches_measurements(toolbox: Toolbox) -> None:
    generated = toolbox.text2image(["a red star"], seed=0)
    toolbox.call_units([generated[0].id])
    toolbox.describe_images([generated[0].id])
    experiment = toolbox.log_experiment(
        "stars", [generated[0].id], conclusion="fires", hypothesis="h"
    )
    assert toolbox.experiments == [experiment]
    assert set(experiment.activations) == {"gen-1"}
    assert experiment.descriptions["gen-1"].startswith("a ")
    assert "conclusion: fires" in str(experiment)


def test_agent_mistakes_are_tool_errors(toolbox: Toolbox) -> None:
    with pytest.raises(UnknownImageError, match="no image with id 'gen-9'; known ids: none yet"):
        toolbox.call_units(["gen-9"])
    with pytest.raises(ToolError, match=r"text2image: .*flibbertigibbet"):
        toolbox.text2image(["a flibbertigibbet star"])
    with pytest.raises(ToolError, match="more than the limit of 32"):
        toolbox.text2image(["a star"], n_per_prompt=33)
    with pytest.raises(ToolError, match="unknown tool 'exec'"):
        toolbox.call("exec", {})
    with pytest.raises(ToolError, match="argument `prompts` must be a list"):
        toolbox.call("text2image", {"prompts": "a star"})
    with pytest.raises(ToolError, match=r"unknown argument\(s\) colour"):
        toolbox.call("text2image", {"prompts": ["a star"], "colour": "red"})
    with pytest.raises(ToolError, match=r"missing required argument\(s\) image_ids"):
        toolbox.call("call_units", {})


def test_procedural_backends_refuse_images_without_a_scene(star_model) -> None:
    images = torch.rand(4, 3, 16, 16)
    toolbox = Toolbox(
        Subject(star_model, ["neurons:0"]),
        "neurons:0",
        exemplars=compute_exemplars(
            torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)),
            torch.utils.data.TensorDataset(images),
            ["0:0"],
            k=2,
            progress=False,
        ),
    )
    with pytest.raises(ConfigurationError, match="`unit` can be one unit"):
        Toolbox(Subject(star_model, ["neurons:*"]), "neurons:0-1")
    stored = toolbox.images.add(images[0], "text2image", prompt="noise", seed=0)
    with pytest.raises(ToolError, match=r"no procedural scene.*captioner, CLIP vocabulary or VLM"):
        toolbox.describe_images([stored.id])
    with pytest.raises(ToolError, match=r"no procedural scene.*DiffusersEditor"):
        toolbox.edit_images([stored.id], ["make it blue"])


def test_call_dispatch_and_definitions(toolbox: Toolbox) -> None:
    generated = toolbox.call("text2image", {"prompts": ["a green star"], "seed": 3})
    assert generated[0].id == "gen-1"
    definitions = toolbox.definitions()
    assert [d.name for d in definitions] == list(TOOL_NAMES)
    schemas = [d.json_schema() for d in definitions]
    json.dumps(schemas)  # plain JSON
    text2image = schemas[1]["function"]
    assert text2image["parameters"]["required"] == ["prompts"]
    assert text2image["parameters"]["properties"]["prompts"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 500},
        "minItems": 1,
        "maxItems": 256,
        "description": 'one description per image set, e.g. "a red striped circle on grass".',
    }
    seed = text2image["parameters"]["properties"]["seed"]
    assert (seed["nullable"], seed["minimum"], seed["maximum"]) == (True, 0, 2**32 - 1)
    signature = definitions[1].python_signature()
    assert signature.startswith(
        "def text2image(prompts: list[str], n_per_prompt: int = 1, seed: int | None = None)"
        " -> list[GeneratedImage]:"
    )


def test_and_neuron_needs_both_concepts(star_model, dataset) -> None:
    toolbox = Toolbox(Subject(star_model, ["neurons:*"]), Unit("neurons", 1), exemplar_data=dataset)
    generated = toolbox.text2image(
        ["a large red star on snow", "a large blue star on snow", "a large red circle on snow"],
        seed=0,
    )
    red_star, blue_star, red_circle = toolbox.call_units([g.id for g in generated])
    assert red_star.activation > 0.5
    assert blue_star.activation < 0.2 and red_circle.activation < 0.2
