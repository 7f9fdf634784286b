"""The offline scientist: exact descriptions of hand-picked neurons, its record, its audits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_design import ProceduralDesigner
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.errors import BackendError
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._base import Description, ImageItem
from lightning_maia.tools.toolbox import TOOL_NAMES, Toolbox
from lightning_maia.world import (
    Concept,
    NeuronSpec,
    ShapesWorld,
    SyntheticNeuronLayer,
    SyntheticNeuronModel,
)

SPECS = [
    NeuronSpec("mono", (Concept("colour", "red"),)),
    NeuronSpec("mono", (Concept("shape", "star"),)),
    NeuronSpec("mono", (Concept("background", "grass"),)),
    NeuronSpec("or", (Concept("shape", "circle"), Concept("background", "snow"))),
    NeuronSpec("and", (Concept("colour", "blue"), Concept("shape", "triangle"))),
    NeuronSpec("and", (Concept("shape", "heart"), Concept("background", "sand"))),
]
SHAPES = ("circle", "square", "triangle", "star")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The world's tensors are tiny: one thread is faster than two competing ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> SyntheticNeuronModel:
    return SyntheticNeuronModel(SPECS, seed=0)


@pytest.fixture(scope="module")
def exemplars(model: SyntheticNeuronModel) -> ExemplarResult:
    data = ShapesWorld(size=1000, seed=0)
    return compute_exemplars(model, data, ["neurons:*"], k=15, num_workers=0, progress=False)


def _toolbox(model: nn.Module, index: int, exemplars: ExemplarResult | None) -> Toolbox:
    return Toolbox(Subject(model, ["neurons:*"]), f"neurons:{index}", exemplars=exemplars)


@pytest.mark.parametrize("index", range(len(SPECS)), ids=[s.name for s in SPECS])
def test_describes_each_neuron_exactly(
    model: SyntheticNeuronModel, exemplars: ExemplarResult, index: int
) -> None:
    spec = SPECS[index]
    report = ScientistAgent().run(_toolbox(model, index, exemplars), TaskSpec())
    assert report.ok, report.failure_reason
    assert report.label == spec.description
    assert set(report.concepts) == {str(c) for c in spec.concepts}
    assert report.logic == {"mono": "single"}.get(spec.kind, spec.kind)
    assert report.details["accepted"] is True


def test_report_carries_its_steps_and_experiments(
    model: SyntheticNeuronModel, exemplars: ExemplarResult
) -> None:
    toolbox = _toolbox(model, 4, exemplars)
    report = ScientistAgent().run(toolbox, TaskSpec())
    assert report.agent == "scientist" and report.unit == "neurons:4"
    assert report.task == "describe_unit"
    assert report.steps[0].request.startswith("read the dataset exemplars")
    assert [s.index for s in report.steps] == list(range(len(report.steps)))
    calls = [call for step in report.steps for call in step.tool_calls]
    assert {call.tool for call in calls} <= set(TOOL_NAMES)
    assert {"dataset_exemplars", "text2image", "edit_images", "call_units"} <= {
        c.tool for c in calls
    }
    assert all(call.observation and call.error is None for call in calls)
    assert all(call.image_ids for call in calls if call.tool != "log_experiment")
    # Both concepts alone stay quiet, together they fire: the AND evidence is in the log.
    titles = [e.title for e in report.evidence]
    assert "colour=blue alone" in titles and "shape=triangle alone" in titles
    assert "colour=blue and shape=triangle together" in titles
    assert report.evidence == toolbox.experiments
    assert all(e.activations for e in report.evidence)
    assert report.images >= 100
    assert report.seconds >= sum(step.seconds for step in report.steps) > 0
    assert report.rounds == len(report.steps)
    assert "blue triangles" in report.description


def _fingerprint(report: UnitReport) -> list[object]:
    return [
        report.label,
        report.concepts,
        report.logic,
        report.images,
        [(e.title, e.conclusion, e.activations) for e in report.evidence],
        [
            (s.request, [(c.tool, c.arguments, c.observation) for c in s.tool_calls])
            for s in report.steps
        ],
    ]


def test_same_seed_same_report(model: SyntheticNeuronModel, exemplars: ExemplarResult) -> None:
    first = ScientistAgent(seed=3).run(_toolbox(model, 3, exemplars), TaskSpec())
    second = ScientistAgent(seed=3).run(_toolbox(model, 3, exemplars), TaskSpec())
    assert _fingerprint(first) == _fingerprint(second)
    assert first.label == "circles OR snow background"


def test_exemplars_only_ranks_without_experiments(
    model: SyntheticNeuronModel, exemplars: ExemplarResult
) -> None:
    report = ScientistAgent(experiments=False).run(_toolbox(model, 1, exemplars), TaskSpec())
    assert report.agent == "exemplars_only"
    assert (report.label, report.logic) == ("stars", "single")
    assert not [
        c for s in report.steps for c in s.tool_calls if c.tool in ("call_units", "edit_images")
    ]


@pytest.mark.parametrize(("index", "verdict"), [(2, "spurious"), (1, "core")])
def test_spurious_check_follows_background_or_class(
    model: SyntheticNeuronModel, exemplars: ExemplarResult, index: int, verdict: str
) -> None:
    task = TaskSpec("spurious_check", class_names=SHAPES, candidate_attributes=("background",))
    report = ScientistAgent().run(_toolbox(model, index, exemplars), task)
    assert report.ok, report.failure_reason
    assert report.verdict == verdict
    effects = report.details
    if verdict == "spurious":
        assert report.concepts == ("background=grass",)
        assert effects["attribute_effects"]["background"] > 0.8 > 0.2 > effects["class_effect"]
        assert effects["edit_effects"]["attribute"] > 0.8
    else:
        assert report.concepts == ("shape=star",)
        assert effects["class_effect"] > 0.8 > 0.2 > effects["attribute_effects"]["background"]
        assert effects["edit_effects"]["class"] > 0.8


class CircleScores(nn.Module):
    """Logits for (circle, square, other): the circle logit collapses on blue circles."""

    def __init__(self) -> None:
        super().__init__()
        self.detectors = SyntheticNeuronLayer(
            [
                NeuronSpec("mono", (Concept("shape", "circle"),)),
                NeuronSpec("and", (Concept("colour", "blue"), Concept("shape", "circle"))),
                NeuronSpec("mono", (Concept("shape", "square"),)),
            ],
            noise_std=0.0,
        )

    def forward(self, images: Tensor) -> Tensor:
        found = self.detectors(images).amax(dim=(2, 3))
        circle = 6 * found[:, 0] - 12 * found[:, 1]
        return torch.stack([circle, 6 * found[:, 2], torch.ones_like(circle)], dim=1)


def test_class_bias_finds_the_low_scoring_colour() -> None:
    classes = ["circle", "square", "other"]
    subject = Subject(CircleScores(), ["output:0"], class_names=classes, logits_as="probability")
    task = TaskSpec("class_bias", class_names=tuple(classes), target_class="circle")
    report = ScientistAgent().run(Toolbox(subject, "output:0"), task)
    assert report.ok, report.failure_reason
    assert report.verdict == "biased"
    [subgroup] = report.details["subgroups"]
    assert (subgroup["attribute"], subgroup["value"]) == ("colour", "blue")
    assert subgroup["description"] == "blue circles"
    assert subgroup["mean_score"] < 0.1 < 0.8 < subgroup["class_mean"]
    assert subgroup["images"] == 4
    assert report.concepts == ("colour=blue",)
    assert any(e.title == "into the subgroup, all else fixed" for e in report.evidence)


def test_a_toolbox_without_exemplars_gives_a_failed_report(model: SyntheticNeuronModel) -> None:
    report = ScientistAgent().run(_toolbox(model, 0, None), TaskSpec())
    assert report.status == "failed"
    assert report.failure_reason is not None and "no dataset exemplars" in report.failure_reason
    assert report.steps[0].tool_calls[0].error is not None
    assert report.label == "" and report.images == 0


class BrokenDescriber:
    name = "broken"

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        raise BackendError("the captioning service is down")


def test_a_failing_describer_gives_a_failed_report(
    model: SyntheticNeuronModel, exemplars: ExemplarResult
) -> None:
    toolbox = Toolbox(
        Subject(model, ["neurons:*"]),
        "neurons:0",
        exemplars=exemplars,
        describer=BrokenDescriber(),
    )
    report = ScientistAgent().run(toolbox, TaskSpec())
    assert report.status == "failed"
    assert report.failure_reason == "the captioning service is down"
    assert report.images == 15  # the exemplars were read before the describer failed


def test_programming_errors_propagate(model: SyntheticNeuronModel) -> None:
    class Exploding(ProceduralDesigner):
        def neutral_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
            raise RuntimeError("a bug")

    data = ShapesWorld(size=40, seed=1)
    toolbox = Toolbox(Subject(model, ["neurons:*"]), "neurons:0", exemplar_data=data, k=3)
    with pytest.raises(RuntimeError, match="a bug"):
        ScientistAgent(Exploding()).run(toolbox, TaskSpec())
