"""Ranking metrics, through torchmetrics: AUROC and average precision of a score for binary labels.

The one place the library computes them (description scoring, the scientist's hypotheses, error
detection). Two things are handled here once:

- torchmetrics applies a sigmoid to scores outside [0, 1]; on raw activations or energies it
  saturates and turns distinct scores into ties. Min-max scaling (float64) keeps the order and
  keeps the scores in [0, 1], so no sigmoid is applied.
- torchmetrics computes the ROC curve in float32. The AUROC of ``P`` positives and ``N``
  negatives is a multiple of ``1 / (2 P N)`` (the Mann-Whitney statistic, ties counting half),
  so it is snapped to that multiple: the exact value for any sample size this library scores.

>>> auroc_of_samples([0.9, 0.8], [0.1, 0.85])
0.75
>>> auroc(torch.tensor([1000.0, 999.0]), torch.tensor([1, 0]))  # no sigmoid saturation
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_maia.errors import bad_option


def _scaled(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    values = scores.detach().to(torch.float64).flatten()
    labels = target.detach().long().flatten()
    if values.shape != labels.shape:
        raise bad_option("scores", f"one score per label ({labels.numel()})", tuple(values.shape))
    if values.numel() == 0:
        raise bad_option("scores", "at least one score", 0)
    span = float(values.max() - values.min())
    scaled = (values - values.min()) / span if span > 0 else torch.zeros_like(values)
    return scaled, labels


def auroc(scores: Tensor, target: Tensor) -> float:
    """AUROC of ``scores`` for the binary ``target`` (1 = positive): the probability that a
    positive scores above a negative, ties counting half (torchmetrics' ``binary_auroc``).

    0.5 where ``target`` holds no positive or no negative.

    >>> auroc(torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0]), torch.tensor([1, 1, 1, 0, 0]))
    0.5833333333333334
    """
    from torchmetrics.functional.classification import binary_auroc

    values, labels = _scaled(scores, target)
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if not positives or not negatives:
        return 0.5
    pairs = 2 * positives * negatives
    return round(float(binary_auroc(values, labels)) * pairs) / pairs


def average_precision(scores: Tensor, target: Tensor) -> float:
    """Average precision of ``scores`` for the binary ``target`` (1 = positive), the area under
    the precision-recall curve as torchmetrics' ``binary_average_precision`` defines it.

    >>> round(average_precision(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])), 3)
    0.417
    """
    from torchmetrics.functional.classification import binary_average_precision

    values, labels = _scaled(scores, target)
    return float(binary_average_precision(values, labels))


def auroc_of_samples(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """:func:`auroc` of two samples: P(a positive scores above a negative), ties counting half.

    >>> auroc_of_samples([1.0, 1.0], [1.0])
    0.5
    """
    if not len(positives) or not len(negatives):
        raise bad_option("positives and negatives", "at least one value each", 0)
    scores = torch.tensor([*positives, *negatives], dtype=torch.float64)
    target = torch.tensor([1] * len(positives) + [0] * len(negatives))
    return auroc(scores, target)


__all__ = ["auroc", "auroc_of_samples", "average_precision"]
