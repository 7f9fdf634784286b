"""Analysis of agent results: description scoring (ground truth and predictive)."""

from lightning_maia.analysis.scoring import (
    LOGIC_TO_KIND,
    PredictiveScore,
    accuracy_by_kind,
    activation_auroc,
    matches_ground_truth,
    positive_and_neutral_prompts,
    predictive_score,
)

__all__ = [
    "LOGIC_TO_KIND",
    "PredictiveScore",
    "accuracy_by_kind",
    "activation_auroc",
    "matches_ground_truth",
    "positive_and_neutral_prompts",
    "predictive_score",
]
