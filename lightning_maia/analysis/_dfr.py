"""Deep Feature Reweighting (Kirichenko, Izmailov & Wilson, 2023): a last layer refit on a
group-balanced held-out set.

:func:`dfr_head` follows the paper's ``DFR^Val_Tr`` protocol on held-out features with group
labels:

1. standardise the features with the held-out set's mean and std;
2. split the held-out set in half; for every ``C`` of the grid, fit an L1 logistic regression
   on each of ``n_subsamples`` group-balanced subsamples of the first half and score the
   worst-group accuracy of each on the second half; keep the ``C`` with the best mean;
3. with that ``C``, fit one regression per group-balanced subsample of the whole held-out set
   and average their coefficients and intercepts: the head.

Subsample ``i`` of a split is :func:`~lightning_maia.analysis._spurious.balanced_indices` of its
groups with seed ``seed + i``; the halves come from one permutation drawn from ``seed``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_maia.analysis._spurious import LinearHead, balanced_indices, head_metrics
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    DFR_C_GRID,
    DFR_SUBSAMPLES,
)

#: The paper's grid of inverse L1 strengths.
C_GRID: tuple[float, ...] = DFR_C_GRID
#: Balanced subsamples whose fits are averaged (the paper uses 10 for tuning and 20 to fit).
N_SUBSAMPLES = DFR_SUBSAMPLES


@dataclass
class DFRResult:
    """The averaged head, the ``C`` chosen on the held-out half, and every ``C``'s score."""

    head: LinearHead
    c: float
    #: ``C`` -> mean worst-group accuracy on the second half of the held-out set.
    tuning_worst_group: dict[float, float]


def l1_logistic(c: float, seed: int = 0, max_iter: int = 1000) -> Any:
    """scikit-learn's L1 logistic regression (``saga``), across its ``penalty`` deprecation."""
    from sklearn.linear_model import LogisticRegression

    options: dict[str, Any] = {"C": c, "solver": "saga", "max_iter": max_iter, "random_state": seed}
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        options["l1_ratio"] = 1.0
    else:
        options["penalty"] = "l1"
    return LogisticRegression(**options)


def _fit(c: float, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at small C
        return l1_logistic(c, seed).fit(x, y)


def _coefficients(model: Any, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, F) weights and (classes,) intercepts, also for the binary one-row case."""
    weight, bias = np.asarray(model.coef_, float), np.asarray(model.intercept_, float)
    if classes == 2 and weight.shape[0] == 1:
        weight, bias = (
            np.concatenate([-weight / 2, weight / 2]),
            np.concatenate([-bias / 2, bias / 2]),
        )
    return weight, bias


def dfr_head(
    features: Tensor,
    labels: Tensor,
    groups: Tensor,
    *,
    c_grid: Sequence[float] = C_GRID,
    n_subsamples: int = N_SUBSAMPLES,
    seed: int = 0,
) -> DFRResult:
    """DFR's last layer on held-out ``features`` with ``labels`` and ``groups`` (see above)."""
    if n_subsamples < 1:
        raise bad_option("n_subsamples", "a positive int", n_subsamples)
    if not c_grid or any(c <= 0 for c in c_grid):
        raise bad_option("c_grid", "positive values", tuple(c_grid))
    if not len(features) == len(labels) == len(groups):
        raise bad_option("labels and groups", f"one per feature row ({len(features)})", len(labels))
    classes = int(labels.max()) + 1
    mean = features.double().mean(0)
    std = features.double().std(0, unbiased=False).clamp_min(1e-6)  # StandardScaler's
    x = ((features.double() - mean) / std).numpy()
    y = labels.numpy()
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    tuning: dict[float, float] = {}
    for c in c_grid:
        scores = []
        for i in range(n_subsamples):
            picked = first[balanced_indices(groups[first], seed + i)].numpy()
            model = _fit(c, x[picked], y[picked], seed)
            predictions = torch.as_tensor(model.predict(x[second.numpy()]))
            metrics = head_metrics(predictions, labels[second], groups[second], classes)
            scores.append(metrics["worst_group_accuracy"])
        tuning[float(c)] = float(np.mean(scores))
    best = max(tuning, key=lambda c: tuning[c])  # ties: the first in the grid
    weights, biases = [], []
    for i in range(n_subsamples):
        picked = balanced_indices(groups, seed + i).numpy()
        fitted_weight, fitted_bias = _coefficients(_fit(best, x[picked], y[picked], seed), classes)
        weights.append(fitted_weight)
        biases.append(fitted_bias)
    weight_std = torch.as_tensor(np.mean(weights, axis=0))
    bias_std = torch.as_tensor(np.mean(biases, axis=0))
    # Fold the standardisation into a head on the raw features.
    weight = (weight_std / std).float()
    bias = (bias_std - (weight_std / std) @ mean).float()
    n_features = features.shape[1]
    head = LinearHead(weight, bias, torch.ones(n_features), torch.eye(n_features))
    return DFRResult(head, best, tuning)
