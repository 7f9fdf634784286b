"""Find the head inputs that carry a spurious feature, and refit the head without them.

MAIA's §5.1 on a model and its (unbalanced) training data, no Trainer needed:

1. :func:`find_spurious_units` — an L1-regularised logistic regression on the features the head
   reads ranks the units; the agent's ``spurious_check`` judges the top ``budget.k``: does the
   unit follow the class, or a candidate spurious attribute with the class held fixed? Returns
   :class:`SpuriousUnits`: the verdict and description of every judged unit, and the figures.
2. :func:`remove_spurious_units` — the remedy, refit on the same training data without group
   labels (:class:`Refit`): ``select`` keeps only the units whose verdict is in ``keep``;
   ``erase`` projects out the subspace that the agent's edits of the attribute move the
   features along. Returns :class:`SpuriousRemoval` (the new head, before/after figures on
   ``val_data``); :meth:`SpuriousRemoval.install` puts it in place as a
   :class:`~lightning_maia.analysis._masked_head.MaskedHead`.

:class:`~lightning_maia.callbacks.spurious_feature_remover.SpuriousFeatureRemover` runs the same
two steps inside a fit; ``lightning-maia bench spurious`` calls them directly, as a user can::

    found = find_spurious_units(model, train_data, candidate_attributes=("background",))
    removal = remove_spurious_units(model, found, refit=Refit(remedy="select"), val_data=val)
    removal.install(model)

The options (:class:`SearchBudget`, :class:`Refit`) live in
:mod:`lightning_maia.analysis._spurious_options`.

**Why one file.** The two steps and the helpers only they share (the feature layer, the head's
inputs, the unit table) stay together; the options, the regression and the remedies are in their
own modules.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_maia._options import Backends
from lightning_maia.agents._agent_resolution import ResolvedExperiments, resolve_backends
from lightning_maia.analysis._head_features import HeadInputs, feeding_layer, head_inputs
from lightning_maia.analysis._masked_head import (
    MaskedHead,
    effective_linear,
    find_head,
    install_masked_head,
)
from lightning_maia.analysis._spurious import (
    LinearHead,
    Selection,
    UnitJudgement,
    choose_copies,
    counterfactual_deltas,
    erase_remedy,
    head_metrics,
    judge_units,
    l1_top_units,
    select_remedy,
)
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.errors import ToolError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Preprocess

UNIT_TABLE_COLUMNS = ["unit", "l1_weight", "verdict", "kept", "description", "evidence"]

# -- results ----------------------------------------------------------------------------------


@dataclass
class SpuriousUnits:
    """What :func:`find_spurious_units` found: the agent's verdict on each top unit."""

    #: Module path of the head.
    head: str
    #: Module whose output the head reads (the units are ``layer:i``), and how its maps reduce
    #: to the head's input.
    layer: str
    reduction: str
    class_names: list[str]
    candidate_attributes: tuple[str, ...]
    #: The L1 regression's ranking: units strongest first, every unit's weight.
    selection: Selection
    #: One judgement per selected unit, in selection order: verdict, report, the agent's toolbox.
    judgements: list[UnitJudgement]
    #: The training features the head reads: what :func:`remove_spurious_units` refits on.
    features: HeadInputs = field(repr=False)
    #: The name of the agent that judged.
    agent_name: str = ""
    preprocess: Preprocess | None = field(default=None, repr=False)

    @property
    def verdicts(self) -> dict[int, str]:
        """Unit index -> ``core`` / ``spurious`` / ``unclear`` / ``failed``."""
        return {j.unit.index: j.verdict for j in self.judgements}

    @property
    def descriptions(self) -> dict[int, str]:
        """Unit index -> what the agent said the unit follows."""
        return {j.unit.index: j.report.description or j.report.label for j in self.judgements}

    @property
    def judged(self) -> list[UnitJudgement]:
        """The judgements that came back with a verdict (not ``failed``)."""
        return [j for j in self.judgements if j.verdict != "failed"]

    def units_with(self, verdicts: Collection[str]) -> list[int]:
        """The units whose verdict is among ``verdicts``, in selection order."""
        return [j.unit.index for j in self.judgements if j.verdict in verdicts]

    def units_in_head(self, refit: Refit) -> set[int]:
        """The judged units a ``refit`` head still reads: ``select`` the kept ones, ``erase``
        every judged one (erasure keeps all units)."""
        if refit.remedy == "select":
            return set(self.units_with(refit.keep))
        return {j.unit.index for j in self.judged}

    @property
    def figures(self) -> dict[str, int]:
        """Counts: units judged, failed, judged spurious, judged core."""
        return {
            "units_judged": len(self.judged),
            "units_failed": len(self.judgements) - len(self.judged),
            "units_spurious": sum(j.verdict == "spurious" for j in self.judgements),
            "units_core": sum(j.verdict == "core" for j in self.judgements),
        }

    def unit_table(self, kept: Collection[int] = ()) -> pd.DataFrame:
        """One row per judged unit (see :func:`unit_table`)."""
        return unit_table(self.judgements, kept)


