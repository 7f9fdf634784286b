"""Spurious-feature removal on a linear head: selection, judgement, remedies, metrics.

The pipeline of MAIA's §5.1, as functions on penultimate features (``(N, F)`` tensors):

1. :func:`l1_top_units` — an L1-regularised logistic regression on the training features; the
   top-k units by weight magnitude (the largest absolute weight over classes).
2. :func:`judge_units` — the agent's ``spurious_check`` on each selected unit: does it follow
   the class, or a candidate spurious attribute (e.g. the background) with the class held
   fixed? Verdicts ``core`` / ``spurious`` / ``unclear`` (``failed`` when the run failed).
3. Remedies, each refit on the *unbalanced* training data without group labels:
   :func:`select_remedy` (MAIA's: a head on the kept units only, optionally on the data plus
   copies shifted along the agent's counterfactual edits, :func:`counterfactual_augment`) and
   :func:`erase_remedy`
   (project out the subspace along which features move when the agent's edits change only the
   spurious attribute — :func:`counterfactual_deltas`, :func:`spurious_subspace` — keep all
   units).
4. :func:`head_metrics` — accuracy, balanced accuracy and worst-group accuracy.

**The refit protocol** (:class:`RefitProtocol`, one for every row of a comparison): features
are standardised with the training mean and standard deviation of the units used (after the
projection, for erasure), then a multinomial logistic regression with the same strong L2
penalty (scikit-learn's ``C``) is fit; the standardisation is folded back into a weight and bias
on the raw features, with zeros on the units not used. Rows then differ only in which features
they use. Where a backbone spreads a shortcut over many units, a strong fixed
penalty makes every refit lean on it: :func:`choose_refit` picks the penalty by cross-validation
on the refit's own training data (class labels only, no group labels).

**Why one file.** Every step on features here goes through the one refit protocol
(:class:`RefitProtocol`) that all rows of a comparison must share; kept in one file, that
protocol stays one definition.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> labels = torch.arange(200) % 2
>>> core = labels[:, None].float() + 0.3 * torch.randn(200, 2, generator=g)
>>> noise = torch.randn(200, 4, generator=g)
>>> l1_top_units(torch.cat([core, noise], 1), labels, k=2).units
[0, 1]
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy
from tqdm.auto import tqdm

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.analysis._counterfactuals import counterfactual_deltas, edit_pairs
from lightning_maia.errors import MaiaError, ToolError, bad_option
from lightning_maia.evaluation_constants import (
    ERASE_MAX_RANK,
    ERASE_SUBSPACE_ENERGY,
    REMOVER_CV_C_GRID,
    REMOVER_CV_FOLDS,
    REMOVER_REFIT_C,
    REMOVER_REFIT_MAX_ITER,
)
from lightning_maia.exemplars import ExemplarResult
from lightning_maia.subject import Preprocess, Subject
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit

#: Verdicts of ``spurious_check``, and ``failed`` for a run that could not finish.
VERDICTS: tuple[str, ...] = ("core", "spurious", "unclear", "failed")


@dataclass(frozen=True)
class RefitProtocol:
    """How every head is refit on unbalanced data: standardised features, one strong L2."""

    #: Inverse L2 strength (scikit-learn's ``C``) on standardised features. 0.01 is strong: a
    #: head cannot lean on a few units, so which units it is given decides what it learns
    #: (fixed once, on the validation split of the benchmark's first seed).
    c: float = REMOVER_REFIT_C
    max_iter: int = REMOVER_REFIT_MAX_ITER


#: The protocol of the ``spurious`` benchmark and the callback's default.
REFIT = RefitProtocol()
#: The penalties :func:`choose_refit` tries (scikit-learn's ``C``), strongest first.
REFIT_GRID = REMOVER_CV_C_GRID


@dataclass
class Selection:
    """Units picked by the L1 regression, strongest first, and every unit's weight."""

    units: list[int]
    #: (F,) the largest absolute L1 weight of each unit over classes (standardised features).
    weights: Tensor


