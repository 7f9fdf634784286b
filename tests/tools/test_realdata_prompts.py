"""The prompt designer through real (tiny, random-weight) diffusers pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_diffusers import save_tiny_pipelines
from torch import nn

from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import experiment_setup
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._diffusers_backend import DiffusersEditor, DiffusersGenerator
from lightning_maia.tools.realdata import PixelDescriber, PromptDesigner
from lightning_maia.tools.toolbox import Toolbox

VOCABULARY = {"object": ["cat", "dog"], "colour": ["red", "blue", "green"]}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_tiny_pipelines(tmp_path_factory.mktemp("tiny-diffusers"))


def test_prompts_and_instructions_follow_the_concepts() -> None:
    designer = PromptDesigner(VOCABULARY, class_attribute="object")
    rng = np.random.default_rng(0)
    prompts = designer.prompts(["colour=red"], ["object=dog"], 3, rng)
    assert prompts == ["a photo of a red cat"] * 3
    assert designer.prompts(["colour=red", "colour=blue"], [], 1, rng) is None
    assert designer.removal_edit("object=cat", [], [], rng) == "make it a dog"
    assert designer.class_concept("dog") == "object=dog" and designer.class_concept("cow") is None
    assert designer.attributes() == ("colour",)


def test_the_designers_prompts_and_edits_run_through_diffusers(folders: dict[str, Path]) -> None:
    generator = DiffusersGenerator(folders["text-to-image"], device="cpu", num_inference_steps=2)
    editor = DiffusersEditor(folders["instruct-pix2pix"], device="cpu", num_inference_steps=2)
    setup = experiment_setup(
        "auto", vocabulary=VOCABULARY, class_attribute="object", generator=generator, editor=editor
    )
    assert isinstance(setup.designer, PromptDesigner) and isinstance(
        setup.describer, PixelDescriber
    )
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
    toolbox = Toolbox(
        Subject(model, ["1:*"]),
        "1:0",
        generator=setup.generator,
        editor=setup.editor,
        describer=setup.describer,
        image_size=16,
    )
    rng = np.random.default_rng(0)
    prompts = setup.designer.prompts(["colour=red"], [], 2, rng)
    assert prompts is not None
    made = toolbox.text2image(prompts)
    assert [m.prompt for m in made] == prompts
    images = [toolbox.images.get(m.id).image for m in made]
    assert all(
        tuple(i.shape) == (3, 16, 16) and 0 <= float(i.min()) <= float(i.max()) <= 1 for i in images
    )
    instruction = setup.designer.removal_edit("colour=red", [], [], rng)
    assert instruction in ("make the colour blue", "make the colour green")
    pair = toolbox.edit_images([made[0].id], [instruction])[0]
    assert not torch.equal(toolbox.images.get(pair.edited).image, images[0])
    # The whole spurious_check runs on these backends (no exemplars needed): a grid of every
    # class with every colour, measured, then edits of the most active images.
    task = TaskSpec("spurious_check", class_names=("cat", "dog"), candidate_attributes=("colour",))
    report = ScientistAgent(designer=setup.designer).run(toolbox, task)
    assert report.ok, report.failure_reason
    assert report.verdict in ("core", "spurious", "unclear")
    grid = report.evidence[0]
    assert grid.title == "classes x colour" and len(grid.image_ids) == 2 * 3 * 2