def unit_table(judgements: Sequence[UnitJudgement], kept: Collection[int] = ()) -> pd.DataFrame:
    """One row per judged unit: unit, L1 weight, verdict, kept (in ``kept``), description,
    evidence."""
    rows = [{**j.to_row(), "kept": j.unit.index in kept} for j in judgements]
    return pd.DataFrame(rows, columns=UNIT_TABLE_COLUMNS)


@dataclass
class SpuriousRemoval:
    """What :func:`remove_spurious_units` decided."""

    #: Module path of the head the new one replaces.
    head_path: str
    remedy: str
    #: The refit head on the raw features; None: the head stays as it is (no unit judged, or
    #: none with a verdict to keep).
    head: LinearHead | None
    #: The units whose verdict is in ``Refit.keep``, in selection order.
    kept_units: list[int]
    #: Status, counts, erased dimensions and, with ``val_data``, ``before_*`` / ``after_*``
    #: accuracy, balanced accuracy and worst-group accuracy.
    figures: dict[str, Any]

    def decision(self) -> dict[str, Any] | None:
        """The new head as plain data (weight, bias, mask, projection, remedy, kept units), to
        broadcast or checkpoint; None when the head stays."""
        if self.head is None:
            return None
        return {
            "weight": self.head.weight,
            "bias": self.head.bias,
            "mask": self.head.mask,
            "projection": self.head.projection,
            "remedy": self.remedy,
            "kept_units": self.kept_units,
        }

    def install(self, model: nn.Module) -> MaskedHead | None:
        """Put the new head in place in ``model`` (None when the head stays)."""
        decision = self.decision()
        return install_decision(model, self.head_path, decision) if decision else None


def install_decision(model: nn.Module, head_path: str, decision: dict[str, Any]) -> MaskedHead:
    """Make the head at ``head_path`` the :class:`MaskedHead` a :meth:`SpuriousRemoval.decision`
    describes (its original weights kept beside it)."""
    return install_masked_head(
        model,
        head_path,
        decision["weight"],
        decision["bias"],
        mask=decision["mask"],
        projection=decision["projection"],
        remedy=decision["remedy"],
    )


# -- the two steps ----------------------------------------------------------------------------


def class_names_of(
    model: nn.Module, data: Dataset[Any] | None, given: Sequence[str] | None = None
) -> list[str] | None:
    """The classes in output order: ``given``, else the model's ``class_names``, else the data's."""
    for source in (given, getattr(model, "class_names", None)):
        if source:
            return list(source)
    names = getattr(data, "class_names", None)
    return list(names) if names else None


