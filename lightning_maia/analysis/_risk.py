"""Risk of misclassification for single inputs: baselines, MAIA's evidence, a fitted combination.

Every score here is oriented so that **higher means riskier** (more likely an error):

- ``msp``: 1 - the maximum softmax probability (Hendrycks & Gimpel's baseline, as a risk);
- ``margin``: 1 - (top softmax probability - second one);
- ``energy``: the free energy ``-logsumexp(logits)`` (Liu et al.): low for confident inputs;
- ``entropy``: the entropy of the softmax distribution, in nats.

MAIA adds two pieces of evidence from its audits:

- **spurious reliance** (:func:`spurious_reliance`): for a linear head ``logits = W f + b``, the
  share of the predicted class's positive evidence ``max(W[c, j] * f[j], 0)`` that comes from
  units ``j`` judged spurious (the bias is not evidence of any unit);
- **subgroup membership** (:func:`subgroup_membership`): how far below its class's average the
  class-bias audit measured the lowest-scoring subgroup the input belongs to.

:class:`RiskCombiner` fits a logistic regression of the actual errors on ``[msp, reliance,
subgroup]`` on held-out labelled data and remembers which items it saw: scoring any of them
raises, so the combination is never evaluated on its own fitting data. :func:`cross_fitted_risk`
gives every item of one labelled set a combined score from a combiner fitted on the other folds.
:func:`error_detection_metrics` gives the AUROC and AUPR of each score for the actual errors
(torchmetrics, through :mod:`lightning_maia.metrics`), and :func:`flag_reason` says in words
why an input was flagged.

**Why one file.** The baseline scores, MAIA's two pieces of evidence and the combiner fitted on
them share one convention (higher means riskier) and one input layout, and form one step of the
flagger.

>>> risks = baseline_risks(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
>>> {name: [round(v, 3) for v in values.tolist()] for name, values in risks.items()}
{'msp': [0.119, 0.5], 'margin': [0.238, 1.0], 'energy': [-2.127, -0.693], 'entropy': [0.365, 0.693]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_maia.analysis._class_bias import SubgroupFinding
from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.metrics import auroc, average_precision

#: The baseline scores, in the order they are reported.
BASELINES: tuple[str, ...] = ("msp", "margin", "energy", "entropy")
#: Every score the flagger reports: the baselines and the MAIA-informed combination.
SCORES: tuple[str, ...] = (*BASELINES, "maia")
#: The features the MAIA-informed combination is fitted on.
MAIA_FEATURES: tuple[str, ...] = ("msp", "reliance", "subgroup")


# -- baselines ------------------------------------------------------------------------------


def _check_logits(logits: Tensor) -> Tensor:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise bad_option(
            "logits", "a float (N, classes) tensor with at least 2 classes", tuple(logits.shape)
        )
    return logits.detach().float()


def max_softmax_probability(logits: Tensor) -> Tensor:
    """(N,) the largest softmax probability of each row (a confidence, not a risk).

    >>> max_softmax_probability(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])).round(decimals=4)
    tensor([0.5000, 0.7500])
    """
    return _check_logits(logits).softmax(dim=1).amax(dim=1)


def softmax_margin(logits: Tensor) -> Tensor:
    """(N,) the top softmax probability minus the second one (a confidence).

    >>> softmax_margin(torch.tensor([[math.log(3.0), 0.0]])).round(decimals=4)
    tensor([0.5000])
    """
    top2 = _check_logits(logits).softmax(dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def energy(logits: Tensor) -> Tensor:
    """(N,) the free energy ``-logsumexp(logits)``: lower for inputs the model is sure of.

    >>> round(float(energy(torch.tensor([[0.0, 0.0]]))[0]), 4), round(-math.log(2.0), 4)
    (-0.6931, -0.6931)
    """
    return -torch.logsumexp(_check_logits(logits), dim=1)


def predictive_entropy(logits: Tensor) -> Tensor:
    """(N,) the entropy (nats) of each row's softmax distribution.

    >>> round(float(predictive_entropy(torch.zeros(1, 4))[0]), 4), round(math.log(4.0), 4)
    (1.3863, 1.3863)
    """
    log_p = _check_logits(logits).log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def baseline_risks(logits: Tensor) -> dict[str, Tensor]:
    """The four baselines as risks (higher = more likely an error), keyed as :data:`BASELINES`."""
    return {
        "msp": 1.0 - max_softmax_probability(logits),
        "margin": 1.0 - softmax_margin(logits),
        "energy": energy(logits),
        "entropy": predictive_entropy(logits),
    }


# -- MAIA's evidence ------------------------------------------------------------------------


def unit_contributions(features: Tensor, head_weight: Tensor, classes: Tensor) -> Tensor:
    """(N, D) what each unit adds to the logit of ``classes[i]``: ``W[c, j] * f[j]``.

    Args:
        features: (N, D) the head's input (the penultimate units).
        head_weight: (C, D) the weight of the linear head.
        classes: (N,) the class whose logit is explained, usually the prediction.
    """
    if features.ndim != 2 or head_weight.ndim != 2 or features.shape[1] != head_weight.shape[1]:
        raise bad_option(
            "features",
            f"(N, {head_weight.shape[-1]}) to match the head's weight {tuple(head_weight.shape)}",
            tuple(features.shape),
        )
    weight = head_weight.detach().float().to(features.device)
    return features.detach().float() * weight[classes.long()]


def spurious_reliance(
    features: Tensor,
    head_weight: Tensor,
    spurious_units: Sequence[int],
    classes: Tensor,
) -> Tensor:
    """(N,) the share of the positive evidence for ``classes[i]`` that spurious units give.

    ``sum_{j spurious} max(W[c, j] f[j], 0) / sum_j max(W[c, j] f[j], 0)``, 0 where no unit
    gives positive evidence. 1 means the prediction rests on spurious units alone.

    >>> weight = torch.tensor([[1.0, 3.0, -1.0], [0.0, 0.0, 1.0]])
    >>> features = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    >>> spurious_reliance(features, weight, [1], torch.tensor([0, 0])).tolist()
    [0.75, 0.0]
    """
    contributions = unit_contributions(features, head_weight, classes).clamp(min=0.0)
    total = contributions.sum(dim=1)
    units = _unit_indices(spurious_units, contributions.shape[1])
    spurious = contributions[:, units].sum(dim=1) if units else torch.zeros_like(total)
    return torch.where(total > 0, spurious / total.clamp(min=1e-12), torch.zeros_like(total))


def top_spurious_unit(
    features: Tensor,
    head_weight: Tensor,
    spurious_units: Sequence[int],
    classes: Tensor,
) -> list[int | None]:
    """Per input, the spurious unit that adds most to the logit of ``classes[i]`` (None where
    no spurious unit adds anything)."""
    units = _unit_indices(spurious_units, head_weight.shape[1])
    if not units:
        return [None] * int(features.shape[0])
    contributions = unit_contributions(features, head_weight, classes)[:, units]
    best = contributions.max(dim=1)
    return [
        units[int(position)] if float(value) > 0 else None
        for value, position in zip(best.values, best.indices, strict=True)
    ]


def _unit_indices(units: Sequence[int], width: int) -> list[int]:
    indices = sorted({int(u) for u in units})
    if any(not 0 <= u < width for u in indices):
        raise bad_option("spurious_units", f"unit indices in [0, {width})", indices)
    return indices


def subgroup_membership(
    findings: Sequence[SubgroupFinding], concepts: Sequence[frozenset[str]]
) -> tuple[Tensor, list[SubgroupFinding | None]]:
    """Per input, the severity of the most severe finding it belongs to (0 if none), and that
    finding.

    An input belongs to a finding when its concepts (from procedural metadata or a describer)
    hold both the finding's class concept and its subgroup concept; see
    :meth:`SubgroupFinding.matches`.

    >>> blue = SubgroupFinding("output:0", "circle", "shape=circle", "colour", "blue",
    ...                        "colour=blue", "blue circles", mean_score=0.2, class_mean=0.8)
    >>> scores, matched = subgroup_membership([blue], [frozenset({"shape=circle", "colour=blue"}),
    ...                                                frozenset({"shape=star", "colour=blue"})])
    >>> scores.tolist(), [m and m.description for m in matched]
    ([0.75, 0.0], ['blue circles', None])
    """
    scores: list[float] = []
    matched: list[SubgroupFinding | None] = []
    for row in concepts:
        hits = [f for f in findings if f.matches(row)]
        best = max(hits, key=lambda f: f.severity, default=None)
        matched.append(best)
        scores.append(best.severity if best is not None else 0.0)
    return torch.tensor(scores, dtype=torch.float32), matched


# -- the combination ------------------------------------------------------------------------


@dataclass
class RiskCombiner:
    """A logistic regression of errors on risk features, and the items it was fitted on.

    Built by :func:`fit_risk_combiner`. Features are standardised with the fitting data's mean
    and standard deviation; :meth:`score` refuses items it was fitted on.
    """

    #: The feature names, in column order (:data:`MAIA_FEATURES` by default).
    feature_names: tuple[str, ...]
    #: (F,) mean and standard deviation of the fitting features.
    mean: Tensor
    scale: Tensor
    #: (F,) weights on the standardised features, and the intercept.
    weight: Tensor
    bias: float
    #: Ids of the items it was fitted on (e.g. ``"SpuriousShapes[seed=0,split=holdout][3]"``).
    fitted_on: frozenset[str] = field(default_factory=frozenset)
    #: How many errors and items the fitting data held.
    n_errors: int = 0
    n_items: int = 0

    def score(self, features: Tensor, item_ids: Sequence[str]) -> Tensor:
        """(N,) the modelled probability that each item is misclassified.

        Raises :class:`ConfigurationError` when any item was in the fitting data.
        """
        if len(item_ids) != features.shape[0]:
            raise bad_option(
                "item_ids", f"one id per row of features ({features.shape[0]})", len(item_ids)
            )
        overlap = self.fitted_on.intersection(item_ids)
        if overlap:
            example = sorted(overlap)[0]
            raise ConfigurationError(
                f"the risk combination was fitted on {len(overlap)} of the items it is asked to "
                f"score (e.g. {example}); fit it on held-out data"
            )
        standard = (features.detach().float() - self.mean) / self.scale
        return torch.sigmoid(standard @ self.weight + self.bias)

    def coefficients(self) -> dict[str, float]:
        """Weight per feature (on the standardised scale) and the intercept."""
        found = {name: float(w) for name, w in zip(self.feature_names, self.weight, strict=True)}
        return {**found, "intercept": self.bias}


def fit_risk_combiner(
    features: Tensor,
    errors: Tensor,
    item_ids: Sequence[str],
    *,
    feature_names: Sequence[str] = MAIA_FEATURES,
    l2: float = 1e-2,
) -> RiskCombiner:
    """Fit ``P(error) = sigmoid(w . standardised(features) + b)``: scikit-learn's logistic
    regression minimising the mean log loss plus ``l2 * |w|^2`` (the intercept unpenalised).

    Without both errors and correct items to learn from, the weights are all 1 (an unweighted
    sum of the standardised features), so the scores still rank inputs.

    >>> x = torch.tensor([[0.1], [0.2], [0.8], [0.9]])
    >>> combiner = fit_risk_combiner(x, torch.tensor([0, 0, 1, 1]), ["a", "b", "c", "d"],
    ...                              feature_names=["msp"])
    >>> combiner.score(torch.tensor([[0.05], [0.95]]), ["e", "f"]).round().tolist()
    [0.0, 1.0]
    """
    x = features.detach().float()
    y = errors.detach().float().flatten()
    names = tuple(feature_names)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise bad_option(
            "features", f"an (N, {len(names)}) tensor ({', '.join(names)})", tuple(x.shape)
        )
    if y.shape[0] != x.shape[0] or len(item_ids) != x.shape[0]:
        raise bad_option(
            "errors", f"one label and one id per row ({x.shape[0]})", (y.shape[0], len(item_ids))
        )
    if l2 < 0:
        raise bad_option("l2", "a non-negative float", l2)
    mean = x.mean(dim=0)
    scale = x.std(dim=0, unbiased=False).clamp(min=1e-6)
    standard = (x - mean) / scale
    weight = torch.ones(len(names))
    bias = 0.0
    n_errors = int(y.sum())
    if 0 < n_errors < y.shape[0]:
        model = _logistic_regression(l2, n_items=int(y.shape[0]))
        model.fit(standard.double().numpy(), y.long().numpy())
        weight = torch.from_numpy(model.coef_[0]).float()
        bias = float(model.intercept_[0])
    return RiskCombiner(
        feature_names=names,
        mean=mean,
        scale=scale,
        weight=weight,
        bias=bias,
        fitted_on=frozenset(item_ids),
        n_errors=n_errors,
        n_items=int(y.shape[0]),
    )


def _logistic_regression(l2: float, n_items: int) -> Any:
    """scikit-learn's L2 logistic regression for ``mean log loss + l2 * |w|^2`` on ``n_items``.

    scikit-learn minimises ``C * sum log loss + |w|^2 / 2``; dividing ours by ``2 * l2 * n``
    gives that with ``C = 1 / (2 * l2 * n)`` (``l2 = 0``: ``C = inf``, no penalty). lbfgs leaves
    the intercept unpenalised, as here.
    """
    from sklearn.linear_model import LogisticRegression

    c = math.inf if l2 == 0 else 1.0 / (2.0 * l2 * n_items)
    return LogisticRegression(C=c, solver="lbfgs", tol=1e-10, max_iter=1000)


def cross_fitted_risk(
    features: Tensor,
    errors: Tensor,
    item_ids: Sequence[str],
    *,
    folds: int = 2,
    seed: int = 0,
    feature_names: Sequence[str] = MAIA_FEATURES,
    l2: float = 1e-2,
) -> tuple[Tensor, list[RiskCombiner]]:
    """(N,) combined risk for every item of one labelled set, each from a combiner fitted on the
    other folds (a seeded random split), and the combiners.

    >>> x = torch.linspace(0, 1, 8)[:, None]
    >>> risk, combiners = cross_fitted_risk(x, (x[:, 0] > 0.5).long(), [str(i) for i in range(8)],
    ...                                     feature_names=["msp"])
    >>> [len(c.fitted_on) for c in combiners], risk.shape
    ([4, 4], torch.Size([8]))
    """
    n = int(features.shape[0])
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= max(n, 2):
        raise bad_option("folds", f"an int from 2 to the number of items ({n})", folds)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    assignment = torch.empty(n, dtype=torch.long)
    assignment[order] = torch.arange(n) % folds
    risk = torch.zeros(n)
    combiners = []
    ids = list(item_ids)
    for fold in range(folds):
        held = (assignment == fold).nonzero().flatten().tolist()
        fitting = (assignment != fold).nonzero().flatten().tolist()
        combiner = fit_risk_combiner(
            features[fitting],
            errors[fitting],
            [ids[i] for i in fitting],
            feature_names=feature_names,
            l2=l2,
        )
        risk[held] = combiner.score(features[held], [ids[i] for i in held])
        combiners.append(combiner)
    return risk, combiners


# -- metrics --------------------------------------------------------------------------------


def error_detection_metrics(
    scores: Mapping[str, Tensor], errors: Tensor
) -> dict[str, dict[str, float]]:
    """AUROC and AUPR (average precision, errors as positives) of each risk score.

    NaN where the labels hold no error or no correct prediction.

    >>> errors = torch.tensor([0, 0, 1, 1])
    >>> metrics = error_detection_metrics({"perfect": torch.tensor([0.1, 0.2, 0.8, 0.9]),
    ...                                    "reversed": torch.tensor([0.9, 0.8, 0.2, 0.1])}, errors)
    >>> {kind: {name: round(v, 3) for name, v in vs.items()} for kind, vs in metrics.items()}
    {'auroc': {'perfect': 1.0, 'reversed': 0.0}, 'aupr_error': {'perfect': 1.0, 'reversed': 0.417}}
    """
    target = errors.detach().long().flatten()
    defined = 0 < int(target.sum()) < target.numel()
    metrics: dict[str, dict[str, float]] = {"auroc": {}, "aupr_error": {}}
    for name, score in scores.items():
        values = score.detach().float().flatten()
        if values.shape != target.shape:
            raise bad_option(
                f"scores[{name!r}]", f"one score per label ({target.numel()})", tuple(values.shape)
            )
        if not defined:
            metrics["auroc"][name] = metrics["aupr_error"][name] = math.nan
            continue
        metrics["auroc"][name] = auroc(values, target)
        metrics["aupr_error"][name] = average_precision(values, target)
    return metrics


# -- reasons --------------------------------------------------------------------------------


def flag_reason(
    *,
    confidence: float,
    reliance: float = 0.0,
    spurious_unit: int | None = None,
    unit_description: str = "",
    leading: bool = False,
    subgroup: SubgroupFinding | None = None,
    reliance_threshold: float = 0.5,
    confidence_threshold: float = 0.5,
) -> str:
    """Why an input was flagged, in words; the causes that apply, joined by ``; ``.

    The prediction "rests on" its top spurious unit when the spurious units give at least
    ``reliance_threshold`` of its evidence, and "leans most on" it when that unit gives more
    evidence than any other unit (``leading``); a finding the input belongs to names its
    subgroup; a top probability under ``confidence_threshold`` is low confidence.

    >>> flag_reason(confidence=0.9, reliance=0.8, spurious_unit=17,
    ...             unit_description="blue water background")
    'prediction rests on unit 17: blue water background (80% of its evidence)'
    >>> red = SubgroupFinding("output:0", "circle", "shape=circle", "colour", "red",
    ...                       "colour=red", "red circles", mean_score=0.1, class_mean=0.8)
    >>> for part in flag_reason(confidence=0.4, subgroup=red).split("; "):
    ...     print(part)
    red circles are a subgroup the model scores low (0.10 vs 0.80 for circle)
    low confidence (0.40)
    """
    parts = []
    what = unit_description or "a unit judged spurious"
    if spurious_unit is not None and reliance >= reliance_threshold:
        parts.append(
            f"prediction rests on unit {spurious_unit}: {what} ({reliance:.0%} of its evidence)"
        )
    elif spurious_unit is not None and leading:
        parts.append(
            f"prediction leans most on unit {spurious_unit}: {what} (spurious units give "
            f"{reliance:.0%} of its evidence)"
        )

    if subgroup is not None:
        parts.append(
            f"{subgroup.description} are a subgroup the model scores low "
            f"({subgroup.mean_score:.2f} vs {subgroup.class_mean:.2f} for {subgroup.class_name})"
        )
    if confidence < confidence_threshold:
        parts.append(f"low confidence ({confidence:.2f})")
    if not parts:
        parts.append(
            f"no single cause: confidence {confidence:.2f}, spurious reliance {reliance:.0%}"
        )
    return "; ".join(parts)


__all__ = [
    "BASELINES",
    "MAIA_FEATURES",
    "SCORES",
    "RiskCombiner",
    "baseline_risks",
    "cross_fitted_risk",
    "energy",
    "error_detection_metrics",
    "fit_risk_combiner",
    "flag_reason",
    "max_softmax_probability",
    "predictive_entropy",
    "softmax_margin",
    "spurious_reliance",
    "subgroup_membership",
    "top_spurious_unit",
    "unit_contributions",
]
