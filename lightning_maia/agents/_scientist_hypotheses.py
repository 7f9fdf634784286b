"""The scientist's reasoning over concepts: rank candidates, state hypotheses, fit them to data.

A hypothesis says which images should activate a unit: those showing one concept (``single``),
either of two (``or``) or both (``and``). Candidates come from how much more often a concept
shows in the unit's highlighted exemplar regions than in neutral images; hypotheses are then
judged on every image an experiment measured, by how well their yes/no prediction separates
high from low activations (AUROC) and by the size of the gap (effect size), simpler hypotheses
winning ties.

>>> star, red = "shape=star", "colour=red"
>>> observations = [
...     Observation("a", 0.9, frozenset({star, red})),
...     Observation("b", 0.1, frozenset({star})),
...     Observation("c", 0.1, frozenset({red})),
... ]
>>> fits = fit_hypotheses(
...     [Hypothesis("single", (star,)), Hypothesis("and", (red, star))], observations, Scale(0, 1))
>>> str(fits[0].hypothesis), fits[0].auroc, round(fits[0].effect, 2)
('colour=red AND shape=star', 1.0, 0.8)
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    HYPOTHESIS_AND_MIN_FREQUENCY,
    HYPOTHESIS_AND_MIN_SCORE,
    HYPOTHESIS_COMPLEXITY_PENALTY,
    HYPOTHESIS_DISTINGUISHING_LIFT,
    HYPOTHESIS_MIN_AUROC,
    HYPOTHESIS_MIN_EFFECT,
    HYPOTHESIS_OR_MISSING_SHARE,
    HYPOTHESIS_SHARED_SHARE,
)
from lightning_maia.metrics import auroc_of_samples

#: What a pair hypothesis must gain in AUROC over a single one to be preferred.
COMPLEXITY_PENALTY = HYPOTHESIS_COMPLEXITY_PENALTY
#: A hypothesis is accepted when its predicted-positive images beat the rest by this much of
#: the exemplar level (effect size) and rank above them this reliably (AUROC).
MIN_EFFECT = HYPOTHESIS_MIN_EFFECT
MIN_AUROC = HYPOTHESIS_MIN_AUROC


@dataclass(frozen=True)
class Hypothesis:
    """Images showing ``concepts`` combined by ``logic`` (single, or, and) activate the unit."""

    logic: str
    concepts: tuple[str, ...]

    def __post_init__(self) -> None:
        wanted = {"single": 1, "or": 2, "and": 2}
        if self.logic not in wanted:
            raise bad_option("logic", "single, or, and", self.logic)
        if len(set(self.concepts)) != wanted[self.logic]:
            raise bad_option("concepts", f"{wanted[self.logic]} distinct", self.concepts)
        object.__setattr__(self, "concepts", tuple(sorted(self.concepts)))

    def holds(self, concepts: AbstractSet[str]) -> bool:
        """Whether an image showing ``concepts`` should activate the unit."""
        if self.logic == "and":
            return all(c in concepts for c in self.concepts)
        return any(c in concepts for c in self.concepts)

    @property
    def complexity(self) -> int:
        return 0 if self.logic == "single" else 1

    def __str__(self) -> str:
        return f" {self.logic.upper()} ".join(self.concepts)


@dataclass(frozen=True)
class Observation:
    """One measured image: the unit's activation and the concepts the image shows."""

    image_id: str
    activation: float
    concepts: frozenset[str]


@dataclass(frozen=True)
class Scale:
    """Maps activations to 0 (neutral images) .. 1 (the exemplars' typical level)."""

    base: float
    peak: float

    @property
    def span(self) -> float:
        return self.peak - self.base

    def __call__(self, activation: float) -> float:
        return (activation - self.base) / self.span if self.span > 0 else 0.0


