"""QuantileSketch stays within its documented relative error, merges exactly, checks input."""

from __future__ import annotations

import pytest
import torch

from lightning_maia._sketch import QuantileSketch
from lightning_maia.errors import ConfigurationError


def exact_lower(values: torch.Tensor, q: float) -> torch.Tensor:
    ordered = values.double().sort(dim=1).values
    rank = int(q * (values.shape[1] - 1))
    return ordered[:, rank]


def distributions() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    n = 20_000
    normal = torch.randn(n, generator=generator) * 3
    relu = torch.relu(torch.randn(n, generator=generator))
    heavy = torch.distributions.Exponential(0.01).sample((n,)) ** 1.5
    sparse = torch.where(torch.rand(n, generator=generator) < 0.995, 0.0, 5.0)
    negative = -torch.rand(n, generator=generator) * 1e-3
    tiny = torch.rand(n, generator=generator) * 1e-4
    return torch.stack([normal, relu, heavy, sparse, negative, tiny])


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("accuracy", [0.01, 0.05])
def test_quantiles_within_relative_accuracy(q: float, accuracy: float) -> None:
    values = distributions()
    sketch = QuantileSketch(units=values.shape[0], relative_accuracy=accuracy)
    for chunk in values.split(1234, dim=1):
        sketch.update(chunk)
    estimate = sketch.quantile(q).double()
    exact = exact_lower(values, q)
    bound = accuracy * exact.abs() + 1e-6  # values under min_magnitude count as zero
    assert ((estimate - exact).abs() <= bound).all(), (estimate, exact)
    assert sketch.count().tolist() == [values.shape[1]] * values.shape[0]


def test_merge_is_exactly_one_pass() -> None:
    values = distributions()
    whole, first, second = (QuantileSketch(values.shape[0]) for _ in range(3))
    whole.update(values)
    first.update(values[:, ::2])
    second.update(values[:, 1::2])
    first.merge(second)
    assert torch.equal(first.counts, whole.counts)


def test_memory_is_independent_of_the_data() -> None:
    sketch = QuantileSketch(units=3)
    size = sketch.counts.numel()
    sketch.update(torch.randn(3, 100_000))
    assert sketch.counts.numel() == size == 3 * (2 * sketch.buckets + 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": 0}, "`units`"),
        ({"units": 2, "relative_accuracy": 1.5}, "`relative_accuracy`"),
        ({"units": 2, "min_magnitude": 10.0, "max_magnitude": 1.0}, "min_magnitude"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        QuantileSketch(**kwargs)


def test_bad_updates_and_queries() -> None:
    sketch = QuantileSketch(units=2)
    with pytest.raises(ConfigurationError, match="units=2 along dim 0"):
        sketch.update(torch.zeros(3, 4))
    with pytest.raises(ConfigurationError, match="at least one value"):
        sketch.quantile(0.5)
    sketch.update(torch.zeros(2, 1))
    with pytest.raises(ConfigurationError, match="`q`"):
        sketch.quantile(2.0)
