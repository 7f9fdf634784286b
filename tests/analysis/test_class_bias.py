"""Class-bias findings: from reports, matched to inputs, checked against planted subgroups; and
the audit run end to end on a model with a known weak subgroup."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from lightning_maia.agents._records import UnitReport
from lightning_maia.analysis._class_bias import (
    SubgroupFinding,
    audit_class_bias,
    check_subgroups,
    dataset_concepts,
    described_concepts,
    false_positives_per_class,
    findings_from_report,
    finds_planted,
    planted_recovery,
    planted_score_drop,
)
from lightning_maia.errors import ConfigurationError, ToolError
from lightning_maia.world import SyntheticNeuronLayer
from lightning_maia.world._neurons import NeuronSpec
from lightning_maia.world._scene import Concept
from lightning_maia.world._subgroups import BiasedShapes, PlantedSubgroup
from lightning_maia.world.provenance import ProvenanceStore


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The agent feeds small batches: one thread beats two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _finding(
    class_name: str, attribute: str, value: str, mean: float = 0.2, group: str = ""
) -> SubgroupFinding:
    return SubgroupFinding(
        f"output:{class_name}",
        class_name,
        f"shape={class_name}",
        attribute,
        value,
        f"{attribute}={value}",
        f"{value} {class_name}s",
        mean_score=mean,
        class_mean=0.8,
        group=group,
    )


def test_findings_come_from_the_scientists_report_and_a_vlms_answer() -> None:
    report = UnitReport(
        "output:0",
        "class_bias",
        "scientist",
        verdict="biased",
        details={
            "class_mean": 0.9,
            "subgroups": [
                {
                    "attribute": "colour",
                    "value": "blue",
                    "concept": "colour=blue",
                    "description": "blue circles",
                    "group": "circle whose colour is not red",
                    "mean_score": 0.1,
                    "class_mean": 0.9,
                    "images": 4,
                },
                {"description": "circles seen from far away", "mean_score": 0.3},
            ],
        },
    )
    scientist, vlm = findings_from_report(report, "circle", "shape=circle")
    assert (scientist.attribute, scientist.value, scientist.concept) == (
        "colour",
        "blue",
        "colour=blue",
    )
    assert scientist.severity == pytest.approx(1 - 0.1 / 0.9)
    assert scientist.group == "circle whose colour is not red" and scientist.images == 4
    # A VLM's answer has no concept: it is reported, but no input can be matched to it.
    assert vlm.description == "circles seen from far away" and vlm.class_mean == 0.9
    assert not vlm.matches(frozenset({"shape=circle", "colour=blue"}))
    failed = UnitReport.failed("output:0", "class_bias", "scientist", "service down")
    assert findings_from_report(failed, "circle", "shape=circle") == []


def test_a_finding_matches_inputs_of_its_class_with_its_concept() -> None:
    finding = _finding("circle", "colour", "blue")
    assert finding.matches(frozenset({"shape=circle", "colour=blue", "background=snow"}))
    assert not finding.matches(frozenset({"shape=square", "colour=blue"}))
    assert not finding.matches(frozenset({"shape=circle", "colour=red"}))
    unknown = SubgroupFinding(
        "output:0", "circle", "shape=circle", "colour", "blue", "colour=blue", "x"
    )
    assert unknown.severity == 0.0  # no measured scores: no severity


def test_planted_subgroups_are_recovered_by_class_attribute_and_a_value_outside_train() -> None:
    circle = PlantedSubgroup("circle", "colour", ("red",))
    star = PlantedSubgroup("star", "size", ("large",))
    assert finds_planted(_finding("circle", "colour", "green"), circle)
    assert not finds_planted(_finding("circle", "colour", "red"), circle)  # the train value
    assert not finds_planted(_finding("circle", "size", "small"), circle)  # wrong attribute
    assert not finds_planted(_finding("square", "colour", "green"), circle)  # wrong class
    recovery = planted_recovery([_finding("circle", "colour", "blue")], [circle, star])
    assert recovery == {"circle that is not red": True, "star that is not large": False}


def test_false_positives_are_unplanted_subgroups_that_do_not_score_lower_on_data() -> None:
    planted = [PlantedSubgroup("circle", "colour", ("red",))]
    concepts = [
        frozenset({"shape=circle", "colour=red", "size=large"}),
        frozenset({"shape=circle", "colour=blue", "size=small"}),
        frozenset({"shape=circle", "colour=red", "size=small"}),
        frozenset({"shape=square", "colour=red", "texture=dotted"}),
        frozenset({"shape=square", "colour=blue", "texture=solid"}),
        frozenset({"shape=square", "colour=green", "texture=checked"}),
    ]
    labels = [0, 0, 0, 1, 1, 1]
    probabilities = [0.9, 0.2, 0.7, 0.8, 0.4, 0.3]
    not_red = "circle whose colour is not red"
    findings = [
        # One planted subgroup reported as two low values of one group.
        _finding("circle", "colour", "blue", group=not_red),
        _finding("circle", "colour", "green", group=not_red),
        _finding("circle", "size", "small"),  # not planted, but low on data: 0.45 < 0.6
        _finding("square", "texture", "dotted"),  # not planted, 0.8 >= 0.5: false positive
        _finding("square", "texture", "striped"),  # no items to show it is low: false positive
        # Two values of one group: 0.35 < 0.5 on data together, so not a false positive.
        _finding("square", "texture", "solid", group="square not dotted or striped"),
        _finding("square", "texture", "checked", group="square not dotted or striped"),
    ]
    checks = check_subgroups(
        findings, planted, concepts, labels, probabilities, ["circle", "square"]
    )
    assert [c.subgroup for c in checks] == [
        not_red,
        "small circles",
        "dotted squares",
        "striped squares",
        "square not dotted or striped",
    ]
    assert [c.planted for c in checks] == [True, False, False, False, False]
    assert len(checks[0].findings) == 2 and checks[0].items == 1
    assert (checks[1].subgroup_mean, checks[1].class_mean) == pytest.approx((0.45, 0.6))
    assert (checks[4].subgroup_mean, checks[4].items) == (pytest.approx(0.35), 2)
    assert [c.false_positive for c in checks] == [False, False, True, True, False]
    assert math.isnan(checks[3].subgroup_mean) and checks[3].items == 0
    assert false_positives_per_class(checks, ["circle", "square"]) == {"circle": 0, "square": 2}


def test_concepts_of_inputs_from_metadata_and_from_the_describer_agree() -> None:
    data = BiasedShapes("val", size=12, seed=3)
    from_metadata = dataset_concepts(data, range(12))
    row = data.metadata.iloc[5]
    assert {
        f"shape={row['shape']}",
        f"colour={row['colour']}",
        f"size={row['size']}",
    } <= from_metadata[5]
    images = torch.stack([data[i][0] for i in range(12)])
    assert described_concepts(images) == from_metadata
    # The scenes are read from the store given; a store that never saw the images has none.
    private = ProvenanceStore()
    mirrored = BiasedShapes("val", size=12, seed=3, store=private)
    assert described_concepts(torch.stack([mirrored[i][0] for i in range(12)]), store=private) == (
        from_metadata
    )
    with pytest.raises(ToolError, match="no procedural scene"):
        described_concepts(images, store=ProvenanceStore())
    # A Subset is followed to the items it holds.
    assert dataset_concepts(Subset(data, [5, 2]), [0, 1]) == [from_metadata[5], from_metadata[2]]
    with pytest.raises(ConfigurationError, match="`dataset` can be a procedural dataset"):
        dataset_concepts(torch.utils.data.TensorDataset(torch.zeros(2)), [0])


class CircleScores(nn.Module):
    """Logits for (circle, square, other): the circle logit collapses on blue circles."""

    def __init__(self, store: ProvenanceStore | None = None) -> None:
        super().__init__()
        self.detectors = SyntheticNeuronLayer(
            [
                NeuronSpec("mono", (Concept("shape", "circle"),)),
                NeuronSpec("and", (Concept("colour", "blue"), Concept("shape", "circle"))),
                NeuronSpec("mono", (Concept("shape", "square"),)),
            ],
            noise_std=0.0,
            store=store,
        )

    def forward(self, images: Tensor) -> Tensor:
        found = self.detectors(images).amax(dim=(2, 3))
        circle = 6 * found[:, 0] - 12 * found[:, 1]
        return torch.stack([circle, 6 * found[:, 2], torch.ones_like(circle)], dim=1)


@pytest.mark.parametrize("private", [False, True], ids=["default store", "private store"])
def test_the_audit_finds_the_weak_subgroup_and_matches_it_to_inputs(private: bool) -> None:
    store = ProvenanceStore() if private else None
    audit = audit_class_bias(
        CircleScores(store), ["circle", "square", "other"], classes=["circle"],
        candidate_attributes=("colour",), store=store,
    )  # fmt: skip
    if store is not None:  # the audit's images went to the store it was given
        assert audit.toolboxes["output:0"].store is store and len(store) > 0
    assert [r.verdict for r in audit.reports] == ["biased"]
    [finding] = audit.findings
    assert (finding.unit, finding.class_concept, finding.concept) == (
        "output:0",
        "shape=circle",
        "colour=blue",
    )
    assert finding.description == "blue circles" and finding.severity > 0.8
    assert audit.groups == ["blue circles"]
    assert audit.to_dataframe()["concept"].tolist() == ["colour=blue"]
    assert set(audit.toolboxes) == {"output:0"}


def test_bad_audit_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="`classes` can be some of circle, square"):
        audit_class_bias(CircleScores(), ["circle", "square"], classes=["star"])
    with pytest.raises(ConfigurationError, match="`on_error` can be warn or raise"):
        audit_class_bias(CircleScores(), ["circle", "square"], on_error="ignore")


def test_the_planted_score_drop_says_whether_a_model_took_the_shortcut() -> None:
    data = BiasedShapes("val", size=120, seed=1)
    scenes = [data.scene(i) for i in range(120)]
    labels = [data.item_scene_and_label(i)[1] for i in range(120)]
    circle = data.planted_subgroups[0]  # circle that is not red
    took = [0.1 if circle.contains(s) else 0.8 for s in scenes]  # non-red circles score low
    assert planted_score_drop(circle, scenes, labels, took, data.class_names) == pytest.approx(
        1 - 0.1 / 0.8
    )
    ignored = [0.5] * 120
    assert planted_score_drop(circle, scenes, labels, ignored, data.class_names) == 0.0
