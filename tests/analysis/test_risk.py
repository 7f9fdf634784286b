"""Risk scores: exact baselines, reliance on a hand-weighted head, metrics, the fitted
combination never scoring what it was fitted on, and reasons in words."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lightning_maia.analysis._class_bias import SubgroupFinding
from lightning_maia.analysis._risk import (
    L2_CANDIDATES,
    baseline_risks,
    counterfactual_logits,
    counterfactual_risk,
    cross_fitted_risk,
    energy,
    error_detection_metrics,
    fit_risk_combiner,
    flag_reason,
    max_softmax_probability,
    predictive_entropy,
    softmax_margin,
    spurious_reliance,
    subgroup_membership,
    top_spurious_unit,
    unit_contributions,
)
from lightning_maia.errors import ConfigurationError

# Row 0: p = (3/4, 1/4); row 1: uniform over 4 classes; row 2: p = (1/2, 1/4, 1/4, 0-ish).
LOGITS = torch.tensor(
    [
        [math.log(3.0), 0.0, -1e4, -1e4],
        [0.0, 0.0, 0.0, 0.0],
        [math.log(2.0), 0.0, 0.0, -1e4],
    ]
)


def test_baselines_have_exact_values_on_hand_made_logits() -> None:
    assert max_softmax_probability(LOGITS).tolist() == pytest.approx([0.75, 0.25, 0.5])
    assert softmax_margin(LOGITS).tolist() == pytest.approx([0.5, 0.0, 0.25])
    assert energy(LOGITS).tolist() == pytest.approx(
        [-math.log(4.0), -math.log(4.0), -math.log(4.0)]
    )
    entropy_0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    entropy_2 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert predictive_entropy(LOGITS).tolist() == pytest.approx(
        [entropy_0, math.log(4.0), entropy_2]
    )


def test_baseline_risks_grow_with_the_risk_of_an_error() -> None:
    risks = baseline_risks(LOGITS)
    assert list(risks) == ["msp", "margin", "energy", "entropy"]
    assert risks["msp"].tolist() == pytest.approx([0.25, 0.75, 0.5])
    assert risks["margin"].tolist() == pytest.approx([0.5, 1.0, 0.75])
    confident = baseline_risks(torch.tensor([[10.0, 0.0], [0.1, 0.0]]))
    # The confident row is the less risky one by every score.
    assert all(float(score[0]) < float(score[1]) for score in confident.values())


def test_bad_logits_are_named() -> None:
    with pytest.raises(ConfigurationError, match="`logits` can be a float"):
        max_softmax_probability(torch.zeros(3))


# Head: class 0 = 1*u0 + 3*u1 - 1*u2; class 1 = 1*u2 + 2*u3. Unit 1 and unit 3 are spurious.
WEIGHT = torch.tensor([[1.0, 3.0, -1.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
FEATURES = torch.tensor(
    [
        [1.0, 1.0, 1.0, 0.0],  # class 0: evidence 1 (u0) + 3 (u1); u2 counts against
        [2.0, 0.0, 1.0, 0.0],  # class 0: evidence from u0 only
        [0.0, 0.0, 1.0, 2.0],  # class 1: evidence 1 (u2) + 4 (u3)
        [0.0, 0.0, 0.0, 0.0],  # no evidence at all
    ]
)
CLASSES = torch.tensor([0, 0, 1, 0])


def test_reliance_is_the_spurious_share_of_the_positive_evidence() -> None:
    assert unit_contributions(FEATURES, WEIGHT, CLASSES)[0].tolist() == [1.0, 3.0, -1.0, 0.0]
    reliance = spurious_reliance(FEATURES, WEIGHT, [1, 3], CLASSES)
    assert reliance.tolist() == pytest.approx([0.75, 0.0, 0.8, 0.0])
    assert spurious_reliance(FEATURES, WEIGHT, [], CLASSES).tolist() == [0.0] * 4
    assert spurious_reliance(FEATURES, WEIGHT, [0, 1, 2, 3], CLASSES).tolist()[:3] == [1.0] * 3
    assert top_spurious_unit(FEATURES, WEIGHT, [1, 3], CLASSES) == [1, None, 3, None]


def test_reliance_names_bad_units_and_shapes() -> None:
    with pytest.raises(ConfigurationError, match="`spurious_units` can be unit indices in"):
        spurious_reliance(FEATURES, WEIGHT, [4], CLASSES)
    with pytest.raises(ConfigurationError, match="`features`"):
        spurious_reliance(FEATURES[:, :3], WEIGHT, [1], CLASSES)


def test_auroc_and_aupr_on_known_separations() -> None:
    errors = torch.tensor([0, 0, 0, 1, 1])
    metrics = error_detection_metrics(
        {
            "perfect": torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]),
            "reversed": torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]),
            "constant": torch.zeros(5),
            # One error above every correct item, one below all: 3 of 6 pairs right.
            "half": torch.tensor([0.2, 0.3, 0.4, 0.9, 0.1]),
        },
        errors,
    )
    assert metrics["auroc"] == pytest.approx(
        {"perfect": 1.0, "reversed": 0.0, "constant": 0.5, "half": 0.5}
    )
    assert metrics["aupr_error"]["perfect"] == pytest.approx(1.0)
    # Precision 1 at the first error, 2/5 at the second: average (1 + 0.4) / 2.
    assert metrics["aupr_error"]["half"] == pytest.approx(0.7)


def test_metrics_are_nan_without_errors() -> None:
    metrics = error_detection_metrics({"msp": torch.tensor([0.1, 0.2])}, torch.tensor([0, 0]))
    assert math.isnan(metrics["auroc"]["msp"]) and math.isnan(metrics["aupr_error"]["msp"])


#: The three features these combination tests draw (the counterfactual risk is tested apart).
THREE = ("msp", "reliance", "subgroup")


def _labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Errors driven by reliance (column 1); msp risk is noise."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(n, 3, generator=generator)
    features[:, 2] = 0.0
    errors = (features[:, 1] + 0.1 * torch.randn(n, generator=generator) > 0.6).long()
    return features, errors


def test_the_combination_learns_which_feature_predicts_errors() -> None:
    features, errors = _labelled(400, seed=0)
    combiner = fit_risk_combiner(
        features, errors, [f"fit[{i}]" for i in range(400)], feature_names=THREE
    )
    assert combiner.coefficients()["reliance"] > 2.0 > abs(combiner.coefficients()["msp"])
    test_features, test_errors = _labelled(400, seed=1)
    scores = combiner.score(test_features, [f"test[{i}]" for i in range(400)])
    assert error_detection_metrics({"maia": scores}, test_errors)["auroc"]["maia"] > 0.95


def test_the_combination_refuses_items_it_was_fitted_on() -> None:
    features, errors = _labelled(50, seed=0)
    ids = [f"holdout[{i}]" for i in range(50)]
    combiner = fit_risk_combiner(features, errors, ids, feature_names=THREE)
    with pytest.raises(ConfigurationError, match=r"fitted on 1 of the items .*holdout\[7\]"):
        combiner.score(features[:3], ["test[0]", "holdout[7]", "test[2]"])


def test_cross_fitting_scores_each_item_with_a_combiner_that_never_saw_it() -> None:
    features, errors = _labelled(60, seed=2)
    ids = [f"val[{i}]" for i in range(60)]
    risk, combiners = cross_fitted_risk(features, errors, ids, folds=3, seed=0, feature_names=THREE)
    assert len(combiners) == 3
    for i, item in enumerate(ids):
        blind = [c for c in combiners if item not in c.fitted_on]
        # Exactly one combiner did not see the item, and the item's risk is its score.
        assert len(blind) == 1
        assert float(risk[i]) == pytest.approx(float(blind[0].score(features[i : i + 1], [item])))
    assert sorted(len(c.fitted_on) for c in combiners) == [40, 40, 40]


def test_without_errors_the_combination_sums_the_standardised_features() -> None:
    features = torch.tensor([[0.1, 0.0, 0.0], [0.5, 0.5, 0.0], [0.9, 1.0, 0.0]])
    combiner = fit_risk_combiner(features, torch.zeros(3), ["a", "b", "c"], feature_names=THREE)
    assert combiner.weight.tolist() == [1.0, 1.0, 1.0]
    scores = combiner.score(features, ["x", "y", "z"]).tolist()
    assert scores[0] < scores[1] < scores[2]


CIRCLES = SubgroupFinding(
    "output:0", "circle", "shape=circle", "colour", "blue", "colour=blue", "blue circles",
    mean_score=0.2, class_mean=0.8,
)  # fmt: skip
STARS = SubgroupFinding(
    "output:1", "star", "shape=star", "size", "small", "size=small", "small stars",
    mean_score=0.6, class_mean=0.8,
)  # fmt: skip


def test_subgroup_membership_takes_the_most_severe_matching_finding() -> None:
    concepts = [
        frozenset({"shape=circle", "colour=blue", "size=small"}),
        frozenset({"shape=star", "colour=blue", "size=small"}),
        frozenset({"shape=circle", "colour=red"}),
    ]
    scores, matched = subgroup_membership([STARS, CIRCLES], concepts)
    assert scores.tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert matched == [CIRCLES, STARS, None]


def test_reasons_say_why_in_words() -> None:
    assert (
        flag_reason(
            confidence=0.9,
            reliance=0.62,
            spurious_unit=17,
            unit_description="blue water background",
        )
        == "prediction rests on unit 17: blue water background (62% of its evidence)"
    )
    assert (
        flag_reason(confidence=0.95, reliance=0.3, spurious_unit=17, subgroup=CIRCLES)
        == "blue circles are a subgroup the model scores low (0.20 vs 0.80 for circle)"
    )
    assert (
        flag_reason(confidence=0.3, reliance=0.9, spurious_unit=4)
        == "prediction rests on unit 4: a unit judged spurious (90% of its evidence); "
        "low confidence (0.30)"
    )
    # A spurious unit that gives more evidence than any other unit, but not most of it.
    assert flag_reason(
        confidence=0.9, reliance=0.3, spurious_unit=5, unit_description="sand", leading=True
    ) == ("prediction leans most on unit 5: sand (spurious units give 30% of its evidence)")
    assert flag_reason(confidence=0.8) == "no single cause: confidence 0.80, spurious reliance 0%"


# Head for the counterfactual: class 0 = u0 + 2 * u2, class 1 = u1; unit 2 is the shortcut.
SHORTCUT_HEAD = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
SHORTCUT_FEATURES = torch.tensor(
    [
        [0.5, 1.0, 1.0],  # logits (2.5, 1): class 0, but only through unit 2
        [2.0, 0.0, 1.0],  # logits (4, 0): class 0 on its core unit as well
    ]
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_the_counterfactual_flips_a_decision_that_rests_on_the_ablated_unit() -> None:
    logits = SHORTCUT_FEATURES @ SHORTCUT_HEAD.T
    zeroed = counterfactual_logits(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [2])
    # Zeroing unit 2 leaves (0.5, 1): the first decision flips to class 1; the second holds.
    assert zeroed.tolist() == [[0.5, 1.0], [2.0, 0.0]]
    risk = counterfactual_risk(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [2])
    assert risk.tolist() == pytest.approx([_sigmoid(0.5), 1.0 - _sigmoid(2.0)])
    # Mean ablation: unit 2 gives what it gives an average input (0.5 -> 1.0 of logit 0).
    reference = torch.tensor([0.0, 0.0, 0.5])
    mean_ablated = counterfactual_logits(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [2], reference)
    assert mean_ablated.tolist() == [[1.5, 1.0], [3.0, 0.0]]
    assert counterfactual_risk(
        logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [2], reference
    ).tolist() == pytest.approx([1.0 - _sigmoid(0.5), 1.0 - _sigmoid(3.0)])
    # Ablating a core unit instead leaves the first decision alone and hurts the second less.
    assert counterfactual_logits(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [1]).tolist() == [
        [2.5, 0.0],
        [4.0, 0.0],
    ]
    # Nothing spurious: the counterfactual risk is the msp risk.
    assert counterfactual_risk(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, []).tolist() == (
        pytest.approx(baseline_risks(logits)["msp"].tolist())
    )


# A shortcut spread over two units: class 0 = u0 + u1 (each half of it), class 1 = 0.8 u2.
SPREAD_HEAD = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.8]])
SPREAD_FEATURES = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 3.0]])  # logits (2, 0.8), (2, 2.4)


def _approx_rows(rows: list[list[float]]) -> list[Any]:
    return [pytest.approx(row, abs=1e-6) for row in rows]


def test_directions_ablate_a_shortcut_that_no_single_unit_carries() -> None:
    logits = SPREAD_FEATURES @ SPREAD_HEAD.T
    # Ablating one of the two units leaves class 0 ahead on the first input (1 > 0.8) ...
    assert counterfactual_logits(
        logits, SPREAD_FEATURES, SPREAD_HEAD, [0]
    ).tolist() == _approx_rows([[1.0, 0.8], [1.0, 2.4]])
    # ... ablating along the direction the shortcut's edits move both units (u0 + u1) flips it.
    direction = torch.tensor([[1.0], [1.0], [0.0]]) * 3.0  # any scale: it is a span
    along = counterfactual_logits(logits, SPREAD_FEATURES, SPREAD_HEAD, [], directions=direction)
    assert along.tolist() == _approx_rows([[0.0, 0.8], [0.0, 2.4]])
    # An exact projection: a direction half along u2 takes half of u2's evidence with it.
    # f = (1, 1, 1) keeps (1, 0, 0) after (0, 1, 1)/sqrt(2); f = (1, 1, 3) keeps (1, -1, 1).
    mixed = torch.tensor([[0.0], [1.0], [1.0]])
    assert counterfactual_logits(
        logits, SPREAD_FEATURES, SPREAD_HEAD, [], directions=mixed
    ).tolist() == _approx_rows([[1.0, 0.0], [0.0, 0.8]])
    # Units and directions together ablate their span: a direction along a unit adds nothing.
    both = counterfactual_logits(
        logits, SPREAD_FEATURES, SPREAD_HEAD, [0], directions=torch.tensor([[1.0], [0.0], [0.0]])
    )
    assert both.tolist() == _approx_rows([[1.0, 0.8], [1.0, 2.4]])
    # Mean ablation along the direction: the reference's own component stays.
    reference = torch.tensor([0.5, 0.5, 1.0])
    assert counterfactual_logits(
        logits, SPREAD_FEATURES, SPREAD_HEAD, [], reference, direction
    ).tolist() == _approx_rows([[1.0, 0.8], [1.0, 2.4]])
    # The risk is of the *predicted* class: 0 for the first input, 1 for the second.
    risk = counterfactual_risk(logits, SPREAD_FEATURES, SPREAD_HEAD, [], directions=direction)
    assert risk.tolist() == pytest.approx([1.0 - _sigmoid(-0.8), 1.0 - _sigmoid(2.4)])
    # No unit and no direction: the logits as they were.
    empty = torch.zeros(3, 0)
    assert torch.equal(
        counterfactual_logits(logits, SPREAD_FEATURES, SPREAD_HEAD, [], directions=empty), logits
    )
    with pytest.raises(ConfigurationError, match=r"`directions` can be an \(F, r\) tensor"):
        counterfactual_logits(logits, SPREAD_FEATURES, SPREAD_HEAD, [], directions=torch.ones(2, 1))


def test_the_counterfactual_names_a_bad_reference_or_unit() -> None:
    logits = SHORTCUT_FEATURES @ SHORTCUT_HEAD.T
    with pytest.raises(ConfigurationError, match=r"`reference` can be one value per unit \(3,\)"):
        counterfactual_logits(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [2], torch.zeros(2))
    with pytest.raises(
        ConfigurationError, match=r"`spurious_units` can be unit indices in \[0, 3\)"
    ):
        counterfactual_risk(logits, SHORTCUT_FEATURES, SHORTCUT_HEAD, [3])
    with pytest.raises(ConfigurationError, match="`logits` can be"):
        counterfactual_logits(logits[:1], SHORTCUT_FEATURES, SHORTCUT_HEAD, [2])


def test_the_combination_chooses_its_l2_by_cross_validated_auroc_on_its_fitting_data() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    # Few items, a weak signal among noise: the penalties really differ out of fold.
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(60, 3, generator=generator)
    errors = (features[:, 0] + 1.5 * torch.randn(60, generator=generator) > 0.8).long()
    combiner = fit_risk_combiner(
        features, errors, [f"val[{i}]" for i in range(60)], feature_names=THREE, seed=0
    )
    # The same computation written out with scikit-learn: seeded stratified 5 folds on the
    # standardised fitting data, C = 1 / (2 * l2 * n_fold), mean AUROC per candidate.
    x = ((features - features.mean(0)) / features.std(0, unbiased=False)).double().numpy()
    y = errors.numpy()
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
    expected = {}
    for l2 in L2_CANDIDATES:
        values = []
        for fit, held in splits:
            model = LogisticRegression(C=1.0 / (2 * l2 * len(fit)), tol=1e-10, max_iter=1000)
            model.fit(x[fit], y[fit])
            values.append(roc_auc_score(y[held], model.decision_function(x[held])))
        expected[l2] = sum(values) / len(values)
    assert list(combiner.l2_auroc) == list(L2_CANDIDATES)
    assert list(combiner.l2_auroc.values()) == pytest.approx(list(expected.values()), abs=1e-6)
    best = max(expected.values())
    assert combiner.l2 == 1.0  # here the strongest penalty wins out of fold
    assert combiner.l2 == min(l2 for l2, v in expected.items() if v >= best - 1e-9)
    # ... and the weights are a refit at the chosen strength on all the fitting data.
    refit = LogisticRegression(C=1.0 / (2 * combiner.l2 * 60), tol=1e-10, max_iter=1000).fit(x, y)
    assert combiner.weight.tolist() == pytest.approx(refit.coef_[0].tolist(), abs=1e-4)
    # One strength given: no choice made.
    fixed = fit_risk_combiner(features, errors, ["a"] * 60, feature_names=THREE, l2=0.5)
    assert fixed.l2 == 0.5 and fixed.l2_auroc == {}
    with pytest.raises(ConfigurationError, match="`l2` can be a non-negative float or a list"):
        fit_risk_combiner(features, errors, ["a"] * 60, feature_names=THREE, l2=[-1.0])
