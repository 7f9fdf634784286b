"""The one AUROC/AUPR: torchmetrics, exact Mann-Whitney values, no sigmoid saturation."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_maia.errors import ConfigurationError
from lightning_maia.metrics import auroc, auroc_of_samples, average_precision


def _mann_whitney(positives: list[float], negatives: list[float]) -> float:
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    return wins / (len(positives) * len(negatives))


def test_auroc_is_the_exact_mann_whitney_statistic_with_ties_counting_half() -> None:
    assert auroc_of_samples([1.0, 2.0, 2.0], [2.0, 1.0]) == 7 / 12
    assert auroc_of_samples([3.0, 3.0, 3.0], [3.0]) == 0.5
    assert auroc_of_samples([0.9, 0.8], [0.1, 0.85]) == 0.75
    generator = torch.Generator().manual_seed(0)
    # Rounded to 1 decimal so that many scores tie.
    values = (torch.rand(70, generator=generator) * 10).round() / 10
    positives, negatives = values[:30].tolist(), values[30:].tolist()
    assert auroc_of_samples(positives, negatives) == _mann_whitney(positives, negatives)


def test_raw_scores_far_outside_zero_one_keep_their_order() -> None:
    # torchmetrics would apply a sigmoid, which saturates to 1.0 for both.
    assert auroc(torch.tensor([1000.0, 999.0]), torch.tensor([1, 0])) == 1.0
    assert auroc(torch.tensor([-200.0, -100.0]), torch.tensor([1, 0])) == 0.0
    ap = average_precision(torch.tensor([-300.0, -200.0, -100.0]), torch.tensor([1, 0, 0]))
    assert ap == pytest.approx(1 / 3)


def test_average_precision_matches_its_definition() -> None:
    # Ranked by score: positive, negative, positive -> precision 1 at recall 1/2, 2/3 at 1.
    scores, target = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([1, 0, 1])
    assert average_precision(scores, target) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_one_sided_labels_give_one_half_and_bad_shapes_name_the_argument() -> None:
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ConfigurationError, match=r"`scores` can be one score per label \(3\)"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 0, 1]))
    with pytest.raises(ConfigurationError, match="`positives and negatives`"):
        auroc_of_samples([], [1.0])
