"""The compositional baseline (Mu & Andreas 2020) recovers planted formulas of concept masks."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_maia.analysis.compositional import Formula, explain_mask
from lightning_maia.errors import ConfigurationError

# Six independent concepts on 256 cells: concept k covers the cells whose index has bit k set,
# so every AND / OR / NOT of them is a different mask and each planted one is exact.
CELLS = np.arange(256)
NAMES = ("shape=star", "colour=red", "texture=striped", "size=large", "background=grass", "x")
MASKS = {name: (CELLS >> bit) & 1 == 1 for bit, name in enumerate(NAMES)}
STAR, RED, STRIPED, LARGE = (MASKS[n] for n in NAMES[:4])


def test_a_single_concept_is_its_own_explanation() -> None:
    best = explain_mask(RED, MASKS)
    assert (str(best.formula), best.formula.logic, best.iou) == ("colour=red", "single", 1.0)


def test_planted_and_is_recovered() -> None:
    best = explain_mask(STAR & RED, MASKS)
    assert best.formula.logic == "and"
    assert set(best.formula.concepts) == {"shape=star", "colour=red"}
    assert best.iou == 1.0


def test_planted_or_is_recovered() -> None:
    best = explain_mask(STAR | STRIPED, MASKS)
    assert best.formula.logic == "or"
    assert set(best.formula.concepts) == {"shape=star", "texture=striped"}
    assert best.iou == 1.0


def test_planted_three_way_or_and_negation_are_recovered() -> None:
    three = explain_mask(STAR | RED | LARGE, MASKS)
    assert three.formula.logic == "or" and three.iou == 1.0
    assert sorted(three.formula.concepts) == sorted(["shape=star", "colour=red", "size=large"])
    negated = explain_mask(~RED, MASKS)
    assert (str(negated.formula), negated.formula.logic, negated.iou) == (
        "NOT colour=red",
        "not",
        1.0,
    )


def test_and_not_is_a_formula_not_a_plain_logic() -> None:
    best = explain_mask(STAR & ~RED, MASKS)
    assert str(best.formula) in (
        "(shape=star AND NOT colour=red)",
        "(NOT colour=red AND shape=star)",
    )
    assert best.formula.logic == "formula" and best.iou == 1.0


def test_max_length_caps_the_formula_and_iou_is_exact() -> None:
    # Limited to one concept, STAR | RED is best explained by either alone: IoU 128 / 192.
    best = explain_mask(STAR | RED, MASKS, max_length=1)
    assert best.formula.length == 1
    assert best.iou == pytest.approx(128 / 192)


def test_noise_below_min_gain_adds_no_term() -> None:
    unit = RED.copy()
    unit[[1, 3]] = ~unit[[1, 3]]  # two cells of 256 flipped: no formula gains 0.01 over red
    assert str(explain_mask(unit, MASKS).formula) == "colour=red"


def test_formula_text_and_flattening() -> None:
    formula = Formula(
        "or",
        left=Formula("or", left=Formula.leaf("a"), right=Formula.leaf("b")),
        right=Formula.leaf("c"),
    )
    assert str(formula) == "((a OR b) OR c)"
    assert formula.logic == "or" and formula.concepts == ("a", "b", "c")


def test_masks_of_another_shape_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"concept_masks\['bad'\]"):
        explain_mask(RED, {"bad": RED[:10]})
    with pytest.raises(ConfigurationError, match="beam"):
        explain_mask(RED, MASKS, beam=0)
