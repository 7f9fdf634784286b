"""Flag inputs likely to be misclassified, say why, and gate CI on it: :func:`flag`.

This module is the reference for what the flagger computes; the
:class:`~lightning_maia.callbacks.misclassification_flagger.MisclassificationFlagger` callback,
``lightning-maia audit`` and ``lightning-maia bench flagging`` all call :func:`flag`, and the
callback's arguments of the same name mean what :func:`flag`'s do. No Trainer is needed.

:func:`flag` scores every input of ``data`` with MSP, margin, energy and entropy, and with the
MAIA-informed score: a logistic regression on
:data:`~lightning_maia.analysis._risk.MAIA_FEATURES` ``[msp, spurious reliance, subgroup
membership, counterfactual risk, edit counterfactual risk]`` fitted on held-out labelled data
(``calibration_data``, or cross-fitting over ``data`` itself), never on the inputs it scores;
its L2 strength is chosen by cross-validated AUROC on that held-out data. The counterfactual
risk is 1 - the probability the head keeps for its predicted class once the units judged
spurious are mean-ablated (set to their mean on the fitting data's inputs): a prediction the
shortcut carries loses its class. The edit counterfactual risk also ablates the input's
component along the directions the spurious attribute's edits move the features
(``spurious_directions``: a remover's, the own check's, or given), for a shortcut spread over
more units than were judged; the combination weighs the two on the held-out data. Spurious units
come from ``spurious.spurious_units``, from ``remover_units`` (a remover's verdicts), or from
the own ``spurious_check`` of the head's most influential units; subgroups from the class-bias
audit of the class logits (see :mod:`~lightning_maia.analysis._flagging_evidence`). Neither the
true class nor a group label of a scored input enters any score.

**Why one file.** :func:`flag` is the one reference for the flagger's options, and its result
and gate types are what callers hold; the evidence it gathers is in
:mod:`~lightning_maia.analysis._flagging_evidence` and the scores in
:mod:`~lightning_maia.analysis._risk`, so what stays here is the pipeline read top-down.

>>> import torch
>>> from torch import nn
>>> from torch.utils.data import TensorDataset
>>> model = nn.Sequential(nn.Identity(), nn.Linear(2, 2))
>>> with torch.no_grad():
...     _ = model[1].weight.copy_(torch.eye(2)), model[1].bias.zero_()
>>> x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.1, 0.0], [0.0, 0.1]] * 4)
>>> data = TensorDataset(x, torch.tensor([0, 1, 1, 0] * 4))
>>> result = flag(model, data, spurious=SpuriousEvidence(spurious_units=[0]),
...               subgroups=SubgroupAudit(class_bias=False))
>>> len(result.table), result.metrics["auroc"]["msp"], check_gate(result.summary(), Thresholds(
...     max_flagged_rate=1.0)).passed
(16, 1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_maia._options import Backends
from lightning_maia.agents._agent_resolution import (
    ResolvedExperiments,
    resolve_agent,
    resolve_backends,
)
from lightning_maia.analysis import _risk as risk
from lightning_maia.analysis._class_bias import SubgroupFinding
from lightning_maia.analysis._flagging_evidence import (
    WARN,
    Experiments,
    ModelOutputs,
    ablation_reference,
    audited_subgroups,
    checked_spurious_units,
    collect_outputs,
    effective_head_weight,
    input_concepts,
    item_ids,
    named,
    risk_features,
)
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit, Thresholds
from lightning_maia.analysis._masked_head import find_head
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import FLAG_FOLDS
from lightning_maia.exemplars import ExemplarResult

#: Who names itself in configuration errors.
OWNER = "MisclassificationFlagger"
#: The columns of :attr:`FlaggingResult.table`, in order.
TABLE_COLUMNS = (
    "index", "label", "prediction", "correct", *risk.BASELINES, "reliance", "subgroup",
    "counterfactual", "edit_counterfactual", "maia", "flagged", "reason",
)  # fmt: skip


@dataclass
class GateResult:
    """The CI gate's decision: ``passed``, and what failed in words."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    flagged_rate: float | None = None
    subgroup_count: int | None = None

    @property
    def exit_code(self) -> int:
        """0 when the gate passed, 1 when a threshold was passed (``lightning-maia audit``)."""
        return 0 if self.passed else 1


