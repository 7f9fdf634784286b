"""The remover's functional core without a Trainer: search, remedy, install, and the callback
running the very same steps."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_maia._options import Backends, Output
from lightning_maia.agents._records import UnitReport
from lightning_maia.analysis._head_features import head_inputs
from lightning_maia.analysis._masked_head import MaskedHead
from lightning_maia.analysis._spurious import head_metrics
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.analysis.spurious_search import (
    SpuriousUnits,
    find_spurious_units,
    remove_spurious_units,
)
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.errors import ConfigurationError, ToolError
from lightning_maia.recipes.shapes_backbone import ShapesBackbone, ShapesBackboneClassifier
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import SpuriousShapes

pytestmark = pytest.mark.filterwarnings(r"ignore:Found .* module\(s\) in eval mode:UserWarning")


class ParityAgent:
    """Units 1, 3, 5, 7 follow the background, the others the shape; unit 6 stays unclear."""

    name = "parity"

    def run(self, toolbox: Toolbox, task: Any) -> UnitReport:
        index = toolbox.unit.index
        verdict = "unclear" if index == 6 else ("spurious" if index % 2 else "core")
        return UnitReport(
            unit=toolbox.unit.spec, task=task.name, agent=self.name,
            label=f"{verdict}: unit {index}", description=f"follows feature {index}",
            verdict=verdict, details={"class_effect": 0.5},
        )  # fmt: skip


def classifier() -> ShapesBackboneClassifier:
    torch.manual_seed(0)
    return ShapesBackboneClassifier(4, backbone=ShapesBackbone((4, 4, 8, 8)), lr=0.05)


def search(model: ShapesBackboneClassifier, k: int = 8) -> SpuriousUnits:
    return find_spurious_units(
        model,
        SpuriousShapes("train", size=64),
        backends=Backends(agent=ParityAgent()),
        budget=SearchBudget(k=k, exemplars_k=4),
    )


def test_find_ranks_and_judges_the_units_the_head_reads() -> None:
    model = classifier()
    found = search(model, k=8)
    assert (found.head, found.layer, found.reduction) == ("head", "backbone.pool", "mean")
    assert found.class_names == ["circle", "square", "triangle", "star"]
    assert found.agent_name == "parity"
    assert sorted(found.selection.units) == list(range(8))  # k = every unit of the head
    assert found.features.features.shape == (64, 8) and found.features.groups is not None
    expected = {i: "unclear" if i == 6 else ("spurious" if i % 2 else "core") for i in range(8)}
    assert found.verdicts == expected
    assert found.descriptions == {i: f"follows feature {i}" for i in range(8)}
    assert found.figures == {
        "units_judged": 8,
        "units_failed": 0,
        "units_spurious": 4,
        "units_core": 3,
    }
    assert sorted(found.units_with(("core", "unclear"))) == [0, 2, 4, 6]
    table = found.unit_table(kept={0, 2})
    assert table.set_index("unit")["kept"].to_dict() == {
        f"backbone.pool:{i}": i in (0, 2) for i in range(8)
    }
    assert type(model.head) is torch.nn.Linear  # searching changes nothing


def test_select_refits_on_the_kept_units_and_installs_only_when_asked() -> None:
    model = classifier()
    found = search(model)
    val = SpuriousShapes("val", size=32)
    before_weight = model.head.weight.detach().clone()
    removal = remove_spurious_units(
        model, found, refit=Refit(keep=("core", "unclear")), val_data=val
    )
    assert sorted(removal.kept_units) == [0, 2, 4, 6]
    assert removal.head is not None
    assert removal.head.mask.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert torch.all(removal.head.weight[:, removal.head.mask == 0] == 0)
    assert torch.equal(model.head.weight, before_weight)  # not installed yet

    inputs = head_inputs(model, model.head, val)
    with torch.no_grad():
        plain = head_metrics(model.head(inputs.features), inputs.labels, inputs.groups)
    refit = head_metrics(removal.head.logits(inputs.features), inputs.labels, inputs.groups)
    figures = removal.figures
    assert figures["status"] == "ok" and figures["remedy"] == "select"
    assert figures["units_kept"] == 4 and figures["units_spurious"] == 4
    for name in ("accuracy", "balanced_accuracy", "worst_group_accuracy"):
        assert figures[f"before_{name}"] == pytest.approx(plain[name])
        assert figures[f"after_{name}"] == pytest.approx(refit[name])

    masked = removal.install(model)
    assert masked is model.head and isinstance(masked, MaskedHead)
    assert masked.kept_units == [0, 2, 4, 6]
    with torch.no_grad():
        torch.testing.assert_close(
            model.head(inputs.features), removal.head.logits(inputs.features)
        )


def test_nothing_to_keep_leaves_the_head_and_says_so() -> None:
    model = classifier()
    found = search(model)
    messages: list[str] = []
    for judgement in found.judgements:  # the agent judged every unit spurious
        judgement.report.verdict = "spurious"
    removal = remove_spurious_units(model, found, warn=messages.append)
    assert removal.head is None and removal.decision() is None and removal.install(model) is None
    assert messages == ["no unit got a verdict in ('core',); the head is unchanged"]
    assert removal.figures["units_kept"] == 0 and removal.figures["status"] == "ok"
    assert type(model.head) is torch.nn.Linear


def test_copies_without_edits_fall_back_to_zero_or_fail_as_asked() -> None:
    model = classifier()
    found = search(model)  # the parity agent ran no experiment: no colour-only edit exists
    val = SpuriousShapes("val", size=32)
    messages: list[str] = []
    removal = remove_spurious_units(
        model, found, refit=Refit(copies=[0, 3]), val_data=val, warn=messages.append
    )
    plain = remove_spurious_units(model, found, val_data=val, warn=messages.append)
    assert removal.figures["copies"] == 0 and plain.figures["copies"] == 0
    assert removal.head is not None and plain.head is not None
    assert torch.equal(removal.head.weight, plain.head.weight)
    assert messages == [
        "no edit among the agent's experiments changed only the background; "
        "refit without counterfactual copies"
    ]
    with pytest.raises(ToolError, match="changed only the background"):
        remove_spurious_units(model, found, refit=Refit(copies=3))
    with pytest.raises(ConfigurationError, match=r"`val_data` can be validation data to choose"):
        remove_spurious_units(model, found, refit=Refit(copies=[0, 3]))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"copies": -1},
            r"`copies` can be a non-negative integer or a list of them, e.g. \[0, 1, 3\], got -1",
        ),
        ({"copies": [0, 1.5]}, r"`copies` can be a non-negative integer .*got \[0, 1.5\]"),
        ({"copies": []}, r"`copies` can be a non-negative integer .*got \[\]"),
        ({"copies": True}, r"`copies` can be a non-negative integer .*got True"),
        ({"copies": 2, "remedy": "erase"}, r"`copies` can be 0 unless remedy is select, got 2"),
    ],
)
def test_bad_copies_are_named(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Refit(**options)


def test_copies_read_as_a_sorted_grid_or_one_count() -> None:
    assert Refit(copies=[3, 0, 3, 1]).copies == (0, 1, 3)
    assert Refit(copies=[3, 0, 1]).copies_grid == (0, 1, 3)
    assert Refit(copies=2).copies_grid == (2,) and Refit().copies_grid == (0,)
    assert Refit(remedy="erase", copies=[0]).copies == (0,)


def test_the_callback_runs_the_same_steps(tmp_path: Any) -> None:
    train, val = SpuriousShapes("train", size=64), SpuriousShapes("val", size=32)
    direct = classifier()
    found = search(direct)
    removal = remove_spurious_units(direct, found, val_data=val)
    through_callback = classifier()
    remover = SpuriousFeatureRemover(
        dataset=train,
        val_dataset=val,
        budget=SearchBudget(k=8, exemplars_k=4),
        backends=Backends(agent=ParityAgent()),
        output=Output(progress=False),
    )
    figures = remover.apply(through_callback)
    assert figures == removal.figures
    assert removal.head is not None and isinstance(through_callback.head, MaskedHead)
    assert torch.equal(through_callback.head.mask, removal.head.mask)
    torch.testing.assert_close(through_callback.head.weight.detach(), removal.head.weight)


def test_data_the_agent_cannot_design_on_fails_before_any_pass() -> None:
    plain = TensorDataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 4)
    with pytest.raises(ConfigurationError, match="cannot design experiments on TensorDataset"):
        find_spurious_units(
            classifier(), plain, class_names=["a", "b", "c", "d"], candidate_attributes=("colour",)
        )
    with pytest.raises(ConfigurationError, match="`class_names` can be the class names"):
        find_spurious_units(classifier(), plain)