@dataclass
class LinearHead:
    """A head on the raw features: ``logits = features @ weight.T + bias``."""

    weight: Tensor  # (C, F)
    bias: Tensor  # (C,)
    #: (F,) 1 for the units the head uses, 0 for the dropped ones.
    mask: Tensor
    #: (F, F) applied to the (masked) features before the head; identity unless erasing.
    projection: Tensor

    def logits(self, features: Tensor) -> Tensor:
        return features.float() @ self.weight.T + self.bias


# -- selection and refits -------------------------------------------------------------------


def _logistic(c: float, l1: bool, max_iter: int, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # scikit-learn 1.8 deprecated `penalty` for `l1_ratio`; older releases only have `penalty`.
    options: dict[str, Any] = {"C": c, "max_iter": max_iter, "random_state": seed}
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        options["l1_ratio"] = 1.0 if l1 else 0.0
    else:
        options["penalty"] = "l1" if l1 else "l2"
    options["solver"] = "saga" if l1 else "lbfgs"
    return LogisticRegression(**options)


def _fit(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the protocol fixes max_iter
        return model.fit(x, y)


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    return mean, std


def _coefficients(model: Any, n_classes: int) -> tuple[Tensor, Tensor]:
    """(C, F) weights and (C,) biases, also for scikit-learn's binary (one-row) case."""
    weight = torch.as_tensor(model.coef_, dtype=torch.float32)
    bias = torch.as_tensor(model.intercept_, dtype=torch.float32)
    if n_classes == 2 and weight.shape[0] == 1:
        weight = torch.cat([-weight / 2, weight / 2])
        bias = torch.cat([-bias / 2, bias / 2])
    return weight, bias


def l1_top_units(
    features: Tensor, labels: Tensor, k: int = 50, *, c: float = 0.05, seed: int = 0
) -> Selection:
    """The top-``k`` units of an L1-regularised logistic regression, by weight magnitude.

    Features are standardised first, so weights compare across units. When the penalty leaves
    fewer than ``k`` units with a weight, it is relaxed (``c`` times 10, up to four times);
    remaining ties go to the lower index.
    """
    if k < 1:
        raise bad_option("k", "a positive integer", k)
    mean, std = _standardise(features.float())
    x = ((features.float() - mean) / std).numpy()
    wanted = min(k, features.shape[1])
    for attempt in range(5):
        model = _fit(_logistic(c * 10**attempt, True, 1000, seed), x, labels.numpy())
        weight, _ = _coefficients(model, int(labels.max()) + 1)
        magnitude = weight.abs().max(0).values
        if int((magnitude > 0).sum()) >= wanted:
            break
    order = sorted(range(len(magnitude)), key=lambda i: (-float(magnitude[i]), i))
    return Selection(order[:wanted], magnitude)


def refit_head(
    features: Tensor,
    labels: Tensor,
    units: Sequence[int] | None = None,
    *,
    projection: Tensor | None = None,
    protocol: RefitProtocol = REFIT,
    num_classes: int | None = None,
    seed: int = 0,
) -> LinearHead:
    """Fit a head with ``protocol`` on ``units`` (all by default) of ``projection``-ed features."""
    n_features = features.shape[1]
    classes = num_classes or int(labels.max()) + 1
    mask = torch.zeros(n_features)
    chosen = list(range(n_features)) if units is None else sorted({int(u) for u in units})
    if not chosen:
        raise bad_option("units", "at least one unit", list(chosen))
    mask[chosen] = 1.0
    eye = torch.eye(n_features)
    projector = eye if projection is None else projection.float()
    x = (features.float() * mask) @ projector.T
    used = x[:, chosen]
    mean, std = _standardise(used)
    model = _fit(
        _logistic(protocol.c, False, protocol.max_iter, seed),
        ((used - mean) / std).numpy(),
        labels.numpy(),
    )
    weight_std, bias_std = _coefficients(model, classes)
    present = sorted(int(c) for c in model.classes_)
    weight_used = torch.full((classes, len(chosen)), 0.0)
    bias = torch.full((classes,), -1e4)  # classes never seen in training are never predicted
    weight_used[present] = weight_std / std
    bias[present] = bias_std - (weight_std / std) @ mean
    # The head reads projector @ (mask * x): fold the projector into the weight on raw features.
    weight_projected = torch.zeros(classes, n_features)
    weight_projected[:, chosen] = weight_used
    return LinearHead(weight_projected @ projector * mask, bias, mask, projector)


def choose_refit(
    features: Tensor,
    labels: Tensor,
    units: Sequence[int] | None = None,
    *,
    projection: Tensor | None = None,
    grid: Sequence[float] = REFIT_GRID,
    folds: int = REMOVER_CV_FOLDS,
    num_classes: int | None = None,
    seed: int = 0,
) -> RefitProtocol:
    """The refit protocol whose L2 penalty ``C`` (from ``grid``) gives the best class-balanced
    accuracy in stratified ``folds``-fold cross-validation on ``features`` — the training data
    the head is refit on, class labels only: no group labels, no test data.

    Why: a strong fixed penalty suits features where each concept sits in few units, but where
    the backbone spreads a shortcut over many units (as real backbones do), a strong L2 favours
    the shortcut's many small weights over the class's few large ones, and every refit, even
    on every unit, leans on the shortcut. Ties go to the stronger penalty (earlier in
    ``grid`` when it is sorted ascending).
    """
    from sklearn.model_selection import StratifiedKFold

    if not grid or any(not float(c) > 0 for c in grid):
        raise bad_option("grid", "one or more positive penalties C", list(grid))
    if folds < 2:
        raise bad_option("folds", "an integer >= 2", folds)
    y = labels.numpy()
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=np.int64)
    smallest = int(counts[counts > 0].min()) if (counts > 0).any() else 0
    splits = min(folds, smallest)
    if splits < 2:
        raise bad_option(
            "labels", "at least two items of every class present", f"{smallest} of one class"
        )
    classes = num_classes or int(labels.max()) + 1
    folding = StratifiedKFold(splits, shuffle=True, random_state=seed)
    best_c, best_score = float(grid[0]), -1.0
    for c in grid:
        protocol = RefitProtocol(c=float(c), max_iter=REFIT.max_iter)
        scores = []
        for fit, held in folding.split(np.zeros(len(y)), y):
            head = refit_head(
                features[fit], labels[fit], units, projection=projection, protocol=protocol,
                num_classes=classes, seed=seed,
            )  # fmt: skip
            held_out = head.logits(features[held])
            metrics = head_metrics(held_out, labels[held], num_classes=classes)
            scores.append(metrics["balanced_accuracy"])
        score = float(np.mean(scores))
        if score > best_score + 1e-9:
            best_c, best_score = float(c), score
    return RefitProtocol(c=best_c, max_iter=REFIT.max_iter)


#: A refit protocol, or ``"cv"``: the penalty :func:`choose_refit` picks on the refit's data.
RefitChoice = RefitProtocol | Literal["cv"]


def resolve_protocol(
    protocol: RefitChoice,
    features: Tensor,
    labels: Tensor,
    units: Sequence[int] | None = None,
    *,
    projection: Tensor | None = None,
    num_classes: int | None = None,
) -> RefitProtocol:
    """``protocol`` itself, or for ``"cv"`` the one :func:`choose_refit` picks for this refit."""
    if isinstance(protocol, RefitProtocol):
        return protocol
    if protocol != "cv":
        raise bad_option("protocol", "a RefitProtocol or 'cv'", protocol)
    return choose_refit(features, labels, units, projection=projection, num_classes=num_classes)


def counterfactual_augment(
    features: Tensor, labels: Tensor, deltas: Tensor, copies: int = 1, *, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``features`` and ``labels`` plus ``copies`` shifted copies of every item: item ``i``
    plus the feature change of a counterfactual edit drawn at random from ``deltas`` (edits
    that changed only the spurious attribute), with its own label.

    Why: a head refit on shortcut data leans on whatever of the shortcut is left in the units
    it is given; shifted copies show it items whose spurious attribute moved while the class
    did not, so it learns to ignore those directions without losing what else they carry
    (projecting them out, :func:`erase_remedy`, removes both). Draw ``j`` of copy ``c`` comes
    from one generator seeded with ``seed``.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise bad_option("copies", "a non-negative int", copies)
    if copies == 0:
        return features, labels
    if deltas.ndim != 2 or deltas.shape[0] == 0 or deltas.shape[1] != features.shape[1]:
        raise bad_option(
            "deltas", f"an (M, {features.shape[1]}) tensor with M >= 1", tuple(deltas.shape)
        )
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(deltas.shape[0], (copies * features.shape[0],), generator=generator)
    shifted = features.float().repeat(copies, 1) + deltas.float()[picks]
    return torch.cat([features.float(), shifted]), torch.cat([labels, labels.repeat(copies)])


def select_remedy(
    features: Tensor,
    labels: Tensor,
    kept_units: Sequence[int],
    *,
    protocol: RefitChoice = REFIT,
    num_classes: int | None = None,
    deltas: Tensor | None = None,
    copies: int = 0,
    seed: int = 0,
) -> LinearHead:
    """MAIA's remedy: a head on the kept units only, refit on the (unbalanced) data; with
    ``deltas`` and ``copies`` > 0, on the data plus its counterfactual copies
    (:func:`counterfactual_augment`)."""
    if copies and deltas is None:
        raise bad_option("deltas", "the counterfactual feature changes when copies > 0", None)
    if deltas is not None:
        features, labels = counterfactual_augment(features, labels, deltas, copies, seed=seed)
    chosen = resolve_protocol(protocol, features, labels, kept_units, num_classes=num_classes)
    return refit_head(features, labels, kept_units, protocol=chosen, num_classes=num_classes)


@dataclass
class CopiesChoice:
    """The ``select`` head refit with the chosen number of counterfactual copies."""

    head: LinearHead
    #: The chosen number of copies per training row.
    copies: int
    #: Copies -> balanced accuracy over classes on the validation features (no group labels).
    scores: dict[int, float]
    #: Copies -> the L2 penalty (scikit-learn's ``C``) of that refit.
    penalties: dict[int, float]


def choose_copies(
    features: Tensor,
    labels: Tensor,
    kept_units: Sequence[int],
    deltas: Tensor,
    grid: Sequence[int],
    val_features: Tensor,
    val_labels: Tensor,
    *,
    protocol: RefitChoice = REFIT,
    num_classes: int | None = None,
    seed: int = 0,
) -> CopiesChoice:
    """:func:`select_remedy` once per count of counterfactual copies in ``grid``; the head
    whose balanced accuracy over classes on ``val_features`` is best wins (ties: fewer copies).

    Class labels only: the validation data's groups are never read, so a user without group
    labels chooses the same way. 0 in ``grid`` is MAIA's plain select.

    >>> g = torch.Generator().manual_seed(0)
    >>> labels = torch.arange(400) % 2
    >>> colour = torch.where(torch.rand(400, generator=g) < 0.95, labels, 1 - labels)
    >>> x = torch.stack([labels + 0.8 * torch.randn(400, generator=g), colour.float()], 1)
    >>> deltas = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    >>> val = torch.stack([labels + 0.8 * torch.randn(400, generator=g),
    ...                    (torch.arange(400) // 2 % 2).float()], 1)
    >>> choice = choose_copies(x, labels, [0, 1], deltas, [0, 3], val, labels)
    >>> choice.copies, choice.scores[3] > choice.scores[0]
    (3, True)
    """
    counts = sorted({int(c) for c in grid})
    if not counts or counts[0] < 0:
        raise bad_option("grid", "one or more non-negative counts of copies", list(grid))
    if len(val_features) != len(val_labels) or not len(val_labels):
        raise bad_option(
            "val_labels", f"one label per validation row ({len(val_features)})", len(val_labels)
        )
    heads: dict[int, LinearHead] = {}
    scores: dict[int, float] = {}
    penalties: dict[int, float] = {}
    for copies in counts:
        x, y = counterfactual_augment(features, labels, deltas, copies, seed=seed)
        chosen = resolve_protocol(protocol, x, y, kept_units, num_classes=num_classes)
        heads[copies] = refit_head(
            x, y, kept_units, protocol=chosen, num_classes=num_classes, seed=seed
        )
        penalties[copies] = chosen.c
        scores[copies] = head_metrics(
            heads[copies].logits(val_features), val_labels, num_classes=num_classes
        )["balanced_accuracy"]
    best = max(counts, key=lambda c: (scores[c], -c))
    return CopiesChoice(heads[best], best, scores, penalties)


def spurious_subspace(
    deltas: Tensor, *, energy: float = ERASE_SUBSPACE_ENERGY, max_rank: int = ERASE_MAX_RANK
) -> Tensor:
    """An orthonormal (F, r) basis of the directions counterfactual edits move features along.

    ``deltas`` are (M, F) feature differences (edited minus original); the basis holds the top
    singular directions that explain ``energy`` of their squared norm (at most ``max_rank``).
    """
    if deltas.ndim != 2 or deltas.shape[0] == 0:
        raise bad_option("deltas", "an (M, F) tensor with M >= 1", tuple(deltas.shape))
    if not 0.0 < energy <= 1.0:
        raise bad_option("energy", "a share in (0, 1]", energy)
    _, singular, vh = torch.linalg.svd(deltas.double(), full_matrices=False)
    share = (singular**2).cumsum(0) / (singular**2).sum().clamp_min(1e-12)
    rank = min(int((share < energy).sum()) + 1, max_rank, vh.shape[0])
    return vh[:rank].T.float()


def spurious_directions(
    model: nn.Module,
    layer: str,
    toolboxes: Sequence[Toolbox],
    attributes: Sequence[str],
    *,
    preprocess: Preprocess | None = None,
    energy: float = ERASE_SUBSPACE_ENERGY,
    max_rank: int = ERASE_MAX_RANK,
) -> Tensor | None:
    """(F, r) orthonormal basis of the directions ``layer`` moves along when an edit among the
    toolboxes' experiments changes one of ``attributes`` alone (:func:`spurious_subspace` of
    their :func:`~lightning_maia.analysis._counterfactuals.counterfactual_deltas`); None when
    no edit changed any of them alone."""
    found = []
    for attribute in dict.fromkeys(attributes):
        try:
            found.append(
                counterfactual_deltas(model, layer, toolboxes, attribute, preprocess=preprocess)
            )
        except ToolError:  # no edit changed this attribute alone
            continue
    if not found:
        return None
    return spurious_subspace(torch.cat(found), energy=energy, max_rank=max_rank)


def erase_projection(basis: Tensor) -> Tensor:
    """``I - U U^T``: removes the span of the orthonormal columns of ``basis``."""
    return torch.eye(basis.shape[0]) - basis @ basis.T


def erase_remedy(
    features: Tensor,
    labels: Tensor,
    deltas: Tensor,
    *,
    energy: float = ERASE_SUBSPACE_ENERGY,
    max_rank: int = ERASE_MAX_RANK,
    protocol: RefitChoice = REFIT,
    num_classes: int | None = None,
) -> LinearHead:
    """Project out the counterfactual subspace of ``deltas``, keep every unit, refit."""
    projection = erase_projection(spurious_subspace(deltas, energy=energy, max_rank=max_rank))
    chosen = resolve_protocol(
        protocol, features, labels, projection=projection, num_classes=num_classes
    )
    return refit_head(
        features, labels, projection=projection, protocol=chosen, num_classes=num_classes
    )


def balanced_indices(groups: Tensor, seed: int = 0) -> Tensor:
    """Indices of a group-balanced subsample: every group cut to the smallest group's size."""
    generator = torch.Generator().manual_seed(seed)
    present = torch.unique(groups)
    smallest = min(int((groups == g).sum()) for g in present)
    picked = [
        torch.nonzero(groups == g).flatten()[
            torch.randperm(int((groups == g).sum()), generator=generator)[:smallest]
        ]
        for g in present
    ]
    return torch.cat(picked).sort().values


def dataset_groups(dataset: Any) -> Tensor | None:
    """Group labels of every item: a ``group`` metadata column, else ``group(i)``, else None."""
    try:
        metadata = getattr(dataset, "metadata", None)
    except MaiaError:  # e.g. an unbounded dataset has no metadata
        metadata = None
    columns = getattr(metadata, "columns", ())
    if metadata is not None and "group" in columns:
        return torch.as_tensor(metadata["group"].to_numpy().copy(), dtype=torch.int64)
    group = getattr(dataset, "group", None)
    if callable(group):
        return torch.tensor([int(group(i)) for i in range(len(dataset))], dtype=torch.int64)
    return None


# -- metrics --------------------------------------------------------------------------------


def head_metrics(
    logits_or_predictions: Tensor,
    labels: Tensor,
    groups: Tensor | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall over classes) and, with group labels,
    worst-group accuracy.

    >>> predictions = torch.tensor([0, 0, 1, 0])
    >>> head_metrics(predictions, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 3]))
    {'accuracy': 0.75, 'balanced_accuracy': 0.75, 'worst_group_accuracy': 0.0}
    """
    predictions = (
        logits_or_predictions.argmax(1)
        if logits_or_predictions.ndim == 2
        else logits_or_predictions
    ).long()
    classes = num_classes or int(max(int(labels.max()), int(predictions.max()))) + 1
    correct = (predictions == labels).float()
    result = {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(
            multiclass_accuracy(predictions, labels, num_classes=classes, average="macro")
        ),
    }
    if groups is not None:
        result["worst_group_accuracy"] = float(
            min(correct[groups == g].mean() for g in torch.unique(groups))
        )
    return result


# -- judgement by the agent -------------------------------------------------------------------


@dataclass
class UnitJudgement:
    """The agent's verdict on one selected unit."""

    unit: Unit
    #: The unit's L1 weight magnitude (0 when not selected by L1).
    l1_weight: float
    report: UnitReport
    toolbox: Toolbox | None = field(default=None, repr=False)

    @property
    def verdict(self) -> str:
        return (self.report.verdict or "unclear") if self.report.ok else "failed"

    @property
    def evidence(self) -> str:
        """The effect sizes behind the verdict, in one line."""
        details = self.report.details
        if not self.report.ok:
            return f"failed: {self.report.failure_reason}"
        parts = [f"class effect {details.get('class_effect', float('nan')):.2f}"]
        parts += [f"{a} effect {v:.2f}" for a, v in details.get("attribute_effects", {}).items()]
        parts += [f"edit of {n}: {v:.2f}" for n, v in details.get("edit_effects", {}).items()]
        return "; ".join(parts)

    def to_row(self) -> dict[str, Any]:
        return {
            "unit": self.unit.spec,
            "l1_weight": self.l1_weight,
            "verdict": self.verdict,
            "description": self.report.description or self.report.label,
            "evidence": self.evidence,
        }