@dataclass(frozen=True)
class ConceptRank:
    """How much more often a concept shows in highlighted exemplar regions than elsewhere."""

    concept: str
    #: Share of the exemplars' highlighted regions that show it.
    frequency: float
    #: Share of neutral images that show it.
    base_rate: float

    @property
    def score(self) -> float:
        return self.frequency - self.base_rate

    def __str__(self) -> str:
        return (
            f"{self.concept}: {self.frequency:.0%} of exemplar regions vs "
            f"{self.base_rate:.0%} of neutral images"
        )


def rank_concepts(
    exemplar_concepts: Sequence[AbstractSet[str]], neutral_concepts: Sequence[AbstractSet[str]]
) -> list[ConceptRank]:
    """Every concept of the exemplar regions, most enriched first.

    >>> ranks = rank_concepts([{"shape=star", "size=large"}] * 2, [{"size=large"}, {"shape=ring"}])
    >>> [(r.concept, r.score) for r in ranks]
    [('shape=star', 1.0), ('size=large', 0.5)]
    """
    counts = Counter(c for concepts in exemplar_concepts for c in set(concepts))
    base = Counter(c for concepts in neutral_concepts for c in set(concepts))
    total, neutral_total = max(len(exemplar_concepts), 1), max(len(neutral_concepts), 1)
    ranks = [ConceptRank(c, n / total, base[c] / neutral_total) for c, n in counts.items()]
    return sorted(ranks, key=lambda r: (-r.score, -r.frequency, r.concept))


def ranked_hypothesis(
    ranking: Sequence[ConceptRank],
    exemplar_concepts: Sequence[AbstractSet[str]],
    same_attribute: Callable[[str, str], bool],
) -> Hypothesis | None:
    """The best hypothesis the exemplars alone support (no experiments).

    The top concept; OR a second one that covers the exemplars the first misses (at least a
    fifth of them); AND a second one as enriched as a concept of its own, seen with the first.
    """
    if not ranking:
        return None
    top = ranking[0]
    missing = [concepts for concepts in exemplar_concepts if top.concept not in concepts]
    if len(missing) >= HYPOTHESIS_OR_MISSING_SHARE * len(exemplar_concepts):
        others = rank_concepts(missing, [])
        if others:
            second = others[0].concept
            return Hypothesis("or", (top.concept, second))
    for other in ranking[1:]:
        if (
            other.frequency >= HYPOTHESIS_AND_MIN_FREQUENCY
            and other.score >= HYPOTHESIS_AND_MIN_SCORE
            and not same_attribute(top.concept, other.concept)
        ):
            return Hypothesis("and", (top.concept, other.concept))
    return Hypothesis("single", (top.concept,))


def shared_concepts(
    missed: Sequence[AbstractSet[str]], everything: Sequence[AbstractSet[str]]
) -> list[str]:
    """Concepts in at least half of ``missed``, most over-represented against ``everything``.

    >>> shared_concepts([{"colour=red", "shape=star"}, {"colour=red"}], [{"shape=star"}] * 4)
    ['colour=red', 'shape=star']
    """
    if not missed:
        return []
    counts = Counter(c for concepts in missed for c in set(concepts))
    base = Counter(c for concepts in everything for c in set(concepts))
    total = max(len(everything), 1)
    lift = {c: n / len(missed) - base[c] / total for c, n in counts.items()}
    return [
        c
        for c in sorted(counts, key=lambda c: (-lift[c], c))
        if counts[c] >= HYPOTHESIS_SHARED_SHARE * len(missed)
    ]


def distinguishing_concepts(
    right: Sequence[AbstractSet[str]], wrong: Sequence[AbstractSet[str]]
) -> list[str]:
    """Concepts far more common in ``right`` than in ``wrong`` (at least two of those).

    >>> distinguishing_concepts([{"colour=red", "shape=star"}], [{"shape=star"}] * 2)
    ['colour=red']
    """
    if len(wrong) < 2 or not right:
        return []
    hits = Counter(c for concepts in right for c in set(concepts))
    misses = Counter(c for concepts in wrong for c in set(concepts))
    lift = {c: n / len(right) - misses[c] / len(wrong) for c, n in hits.items()}
    return [
        c
        for c in sorted(lift, key=lambda c: (-lift[c], c))
        if lift[c] >= HYPOTHESIS_DISTINGUISHING_LIFT
    ]