@dataclass
class FlaggingResult:
    """One run of :func:`flag`: a row per input, the metrics and the evidence used."""

    #: One row per input (:data:`TABLE_COLUMNS`), riskiest first.
    table: pd.DataFrame
    #: ``{"auroc": {score: value}, "aupr_error": {...}}`` for the actual errors (NaN: no labels).
    metrics: dict[str, dict[str, float]]
    findings: list[SubgroupFinding]
    #: Spurious unit index -> its description.
    spurious_units: dict[int, str]
    #: The fitted combination's weights, averaged over the combiners used.
    coefficients: dict[str, float]
    flagged_rate: float
    subgroup_count: int
    #: The features (:data:`~lightning_maia.analysis._risk.MAIA_FEATURES`) and errors of the
    #: calibration data the combination was fitted on (None when it was cross-fitted).
    calibration: pd.DataFrame | None = None
    #: The L2 strength each combiner chose by cross-validated AUROC on its fitting data.
    l2: list[float] = field(default_factory=list)
    #: The report sections of the agent's runs (the HTML report shows them).
    sections: list[Any] = field(default_factory=list, repr=False)

    def top(self, n: int) -> pd.DataFrame:
        """The ``n`` riskiest flagged inputs."""
        return self.table[self.table["flagged"]].head(n)

    def summary(self) -> dict[str, float]:
        """The numbers logged as scalars (NaN metrics left out)."""
        numbers = {
            "flagged_rate": self.flagged_rate,
            "subgroups_found": float(self.subgroup_count),
            "spurious_units": float(len(self.spurious_units)),
        }
        for kind, values in self.metrics.items():
            numbers.update({f"{kind}_{name}": v for name, v in values.items() if math.isfinite(v)})
        return numbers


def check_gate(decision: Mapping[str, float] | None, thresholds: Thresholds) -> GateResult:
    """The CI gate on a run's :meth:`FlaggingResult.summary`: fails when the flagged rate passes
    ``max_flagged_rate`` or more subgroups than ``max_subgroups`` were found."""
    if decision is None:
        return GateResult(False, ["MisclassificationFlagger has not run yet"])
    rate, count = float(decision["flagged_rate"]), int(decision["subgroups_found"])
    failures = []
    if thresholds.max_flagged_rate is not None and rate > thresholds.max_flagged_rate:
        failures.append(
            f"flagged rate {rate:.3f} is above max_flagged_rate {thresholds.max_flagged_rate}"
        )
    if thresholds.max_subgroups is not None and count > thresholds.max_subgroups:
        failures.append(
            f"{count} low-scoring subgroups found, more than max_subgroups "
            f"{thresholds.max_subgroups}"
        )
    return GateResult(not failures, failures, rate, count)


def uses_agent(spurious: SpuriousEvidence, subgroups: SubgroupAudit) -> bool:
    """Whether a run asks the agent anything (the class-bias audit or the own check)."""
    return subgroups.class_bias or spurious.runs_own_check


