"""Risk of misclassification for single inputs: baselines, MAIA's evidence, a fitted combination.

Every score here is oriented so that **higher means riskier** (more likely an error):

- ``msp``: 1 - the maximum softmax probability (Hendrycks & Gimpel's baseline, as a risk);
- ``margin``: 1 - (top softmax probability - second one);
- ``energy``: the free energy ``-logsumexp(logits)`` (Liu et al.): low for confident inputs;
- ``entropy``: the entropy of the softmax distribution, in nats.

MAIA adds four pieces of evidence from its audits:

- **counterfactual risk** (:func:`counterfactual_risk`): 1 - the probability the head gives the
  predicted class once the units judged spurious are mean-ablated (each set to its mean on
  unlabelled reference data, :func:`counterfactual_logits`). A prediction that the shortcut
  carries loses its class when the shortcut's evidence is taken away; one the core units carry
  keeps it. This is the strongest evidence where the judged units carry the shortcut;
- **edit counterfactual risk**: the same with the input's component along the directions the
  agent's edits of the spurious attribute move the features also ablated (the span of those
  directions and the spurious units' axes). Where the shortcut is spread over many units, few
  of them judged spurious, this is what takes it away; 0 for every input where no directions
  are known (a constant the combination gives no weight);
- **spurious reliance** (:func:`spurious_reliance`): for a linear head ``logits = W f + b``, the
  share of the predicted class's positive evidence ``max(W[c, j] * f[j], 0)`` that comes from
  units ``j`` judged spurious (the bias is not evidence of any unit);
- **subgroup membership** (:func:`subgroup_membership`): how far below its class's average the
  class-bias audit measured the lowest-scoring subgroup the input belongs to.

:class:`RiskCombiner` fits a logistic regression of the actual errors on ``[msp, reliance,
subgroup, counterfactual, edit_counterfactual]`` on held-out labelled data (its L2 strength
chosen among :data:`L2_CANDIDATES` by cross-validated AUROC on that same held-out data) and
remembers which items it saw: scoring any of them raises, so the combination is never evaluated
on its own fitting data. :func:`cross_fitted_risk` gives every item of one labelled set a
combined score from a combiner fitted on the other folds.
:func:`error_detection_metrics` gives the AUROC and AUPR of each score for the actual errors
(torchmetrics, through :mod:`lightning_maia.metrics`), and :func:`flag_reason` says in words
why an input was flagged.

**Why one file.** The baseline scores, MAIA's pieces of evidence and the combiner fitted on
them share one convention (higher means riskier) and one input layout, and form one step of the
flagger.

>>> risks = baseline_risks(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
>>> {name: [round(v, 3) for v in values.tolist()] for name, values in risks.items()}
{'msp': [0.119, 0.5], 'margin': [0.238, 1.0], 'energy': [-2.127, -0.693], 'entropy': [0.365, 0.693]}
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_maia.analysis._class_bias import SubgroupFinding
from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.evaluation_constants import (
    FLAG_FOLDS,
    FLAG_REASON_CONFIDENCE,
    FLAG_REASON_RELIANCE,
    RISK_L2_CANDIDATES,
    RISK_L2_FOLDS,
)
from lightning_maia.metrics import auroc, average_precision

#: The baseline scores, in the order they are reported.
BASELINES: tuple[str, ...] = ("msp", "margin", "energy", "entropy")
#: Every score the flagger reports: the baselines and the MAIA-informed combination.
SCORES: tuple[str, ...] = (*BASELINES, "maia")
#: The features the MAIA-informed combination is fitted on.
MAIA_FEATURES: tuple[str, ...] = (
    "msp", "reliance", "subgroup", "counterfactual", "edit_counterfactual",
)  # fmt: skip
#: The L2 strengths (of ``mean log loss + l2 * |w|^2``) the combination chooses among by
#: cross-validated AUROC on its fitting data; weakest first, so a tie keeps the weaker penalty.
L2_CANDIDATES = RISK_L2_CANDIDATES
#: Folds of that cross-validation (fewer when the fitting data hold fewer errors).
L2_FOLDS = RISK_L2_FOLDS


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
    _check_features(features, head_weight)
    weight = head_weight.detach().float().to(features.device)
    return features.detach().float() * weight[classes.long()]


def _check_features(features: Tensor, head_weight: Tensor) -> None:
    if features.ndim != 2 or head_weight.ndim != 2 or features.shape[1] != head_weight.shape[1]:
        raise bad_option(
            "features",
            f"(N, {head_weight.shape[-1]}) to match the head's weight {tuple(head_weight.shape)}",
            tuple(features.shape),
        )


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


def counterfactual_logits(
    logits: Tensor,
    features: Tensor,
    head_weight: Tensor,
    spurious_units: Sequence[int],
    reference: Tensor | None = None,
    directions: Tensor | None = None,
) -> Tensor:
    """(N, C) the logits of a linear head with the spurious evidence ablated to its reference.

    ``logits - (f[:, S] - reference[S]) @ W[:, S].T``: unit ``j`` in ``S`` gives the evidence
    it gives an average input (mean ablation, ``reference`` the units' mean on unlabelled
    reference data) instead of this input's; ``reference=None`` ablates to zero. Exact for a
    linear head ``logits = W f + b``; the other units and the bias are untouched.

    ``directions`` (F, r): feature directions the spurious attribute moves features along
    (the counterfactual edits' subspace, :func:`~lightning_maia.analysis._spurious.
    spurious_subspace`). Where a shortcut is spread over many units, no few units carry it;
    then the input's component ``P (f - reference)`` in the span of those directions and of
    the spurious units' axes is removed instead: ``logits - P (f - reference) @ W.T``.

    >>> weight = torch.eye(2)  # class 1 rests on unit 1 alone
    >>> features = torch.tensor([[0.5, 2.0], [0.0, 2.0]])
    >>> counterfactual_logits(features @ weight.T, features, weight, [1]).tolist()
    [[0.5, 0.0], [0.0, 0.0]]
    >>> diagonal = torch.tensor([[1.0], [1.0]])  # the shortcut moves both units at once
    >>> counterfactual_logits(features @ weight.T, features, weight, [], directions=diagonal)
    tensor([[-0.7500,  0.7500],
            [-1.0000,  1.0000]])
    """
    _check_features(features, head_weight)
    counterfactual = _check_logits(logits).clone()
    if counterfactual.shape != (features.shape[0], head_weight.shape[0]):
        raise bad_option(
            "logits",
            f"(N, C) = {(features.shape[0], head_weight.shape[0])} for these features and head",
            tuple(counterfactual.shape),
        )
    width = head_weight.shape[1]
    units = _unit_indices(spurious_units, width)
    if directions is not None and (directions.ndim != 2 or directions.shape[0] != width):
        raise bad_option(
            "directions", f"an (F, r) tensor with F = {width} feature units",
            tuple(directions.shape),
        )  # fmt: skip
    if not units and (directions is None or directions.shape[1] == 0):
        return counterfactual
    values = features.detach().float()
    if reference is not None:
        if reference.shape != (width,):
            raise bad_option("reference", f"one value per unit ({width},)", tuple(reference.shape))
        values = values - reference.detach().float().to(values.device)
    weight = head_weight.detach().float().to(values.device)
    if directions is None or directions.shape[1] == 0:
        # The spurious units' axes alone: exactly their own evidence, nothing else touched.
        return counterfactual - values[:, units] @ weight[:, units].T
    axes = torch.eye(width, dtype=torch.float64)[:, units]
    span = torch.cat([axes, directions.detach().to(torch.float64).cpu()], dim=1)
    basis = _orthonormal_columns(span).float().to(values.device)
    return counterfactual - (values @ basis) @ (weight @ basis).T


def _orthonormal_columns(span: Tensor) -> Tensor:
    """An orthonormal basis of the column span of ``span`` (columns that add nothing dropped)."""
    left, singular, _ = torch.linalg.svd(span, full_matrices=False)
    rank = int((singular > singular.max().clamp_min(1e-12) * 1e-6).sum())
    return left[:, :rank]


def counterfactual_risk(
    logits: Tensor,
    features: Tensor,
    head_weight: Tensor,
    spurious_units: Sequence[int],
    reference: Tensor | None = None,
    directions: Tensor | None = None,
) -> Tensor:
    """(N,) 1 - the probability the head gives its *predicted* class once the spurious units
    (and ``directions``) are ablated (:func:`counterfactual_logits`): high where the prediction
    rests on the shortcut.

    Equals the ``msp`` risk where no unit is spurious.

    >>> weight = torch.eye(2)
    >>> features = torch.tensor([[0.3, 2.0], [2.0, 0.0]])
    >>> risk = counterfactual_risk(features @ weight.T, features, weight, [1])
    >>> [round(v, 4) for v in risk.tolist()]  # 1 - sigmoid(-0.3): class 1 lost; class 0 kept
    [0.5744, 0.1192]
    """
    predicted = _check_logits(logits).argmax(dim=1)
    ablated = counterfactual_logits(
        logits, features, head_weight, spurious_units, reference, directions
    )
    kept = ablated.softmax(dim=1).gather(1, predicted[:, None].to(ablated.device))[:, 0]
    return 1.0 - kept


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
    #: The L2 strength it was fitted with, and each candidate's cross-validated AUROC on the
    #: fitting data (empty when one strength was given or too few errors to cross-validate).
    l2: float = 0.0
    l2_auroc: dict[float, float] = field(default_factory=dict)

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
    l2: float | Sequence[float] = L2_CANDIDATES,
    seed: int = 0,
) -> RiskCombiner:
    """Fit ``P(error) = sigmoid(w . standardised(features) + b)``: scikit-learn's logistic
    regression minimising the mean log loss plus ``l2 * |w|^2`` (the intercept unpenalised).

    ``l2`` is one strength, or candidates: the one with the best mean AUROC over a seeded
    stratified :data:`L2_FOLDS`-fold cross-validation on these (held-out, validation) items is
    refitted on all of them, so the constant is chosen on validation data, never on what is
    scored. Too few errors to cross-validate: the strongest candidate. Without both errors and
    correct items to learn from, the weights are all 1 (an unweighted sum of the standardised
    features), so the scores still rank inputs.

    >>> x = torch.tensor([[0.1], [0.2], [0.8], [0.9]])
    >>> combiner = fit_risk_combiner(x, torch.tensor([0, 0, 1, 1]), ["a", "b", "c", "d"],
    ...                              feature_names=["msp"], l2=1e-2)
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
    candidates = _l2_candidates(l2)
    mean = x.mean(dim=0)
    scale = x.std(dim=0, unbiased=False).clamp(min=1e-6)
    standard = (x - mean) / scale
    weight = torch.ones(len(names))
    bias = 0.0
    n_errors = int(y.sum())
    chosen, scores = max(candidates), {}
    if 0 < n_errors < y.shape[0]:
        inputs, targets = standard.double().numpy(), y.long().numpy()
        if len(candidates) > 1:
            scores = _cross_validated_auroc(inputs, targets, candidates, seed)
            if scores:
                chosen = max(scores, key=lambda c: scores[c])  # the first best: the weakest
        else:
            chosen = candidates[0]
        model = _logistic_regression(chosen, n_items=len(targets))
        model.fit(inputs, targets)
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
        l2=chosen,
        l2_auroc=scores,
    )


def _l2_candidates(l2: float | Sequence[float]) -> list[float]:
    values: list[Any] = [l2] if isinstance(l2, (int, float, numbers.Real)) else list(l2)
    if not values or any(
        isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0 for v in values
    ):
        raise bad_option("l2", "a non-negative float or a list of them", l2)
    return sorted(float(v) for v in values)


def _cross_validated_auroc(
    inputs: Any, targets: Any, candidates: Sequence[float], seed: int
) -> dict[float, float]:
    """Mean AUROC (torchmetrics) of each L2 strength over a seeded stratified k-fold split of
    the fitting data; empty when it holds fewer than 2 errors or 2 correct items."""
    from sklearn.model_selection import StratifiedKFold

    smaller = int(min(targets.sum(), len(targets) - targets.sum()))
    folds = min(L2_FOLDS, smaller)
    if folds < 2:
        return {}
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(inputs, targets))
    found = {}
    for l2 in candidates:
        values = []
        for fitting, held in splits:
            model = _logistic_regression(l2, n_items=len(fitting))
            model.fit(inputs[fitting], targets[fitting])
            decision = torch.from_numpy(model.decision_function(inputs[held])).float()
            values.append(auroc(decision, torch.from_numpy(targets[held]).long()))
        found[l2] = float(sum(values) / len(values))
    return found


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
    folds: int = FLAG_FOLDS,
    seed: int = 0,
    feature_names: Sequence[str] = MAIA_FEATURES,
    l2: float | Sequence[float] = L2_CANDIDATES,
) -> tuple[Tensor, list[RiskCombiner]]:
    """(N,) combined risk for every item of one labelled set, each from a combiner fitted on the
    other folds (a seeded random split), and the combiners (each choosing its ``l2`` among the
    candidates on its own fitting folds, see :func:`fit_risk_combiner`).

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
            seed=seed,
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
    ablated_prediction: tuple[str, float] | None = None,
    ablated: str = "the units judged spurious",
    reliance_threshold: float = FLAG_REASON_RELIANCE,
    confidence_threshold: float = FLAG_REASON_CONFIDENCE,
) -> str:
    """Why an input was flagged, in words; the causes that apply, joined by ``; ``.

    The prediction "rests on" its top spurious unit when the spurious units give at least
    ``reliance_threshold`` of its evidence, and "leans most on" it when that unit gives more
    evidence than any other unit (``leading``); ``ablated_prediction`` (class, probability) is
    what the head predicts once ``ablated`` (the spurious units, and the edits' directions where
    known) is ablated, where that differs; a finding
    the input belongs to names its subgroup; a top probability under ``confidence_threshold``
    is low confidence.

    >>> flag_reason(confidence=0.9, reliance=0.8, spurious_unit=17,
    ...             unit_description="blue water background")
    'prediction rests on unit 17: blue water background (80% of its evidence)'
    >>> flag_reason(confidence=0.9, ablated_prediction=("square", 0.7))
    'without the units judged spurious the head predicts square (70%)'
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

    if ablated_prediction is not None:
        name, probability = ablated_prediction
        parts.append(f"without {ablated} the head predicts {name} ({probability:.0%})")
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
    "L2_CANDIDATES",
    "L2_FOLDS",
    "MAIA_FEATURES",
    "SCORES",
    "RiskCombiner",
    "baseline_risks",
    "counterfactual_logits",
    "counterfactual_risk",
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
