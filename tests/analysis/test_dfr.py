"""DFR (Kirichenko et al. 2023) equals the same protocol written directly in scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lightning_maia.analysis._dfr import C_GRID, dfr_head
from lightning_maia.analysis._spurious import balanced_indices
from lightning_maia.errors import ConfigurationError


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two classes, a spurious feature matching the class in 85% of rows: four groups."""
    rng = np.random.default_rng(0)
    n = 240
    labels = rng.integers(0, 2, n)
    spurious = np.where(rng.random(n) < 0.85, labels, 1 - labels)
    core = labels + rng.normal(0, 0.8, n)
    x = np.stack([core, 2 * spurious + rng.normal(0, 0.3, n), rng.normal(0, 1, n)], 1) * 3 + 1
    return torch.tensor(x), torch.tensor(labels), torch.tensor(2 * labels + spurious)


def _direct(x: np.ndarray, y: np.ndarray, g: np.ndarray, grid: tuple[float, ...], n: int) -> tuple:
    scaled = StandardScaler().fit_transform(x)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).numpy()
    first, second = order[: len(x) // 2], order[len(x) // 2 :]

    def fit(c: float, rows: np.ndarray) -> LogisticRegression:
        model = LogisticRegression(C=c, l1_ratio=1.0, solver="saga", max_iter=1000, random_state=0)
        return model.fit(scaled[rows], y[rows])

    def worst_group(predicted: np.ndarray, rows: np.ndarray) -> float:
        return min(
            float((predicted[g[rows] == k] == y[rows][g[rows] == k]).mean()) for k in range(4)
        )

    tuning = {}
    for c in grid:
        scores = []
        for i in range(n):
            rows = first[balanced_indices(torch.tensor(g[first]), i).numpy()]
            scores.append(worst_group(fit(c, rows).predict(scaled[second]), second))
        tuning[c] = float(np.mean(scores))
    best = max(tuning, key=lambda c: tuning[c])
    models = [fit(best, balanced_indices(torch.tensor(g), i).numpy()) for i in range(n)]
    coef = np.mean([m.coef_ for m in models], 0)
    intercept = np.mean([m.intercept_ for m in models], 0)
    return best, tuning, scaled @ coef.T + intercept


@pytest.mark.filterwarnings("ignore")
def test_dfr_equals_a_direct_scikit_learn_computation() -> None:
    features, labels, groups = _data()
    grid = (1.0, 0.1, 0.01)
    result = dfr_head(features, labels, groups, c_grid=grid, n_subsamples=10, seed=0)
    best, tuning, margin = _direct(features.numpy(), labels.numpy(), groups.numpy(), grid, 10)
    assert result.c == best
    assert result.tuning_worst_group == pytest.approx(tuning)
    logits = result.head.logits(features).double()
    # Binary: the head holds -w/2 and +w/2, so the logit gap is the regression's margin.
    assert (logits[:, 1] - logits[:, 0]).numpy() == pytest.approx(margin[:, 0], abs=1e-4)


def test_dfr_defaults_and_bad_arguments() -> None:
    assert C_GRID == (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    features, labels, groups = _data()
    with pytest.raises(ConfigurationError, match="n_subsamples"):
        dfr_head(features, labels, groups, n_subsamples=0)
    with pytest.raises(ConfigurationError, match="c_grid"):
        dfr_head(features, labels, groups, c_grid=(0.0,))
    with pytest.raises(ConfigurationError, match="labels and groups"):
        dfr_head(features, labels[:10], groups)
