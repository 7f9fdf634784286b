"""Scoring unit descriptions: against ground truth, and by what they predict.

- **Ground truth** (synthetic neurons): a report matches a :class:`NeuronSpec` when its logic
  maps to the neuron's kind (single <-> mono, or, and) and its concepts are the neuron's.
- **Predictive score** (any unit, MAIA's evaluation): from the description, generate images
  that should activate the unit and neutral images that should not; report the mean activation
  gap and the AUROC of activation for positive vs neutral.

>>> from lightning_maia.agents.records import UnitReport
>>> from lightning_maia.world import Concept, NeuronSpec
>>> spec = NeuronSpec("and", (Concept("colour", "red"), Concept("shape", "star")))
>>> report = UnitReport("neurons:0", "describe_unit", "scientist", logic="and",
...                     concepts=("shape=star", "colour=red"))
>>> matches_ground_truth(report, spec)
True
>>> activation_auroc([0.9, 0.8], [0.1, 0.2])
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from lightning_maia.agents.records import UnitReport
from lightning_maia.agents.scientist_design import ExperimentDesigner, ProceduralDesigner
from lightning_maia.errors import bad_option
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit
from lightning_maia.world.neurons import KINDS, NeuronSpec

#: A report's logic -> the neuron kind it claims.
LOGIC_TO_KIND: dict[str, str] = {"single": "mono", "or": "or", "and": "and"}


class PredictiveScore(NamedTuple):
    """How well a description predicts the unit: activation gap and AUROC, positive vs neutral."""

    mean_gap: float
    auroc: float


def matches_ground_truth(report: UnitReport, spec: NeuronSpec) -> bool:
    """Whether a finished report names the neuron's kind and exactly its concepts."""
    return (
        report.ok
        and LOGIC_TO_KIND.get(report.logic) == spec.kind
        and set(report.concepts) == {str(concept) for concept in spec.concepts}
    )


def accuracy_by_kind(
    reports: Sequence[UnitReport], specs: Sequence[NeuronSpec]
) -> dict[str, float | None]:
    """Share of reports matching their neuron, per kind (mono, or, and) and over all; None for
    a kind with no neurons.

    >>> from lightning_maia.world import Concept
    >>> spec = NeuronSpec("mono", (Concept("shape", "star"),))
    >>> right = UnitReport("n:0", "describe_unit", "a", logic="single", concepts=("shape=star",))
    >>> wrong = UnitReport("n:1", "describe_unit", "a", logic="single", concepts=("shape=ring",))
    >>> accuracy_by_kind([right, wrong], [spec, spec])
    {'mono': 0.5, 'or': None, 'and': None, 'all': 0.5}
    """
    if len(reports) != len(specs):
        raise bad_option("reports", f"one per spec ({len(specs)})", len(reports))
    hits = [matches_ground_truth(report, spec) for report, spec in zip(reports, specs, strict=True)]
    accuracy: dict[str, float | None] = {}
    for kind in KINDS:
        chosen = [hit for hit, spec in zip(hits, specs, strict=True) if spec.kind == kind]
        accuracy[kind] = sum(chosen) / len(chosen) if chosen else None
    accuracy["all"] = sum(hits) / len(hits) if hits else None
    return accuracy


def activation_auroc(positive: Sequence[float], neutral: Sequence[float]) -> float:
    """AUROC of activation for positive vs neutral images (torchmetrics' binary AUROC).

    >>> activation_auroc([0.2, 0.9], [0.1, 0.5])
    0.75
    """
    if not len(positive) or not len(neutral):
        raise bad_option("positive and neutral", "at least one activation each", 0)
    values = torch.tensor([*positive, *neutral], dtype=torch.float64)
    # Min-max scaling keeps the order and spares torchmetrics' sigmoid on raw activations.
    span = float(values.max() - values.min())
    scores = (values - values.min()) / span if span > 0 else torch.zeros_like(values)
    target = torch.tensor([1] * len(positive) + [0] * len(neutral))
    return float(binary_auroc(scores, target))


def positive_and_neutral_prompts(
    report: UnitReport, designer: ExperimentDesigner, n: int, rng: np.random.Generator
) -> tuple[list[str], list[str]] | None:
    """Prompts for images the description says activate the unit, and for neutral images
    (none of its concepts); None when the designer cannot draw them."""
    concepts = list(report.concepts)
    if not concepts or not all(designer.can_design(c) for c in concepts):
        return None
    if report.logic == "or":
        half = (n + 1) // 2
        first = designer.prompts([concepts[0]], concepts[1:], half, rng) or []
        second = designer.prompts(concepts[1:2], concepts[:1], n - half, rng) or []
        positive: list[str] | None = first + second
    elif report.logic in ("single", "and"):
        positive = designer.prompts(concepts, [], n, rng)
    else:
        return None
    neutral = designer.prompts([], concepts, n, rng)
    if not positive or not neutral:
        return None
    return positive, neutral


def predictive_score(
    subject: Subject | Toolbox,
    report: UnitReport,
    designer: ExperimentDesigner | None = None,
    *,
    unit: Unit | str | None = None,
    n: int = 16,
    seed: int = 0,
) -> PredictiveScore:
    """MAIA's predictive evaluation of ``report`` on its unit.

    ``subject`` is a Subject (then ``unit`` defaults to the report's) or a Toolbox whose
    subject, unit and generator are reused (its images and log are left untouched). A report
    whose concepts the designer cannot draw scores ``(0.0, 0.5)``: it predicts nothing.
    """
    if n < 1:
        raise bad_option("n", "a positive integer", n)
    designer = designer or ProceduralDesigner()
    if isinstance(subject, Toolbox):
        toolbox = Toolbox(
            subject.subject,
            unit or subject.unit,
            generator=subject.generator,
            image_size=subject.image_size,
            seed=seed,
        )
    else:
        toolbox = Toolbox(subject, unit or report.unit, seed=seed)
    prompts = positive_and_neutral_prompts(report, designer, n, np.random.default_rng(seed))
    if prompts is None:
        return PredictiveScore(0.0, 0.5)
    measured = []
    for group in prompts:
        activations = []
        for start in range(0, len(group), toolbox.max_images_per_call):
            made = toolbox.text2image(group[start : start + toolbox.max_images_per_call])
            activations += [call.activation for call in toolbox.call_units([g.id for g in made])]
        measured.append(activations)
    positive, neutral = measured
    return PredictiveScore(
        float(np.mean(positive) - np.mean(neutral)), activation_auroc(positive, neutral)
    )
