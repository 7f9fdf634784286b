"""The scientist on real handwriting through the designer registry: exact verdicts of
hand-weighted units, edits as data, and setup-time errors for data it cannot design on."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Subset, TensorDataset

from lightning_maia.agents._scientist_design import ProceduralDesigner
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import (
    ExperimentSetup,
    check_experiment_setup,
    experiment_setup,
    table_of,
)
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.analysis._class_bias import dataset_concepts, has_metadata_concepts
from lightning_maia.analysis._spurious import counterfactual_deltas
from lightning_maia.bench._tinted_digits import TintedDigits
from lightning_maia.errors import ConfigurationError
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.realdata import EditRecord, RetrievalDesigner
from lightning_maia.tools.toolbox import Toolbox


class RednessAndZeroShape(nn.Module):
    """Two hand-weighted features: how red the ink is (a colour unit) and how much the ink's
    shape (its brightness, blind to hue) looks like the average 0 (a class unit)."""

    def __init__(self, template: Tensor) -> None:
        super().__init__()
        self.template = nn.Parameter(template, requires_grad=False)
        self.features = nn.Identity()
        self.head = nn.Linear(2, 4)

    def forward(self, x: Tensor) -> Tensor:
        redness = (x[:, 0] - x[:, 1:].max(1).values).clamp_min(0).mean((1, 2))
        ink = x.max(1).values
        zero_shape = (ink * self.template).sum((1, 2)).clamp_min(0)
        return self.head(self.features(torch.stack([redness, zero_shape], 1)))


@pytest.fixture(scope="module")
def digits() -> TintedDigits:
    return TintedDigits.split("train", classes=4, shortcut=0.95, seed=0)


@pytest.fixture(scope="module")
def model(digits: TintedDigits) -> RednessAndZeroShape:
    ink = digits.images.max(1).values
    template = ink[digits.labels == 0].mean(0) - ink.mean(0)
    return RednessAndZeroShape(template).eval()


def _judge(model: nn.Module, data: TintedDigits, unit: int) -> tuple[object, Toolbox]:
    setup = experiment_setup("auto", dataset=data, class_names=data.class_names)
    exemplars = compute_exemplars(model, data, ["features:*"], k=10, progress=False)
    toolbox = Toolbox(
        Subject(model, ["features:*"]),
        f"features:{unit}",
        exemplars=exemplars,
        generator=setup.generator,
        editor=setup.editor,
        describer=setup.describer,
    )
    task = TaskSpec(
        "spurious_check", class_names=tuple(data.class_names), candidate_attributes=("colour",)
    )
    return ScientistAgent(designer=setup.designer).run(toolbox, task), toolbox


def test_auto_picks_retrieval_from_the_datasets_attribute_columns(digits: TintedDigits) -> None:
    setup = experiment_setup(
        "auto", dataset=Subset(digits, [3, 1, 2]), class_names=digits.class_names
    )
    assert isinstance(setup.designer, RetrievalDesigner)
    assert setup.designer.class_attribute == "digit"
    assert setup.designer.table.row(0) == table_of(digits).row(3)  # type: ignore[union-attr]
    assert (setup.generator.name, setup.editor.name, setup.describer.name) == (  # type: ignore[union-attr]
        "retrieval",
        "realdata",
        "table+pixels",
    )


def test_the_scientist_tells_a_colour_unit_from_a_class_unit(
    model: RednessAndZeroShape, digits: TintedDigits
) -> None:
    colour_report, _ = _judge(model, digits, 0)
    class_report, _ = _judge(model, digits, 1)
    assert (colour_report.verdict, colour_report.concepts) == ("spurious", ("colour=red",))
    assert (class_report.verdict, class_report.concepts) == ("core", ("digit=0",))


def test_erasure_reads_the_recolour_edits_as_data(
    model: RednessAndZeroShape, digits: TintedDigits
) -> None:
    _, toolbox = _judge(model, digits, 0)
    deltas = counterfactual_deltas(model, "features", [toolbox], "colour")
    assert deltas.shape[0] >= 4
    # A recolour keeps the ink's brightness, so the shape feature does not move at all.
    assert torch.allclose(deltas[:, 1], torch.zeros(len(deltas)), atol=1e-4)
    assert float(deltas[:, 0].abs().max()) > 0.05
    red, blue = digits[0][0], digits[0][0].flip(0)
    extra = counterfactual_deltas(
        model, "features", [], "colour", edits=[EditRecord(red, blue, "swap", "colour", "a", "b")]
    )
    captured: list[Tensor] = []
    handle = model.features.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(torch.stack([red, blue]))
    handle.remove()
    assert torch.allclose(extra[0], captured[0][1] - captured[0][0], atol=1e-6)


def test_metadata_columns_give_the_concepts_of_inputs(digits: TintedDigits) -> None:
    assert has_metadata_concepts(digits)
    assert dataset_concepts(Subset(digits, [4]), [0]) == [
        frozenset({f"digit={int(digits.labels[4])}", f"colour={digits.colours[4]}"})
    ]
    assert not has_metadata_concepts(TensorDataset(torch.zeros(2, 3, 4, 4)))


def test_data_without_attributes_fails_at_setup_naming_what_to_configure() -> None:
    plain = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigurationError, match="designer="):
        experiment_setup("auto", dataset=plain, class_names=["0", "1"])
    with pytest.raises(ConfigurationError, match="table="):
        experiment_setup("retrieval", dataset=plain)
    with pytest.raises(ConfigurationError, match="vocabulary="):
        experiment_setup("prompts")
    with pytest.raises(ConfigurationError, match="`designer` can be"):
        experiment_setup("magic")


def test_a_designer_that_cannot_draw_the_task_fails_the_check(digits: TintedDigits) -> None:
    procedural = ExperimentSetup(ProceduralDesigner())
    with pytest.raises(ConfigurationError, match=r"can draw none of the classes \['0', '1'"):
        check_experiment_setup(
            procedural, class_names=digits.class_names, owner="SpuriousFeatureRemover"
        )
    retrieval = experiment_setup("auto", dataset=digits, class_names=digits.class_names)
    check_experiment_setup(
        retrieval, class_names=digits.class_names, candidate_attributes=("colour",)
    )
    with pytest.raises(ConfigurationError, match=r"cannot vary \['background'\]"):
        check_experiment_setup(
            retrieval, class_names=digits.class_names, candidate_attributes=("background",)
        )
