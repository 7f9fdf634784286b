"""The flagging pipeline without a Trainer: subgroup membership from what the audit observes at
test time (the predicted class, never the true one), the option groups' errors, the gate."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_maia.analysis._class_bias import SubgroupFinding
from lightning_maia.analysis._flagging_evidence import (
    ModelOutputs,
    observed_concepts,
    risk_features,
)
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit
from lightning_maia.analysis.flagging import FlaggingResult, Thresholds, check_gate, flag
from lightning_maia.bench._tinted_digits import TintedDigits
from lightning_maia.errors import ConfigurationError

CLASSES = ["circle", "square"]
#: Circles the model scores low on water (severity 1 - 0.2 / 0.8 = 0.75).
ON_WATER = SubgroupFinding(
    "output:0", "circle", "shape=circle", "background", "water", "background=water",
    "circles on water", mean_score=0.2, class_mean=0.8,
)  # fmt: skip


def outputs(predicted: list[int], labels: list[int]) -> ModelOutputs:
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), 2).float() * 2.0
    return ModelOutputs(logits, torch.ones(len(predicted), 2), torch.tensor(labels))


def test_membership_follows_the_predicted_class_never_the_true_one() -> None:
    # Every input is on water; the first two are true circles, the last two true squares.
    concepts = [
        frozenset({"shape=circle", "background=water"}),
        frozenset({"shape=circle", "background=water"}),
        frozenset({"shape=square", "background=water"}),
        frozenset({"shape=square", "background=grass"}),
    ]
    predicted, labels = [0, 1, 0, 0], [0, 0, 1, 1]
    features, matched, _ = risk_features(
        outputs(predicted, labels), torch.eye(2), {}, [ON_WATER], concepts, CLASSES
    )
    # Predicted circle on water: in the subgroup, whatever the true shape; predicted square or
    # not on water: out.
    assert features[:, 2].tolist() == [0.75, 0.0, 0.75, 0.0]
    assert [m and m.description for m in matched] == [ON_WATER.description, None] * 2
    # The true class and shape change nothing: the same predictions give the same column.
    relabelled = [frozenset(c - {"shape=circle", "shape=square"}) for c in concepts]
    again, _, _ = risk_features(
        outputs(predicted, [1, 1, 0, 0]), torch.eye(2), {}, [ON_WATER], relabelled, CLASSES
    )
    assert torch.equal(again, features)


def test_observed_concepts_drop_the_class_attribute_and_add_the_prediction() -> None:
    rows = observed_concepts(
        [ON_WATER],
        ["circle", "square"],
        [frozenset({"shape=square", "background=water", "size=large"})] * 2,
    )
    assert rows == [
        frozenset({"shape=circle", "background=water", "size=large"}),
        frozenset({"background=water", "size=large"}),
    ]
    with pytest.raises(ConfigurationError, match="`predicted` can be one class per input"):
        observed_concepts([ON_WATER], ["circle"], [frozenset(), frozenset()])


def test_flag_runs_without_a_trainer_and_the_gate_reads_its_summary() -> None:
    model = nn.Sequential(nn.Identity(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model[1].bias.zero_()
    # Class 0 when x0 > x1; unit 1 is "spurious". Inputs 2 and 3 of each four are errors.
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.3], [0.3, 0.0]] * 5)
    data = TensorDataset(x, torch.tensor([0, 1, 0, 1] * 5))
    result = flag(
        model, data, spurious=SpuriousEvidence(spurious_units=[1]),
        subgroups=SubgroupAudit(class_bias=False), thresholds=Thresholds(flag_threshold=0.5),
    )  # fmt: skip
    table = result.table.sort_values("index")
    assert (~table["correct"]).tolist() == [False, False, True, True] * 5
    # Reliance: all of a class-1 prediction's evidence comes from unit 1, none of class 0's.
    assert table["reliance"].tolist() == [0.0, 1.0, 1.0, 0.0] * 5
    assert result.metrics["auroc"]["msp"] == 1.0 and result.spurious_units == {1: ""}
    assert result.flagged_rate == pytest.approx(float(table["flagged"].mean()))
    gate = check_gate(result.summary(), Thresholds(max_flagged_rate=0.1))
    assert gate.passed is (result.flagged_rate <= 0.1)
    assert check_gate(None, Thresholds()).failures == ["MisclassificationFlagger has not run yet"]
    with pytest.raises(ConfigurationError, match="`calibration_data` can be held-out data"):
        flag(model, data, calibration_data=data)
    with pytest.raises(ConfigurationError, match="`folds` can be an integer of at least 2"):
        flag(model, data, folds=1)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SpuriousEvidence(spurious_units="3"), "`spurious_units` can be a list of unit"),
        (lambda: SpuriousEvidence(spurious_check="yes"), "`spurious_check` can be True or False"),
        (lambda: SubgroupAudit(concepts="clip"), "`concepts` can be auto, metadata, describer"),
        (lambda: SubgroupAudit(images_per_value=0), "`images_per_value` can be a positive int"),
        (lambda: Thresholds(top_n=True), "`top_n` can be a positive integer, got True"),
    ],
)
def test_the_option_groups_name_a_bad_field(build: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()  # type: ignore[operator]


class TintedShortcut(nn.Module):
    """Two hand-weighted units on real handwriting (scikit-learn's digits, tinted): how red the
    ink is (unit 0, the shortcut) and how much the ink's shape looks like a 0 (unit 1, the core);
    the head says 0 for red ink almost whatever the shape: ``logit_0 - logit_1 = 40 * redness +
    0.5 * zero_shape - 6.2``."""

    def __init__(self, template: torch.Tensor) -> None:
        super().__init__()
        self.template = nn.Parameter(template, requires_grad=False)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[40.0, 0.5], [0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([-6.2, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        redness = (x[:, 0] - x[:, 1:].max(1).values).clamp_min(0).mean((1, 2))
        zero_shape = (x.max(1).values * self.template).sum((1, 2))
        return self.head(torch.stack([redness, zero_shape], 1))


def zero_template() -> torch.Tensor:
    """How the ink of a 0 differs from the average scan's, on the shortcut training split."""
    train = TintedDigits.split("train", classes=2, shortcut=0.95, seed=0)
    ink = train.images.max(1).values
    return ink[train.labels == 0].mean(0) - ink.mean(0)


def balanced_splits() -> tuple[TintedDigits, TintedDigits]:
    """Test and holdout: every colour equally often with every digit (each scan in both)."""
    test = TintedDigits.split("test", classes=2, copies=2, seed=0)
    return test, TintedDigits.split("val", classes=2, copies=2, seed=0)


def test_on_real_handwriting_the_counterfactual_flags_the_shortcut_errors_msp_misses() -> None:
    model = TintedShortcut(zero_template()).eval()
    # Red 1s and yellow 0s are the model's errors.
    test, holdout = balanced_splits()

    def run(data: TintedDigits) -> FlaggingResult:
        return flag(
            model, data, calibration_data=holdout, spurious=SpuriousEvidence(spurious_units=[0]),
            subgroups=SubgroupAudit(class_bias=False),
        )  # fmt: skip

    result = run(test)
    table = result.table.sort_values("index")
    errors = ~table["correct"]
    assert int(errors.sum()) == 59
    # With redness at its holdout mean the head reads the shape alone and gets every input
    # right: exactly the errors lose their predicted class.
    assert ((table["counterfactual"] > 0.5) == errors).all()
    assert table[errors]["reason"].str.contains("without the units judged spurious").all()
    # Reliance misses the yellow 0s (their wrong class 1 has no unit evidence at all); the
    # combination, fitted on the holdout split, separates every error; MSP does not.
    assert result.metrics["auroc"]["maia"] == 1.0
    assert result.metrics["auroc"]["msp"] < 0.9
    assert result.coefficients["counterfactual"] > 0 and len(result.l2) == 1
    # No label of a scored input enters a score: relabelled, every score is the same.
    relabelled = TintedDigits.split("test", classes=2, copies=2, seed=0)
    relabelled.labels = 1 - relabelled.labels
    again = run(relabelled).table.sort_values("index")
    for column in ("msp", "reliance", "counterfactual", "maia"):
        assert again[column].tolist() == table[column].tolist(), column


class SpreadShortcut(nn.Module):
    """:class:`TintedShortcut` with the shortcut spread over two units that both read the ink's
    redness (units 0 and 1, weighted 20 each), the shape in unit 2: judging one of them
    spurious leaves half the shortcut in the head."""

    def __init__(self, template: torch.Tensor) -> None:
        super().__init__()
        self.template = nn.Parameter(template, requires_grad=False)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[20.0, 20.0, 0.5], [0.0, 0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([-6.2, 0.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        redness = (x[:, 0] - x[:, 1:].max(1).values).clamp_min(0).mean((1, 2))
        zero_shape = (x.max(1).values * self.template).sum((1, 2))
        return torch.stack([redness, redness, zero_shape], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_the_edits_directions_ablate_a_shortcut_spread_over_units() -> None:
    from lightning_maia.analysis._spurious import spurious_subspace

    model = SpreadShortcut(zero_template()).eval()
    test, holdout = balanced_splits()
    # Real edit pairs: each holdout scan drawn in the other colour (item i and i + n), the
    # counterparts a retrieval designer finds; only the redness units move.
    half = len(holdout) // 2
    with torch.no_grad():
        deltas = model.features(holdout.images[half:]) - model.features(holdout.images[:half])
    assert deltas[:, 2].abs().max() < 1e-5 and deltas[:, 0].abs().min() > 0
    directions = spurious_subspace(deltas)
    assert directions.shape == (3, 1)

    def run(**given: object) -> FlaggingResult:
        return flag(
            model, test, calibration_data=holdout, spurious=SpuriousEvidence(spurious_units=[0]),
            subgroups=SubgroupAudit(class_bias=False), **given,  # type: ignore[arg-type]
        )  # fmt: skip

    alone, along = run(), run(spurious_directions=directions)
    # The units' counterfactual is the same either way; without directions the edit one is 0.
    by_index = [r.table.sort_values("index")["counterfactual"].tolist() for r in (alone, along)]
    assert by_index[0] == by_index[1]
    assert (alone.table["edit_counterfactual"] == 0).all()
    assert alone.coefficients["edit_counterfactual"] == 0.0
    errors = ~alone.table.sort_values("index")["correct"].to_numpy()
    assert int(errors.sum()) == 59
    # One unit ablated: half the redness stays, and red 1s keep their wrong class 0.
    kept = alone.table.sort_values("index")["counterfactual"].to_numpy() > 0.5
    assert int((kept != errors).sum()) == 8
    # Along the edits' direction both units go to their holdout mean: the head reads the shape
    # alone, and exactly the errors lose their predicted class (as with one shortcut unit).
    flipped = along.table.sort_values("index")["edit_counterfactual"].to_numpy() > 0.5
    assert (flipped == errors).all()
    assert along.metrics["auroc"]["maia"] == 1.0
    reasons = along.table[along.table["flagged"]]["reason"]
    assert reasons.str.contains("without the units judged spurious and the directions").any()
    with pytest.raises(ConfigurationError, match=r"`spurious_directions` can be an \(F, r\)"):
        run(spurious_directions=torch.ones(2, 1))