def flag(
    model: nn.Module,
    data: Dataset[Any],
    *,
    calibration_data: Dataset[Any] | None = None,
    head: str | None = None,
    class_names: Sequence[str] | None = None,
    spurious: SpuriousEvidence | None = None,
    subgroups: SubgroupAudit | None = None,
    thresholds: Thresholds | None = None,
    candidate_attributes: Sequence[str] = (),
    backends: Backends | ResolvedExperiments | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
    folds: int = FLAG_FOLDS,
    on_error: str = "warn",
    seed: int = 0,
    remover_units: Mapping[int, str] | None = None,
    exemplars: ExemplarResult | None = None,
    spurious_directions: Tensor | None = None,
) -> FlaggingResult:
    """Score every input of ``data`` (``(image, label)`` items) and flag the risky ones.

    The reference for these arguments: the
    :class:`~lightning_maia.callbacks.misclassification_flagger.MisclassificationFlagger`
    callback takes the same ones and passes them on.

    Args:
        model: maps (preprocessed) images to class logits through a linear head.
        data: the inputs to score; their labels give the metrics, never the scores.
        calibration_data: labelled held-out data the combination is fitted on (and whose
            inputs' mean is what an ablated unit is set to); without it ``data`` is
            cross-fitted in ``folds`` folds.
        head: module path of the linear head (default: the model's last ``nn.Linear``); its
            input units are the penultimate units whose reliance is measured.
        class_names: names of the classes in logit order (default: ``data.class_names``).
        spurious: which units count as spurious (:class:`SpuriousEvidence`: ``spurious_units``,
            ``spurious_check``, ``feature_layer``, ``max_checked_units``).
        subgroups: the class-bias audit and how inputs are matched to its subgroups
            (:class:`SubgroupAudit`: ``class_bias``, ``audit_classes``, ``images_per_value``,
            ``concepts``).
        thresholds: what is flagged and shown, and the CI gate (:class:`Thresholds`:
            ``flag_threshold``, ``top_n``, ``max_flagged_rate``, ``max_subgroups``).
        candidate_attributes: attributes the agent varies in both audits (default: all).
        backends: the agent, its designer and the image backends (:class:`Backends`; offline
            defaults, the designer resolved on ``data``, a clear error for data the agent
            cannot design on), or what they already resolved to.
        preprocess: maps display images in [0, 1] to model inputs.
        batch_size: batch size of the scoring passes.
        folds: cross-fitting folds when there is no ``calibration_data``.
        on_error: ``warn`` (a failed agent run or backend leaves its evidence out) or ``raise``.
        seed: seeds the agent, the folds and the choice of the combination's L2 strength.
        remover_units: unit index -> description of the units a remover judged spurious, used
            when ``spurious.spurious_units`` is not given (an empty mapping: none judged).
        exemplars: exemplars of the ``feature_layer`` units for the own check (computed when
            missing).
        spurious_directions: (F, r) feature directions the spurious attribute's edits move the
            head's input along (any spanning set, e.g.
            :func:`~lightning_maia.analysis._spurious.judged_directions` of a remover's
            judgements; the own check finds its own). The edit counterfactual risk
            removes each input's component along them besides the spurious units: a shortcut
            spread over many units is ablated although no few units carry it.
    """
    spurious = spurious if spurious is not None else SpuriousEvidence()
    subgroups = subgroups if subgroups is not None else SubgroupAudit()
    thresholds = thresholds if thresholds is not None else Thresholds()
    if calibration_data is not None and calibration_data is data:
        raise bad_option("calibration_data", "held-out data, not the scored dataset", "dataset")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise bad_option("folds", "an integer of at least 2", folds)
    names = list(class_names or getattr(data, "class_names", []) or [])
    attributes = tuple(candidate_attributes)
    if isinstance(backends, ResolvedExperiments):
        chosen = backends
    elif uses_agent(spurious, subgroups):  # checked before any pass: a bad setup fails fast
        chosen = resolve_backends(
            backends, OWNER, dataset=data, class_names=names,
            candidate_attributes=attributes, seed=seed,
        )  # fmt: skip
    else:  # no agent runs: nothing to design or check
        options = backends if backends is not None else Backends()
        agent = resolve_agent(options.agent, seed)
        chosen = ResolvedExperiments(agent, options.generator, options.editor, options.describer)
    experiments = Experiments(
        agent=chosen.agent,
        generator=chosen.generator, editor=chosen.editor, describer=chosen.describer,
        preprocess=preprocess, candidate_attributes=attributes, on_error=on_error, seed=seed,
    )  # fmt: skip
    _, linear = find_head(model, head)
    evaluated = collect_outputs(model, linear, data, batch_size, preprocess)
    weight = effective_head_weight(linear)
    if spurious_directions is not None and (
        spurious_directions.ndim != 2 or spurious_directions.shape[0] != weight.shape[1]
    ):
        raise bad_option(
            "spurious_directions",
            f"an (F, r) tensor of directions over the head's F = {weight.shape[1]} input units",
            tuple(spurious_directions.shape),
        )
    if spurious.spurious_units is not None:
        given = dict(remover_units or {})
        units = {u: given.get(u, "") for u in spurious.spurious_units}
    elif remover_units is not None:
        units = dict(remover_units)
    elif spurious.runs_own_check:
        units, checked_directions = checked_spurious_units(
            model, data, evaluated, weight, names, spurious, experiments, exemplars
        )
        if spurious_directions is None:
            spurious_directions = checked_directions
    else:
        if spurious.spurious_check:
            rank_zero_warn(
                f"{WARN}no SpuriousFeatureRemover, no `spurious_units` and no `feature_layer` for "
                "its own spurious_check; spurious reliance is left out"
            )
        units = {}
    findings = audited_subgroups(model, names, subgroups, experiments)

    def features_of(
        held: Dataset[Any], outputs: ModelOutputs, reference: Tensor
    ) -> tuple[Tensor, list[Any], list[Any]]:
        count = len(outputs.labels)
        concepts = (
            input_concepts(held, count, subgroups, experiments, batch_size)
            if findings
            else [frozenset()] * count
        )
        return risk_features(
            outputs, weight, units, findings, concepts, names, reference, spurious_directions
        )

    held_out = (
        collect_outputs(model, linear, calibration_data, batch_size, preprocess)
        if calibration_data is not None
        else None
    )
    # Ablated units take their mean on the data the combination is fitted on (no labels).
    reference = ablation_reference(held_out if held_out is not None else evaluated)
    features, matched, top_units = features_of(data, evaluated, reference)
    leading_units = (
        risk.unit_contributions(evaluated.features, weight, evaluated.predictions)
        .argmax(dim=1)
        .tolist()
    )
    ablated = risk.counterfactual_logits(
        evaluated.logits, evaluated.features, weight, list(units), reference, spurious_directions
    ).softmax(dim=1)
    ablated_what = (
        "the units judged spurious and the directions of their edits"
        if spurious_directions is not None and spurious_directions.shape[1] > 0
        else "the units judged spurious"
    )
    ids = item_ids(data)
    fitted: pd.DataFrame | None = None
    if calibration_data is not None and held_out is not None:
        fitting = features_of(calibration_data, held_out, reference)[0]
        combiner = risk.fit_risk_combiner(
            fitting, held_out.errors, item_ids(calibration_data), seed=seed
        )
        maia, combiners = combiner.score(features, ids), [combiner]
        fitted = _feature_frame(fitting, held_out.errors)
    else:
        maia, combiners = risk.cross_fitted_risk(
            features, evaluated.errors, ids, folds=folds, seed=seed
        )
    scores = {**risk.baseline_risks(evaluated.logits), "maia": maia}
    confidence = 1.0 - scores["msp"]
    flagged = maia >= thresholds.flag_threshold
    reasons = [
        risk.flag_reason(
            confidence=float(confidence[i]),
            reliance=float(features[i, 1]),
            spurious_unit=top_units[i],
            unit_description=units.get(top_units[i], "") if top_units[i] is not None else "",
            leading=top_units[i] == leading_units[i],
            subgroup=matched[i],
            ablated_prediction=_ablated_prediction(ablated[i], evaluated.predictions[i], names),
            ablated=ablated_what,
        )
        for i in range(len(maia))
    ]
    table = pd.DataFrame(
        {
            "index": range(len(maia)),
            "label": named(evaluated.labels, names),
            "prediction": named(evaluated.predictions, names),
            "correct": (~evaluated.errors.bool()).tolist(),
            **{name: scores[name].tolist() for name in risk.BASELINES},
            "reliance": features[:, 1].tolist(),
            "subgroup": features[:, 2].tolist(),
            "counterfactual": features[:, 3].tolist(),
            "edit_counterfactual": features[:, 4].tolist(),
            "maia": maia.tolist(),
            "flagged": flagged.tolist(),
            "reason": reasons,
        }
    )[list(TABLE_COLUMNS)].sort_values("maia", ascending=False, kind="stable")
    coefficients = pd.DataFrame([c.coefficients() for c in combiners]).mean().to_dict()
    return FlaggingResult(
        table=table.reset_index(drop=True),
        metrics=risk.error_detection_metrics(scores, evaluated.errors),
        findings=findings,
        spurious_units=units,
        coefficients={str(k): float(v) for k, v in coefficients.items()},
        flagged_rate=float(flagged.float().mean()) if len(maia) else 0.0,
        subgroup_count=len(dict.fromkeys(f.group or f.description for f in findings)),
        calibration=fitted,
        l2=[c.l2 for c in combiners],
        sections=experiments.sections,
    )


def _ablated_prediction(
    probabilities: Tensor, predicted: Tensor, names: Sequence[str]
) -> tuple[str, float] | None:
    """The class the head picks with the spurious units ablated, and its probability, where it
    is not the prediction (None where the prediction stands)."""
    top = int(probabilities.argmax())
    if top == int(predicted):
        return None
    return named(torch.tensor([top]), names)[0], float(probabilities[top])


def _feature_frame(features: Tensor, errors: Tensor) -> pd.DataFrame:
    columns = {name: features[:, i].tolist() for i, name in enumerate(risk.MAIA_FEATURES)}
    return pd.DataFrame({**columns, "error": errors.bool().tolist()})


__all__ = [
    "OWNER",
    "TABLE_COLUMNS",
    "FlaggingResult",
    "GateResult",
    "SpuriousEvidence",
    "SubgroupAudit",
    "Thresholds",
    "check_gate",
    "flag",
]
