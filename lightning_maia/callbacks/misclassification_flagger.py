"""MisclassificationFlagger: score every validation input for its risk of being misclassified,
say why, and gate CI on what it finds.

Each run (at validation end every ``every_n_epochs`` epochs, at fit end, or from an audit via
:meth:`MisclassificationFlagger.flag`) scores every input of the validation data with MSP,
margin, energy and entropy, and with the MAIA-informed score: a logistic regression on
``[msp, spurious reliance, subgroup membership]`` fitted on held-out labelled data
(``calibration_data``, or cross-fitting over the validation data), never on the inputs it
scores. Spurious units come from a :class:`SpuriousFeatureRemover` among the trainer's callbacks,
from ``spurious_units``, or from the flagger's own ``spurious_check`` of the head's most
influential units; subgroups come from the class-bias audit of the class logits.

>>> flagger = MisclassificationFlagger(top_n=5, max_flagged_rate=0.2)
>>> flagger.state_key
"MisclassificationFlagger{'when': 'validation', 'head': None, 'flag_threshold': 0.5}"
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lightning_maia.agents.experiment_setup import (
    ResolvedExperiments,
    given_agent,
    resolve_agent,
    resolve_experiments,
)
from lightning_maia.agents.records import UnitReport
from lightning_maia.agents.scientist_design import ExperimentDesigner
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.analysis import risk
from lightning_maia.analysis.class_bias import (
    SubgroupFinding,
    audit_class_bias,
    dataset_concepts,
    described_concepts,
    has_metadata_concepts,
)
from lightning_maia.callbacks._experiment_setup import train_dataset_at_setup
from lightning_maia.callbacks._shared import (
    check_number,
    finished_epoch,
    log_figures,
    output_root,
    should_skip,
    validation_dataset,
    with_autograd,
)
from lightning_maia.errors import MaiaError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars, preprocess_for
from lightning_maia.options import ON_ERROR, OnError
from lightning_maia.reporting.adapters import adapters_for
from lightning_maia.reporting.html_report import (
    FlaggedInput,
    sections_from_toolbox,
    write_report,
)
from lightning_maia.subject import Subject
from lightning_maia.tools.backends.base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import find_layer

WHEN = ("validation", "fit_end", "manual")
CONCEPTS = ("auto", "metadata", "describer", "none")
TABLE_COLUMNS = (
    "index", "label", "prediction", "correct", *risk.BASELINES, "reliance", "subgroup", "maia",
    "flagged", "reason",
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
    """One run of the flagger: a row per input, the metrics and the evidence used."""

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
    #: The features (``msp`` risk, ``reliance``, ``subgroup``) and errors of the calibration
    #: data the combination was fitted on (None when it was cross-fitted).
    calibration: pd.DataFrame | None = None

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


class MisclassificationFlagger(Callback):
    """Flag validation inputs likely to be misclassified, with reasons; gate CI on the result.

    Args:
        head: module path of the linear head (default: the model's last ``nn.Linear``); its
            input units are the penultimate units whose reliance is measured.
        feature_layer: the module whose output is the head's input, for the own
            ``spurious_check`` (e.g. ``backbone.pool``); None skips that check.
        class_names: names of the classes, in logit order (default: the dataset's).
        when: ``validation`` (every ``every_n_epochs`` validations), ``fit_end`` or ``manual``
            (only :meth:`flag`, e.g. from ``lightning-maia audit``).
        every_n_epochs: run on every n-th validation.
        dataset: the inputs to score (default: the validation dataloader's dataset).
        calibration_data: labelled held-out data to fit the combination on; without it the
            validation data are cross-fitted in ``folds`` folds.
        spurious_units: unit indices judged spurious (overrides the remover and the own check).
        spurious_check: run the own ``spurious_check`` when no remover gives verdicts.
        max_checked_units: units (most influential first) the own check examines.
        class_bias: run the class-bias audit on the class logits.
        audit_classes: the classes audited (default: all).
        images_per_value: images the offline scientist scores per attribute value in the
            class-bias audit.
        candidate_attributes: attributes the agent varies in both audits (default: all).
        concepts: how inputs are matched to subgroups: ``metadata`` (the scene behind each
            procedural item), ``describer`` (the describer's concepts of each image), ``auto``
            (metadata where the dataset has scenes, else the describer) or ``none``.
        flag_threshold: an input is flagged when its MAIA risk (a probability of error) is at
            least this.
        top_n: flagged inputs logged in the table and as thumbnails.
        max_flagged_rate, max_subgroups: CI gate thresholds (None: not checked).
        agent, generator, editor, describer: the agent and image backends (offline defaults).
        preprocess: maps display images in [0, 1] to model inputs.
        designer: how the offline agent designs its audits: ``retrieval`` (the scored data's
            attribute columns), ``procedural``, ``prompts``, ``auto`` or a designer object;
            None: procedural for procedural data, a setup error for data it cannot design on.
        batch_size: batch size of the scoring pass.
        folds: cross-fitting folds when there is no ``calibration_data``.
        output_dir: where the HTML report goes (default ``<log_dir>/maia``).
        on_error: ``warn`` (an agent or backend failure leaves its evidence out) or ``raise``.
        seed: seeds the agent and the folds.
    """

    def __init__(
        self,
        *,
        head: str | None = None,
        feature_layer: str | None = None,
        class_names: Sequence[str] | None = None,
        when: Literal["validation", "fit_end", "manual"] = "validation",
        every_n_epochs: int = 1,
        dataset: Dataset[Any] | None = None,
        calibration_data: Dataset[Any] | None = None,
        spurious_units: Sequence[int] | None = None,
        spurious_check: bool = True,
        max_checked_units: int = 8,
        class_bias: bool = True,
        audit_classes: Sequence[str] | None = None,
        images_per_value: int = 12,
        candidate_attributes: Sequence[str] = (),
        concepts: Literal["auto", "metadata", "describer", "none"] = "auto",
        flag_threshold: float = 0.5,
        top_n: int = 20,
        max_flagged_rate: float | None = None,
        max_subgroups: int | None = None,
        agent: Agent | Literal["scientist"] | None = None,
        generator: ImageGenerator | None = None,
        editor: ImageEditor | None = None,
        describer: ImageDescriber | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        designer: str | ExperimentDesigner | None = None,
        batch_size: int = 256,
        folds: int = 2,
        output_dir: str | None = None,
        on_error: OnError = "warn",
        seed: int = 0,
    ) -> None:
        if when not in WHEN:
            raise bad_option("when", ", ".join(WHEN), when)
        if concepts not in CONCEPTS:
            raise bad_option("concepts", ", ".join(CONCEPTS), concepts)
        if on_error not in ON_ERROR:
            raise bad_option("on_error", " or ".join(ON_ERROR), on_error)
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("max_checked_units", max_checked_units),
            ("top_n", top_n),
            ("images_per_value", images_per_value),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise bad_option("folds", "an integer of at least 2", folds)
        check_number("flag_threshold", flag_threshold, 0.0, 1.0, "a probability in [0, 1]")
        if max_flagged_rate is not None:
            check_number("max_flagged_rate", max_flagged_rate, 0.0, 1.0, "a rate in [0, 1] or None")
        if max_subgroups is not None and (
            isinstance(max_subgroups, bool)
            or not isinstance(max_subgroups, int)
            or max_subgroups < 0
        ):
            raise bad_option("max_subgroups", "a non-negative integer or None", max_subgroups)
        if spurious_units is not None and (
            isinstance(spurious_units, (str, int))
            or not all(
                isinstance(u, numbers.Integral) and not isinstance(u, bool) for u in spurious_units
            )
        ):
            raise bad_option("spurious_units", "a list of unit indices or None", spurious_units)
        if dataset is not None and calibration_data is dataset:
            raise bad_option("calibration_data", "held-out data, not the scored dataset", "dataset")
        self.head = head
        self.feature_layer = feature_layer
        self.class_names = list(class_names) if class_names is not None else None
        self.when, self.every_n_epochs = when, every_n_epochs
        self.dataset, self.calibration_data = dataset, calibration_data
        self.spurious_units = (
            None if spurious_units is None else sorted({int(u) for u in spurious_units})
        )
        self.spurious_check, self.max_checked_units = spurious_check, max_checked_units
        self.class_bias = class_bias
        self.audit_classes = list(audit_classes) if audit_classes is not None else None
        self.images_per_value = images_per_value
        self.candidate_attributes = tuple(candidate_attributes)
        self.concepts = concepts
        self.flag_threshold, self.top_n = flag_threshold, top_n
        self.max_flagged_rate, self.max_subgroups = max_flagged_rate, max_subgroups
        self.agent: Agent = resolve_agent(agent, seed)
        self._given_agent = given_agent(agent, self.agent)
        self.designer = designer
        self._experiments: ResolvedExperiments | None = None
        self.generator, self.editor, self.describer = generator, editor, describer
        self.preprocess = preprocess
        self.batch_size, self.folds = batch_size, folds
        self.output_dir, self.on_error, self.seed = output_dir, on_error, seed
        #: One summary per run: epoch and the logged numbers.
        self.history: list[dict[str, Any]] = []
        #: The latest run's result (on global rank zero).
        self.result: FlaggingResult | None = None
        self._decision: dict[str, Any] | None = None
        self._sections: list[Any] = []
        self._root: Path | None = None
        #: The HTML report of the latest run (flagged inputs with their reasons, the evidence).
        self.report_path: Path | None = None
        self._remover_attached = False
        self._warned_no_units = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            when=self.when, head=self.head, flag_threshold=self.flag_threshold
        )

    # -- lifecycle --------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _find_head(pl_module, self.head)  # a bad head path fails here, never mid-training
        if self.feature_layer is not None:
            find_layer(pl_module, self.feature_layer)  # so does a bad feature layer
        data = self.dataset if self.dataset is not None else train_dataset_at_setup(trainer, "val")
        names = self.class_names or list(getattr(data, "class_names", []) or [])
        self._resolve_experiments(data, names)  # an unusable designer fails here
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output_dir)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when != "validation" or should_skip(trainer):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        summary = self._run_in_trainer(trainer, pl_module)
        # Equal on every rank (broadcast), so monitors such as EarlyStopping can use them.
        log_figures(trainer, pl_module, {f"maia/{k}": v for k, v in summary.items()})

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when != "fit_end" or should_skip(trainer):
            return
        summary = self._run_in_trainer(trainer, pl_module)
        figures = {f"maia/{k}": v for k, v in summary.items()}
        log_figures(trainer, pl_module, figures, at_fit_end=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "decision": self._decision}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]
        self._decision = state_dict.get("decision")

    def gate(self) -> GateResult:
        """The CI gate on the latest run: fails when the flagged rate passes
        ``max_flagged_rate`` or more subgroups than ``max_subgroups`` were found."""
        if self._decision is None:
            return GateResult(False, ["MisclassificationFlagger has not run yet"])
        rate, count = float(self._decision["flagged_rate"]), int(self._decision["subgroups_found"])
        failures = []
        if self.max_flagged_rate is not None and rate > self.max_flagged_rate:
            failures.append(
                f"flagged rate {rate:.3f} is above max_flagged_rate {self.max_flagged_rate}"
            )
        if self.max_subgroups is not None and count > self.max_subgroups:
            failures.append(
                f"{count} low-scoring subgroups found, more than max_subgroups {self.max_subgroups}"
            )
        return GateResult(not failures, failures, rate, count)

    # -- one run ----------------------------------------------------------------------------

    def _run_in_trainer(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, float]:
        with with_autograd():
            return self._run_with_autograd(trainer, pl_module)

    def _run_with_autograd(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, float]:
        summary: dict[str, float] | None = None
        dataset = self.dataset if self.dataset is not None else validation_dataset(trainer)
        remover = remover_spurious_units(trainer.callbacks)  # type: ignore[attr-defined]
        self._remover_attached = any(
            type(c).__name__ == "SpuriousFeatureRemover"
            for c in trainer.callbacks  # type: ignore[attr-defined]
        )
        exemplars = None
        if dataset is not None and self._needs_own_check(remover):
            # Every rank joins the (sharded) exemplar pass; only rank zero runs the agent.
            units = f"{self.feature_layer}:*"
            exemplars = compute_exemplars(
                pl_module, dataset, [units], k=15, progress=False, preprocess=self.preprocess
            )
        if trainer.is_global_zero:
            if dataset is None:
                rank_zero_warn(
                    "MisclassificationFlagger found no data: pass `dataset=` or give the trainer "
                    "a validation dataloader; skipping"
                )
            else:
                result = self.flag(pl_module, dataset, remover_units=remover, exemplars=exemplars)
                summary = result.summary()
                self._log(trainer, result, dataset)
        # Rank zero decides; every rank logs and gates on the same numbers.
        summary = trainer.strategy.broadcast(summary, src=0)
        if summary is None:
            return {}
        self._decision = dict(summary)
        self.history.append({"epoch": self._epoch(trainer), **summary})
        return summary

    def flag(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        remover_units: dict[int, str] | None = None,
        exemplars: ExemplarResult | None = None,
    ) -> FlaggingResult:
        """Score every input of ``dataset`` and flag the risky ones (no trainer needed).

        ``remover_units`` (unit index -> description) are the spurious units when neither
        ``spurious_units`` was given; ``exemplars`` of the ``feature_layer`` units serve the own
        ``spurious_check`` (computed here when missing).
        """
        if dataset is self.calibration_data:
            raise bad_option("calibration_data", "held-out data, not the scored dataset", "dataset")
        names = self.class_names or list(getattr(dataset, "class_names", []) or [])
        self._resolve_experiments(dataset, names)
        _, head = _find_head(model, self.head)
        self._sections = []
        evaluated = collect_outputs(model, head, dataset, self.batch_size, self.preprocess)
        weight = effective_head_weight(head)
        units = self._spurious_units(
            model, dataset, evaluated, weight, names, remover_units, exemplars
        )
        findings = self._findings(model, names)
        concepts = self._concepts(dataset, len(evaluated.labels), bool(findings))
        features, matched, top_units = _features(evaluated, weight, units, findings, concepts)
        leading = risk.unit_contributions(evaluated.features, weight, evaluated.predictions)
        leading_units = leading.argmax(dim=1).tolist()
        ids = item_ids(dataset)
        if self.calibration_data is not None:
            held_out = self.calibration_data
            calibration = collect_outputs(model, head, held_out, self.batch_size, self.preprocess)
            known = self._concepts(held_out, len(calibration.labels), bool(findings))
            fitting = _features(calibration, weight, units, findings, known)[0]
            combiner = risk.fit_risk_combiner(fitting, calibration.errors, item_ids(held_out))
            maia, combiners = combiner.score(features, ids), [combiner]
            fitted = _feature_frame(fitting, calibration.errors)
        else:
            maia, combiners = risk.cross_fitted_risk(
                features, evaluated.errors, ids, folds=self.folds, seed=self.seed
            )
            fitted = None
        scores = {**risk.baseline_risks(evaluated.logits), "maia": maia}
        confidence = 1.0 - scores["msp"]
        flagged = maia >= self.flag_threshold
        reasons = [
            risk.flag_reason(
                confidence=float(confidence[i]),
                reliance=float(features[i, 1]),
                spurious_unit=top_units[i],
                unit_description=_description(units, top_units[i]),
                leading=top_units[i] == leading_units[i],
                subgroup=matched[i],
            )
            for i in range(len(maia))
        ]
        table = pd.DataFrame(
            {
                "index": range(len(maia)),
                "label": _named(evaluated.labels, names),
                "prediction": _named(evaluated.predictions, names),
                "correct": (~evaluated.errors.bool()).tolist(),
                **{name: scores[name].tolist() for name in risk.BASELINES},
                "reliance": features[:, 1].tolist(),
                "subgroup": features[:, 2].tolist(),
                "maia": maia.tolist(),
                "flagged": flagged.tolist(),
                "reason": reasons,
            }
        )[list(TABLE_COLUMNS)].sort_values("maia", ascending=False, kind="stable")
        coefficients = pd.DataFrame([c.coefficients() for c in combiners]).mean().to_dict()
        self.result = FlaggingResult(
            table=table.reset_index(drop=True),
            metrics=risk.error_detection_metrics(scores, evaluated.errors),
            findings=findings,
            spurious_units=units,
            coefficients={str(k): float(v) for k, v in coefficients.items()},
            flagged_rate=float(flagged.float().mean()) if len(maia) else 0.0,
            subgroup_count=len(dict.fromkeys(f.group or f.description for f in findings)),
            calibration=fitted,
        )
        self._decision = self.result.summary()
        return self.result

    def _epoch(self, trainer: pl.Trainer) -> int:
        """The epoch a run describes (at fit end, the last one trained)."""
        return finished_epoch(trainer) if self.when == "fit_end" else trainer.current_epoch

    # -- evidence ---------------------------------------------------------------------------

    def _resolve_experiments(self, data: Dataset[Any] | None, names: Sequence[str]) -> None:
        """Build the agent and backends ``designer`` asks for (once), checking they can run."""
        uses_agent = self.class_bias or (self.spurious_check and self.feature_layer is not None)
        if self._experiments is not None or not uses_agent or self.spurious_units is not None:
            return
        self._experiments = resolve_experiments(
            "MisclassificationFlagger", agent=self._given_agent, designer=self.designer,
            dataset=data, class_names=names, candidate_attributes=self.candidate_attributes,
            generator=self.generator, editor=self.editor, describer=self.describer,
            seed=self.seed,
        )  # fmt: skip
        if self._experiments is not None:
            self._experiments.install(self)

    def _needs_own_check(self, remover_units: dict[int, str] | None) -> bool:
        return (
            self.spurious_units is None
            and remover_units is None
            and self.spurious_check
            and self.feature_layer is not None
        )

    def _spurious_units(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        outputs: _Outputs,
        weight: Tensor,
        names: Sequence[str],
        remover_units: dict[int, str] | None,
        exemplars: ExemplarResult | None,
    ) -> dict[int, str]:
        if self.spurious_units is not None:
            return {u: (remover_units or {}).get(u, "") for u in self.spurious_units}
        if remover_units is not None:
            return dict(remover_units)
        if not self.spurious_check:
            return {}
        if self.feature_layer is None:
            if self._remover_attached:
                # Not yet (it runs later, e.g. at fit end): say so once, not at every run.
                if not self._warned_no_units:
                    rank_zero_warn(
                        "MisclassificationFlagger: the SpuriousFeatureRemover has not judged any "
                        "unit yet, so spurious reliance is left out until it has (run the "
                        "flagger with when='fit_end', or the remover with when='epoch')"
                    )
                    self._warned_no_units = True
                return {}
            rank_zero_warn(
                "MisclassificationFlagger: no SpuriousFeatureRemover, no `spurious_units` and no "
                "`feature_layer` for its own spurious_check; spurious reliance is left out"
            )
            return {}
        contributions = risk.unit_contributions(outputs.features, weight, outputs.predictions)
        influence = contributions.clamp(min=0.0).mean(dim=0)
        ranked = influence.argsort(descending=True)[: self.max_checked_units].tolist()
        if exemplars is None:
            specs = [f"{self.feature_layer}:{j}" for j in ranked]
            exemplars = compute_exemplars(
                model, dataset, specs, k=15, progress=False, preprocess=self.preprocess
            )
        subject = Subject(
            model, [f"{self.feature_layer}:{j}" for j in ranked], preprocess=self.preprocess,
            class_names=names or None,
        )  # fmt: skip
        task = TaskSpec(
            "spurious_check",
            class_names=tuple(names),
            candidate_attributes=self.candidate_attributes,
        )
        found: dict[int, str] = {}
        for unit in ranked:
            toolbox = self._toolbox(subject, f"{self.feature_layer}:{unit}", exemplars)
            report = self._agent_run(toolbox, task)
            if report is None:
                continue
            self._sections.append(sections_from_toolbox(report, toolbox))
            if report.ok and report.verdict == "spurious":
                found[unit] = _unit_words(report.label)
        return found

    def _findings(self, model: nn.Module, names: Sequence[str]) -> list[SubgroupFinding]:
        if not self.class_bias or not names:
            return []
        try:
            audit = audit_class_bias(
                model,
                names,
                classes=self.audit_classes,
                agent=self.agent,
                preprocess=self.preprocess,
                candidate_attributes=self.candidate_attributes,
                generator=self.generator,
                editor=self.editor,
                describer=self.describer,
                images_per_value=self.images_per_value,
                seed=self.seed,
                on_error=self.on_error,
            )
        except (MaiaError, OSError, TimeoutError) as error:
            if self.on_error == "raise":
                raise
            rank_zero_warn(f"MisclassificationFlagger: the class-bias audit failed: {error}")
            return []
        for report in audit.reports:
            self._sections.append(sections_from_toolbox(report, audit.toolboxes[report.unit]))
        return audit.findings

    def _concepts(self, dataset: Dataset[Any], count: int, needed: bool) -> list[frozenset[str]]:
        nothing: list[frozenset[str]] = [frozenset()] * count
        if not needed or self.concepts == "none":
            return nothing
        from_metadata = self.concepts == "auto" and has_metadata_concepts(dataset)
        if self.concepts == "metadata" or from_metadata:
            return dataset_concepts(dataset, range(count))
        try:
            found: list[frozenset[str]] = []
            for start in range(0, count, self.batch_size):
                stop = min(start + self.batch_size, count)
                images = torch.stack([dataset[i][0] for i in range(start, stop)])
                found += described_concepts(images.clamp(0.0, 1.0), self.describer)
            return found
        except (MaiaError, OSError, TimeoutError, ValueError) as error:
            if self.on_error == "raise":
                raise
            rank_zero_warn(
                f"MisclassificationFlagger: cannot read the concepts of the inputs ({error}); "
                "subgroup membership is left out (pass concepts='metadata' for procedural data "
                "or a describer that can describe these images)"
            )
            return nothing

    def _toolbox(self, subject: Subject, unit: str, exemplars: ExemplarResult | None) -> Toolbox:
        return Toolbox(
            subject, unit, exemplars=exemplars, generator=self.generator, editor=self.editor,
            describer=self.describer, seed=self.seed,
        )  # fmt: skip

    def _agent_run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport | None:
        try:
            return self.agent.run(toolbox, task)
        except Exception as error:  # a failing agent fails its unit, never the fit
            if self.on_error == "raise":
                raise
            rank_zero_warn(
                f"MisclassificationFlagger: the agent failed on {toolbox.unit.spec}: {error}"
            )
            return None

    # -- logging ----------------------------------------------------------------------------

    def _log(self, trainer: pl.Trainer, result: FlaggingResult, dataset: Dataset[Any]) -> None:
        step, epoch = trainer.global_step, self._epoch(trainer)
        top = result.top(self.top_n)
        findings = pd.DataFrame([f.to_row() for f in result.findings])
        images = [dataset[int(i)][0].detach().float().clamp(0.0, 1.0) for i in top["index"]]
        captions = [
            f"#{row.index} {row.label} -> {row.prediction} (risk {row.maia:.2f}): {row.reason}"
            for row in top.itertuples()
        ]
        root = self._root if self._root is not None else output_root(trainer, self.output_dir)
        path = write_report(
            root / "flagger" / f"epoch-{epoch:03d}" / "report.html",
            self._sections,
            flagged=_flagged_inputs(top, images),
            title=f"MisclassificationFlagger — epoch {epoch}",
            meta={
                "flagged rate": f"{result.flagged_rate:.3f}",
                "subgroups found": str(result.subgroup_count),
                **{f"AUROC {k}": f"{v:.3f}" for k, v in result.metrics["auroc"].items()},
            },
        )
        self.report_path = path
        for adapter in adapters_for(trainer):
            adapter.log_table("flagged", top, step)
            adapter.log_table("risk_scores", result.table, step)
            adapter.log_table("subgroups", findings, step)
            if images:
                adapter.log_images("flagged", images, step, captions)
            adapter.log_file(path, step)


@dataclass
class _Outputs:
    """What the model gave on every input: logits, the head's input, labels."""

    logits: Tensor
    features: Tensor
    labels: Tensor

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def errors(self) -> Tensor:
        return (self.predictions != self.labels).long()


@torch.inference_mode()
def collect_outputs(
    model: nn.Module,
    head: nn.Module,
    dataset: Dataset[Any],
    batch_size: int,
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> _Outputs:
    """One pass over ``dataset`` (``(image, label)`` items, in order): logits and head inputs."""
    preprocess = preprocess_for(dataset, preprocess)  # declared model inputs go in as they are
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _, args: captured.append(args[0].detach().float().flatten(1).cpu())
    )
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(())).device
    logits, labels = [], []
    try:
        for images, targets in DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=0
        ):
            images = images.to(device)
            logits.append(
                model(preprocess(images) if preprocess is not None else images).float().cpu()
            )
            labels.append(torch.as_tensor(targets).long())
    finally:
        hook.remove()
        model.train(was_training)
    if not logits:
        raise bad_option("dataset", "a non-empty dataset of (image, label) items", "an empty one")
    return _Outputs(torch.cat(logits), torch.cat(captured), torch.cat(labels))


def effective_head_weight(head: nn.Module) -> Tensor:
    """The (C, D) weight the head applies to its raw input: ``weight``, or for a masked head
    ``(weight @ projection) * mask`` (units it drops get no weight)."""
    weight = head.weight
    if not isinstance(weight, Tensor):
        raise bad_option("head", "a linear head with a weight tensor", type(head).__name__)
    weight = weight.detach().float()
    mask, projection = getattr(head, "mask", None), getattr(head, "projection", None)
    if isinstance(projection, Tensor):
        weight = weight @ projection.detach().float()
    if isinstance(mask, Tensor):
        weight = weight * mask.detach().float()[None]
    return weight.cpu()


def remover_spurious_units(callbacks: Sequence[Callback]) -> dict[int, str] | None:
    """Unit index -> description of the units a SpuriousFeatureRemover among ``callbacks``
    judged spurious (its latest ``judgements``), or None when there is no remover or it has not
    judged yet."""
    for callback in callbacks:
        if type(callback).__name__ != "SpuriousFeatureRemover":
            continue
        judgements = list(getattr(callback, "judgements", None) or [])
        if judgements:
            return {
                int(j.unit.index): _unit_words(j.report.label)
                for j in judgements
                if j.verdict == "spurious"
            }
    return None


def _unit_words(label: str) -> str:
    """``spurious: follows water background`` -> ``water background``."""
    return label.removeprefix("spurious: ").removeprefix("follows ")


def item_ids(dataset: Dataset[Any]) -> list[str]:
    """An id per item that names the dataset, so that two datasets never share one: the
    procedural origin (``SpuriousShapes[seed=0,split=holdout][3]``) where there is one."""
    origin = getattr(dataset, "origin", None)
    count = len(dataset)  # type: ignore[arg-type]
    if callable(origin):
        return [str(origin(i)) for i in range(count)]
    return [f"{type(dataset).__name__}@{id(dataset):x}[{i}]" for i in range(count)]


def _features(
    outputs: _Outputs,
    weight: Tensor,
    units: dict[int, str],
    findings: Sequence[SubgroupFinding],
    concepts: Sequence[frozenset[str]],
) -> tuple[Tensor, list[SubgroupFinding | None], list[int | None]]:
    """(N, 3) ``[msp risk, reliance, subgroup]``, the matched subgroups and the top units."""
    predictions = outputs.predictions
    reliance = risk.spurious_reliance(outputs.features, weight, list(units), predictions)
    subgroup, matched = risk.subgroup_membership(findings, concepts)
    msp = risk.baseline_risks(outputs.logits)["msp"]
    top = risk.top_spurious_unit(outputs.features, weight, list(units), predictions)
    return torch.stack([msp, reliance, subgroup], dim=1), matched, top


def _feature_frame(features: Tensor, errors: Tensor) -> pd.DataFrame:
    columns = {name: features[:, i].tolist() for i, name in enumerate(risk.MAIA_FEATURES)}
    return pd.DataFrame({**columns, "error": errors.bool().tolist()})


def _find_head(model: nn.Module, name: str | None) -> tuple[str, nn.Linear]:
    from lightning_maia.analysis.masked_head import find_head

    return find_head(model, name)


def _flagged_inputs(top: pd.DataFrame, images: Sequence[Tensor]) -> list[FlaggedInput]:
    """The report's rows: each flagged input with its classes, risk, reason and thumbnail."""
    rows = top.to_dict("records")
    return [
        FlaggedInput(
            index=int(row["index"]),
            label=str(row["label"]),
            prediction=str(row["prediction"]),
            risk=float(row["maia"]),
            reason=str(row["reason"]),
            image=image,
        )
        for row, image in zip(rows, images, strict=True)
    ]


def _description(units: dict[int, str], unit: int | None) -> str:
    return units.get(unit, "") if unit is not None else ""


def _named(indices: Tensor, names: Sequence[str]) -> list[str]:
    return [names[i] if i < len(names) else str(i) for i in indices.tolist()]


__all__ = ["FlaggingResult", "GateResult", "MisclassificationFlagger"]
