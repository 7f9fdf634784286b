"""Scoring unit descriptions: against ground truth, and by what they predict.

- **Ground truth** (synthetic neurons): a report matches a :class:`NeuronSpec` when its logic
  maps to the neuron's kind (single <-> mono, or, and) and its concepts are the neuron's.
- **Predictive score** (any unit, MAIA's evaluation): from the description, generate images
  that should activate the unit and neutral images that should not; report the mean activation
  gap and the AUROC of activation for positive vs neutral. The prompts come from the agent's
  designer, or (:class:`IndependentPromptWriter`) from another seed and another path through
  the world's grammar, so that a description is not scored by the very prompts it was built on.

>>> from lightning_maia.agents._records import UnitReport
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

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_design import ExperimentDesigner, ProceduralDesigner
from lightning_maia.errors import ConfigurationError, bad_option

# Re-exported: the independent writer's seed offset is part of this module's API.
from lightning_maia.evaluation_constants import INDEPENDENT_SEED_OFFSET as INDEPENDENT_SEED_OFFSET
from lightning_maia.evaluation_constants import PREDICTIVE_IMAGES
from lightning_maia.metrics import auroc_of_samples
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit
from lightning_maia.world._neurons import HARD_KINDS, KINDS, NeuronSpec
from lightning_maia.world._scene import _ALLOWED as ATTRIBUTE_VALUES
from lightning_maia.world._scene import Concept

#: A report's logic -> the neuron kind it claims (an OR of three concepts claims ``or3``).
LOGIC_TO_KIND: dict[str, str] = {"single": "mono", "or": "or", "and": "and", "not": "not"}


def claimed_kind(report: UnitReport) -> str | None:
    """The neuron kind a report claims: its logic's, ``or3`` for an OR of three concepts."""
    if report.logic == "or" and len(report.concepts) == 3:
        return "or3"
    return LOGIC_TO_KIND.get(report.logic)


class PredictiveScore(NamedTuple):
    """How well a description predicts the unit: activation gap and AUROC, positive vs neutral."""

    mean_gap: float
    auroc: float


def matches_ground_truth(report: UnitReport, spec: NeuronSpec) -> bool:
    """Whether a finished report names the neuron's kind and exactly its concepts."""
    return (
        report.ok
        and claimed_kind(report) == spec.kind
        and set(report.concepts) == {str(concept) for concept in spec.concepts}
    )


def accuracy_by_kind(
    reports: Sequence[UnitReport], specs: Sequence[NeuronSpec]
) -> dict[str, float | None]:
    """Share of reports matching their neuron, per kind (mono, or, and, then any hard kind
    present) and over all; None for a standard kind with no neurons.

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
    kinds = [*KINDS, *(k for k in HARD_KINDS if any(s.kind == k for s in specs))]
    for kind in kinds:
        chosen = [hit for hit, spec in zip(hits, specs, strict=True) if spec.kind == kind]
        accuracy[kind] = sum(chosen) / len(chosen) if chosen else None
    accuracy["all"] = sum(hits) / len(hits) if hits else None
    return accuracy


def activation_auroc(positive: Sequence[float], neutral: Sequence[float]) -> float:
    """AUROC of activation for positive vs neutral images, ties counting half
    (:func:`lightning_maia.metrics.auroc_of_samples`, torchmetrics' binary AUROC).

    >>> activation_auroc([0.2, 0.9], [0.1, 0.5])
    0.75
    """
    if not len(positive) or not len(neutral):
        raise bad_option("positive and neutral", "at least one activation each", 0)
    return auroc_of_samples(positive, neutral)


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
    n: int = PREDICTIVE_IMAGES,
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


_OBJECT_ORDER = ("colour", "texture", "size")


class IndependentPromptWriter:
    """Positive and neutral prompts from concepts, apart from any agent's designer.

    Prompts take the grammar's comma form (``a star, red, striped, on grass``) and name only the
    attributes the concepts touch: the world's text-to-image draws everything else, where the
    scientist's designer names all six attributes itself. Neutral prompts give each touched
    attribute a value that is none of the concepts.

    >>> writer = IndependentPromptWriter()
    >>> rng = np.random.default_rng(0)
    >>> writer.positive(["shape=star", "background=grass"], "and", rng)
    'a star, on grass'
    """

    def positive(self, concepts: Sequence[str], logic: str, rng: np.random.Generator) -> str:
        parsed = [Concept.parse(c) for c in concepts]
        if logic == "or":
            parsed = [parsed[int(rng.integers(len(parsed)))]]
        return self._prompt({c.attribute: c.value for c in parsed})

    def neutral(self, concepts: Sequence[str], rng: np.random.Generator) -> str:
        parsed = [Concept.parse(c) for c in concepts]
        values: dict[str, str] = {}
        for attribute in dict.fromkeys(c.attribute for c in parsed):
            banned = {c.value for c in parsed if c.attribute == attribute}
            allowed = [v for v in ATTRIBUTE_VALUES[attribute] if v not in banned]
            values[attribute] = allowed[int(rng.integers(len(allowed)))]
        return self._prompt(values)

    @staticmethod
    def _prompt(values: dict[str, str]) -> str:
        words = [f"a {values.get('shape', 'shape')}"]
        words += [values[a] for a in _OBJECT_ORDER if a in values]
        background = values.get("background")
        colour = values.get("background_colour")
        if background is not None and colour is not None:
            words.append(f"on a {colour} {background} background")
        elif background is not None:
            words.append(f"on {background}")
        elif colour is not None:
            words.append(f"on a {colour} background")
        return ", ".join(words)


def independent_predictive_score(
    toolbox: Toolbox,
    report: UnitReport,
    *,
    n: int = PREDICTIVE_IMAGES,
    seed: int = 0,
) -> PredictiveScore:
    """:func:`predictive_score` with :class:`IndependentPromptWriter` prompts drawn from
    ``seed + INDEPENDENT_SEED_OFFSET``; a report with no concepts or an unscorable logic
    scores ``(0.0, 0.5)``."""
    if n < 1:
        raise bad_option("n", "a positive integer", n)
    concepts = list(report.concepts)
    if not concepts or report.logic not in ("single", "or", "and"):
        return PredictiveScore(0.0, 0.5)
    rng = np.random.default_rng(seed + INDEPENDENT_SEED_OFFSET)
    writer = IndependentPromptWriter()
    try:
        positive = [writer.positive(concepts, report.logic, rng) for _ in range(n)]
        neutral = [writer.neutral(concepts, rng) for _ in range(n)]
    except ConfigurationError:
        return PredictiveScore(0.0, 0.5)
    scorer = Toolbox(
        toolbox.subject,
        toolbox.unit,
        generator=toolbox.generator,
        image_size=toolbox.image_size,
        seed=seed + INDEPENDENT_SEED_OFFSET,
    )
    measured = []
    for group in (positive, neutral):
        activations: list[float] = []
        for start in range(0, len(group), scorer.max_images_per_call):
            made = scorer.text2image(group[start : start + scorer.max_images_per_call])
            activations += [call.activation for call in scorer.call_units([g.id for g in made])]
        measured.append(activations)
    return PredictiveScore(
        float(np.mean(measured[0]) - np.mean(measured[1])),
        activation_auroc(measured[0], measured[1]),
    )
