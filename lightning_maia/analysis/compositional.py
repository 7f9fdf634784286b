"""Compositional explanations of units (Mu & Andreas, 2020): formulas of concept masks by IoU.

A unit's mask (its activation maps above its threshold, over every probe image) is explained
by the logical formula of concept masks with the highest IoU. The search is a beam search:
start from the ``beam`` best single concepts (and their negations), then grow each formula by
one more concept with AND, OR or AND NOT, keep the ``beam`` best, up to ``max_length``
concepts. A longer formula replaces a shorter one only when its IoU is higher by
``min_gain`` (fixed in advance, not fitted: it keeps exact masks from collecting terms that
add nothing).

Masks are boolean arrays of one shape (any: ``(images, cells)`` or flat); they are packed into
bits, so a search over tens of concepts on a few hundred thousand cells takes well under a
second.

>>> import numpy as np
>>> red = np.array([1, 1, 0, 0, 0, 0], bool)
>>> star = np.array([0, 0, 1, 1, 0, 0], bool)
>>> best = explain_mask(red | star, {"colour=red": red, "shape=star": star})
>>> str(best.formula), best.iou
('(colour=red OR shape=star)', 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    COMPOSITIONAL_BEAM,
    COMPOSITIONAL_MAX_LENGTH,
    COMPOSITIONAL_MIN_GAIN,
)

#: Binary operators of the search; ``and_not`` is ``left AND NOT right``.
OPERATORS: tuple[str, ...] = ("and", "or", "and_not")


@dataclass(frozen=True)
class Formula:
    """A logical formula over concept names: a leaf, NOT of a leaf, or an operator of two."""

    op: str
    concept: str = ""
    left: Formula | None = None
    right: Formula | None = None

    @classmethod
    def leaf(cls, concept: str) -> Formula:
        return cls("leaf", concept)

    @property
    def concepts(self) -> tuple[str, ...]:
        """Concept names in the formula, left to right."""
        if self.op in ("leaf", "not"):
            return (self.concept,)
        assert self.left is not None
        assert self.right is not None
        return self.left.concepts + self.right.concepts

    @property
    def length(self) -> int:
        return len(self.concepts)

    def flattened(self, op: str) -> tuple[Formula, ...] | None:
        """The operands of a chain of ``op`` (``a OR b OR c`` -> a, b, c); None if not one."""
        if self.op != op:
            return None
        assert self.left is not None
        assert self.right is not None
        parts: list[Formula] = []
        for side in (self.left, self.right):
            inner = side.flattened(op)
            parts.extend(inner if inner is not None else (side,))
        return tuple(parts)

    @property
    def logic(self) -> str:
        """``single``, ``not``, ``or`` or ``and`` when the formula is one of those over leaves
        (any number of them for or / and); ``formula`` otherwise."""
        if self.op in ("leaf", "not"):
            return "single" if self.op == "leaf" else "not"
        for op in ("or", "and"):
            parts = self.flattened(op)
            if parts is not None and all(p.op == "leaf" for p in parts):
                return op
        return "formula"

    def __str__(self) -> str:
        if self.op == "leaf":
            return self.concept
        if self.op == "not":
            return f"NOT {self.concept}"
        word = {"and": "AND", "or": "OR", "and_not": "AND NOT"}[self.op]
        return f"({self.left} {word} {self.right})"


@dataclass(frozen=True)
class Explanation:
    """The best formula found and its IoU with the unit's mask."""

    formula: Formula
    iou: float


def _iou(unit: np.ndarray, unit_count: int, formula: np.ndarray) -> float:
    intersection = int(np.bitwise_count(unit & formula).sum())
    union = unit_count + int(np.bitwise_count(formula).sum()) - intersection
    return intersection / union if union else 0.0


def explain_mask(
    unit_mask: np.ndarray,
    concept_masks: Mapping[str, np.ndarray],
    *,
    beam: int = COMPOSITIONAL_BEAM,
    max_length: int = COMPOSITIONAL_MAX_LENGTH,
    min_gain: float = COMPOSITIONAL_MIN_GAIN,
) -> Explanation:
    """The formula of ``concept_masks`` whose mask best overlaps ``unit_mask`` (IoU).

    ``concept_masks`` maps concept names to boolean masks shaped like ``unit_mask``. Ties go
    to the formula found first (shorter, then concepts in the mapping's order).
    """
    if beam < 1:
        raise bad_option("beam", "a positive int", beam)
    if max_length < 1:
        raise bad_option("max_length", "a positive int", max_length)
    if not concept_masks:
        raise bad_option("concept_masks", "at least one concept", 0)
    shape = np.shape(unit_mask)
    for name, mask in concept_masks.items():
        if np.shape(mask) != shape:
            raise bad_option(f"concept_masks[{name!r}]", f"a mask of shape {shape}", np.shape(mask))
    unit = np.packbits(np.asarray(unit_mask, bool).reshape(-1))
    unit_count = int(np.bitwise_count(unit).sum())
    packed = {
        name: np.packbits(np.asarray(m, bool).reshape(-1)) for name, m in concept_masks.items()
    }
    size = int(np.prod(shape))
    # Padding bits past the last cell stay zero under NOT.
    valid = np.packbits(np.ones(size, bool))

    scored: list[tuple[float, Formula, np.ndarray]] = []
    for name, mask in packed.items():
        scored.append((_iou(unit, unit_count, mask), Formula.leaf(name), mask))
        negated = ~mask & valid
        scored.append((_iou(unit, unit_count, negated), Formula("not", name), negated))
    scored.sort(key=lambda entry: -entry[0])
    frontier = scored[:beam]
    best_iou, best_formula, _ = frontier[0]
    for _ in range(max_length - 1):
        grown: list[tuple[float, Formula, np.ndarray]] = []
        seen: set[str] = set()
        for _, formula, mask in frontier:
            used = set(formula.concepts)
            for name, leaf in packed.items():
                if name in used:
                    continue
                for op, combined in (
                    ("and", mask & leaf),
                    ("or", mask | leaf),
                    ("and_not", mask & ~leaf),
                ):
                    candidate = Formula(op, left=formula, right=Formula.leaf(name))
                    key = str(candidate)
                    if key in seen:
                        continue
                    seen.add(key)
                    grown.append((_iou(unit, unit_count, combined), candidate, combined))
        if not grown:
            break
        grown.sort(key=lambda entry: -entry[0])
        frontier = grown[:beam]
        if frontier[0][0] >= best_iou + min_gain:
            best_iou, best_formula, _ = frontier[0]
    return Explanation(best_formula, float(best_iou))