def locate_feature_layer(
    model: nn.Module,
    head: nn.Module,
    data: Dataset[Any],
    feature_layer: str | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[str, str]:
    """``(layer, reduction)`` of the units the head reads: ``feature_layer`` where given, else
    the module found by one forward pass (:func:`feeding_layer`)."""
    if feature_layer is not None:
        return feature_layer, "mean"
    found = feeding_layer(model, head, data, preprocess)
    if found is None:
        raise bad_option(
            "feature_layer",
            "the module whose output the head reads (none was found by a forward pass)",
            None,
        )
    return found


def find_spurious_units(
    model: nn.Module,
    data: Dataset[Any],
    *,
    class_names: Sequence[str] | None = None,
    candidate_attributes: Sequence[str] = ("background",),
    head: str | None = None,
    feature_layer: str | None = None,
    backends: Backends | ResolvedExperiments | None = None,
    budget: SearchBudget | None = None,
    preprocess: Preprocess | None = None,
    exemplars: ExemplarResult | None = None,
    seed: int = 0,
    on_error: Literal["warn", "raise"] = "warn",
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> SpuriousUnits:
    """Rank the units the head of ``model`` reads on ``data`` and let the agent judge the top ones.

    Args:
        model: the classifier (eval mode is set for the passes and restored).
        data: the (unbalanced) training data; items are ``(image, label, ...)``.
        class_names: the classes in output order (default: the model's ``class_names``, else
            the data's).
        candidate_attributes: attributes that may be spurious (e.g. ``("background",)``);
            empty lets the agent find them.
        head: module path of the head (default: the last ``nn.Linear``).
        feature_layer: module whose output the head reads (default: found by one forward).
        backends: the agent and image backends (:class:`~lightning_maia._options.
            Backends`; default: the offline scientist with the designer that fits the data).
        budget: units judged, exemplars per unit, batch size (:class:`SearchBudget`).
        preprocess: the model's input transform, where ``data`` holds display images.
        exemplars: exemplars of ``feature_layer`` already computed (default: computed here).
        seed: seeds the L1 regression and the agent.
        on_error: ``warn``: a unit whose run fails gets a ``failed`` verdict; ``raise``.
        progress: show progress bars.
        warn: where warnings go (default: :func:`warnings.warn`).
    """
    budget = budget if budget is not None else SearchBudget()
    head_path, head_module = find_head(model, head)
    layer, reduction = locate_feature_layer(model, head_module, data, feature_layer, preprocess)
    names = class_names_of(model, data, class_names)
    if names is None:
        raise bad_option("class_names", "the class names in output order", None)
    if not isinstance(backends, ResolvedExperiments):  # before the passes: a bad setup fails fast
        backends = resolve_backends(
            backends, "find_spurious_units", dataset=data, class_names=names,
            candidate_attributes=candidate_attributes, seed=seed,
        )  # fmt: skip
    if exemplars is None:
        exemplars = compute_exemplars(
            model, data, [f"{layer}:*"], k=budget.exemplars_k, reduction=reduction,
            progress=False, preprocess=preprocess,
        )  # fmt: skip
    features = head_inputs(model, head_module, data, budget.batch_size, progress, preprocess)
    selection = l1_top_units(features.features, features.labels, budget.k, seed=seed)
    judgements = judge_units(
        model,
        layer,
        selection.units,
        class_names=names,
        candidate_attributes=candidate_attributes,
        agent=backends.agent,
        exemplars=exemplars,
        l1_weights=selection.weights,
        preprocess=preprocess,
        reduction=reduction,
        generator=backends.generator,
        editor=backends.editor,
        describer=backends.describer,
        seed=seed,
        on_error=on_error,
        warn=warn if warn is not None else _warn,
        progress=progress,
    )
    return SpuriousUnits(
        head_path, layer, reduction, names, tuple(candidate_attributes), selection, judgements,
        features, agent_name=backends.agent.name, preprocess=preprocess,
    )  # fmt: skip


def remove_spurious_units(
    model: nn.Module,
    found: SpuriousUnits,
    *,
    refit: Refit | None = None,
    val_data: Dataset[Any] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> SpuriousRemoval:
    """Refit the head of ``model`` without the units ``found`` judged spurious (``select``) or
    with the agent's edit directions projected out (``erase``); ``model`` is not changed
    (:meth:`SpuriousRemoval.install` does that). With ``val_data``, the figures hold accuracy,
    balanced accuracy and (with group labels) worst-group accuracy before and after."""
    refit = refit if refit is not None else Refit()
    warn = warn if warn is not None else _warn
    train = found.features
    judged = found.judged
    kept = found.units_with(refit.keep)
    figures: dict[str, Any] = {
        "status": "ok",
        "remedy": refit.remedy,
        **found.figures,
        "units_kept": len(kept) if refit.remedy == "select" else train.features.shape[1],
    }
    classes = len(found.class_names)
    grid = refit.copies_grid
    if len(grid) > 1 and val_data is None:
        raise bad_option(
            "val_data", f"validation data to choose `copies` among {list(grid)} on", None
        )
    _, head = find_head(model, found.head)
    val = (
        head_inputs(model, head, val_data, batch_size, progress, found.preprocess)
        if val_data is not None
        else None
    )
    new: LinearHead | None = None
    if not judged:
        warn("no unit was judged; the head is unchanged")
        figures["status"] = "failed"
        figures["failure_reason"] = "no unit was judged"
    elif refit.remedy == "select":
        if kept:
            new = _select(model, found, refit, kept, val, warn, seed, figures)
        else:
            warn(f"no unit got a verdict in {refit.keep}; the head is unchanged")
    else:
        deltas = _deltas(model, found)
        new = erase_remedy(
            train.features,
            train.labels,
            deltas,
            energy=refit.erase_energy,
            protocol=refit.protocol,
            num_classes=classes,
        )
        figures["erased_dimensions"] = round(
            float(torch.trace(torch.eye(len(new.mask)) - new.projection))
        )
    if new is not None and refit.finetune_epochs:
        new = finetune_head(new, train.features, train.labels, refit.finetune_epochs, seed)
    if val is not None:
        weight, bias = effective_linear(head)
        before = head_metrics(val.features @ weight.T.cpu() + bias.cpu(), val.labels, val.groups)
        figures.update({f"before_{name}": value for name, value in before.items()})
        after = head_metrics(new.logits(val.features), val.labels, val.groups) if new else before
        figures.update({f"after_{name}": value for name, value in after.items()})
    return SpuriousRemoval(found.head, refit.remedy, new, kept, figures)


def _deltas(model: nn.Module, found: SpuriousUnits) -> Tensor:
    """The feature changes of the judged units' edits that changed only the attribute."""
    toolboxes = [j.toolbox for j in found.judged if j.toolbox is not None]
    attribute = (found.candidate_attributes or ("background",))[0]
    return counterfactual_deltas(
        model, found.layer, toolboxes, attribute, preprocess=found.preprocess
    )


def _select(
    model: nn.Module,
    found: SpuriousUnits,
    refit: Refit,
    kept: list[int],
    val: HeadInputs | None,
    warn: Callable[[str], None],
    seed: int,
    figures: dict[str, Any],
) -> LinearHead:
    """``select`` on the kept units, with the number of counterfactual copies ``refit`` asks
    for, or the one of its grid that ``val``'s class labels choose."""
    train, classes = found.features, len(found.class_names)
    grid = refit.copies_grid
    deltas: Tensor | None = None
    if any(grid):
        try:
            deltas = _deltas(model, found)
        except ToolError as error:
            if 0 not in grid:
                raise
            warn(f"{error}; refit without counterfactual copies")
            grid = (0,)
    if len(grid) == 1:
        figures["copies"] = grid[0]
        return select_remedy(
            train.features, train.labels, kept, protocol=refit.protocol, num_classes=classes,
            deltas=deltas, copies=grid[0], seed=seed,
        )  # fmt: skip
    if val is None or deltas is None:  # the caller checked already; mypy cannot tell
        raise bad_option("val_data", f"validation data to choose `copies` among {grid}", None)
    choice = choose_copies(
        train.features, train.labels, kept, deltas, grid, val.features, val.labels,
        protocol=refit.protocol, num_classes=classes, seed=seed,
    )  # fmt: skip
    figures["copies"] = choice.copies
    figures.update({f"copies_{c}_val_balanced_accuracy": v for c, v in choice.scores.items()})
    return choice.head


def finetune_head(
    head: LinearHead, features: Tensor, labels: Tensor, epochs: int, seed: int = 0
) -> LinearHead:
    """Fine-tune ``head`` on the features with cross-entropy, its mask and projection fixed."""
    generator = torch.Generator().manual_seed(seed)
    weight = head.weight.clone().requires_grad_(True)
    bias = head.bias.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-3)
    seen = (features.float() * head.mask) @ head.projection.T
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in torch.randperm(len(labels), generator=generator).split(256):
                loss = F.cross_entropy(seen[batch] @ weight.T + bias, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    # Keep the weight inside the mask and projection, so a plain Linear loading it agrees.
    final = (weight.detach() @ head.projection) * head.mask
    return LinearHead(final, bias.detach(), head.mask, head.projection)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


__all__ = [
    "Refit",
    "SearchBudget",
    "SpuriousRemoval",
    "SpuriousUnits",
    "class_names_of",
    "find_spurious_units",
    "finetune_head",
    "install_decision",
    "locate_feature_layer",
    "remove_spurious_units",
    "unit_table",
]
