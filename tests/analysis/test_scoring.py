"""Description scoring: ground-truth matches, accuracy per kind, the predictive score."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_design import ProceduralDesigner
from lightning_maia.analysis import (
    PredictiveScore,
    accuracy_by_kind,
    activation_auroc,
    matches_ground_truth,
    positive_and_neutral_prompts,
    predictive_score,
)
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import Concept, NeuronSpec, SyntheticNeuronModel

STAR = NeuronSpec("mono", (Concept("shape", "star"),))
RED_STAR = NeuronSpec("and", (Concept("colour", "red"), Concept("shape", "star")))
STAR_OR_GRASS = NeuronSpec("or", (Concept("shape", "star"), Concept("background", "grass")))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _report(logic: str, *concepts: str, status: str = "ok") -> UnitReport:
    return UnitReport(
        "neurons:0", "describe_unit", "test", logic=logic, concepts=concepts, status=status
    )


def test_matches_ground_truth_needs_kind_and_exact_concepts() -> None:
    assert matches_ground_truth(_report("single", "shape=star"), STAR) is True
    assert matches_ground_truth(_report("and", "shape=star", "colour=red"), RED_STAR) is True
    assert (
        matches_ground_truth(_report("or", "background=grass", "shape=star"), STAR_OR_GRASS) is True
    )
    assert matches_ground_truth(_report("or", "colour=red", "shape=star"), RED_STAR) is False
    assert matches_ground_truth(_report("single", "shape=star"), RED_STAR) is False
    assert matches_ground_truth(_report("and", "shape=star", "colour=blue"), RED_STAR) is False
    assert matches_ground_truth(_report("unknown", "shape=star"), STAR) is False
    assert matches_ground_truth(_report("single", "shape=star", status="failed"), STAR) is False


def test_accuracy_by_kind_counts_each_kind() -> None:
    specs = [STAR, STAR, RED_STAR, STAR_OR_GRASS]
    reports = [
        _report("single", "shape=star"),
        _report("single", "shape=ring"),
        _report("and", "colour=red", "shape=star"),
        _report("single", "shape=star"),
    ]
    assert accuracy_by_kind(reports, specs) == {"mono": 0.5, "or": 0.0, "and": 1.0, "all": 0.5}
    assert accuracy_by_kind(reports[:2], specs[:2]) == {
        "mono": 0.5,
        "or": None,
        "and": None,
        "all": 0.5,
    }
    with pytest.raises(ValueError, match="one per spec"):
        accuracy_by_kind(reports, specs[:2])


def test_activation_auroc_exact_values() -> None:
    assert activation_auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert activation_auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert activation_auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert activation_auroc([40.0, 25.0, 1.0], [20.0, 30.0]) == pytest.approx(0.5)
    assert activation_auroc([1000.0], [999.0]) == 1.0  # no sigmoid saturation


def test_prompts_follow_the_logic() -> None:
    designer = ProceduralDesigner()
    rng = np.random.default_rng(0)
    prompts = positive_and_neutral_prompts(
        _report("or", "background=grass", "shape=star"), designer, 4, rng
    )
    assert prompts is not None
    positive, neutral = prompts
    # Half show the first concept without the second, half the reverse.
    assert [("star" in p, "grass" in p) for p in positive] == [(False, True)] * 2 + [
        (True, False)
    ] * 2
    assert not any("star" in p or "grass" in p for p in neutral)
    assert positive_and_neutral_prompts(_report("single", "dog"), designer, 4, rng) is None


def test_predictive_score_separates_a_right_description_from_a_wrong_one() -> None:
    model = SyntheticNeuronModel([STAR], seed=0)
    subject = Subject(model, ["neurons:0"])
    right = predictive_score(subject, _report("single", "shape=star"), n=8)
    assert isinstance(right, PredictiveScore)
    assert right.auroc == 1.0
    assert 0.6 < right.mean_gap < 1.4
    wrong = predictive_score(Toolbox(subject, "neurons:0"), _report("single", "shape=ring"), n=8)
    assert wrong.auroc < 0.7 and abs(wrong.mean_gap) < 0.3
    assert predictive_score(subject, _report("unknown")) == (0.0, 0.5)
    again = predictive_score(subject, _report("single", "shape=star"), n=8)
    assert again == right and not math.isnan(again.mean_gap)


def test_hard_kinds_are_claimed_by_not_and_three_way_or() -> None:
    from lightning_maia.analysis._scoring import claimed_kind

    not_red = NeuronSpec("not", (Concept("colour", "red"),))
    three = NeuronSpec(
        "or3", (Concept("shape", "star"), Concept("colour", "red"), Concept("size", "large"))
    )
    assert claimed_kind(_report("or", "shape=star", "colour=red", "size=large")) == "or3"
    assert matches_ground_truth(_report("not", "colour=red"), not_red)
    assert matches_ground_truth(_report("or", "size=large", "shape=star", "colour=red"), three)
    assert not matches_ground_truth(_report("or", "shape=star", "colour=red"), three)
    left = NeuronSpec("position", ())
    accuracy = accuracy_by_kind([_report("single", "shape=star"), _report("single")], [STAR, left])
    assert accuracy == {"mono": 1.0, "or": None, "and": None, "position": 0.0, "all": 0.5}


@pytest.mark.parametrize(
    ("logic", "concepts"),
    [
        ("single", ("shape=star",)),
        ("and", ("colour=red", "shape=star")),
        ("and", ("shape=star", "background=grass")),
        ("single", ("background_colour=red",)),
        ("single", ("texture=striped",)),
        ("or", ("shape=star", "background=grass")),
        ("and", ("size=large", "colour=blue")),
    ],
)
def test_independent_prompts_show_the_concepts_or_none_of_them(
    logic: str, concepts: tuple[str, ...]
) -> None:
    from lightning_maia.analysis._scoring import IndependentPromptWriter
    from lightning_maia.world._grammar import parse_prompt

    writer = IndependentPromptWriter()
    rng = np.random.default_rng(3)
    wanted = {Concept.parse(c) for c in concepts}
    for draw in range(12):
        shown = parse_prompt(writer.positive(concepts, logic, rng), seed=draw).concepts()
        assert (wanted <= shown) if logic == "and" or len(wanted) == 1 else (wanted & shown)
        neutral = parse_prompt(writer.neutral(concepts, rng), seed=draw).concepts()
        assert not wanted & neutral
    # Another path than the designer's: it names only what the concepts touch.
    assert "," in writer.positive(concepts, logic, rng) or logic == "single"


def test_independent_score_separates_a_right_description_from_a_wrong_one() -> None:
    from lightning_maia.analysis._scoring import independent_predictive_score

    model = SyntheticNeuronModel([RED_STAR], seed=0)
    toolbox = Toolbox(Subject(model, ["neurons:0"]), "neurons:0")
    right = independent_predictive_score(toolbox, _report("and", "colour=red", "shape=star"), n=8)
    assert right.auroc == 1.0 and right.mean_gap > 0.5
    star_only = independent_predictive_score(toolbox, _report("single", "shape=star"), n=16)
    assert star_only.auroc < right.auroc
    assert independent_predictive_score(toolbox, _report("not", "colour=red")) == (0.0, 0.5)