def judged_directions(
    model: nn.Module,
    judgements: Sequence[UnitJudgement],
    candidate_attributes: Sequence[str] = (),
    *,
    preprocess: Preprocess | None = None,
) -> Tensor | None:
    """The feature directions of the spurious attribute behind these verdicts, for the
    flagger's counterfactual risk (:func:`spurious_directions` of every judged unit's edits);
    None when no unit was judged spurious or no edit changed the attribute alone.

    The attributes are ``candidate_attributes``, else those the spurious verdicts name
    (``colour`` of ``colour=red``).
    """
    spurious = [j for j in judgements if j.verdict == "spurious"]
    if not spurious:
        return None
    attributes = list(candidate_attributes) or [
        c.partition("=")[0] for j in spurious for c in j.report.concepts
    ]
    toolboxes = [j.toolbox for j in judgements if j.toolbox is not None]
    return spurious_directions(
        model, spurious[0].unit.layer, toolboxes, attributes, preprocess=preprocess
    )


def judge_units(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    *,
    class_names: Sequence[str],
    candidate_attributes: Sequence[str] = ("background",),
    agent: Agent | None = None,
    exemplars: ExemplarResult | None = None,
    l1_weights: Tensor | None = None,
    preprocess: Preprocess | None = None,
    reduction: str = "mean",
    generator: ImageGenerator | None = None,
    editor: ImageEditor | None = None,
    describer: ImageDescriber | None = None,
    seed: int = 0,
    on_error: str = "warn",
    warn: Callable[[str], None] | None = None,
    progress: bool = True,
) -> list[UnitJudgement]:
    """Run ``spurious_check`` on each unit ``layer:i`` of ``model``; one judgement per unit.

    ``exemplars`` (e.g. ``compute_exemplars(model, train_data, [f"{layer}:*"])``) let the agent
    read what the unit responds to in the data; ``candidate_attributes`` empty lets it find
    them itself. ``reduction`` turns a conv layer's maps into the features the head reads
    (``mean`` for global average pooling). A run that raises an external failure gives a
    ``failed`` judgement (or, with ``on_error="raise"``, the error).
    """
    if on_error not in ("warn", "raise"):
        raise bad_option("on_error", "warn or raise", on_error)
    agent = agent or ScientistAgent(seed=seed)
    task = TaskSpec(
        "spurious_check",
        class_names=tuple(class_names),
        candidate_attributes=tuple(candidate_attributes),
    )
    specs = [Unit(layer, int(u)) for u in units]
    subject = Subject(model, [u.spec for u in specs], preprocess=preprocess, reduction=reduction)
    judgements = []
    for unit in tqdm(specs, desc="judging units", leave=False, disable=not progress):
        toolbox = Toolbox(
            subject,
            unit,
            exemplars=exemplars,
            generator=generator,
            editor=editor,
            describer=describer,
            seed=seed,
        )
        try:
            report = agent.run(toolbox, task)
        except (MaiaError, OSError, TimeoutError) as error:
            if on_error == "raise":
                raise
            if warn is not None:
                warn(f"the agent failed on {unit.spec}: {error}")
            report = UnitReport.failed(unit.spec, task.name, agent.name, str(error))
        weight = float(l1_weights[unit.index]) if l1_weights is not None else 0.0
        judgements.append(UnitJudgement(unit, weight, report, toolbox))
    return judgements


__all__ = [
    "REFIT",
    "REFIT_GRID",
    "VERDICTS",
    "CopiesChoice",
    "LinearHead",
    "RefitChoice",
    "RefitProtocol",
    "Selection",
    "UnitJudgement",
    "balanced_indices",
    "choose_copies",
    "choose_refit",
    "counterfactual_augment",
    "counterfactual_deltas",
    "dataset_groups",
    "edit_pairs",
    "erase_projection",
    "erase_remedy",
    "head_metrics",
    "judge_units",
    "judged_directions",
    "l1_top_units",
    "refit_head",
    "resolve_protocol",
    "select_remedy",
    "spurious_directions",
    "spurious_subspace",
]
