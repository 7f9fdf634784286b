"""A mergeable quantile sketch for many units at once, in bounded memory.

MAIA (after MILAN) thresholds a unit's activation maps at the 0.99 quantile of all its map
values over the dataset. Keeping every value is O(dataset); this sketch keeps, per unit, counts
in logarithmically spaced buckets and so uses O(units x buckets) memory whatever the dataset
size. Buckets are read straight off the float32 bit pattern (exponent and the top mantissa
bits): one shift and one table lookup per value, then a scatter-add into the unit's row of
counts; the sketch must not slow the pass.

Error bound (tested): for a value ``v`` with ``min_magnitude <= |v| <= max_magnitude`` the
estimate ``e`` of the quantile whose exact order statistic is ``v`` satisfies
``|e - v| <= relative_accuracy * |v|``. Values with ``|v| < min_magnitude`` count as zero (so an
estimate of 0 stands for any such value), and values beyond ``max_magnitude`` count as the
largest bucket. With the defaults (1% relative accuracy over 1e-6..1e6) each unit holds
2 x 41 x 64 + 1 counters. Sketches merge by adding counts, so sharded data (DDP) gives exactly
the sketch of one pass.

>>> import torch
>>> sketch = QuantileSketch(units=1)
>>> sketch.update(torch.arange(1.0, 1001.0).view(1, 1000))
>>> estimate = float(sketch.quantile(0.99)[0])  # the exact order statistic is 990
>>> abs(estimate - 990) <= 0.01 * 990
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_maia.errors import bad_option

_MANTISSA_BITS = 23
_MAGNITUDE = 0x7FFFFFFF
#: Largest ``bits >> shift`` width looked up in a table (2**20 int64 entries, 8 MiB).
_TABLE_KEY_BITS = 20


class QuantileSketch:
    """Log-bucket quantile sketches for ``units`` independent streams of values."""

    def __init__(
        self,
        units: int,
        relative_accuracy: float = 0.01,
        min_magnitude: float = 1e-6,
        max_magnitude: float = 1e6,
        device: torch.device | str = "cpu",
    ) -> None:
        if units < 1:
            raise bad_option("units", "a positive count", units)
        if not 0.0 < relative_accuracy < 0.5:
            raise bad_option("relative_accuracy", "a number in (0, 0.5)", relative_accuracy)
        if not 0.0 < min_magnitude < max_magnitude:
            raise bad_option(
                "min_magnitude/max_magnitude", "0 < min < max", (min_magnitude, max_magnitude)
            )
        self.units = units
        self.relative_accuracy = relative_accuracy
        self.min_magnitude = min_magnitude
        self.max_magnitude = max_magnitude
        # A bucket spans at most 2**-m of its lower edge; its midpoint is within 2**-(m+1).
        self.mantissa_bits = max(0, math.ceil(math.log2(1 / relative_accuracy)) - 1)
        self._shift = _MANTISSA_BITS - self.mantissa_bits
        per_octave = 2**self.mantissa_bits
        low_exponent = math.floor(math.log2(min_magnitude)) + 127
        high_exponent = math.ceil(math.log2(max_magnitude)) + 127
        self._low_key = low_exponent * per_octave
        self.buckets = (high_exponent - low_exponent) * per_octave
        # Row layout per unit: [negative (largest magnitude first) | zero | positive].
        self.width = 2 * self.buckets + 1
        self.counts = torch.zeros(units, self.width, dtype=torch.int64, device=device)
        self._table: Tensor | None = None

    def _bucket_of(self, values: Tensor) -> Tensor:
        """The column of every value (same shape, int64), by integer arithmetic."""
        bits = values.float().contiguous().view(torch.int32)
        key = bits & _MAGNITUDE
        key >>= self._shift
        key -= self._low_key - 1
        # 0 = under min_magnitude (the zero bucket); 1..buckets = magnitude buckets.
        key.clamp_(0, self.buckets)
        sign = bits >> 31  # arithmetic shift: -1 for negative values, 0 otherwise
        sign |= 1
        key *= sign  # negative values mirror below the zero bucket
        key += self.buckets
        return key.long()

    def _column_table(self, device: torch.device) -> Tensor | None:
        """Column of every ``bits >> shift`` (sign, exponent, kept mantissa bits as an unsigned
        number): one lookup replaces the arithmetic of :meth:`_bucket_of`. None where the
        table would be large (a fine relative accuracy)."""
        key_bits = 32 - self._shift
        if key_bits > _TABLE_KEY_BITS:
            return None
        if self._table is None or self._table.device != device:
            size = 1 << key_bits
            entry = torch.arange(size, dtype=torch.int64)
            negative = entry >= size // 2  # the sign bit
            magnitude = entry - torch.where(negative, size // 2, 0)  # (bits & MAG) >> shift
            key = (magnitude - (self._low_key - 1)).clamp(0, self.buckets)
            columns = torch.where(negative, self.buckets - key, self.buckets + key)
            self._table = columns.to(device)
        return self._table

    def update(self, values: Tensor, unit_dim: int = 0) -> None:
        """Add values with the units along ``unit_dim`` (0 by default: shaped (units, M));
        every other entry is one more value of its unit, e.g. (N, units, h, w) maps with
        ``unit_dim=1``. Runs on the device of the counts without a host sync (a scatter-add,
        not ``bincount``, which reads its largest key back)."""
        if values.ndim < 1 or values.shape[unit_dim] != self.units:
            raise bad_option(
                "values",
                f"a tensor with units={self.units} along dim {unit_dim}",
                tuple(values.shape),
            )
        device = self.counts.device
        # Unit-major rows: each unit's values land in its own row of counts, which stays in
        # cache while they are added (and rows are added in parallel). Few, large operations:
        # on a busy machine every parallel operation may wait for a descheduled thread.
        moved = values.to(device=device, dtype=torch.float32).movedim(unit_dim, 0)
        table = self._column_table(device)
        if table is None:
            columns = self._bucket_of(moved.reshape(self.units, -1))
        else:
            keys = torch.empty(moved.shape, dtype=torch.int32, device=device)
            torch.bitwise_right_shift(moved.view(torch.int32), self._shift, out=keys)
            keys &= table.numel() - 1  # the sign-extended high bits off: a logical shift
            columns = table.index_select(0, keys.view(-1)).view(self.units, -1)
        ones = torch.ones((), dtype=self.counts.dtype, device=device)
        self.counts.scatter_add_(1, columns, ones.expand(columns.shape))

    def merge(self, other: QuantileSketch) -> None:
        """Add another sketch of the same shape (e.g. another rank's)."""
        if other.counts.shape != self.counts.shape or other._shift != self._shift:
            raise bad_option("other", "a sketch with the same units and accuracy", other)
        self.counts += other.counts.to(self.counts.device)

    def _values(self) -> Tensor:
        keys = torch.arange(self.buckets + 1, dtype=torch.int64) + self._low_key
        lower = (keys << self._shift).to(torch.int32).view(torch.float32).double()
        midpoints = (lower[:-1] + lower[1:]) / 2
        zero = torch.zeros(1, dtype=torch.float64)
        return torch.cat([-midpoints.flip(0), zero, midpoints]).to(self.counts.device)

    def quantile(self, q: float) -> Tensor:
        """Per-unit estimate of the ``q`` quantile (lower order statistic at rank q*(n-1))."""
        if not 0.0 <= q <= 1.0:
            raise bad_option("q", "a number in [0, 1]", q)
        totals = self.counts.sum(dim=1)
        if bool((totals == 0).any()):
            raise bad_option("sketch", "at least one value per unit before a quantile", "empty")
        rank = torch.floor(q * (totals - 1).double()).long()
        cumulative = self.counts.cumsum(dim=1)
        column = torch.searchsorted(cumulative, rank.unsqueeze(1), right=True).squeeze(1)
        return self._values()[column].float()

    def count(self) -> Tensor:
        """How many values each unit has seen."""
        return self.counts.sum(dim=1)