def candidate_hypotheses(
    concepts: Sequence[str], same_attribute: Callable[[str, str], bool]
) -> list[Hypothesis]:
    """Every single, OR and AND hypothesis over ``concepts`` (AND only across attributes)."""
    hypotheses = [Hypothesis("single", (c,)) for c in concepts]
    for first, second in itertools.combinations(concepts, 2):
        hypotheses.append(Hypothesis("or", (first, second)))
        if not same_attribute(first, second):
            hypotheses.append(Hypothesis("and", (first, second)))
    return hypotheses


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half; 0.5 when a side is empty
    (:func:`lightning_maia.metrics.auroc_of_samples`).

    >>> auroc([0.9, 0.8], [0.1, 0.85])
    0.75
    """
    if not len(positives) or not len(negatives):
        return 0.5
    return auroc_of_samples(positives, negatives)


@dataclass(frozen=True)
class HypothesisFit:
    """How well a hypothesis predicts the measured activations."""

    hypothesis: Hypothesis
    #: Correlation of the yes/no prediction with the activation (clipped to the 0..1 scale).
    correlation: float
    auroc: float
    #: Mean activation where it predicts yes minus where it predicts no, on the 0..1 scale.
    effect: float
    n_true: int
    n_false: int
    mean_true: float
    mean_false: float

    @property
    def score(self) -> float:
        return self.correlation - COMPLEXITY_PENALTY * self.hypothesis.complexity

    @property
    def accepted(self) -> bool:
        return self.effect >= MIN_EFFECT and self.auroc >= MIN_AUROC

    def __str__(self) -> str:
        verdict = "accepted" if self.accepted else "rejected"
        return (
            f"{self.hypothesis}: {verdict} (correlation {self.correlation:.2f}, AUROC "
            f"{self.auroc:.2f}, effect size {self.effect:.2f};"
            f" {self.n_true} images predicted active at {self.mean_true:.2f},"
            f" {self.n_false} inactive at {self.mean_false:.2f})"
        )


def fit_hypotheses(
    hypotheses: Sequence[Hypothesis], observations: Sequence[Observation], scale: Scale
) -> list[HypothesisFit]:
    """Each hypothesis judged on the observations, best first: highest correlation between its
    prediction and the activation (less a small penalty for pairs), then largest effect, then
    simplest.

    Correlation rewards a hypothesis for every image it gets right, active or not; a narrow
    one that names only the strongest images (AUROC would call it perfect) loses it.
    """
    values = np.array([scale(o.activation) for o in observations], dtype=np.float64)
    clipped = values.clip(0.0, 1.0)
    fits = []
    for hypothesis in hypotheses:
        mask = np.array([hypothesis.holds(o.concepts) for o in observations], dtype=bool)
        positives, negatives = values[mask], values[~mask]
        mean_true = float(positives.mean()) if positives.size else 0.0
        mean_false = float(negatives.mean()) if negatives.size else 0.0
        effect = mean_true - mean_false if positives.size and negatives.size else 0.0
        fits.append(
            HypothesisFit(
                hypothesis,
                _correlation(mask, clipped),
                auroc(positives.tolist(), negatives.tolist()),
                effect,
                int(positives.size),
                int(negatives.size),
                mean_true,
                mean_false,
            )
        )
    return sorted(
        fits,
        key=lambda f: (
            -round(f.score, 6),
            -round(f.effect, 6),
            f.hypothesis.complexity,
            str(f.hypothesis),
        ),
    )


def _correlation(prediction: np.ndarray, values: np.ndarray) -> float:
    """Pearson correlation of a yes/no prediction with values; 0 where either is constant."""
    if prediction.all() or not prediction.any() or values.std() == 0:
        return 0.0
    return float(np.corrcoef(prediction.astype(np.float64), values)[0, 1])
