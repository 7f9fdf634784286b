"""MisclassificationFlagger: score every validation input for its risk of being misclassified,
say why, and gate CI on what it finds.

A thin adapter over :func:`lightning_maia.analysis.flagging.flag`: this callback decides when
to run (at validation end every ``every_n_epochs`` epochs, at fit end, or from an audit via
:meth:`MisclassificationFlagger.flag`), finds the data and a
:class:`SpuriousFeatureRemover`'s verdicts among the trainer's callbacks, runs the exemplar pass
on every rank and the pipeline on rank zero, broadcasts the figures, logs them (scalars, tables,
thumbnails, the HTML report) and keeps the gate's decision across resumes.

**Why one file.** One callback per file, as in Lightning; the pipeline is in
:mod:`lightning_maia.analysis.flagging`, and what is left here is the callback's options, hooks,
state and logging.

>>> flagger = MisclassificationFlagger(thresholds=Thresholds(top_n=5, max_flagged_rate=0.2))
>>> flagger.state_key
"MisclassificationFlagger{'when': 'validation', 'head': None, 'flag_threshold': 0.5}"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_maia._options import Backends, Output
from lightning_maia.agents._agent_resolution import (
    ResolvedExperiments,
    resolve_agent,
    resolve_backends,
)
from lightning_maia.agents.tasks import Agent
from lightning_maia.analysis._flagging_evidence import unit_words
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit, Thresholds
from lightning_maia.analysis._spurious import judged_directions
from lightning_maia.analysis.flagging import (
    OWNER,
    FlaggingResult,
    GateResult,
    check_gate,
    flag,
    uses_agent,
)
from lightning_maia.callbacks._experiment_setup import train_dataset_at_setup
from lightning_maia.callbacks._shared import (
    finished_epoch,
    log_figures,
    output_root,
    should_skip,
    validation_dataset,
    with_autograd,
)
from lightning_maia.errors import bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.reporting._adapters import adapters_for
from lightning_maia.reporting._html_report import FlaggedInput, write_report
from lightning_maia.units import find_layer

WHEN = ("validation", "fit_end", "manual")


class MisclassificationFlagger(Callback):
    """Flag validation inputs likely to be misclassified, with reasons; gate CI on the result.

    What is scored and how, and every argument this callback shares with it (``head``,
    ``class_names``, ``calibration_data``, ``spurious``, ``subgroups``, ``thresholds``,
    ``candidate_attributes``, ``backends``, ``preprocess``, ``batch_size``, ``folds``,
    ``seed``), are documented once, at :func:`lightning_maia.analysis.flagging.flag` (and its
    module): this callback passes them on unchanged. Only the arguments of its own:

    Args:
        when: ``validation`` (every ``every_n_epochs`` validations), ``fit_end`` or ``manual``
            (only :meth:`flag`, e.g. from ``lightning-maia audit``).
        every_n_epochs: run on every n-th validation.
        dataset: the inputs to score (:func:`flag`'s ``data``; default: the validation
            dataloader's dataset). Without ``spurious.spurious_units``, a
            :class:`SpuriousFeatureRemover` among the trainer's callbacks gives the spurious
            units (its verdicts), and a ``backends.designer`` that cannot run on this data
            fails at setup.
        output: where the HTML report goes and what failures do (:class:`Output`; its
            ``on_error`` is :func:`flag`'s).
    """

    def __init__(
        self,
        *,
        head: str | None = None,
        class_names: Sequence[str] | None = None,
        when: Literal["validation", "fit_end", "manual"] = "validation",
        every_n_epochs: int = 1,
        dataset: Dataset[Any] | None = None,
        calibration_data: Dataset[Any] | None = None,
        spurious: SpuriousEvidence | None = None,
        subgroups: SubgroupAudit | None = None,
        thresholds: Thresholds | None = None,
        candidate_attributes: Sequence[str] = (),
        backends: Backends | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        batch_size: int = 256,
        folds: int = 2,
        output: Output | None = None,
        seed: int = 0,
    ) -> None:
        if when not in WHEN:
            raise bad_option("when", ", ".join(WHEN), when)
        for name, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise bad_option("folds", "an integer of at least 2", folds)
        if dataset is not None and calibration_data is dataset:
            raise bad_option("calibration_data", "held-out data, not the scored dataset", "dataset")
        for name, group, kind in (
            ("spurious", spurious, SpuriousEvidence),
            ("subgroups", subgroups, SubgroupAudit),
            ("thresholds", thresholds, Thresholds),
            ("backends", backends, Backends),
            ("output", output, Output),
        ):
            if group is not None and not isinstance(group, kind):
                raise bad_option(name, f"a {kind.__name__}(...) or None", group)
        self.head = head
        self.class_names = list(class_names) if class_names is not None else None
        self.when, self.every_n_epochs = when, every_n_epochs
        self.dataset, self.calibration_data = dataset, calibration_data
        self.spurious = spurious if spurious is not None else SpuriousEvidence()
        self.subgroups = subgroups if subgroups is not None else SubgroupAudit()
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.candidate_attributes = tuple(candidate_attributes)
        self.backends = backends if backends is not None else Backends()
        self.output = output if output is not None else Output()
        #: The agent the audits run (the offline scientist unless ``backends.agent`` says).
        self.agent: Agent = resolve_agent(self.backends.agent, seed)
        self.preprocess = preprocess
        self.batch_size, self.folds, self.seed = batch_size, folds, seed
        #: One summary per run: epoch and the logged numbers.
        self.history: list[dict[str, Any]] = []
        #: The latest run's result (on global rank zero).
        self.result: FlaggingResult | None = None
        self._decision: dict[str, Any] | None = None
        self._sections: list[Any] = []
        self._root: Path | None = None
        #: The HTML report of the latest run (flagged inputs with their reasons, the evidence).
        self.report_path: Path | None = None
        self._resolved: ResolvedExperiments | None = None
        self._remover_attached = False
        self._warned_no_units = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            when=self.when, head=self.head, flag_threshold=self.thresholds.flag_threshold
        )

    # -- lifecycle --------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _find_head(pl_module, self.head)  # a bad head path fails here, never mid-training
        if self.spurious.feature_layer is not None:
            find_layer(pl_module, self.spurious.feature_layer)  # so does a bad feature layer
        data = self.dataset if self.dataset is not None else train_dataset_at_setup(trainer, "val")
        names = self.class_names or list(getattr(data, "class_names", []) or [])
        self._resolve(data, names)  # an unusable designer fails here
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output.output_dir)

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
        ``thresholds.max_flagged_rate`` or more subgroups than ``thresholds.max_subgroups``
        were found."""
        return check_gate(self._decision, self.thresholds)

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
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        remover = remover_spurious_units(callbacks)
        directions = remover_spurious_directions(callbacks, pl_module) if remover else None
        self._remover_attached = any(
            type(c).__name__ == "SpuriousFeatureRemover" for c in callbacks
        )
        exemplars = None
        if dataset is not None and remover is None and self.spurious.runs_own_check:
            # Every rank joins the (sharded) exemplar pass; only rank zero runs the agent.
            exemplars = compute_exemplars(
                pl_module, dataset, [f"{self.spurious.feature_layer}:*"], k=15,
                progress=self.output.progress, preprocess=self.preprocess,
            )  # fmt: skip
        if trainer.is_global_zero:
            if dataset is None:
                rank_zero_warn(
                    "MisclassificationFlagger found no data: pass `dataset=` or give the trainer "
                    "a validation dataloader; skipping"
                )
            else:
                result = self.flag(
                    pl_module, dataset, remover_units=remover, exemplars=exemplars,
                    spurious_directions=directions,
                )  # fmt: skip
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
        spurious_directions: Tensor | None = None,
    ) -> FlaggingResult:
        """Score every input of ``dataset`` and flag the risky ones (no trainer needed):
        :func:`~lightning_maia.analysis.flagging.flag` with this callback's options.

        ``remover_units`` (unit index -> description) are the spurious units when
        ``spurious.spurious_units`` was not given; ``exemplars`` of the ``feature_layer`` units
        serve the own ``spurious_check`` (computed when missing); ``spurious_directions``
        (F, r) are the feature directions of the spurious attribute's edits (a remover's:
        :func:`remover_spurious_directions`), ablated in the counterfactual risk.
        """
        if dataset is self.calibration_data:
            raise bad_option("calibration_data", "held-out data, not the scored dataset", "dataset")
        names = self.class_names or list(getattr(dataset, "class_names", []) or [])
        self._resolve(dataset, names)
        if remover_units is None and self._waiting_for_remover():
            remover_units = {}  # the remover runs later: reliance is left out until it has
        self.result = flag(
            model, dataset, calibration_data=self.calibration_data, head=self.head,
            class_names=names, spurious=self.spurious, subgroups=self.subgroups,
            thresholds=self.thresholds, candidate_attributes=self.candidate_attributes,
            backends=self._resolved or self.backends,
            preprocess=self.preprocess, batch_size=self.batch_size, folds=self.folds,
            on_error=self.output.on_error, seed=self.seed, remover_units=remover_units,
            exemplars=exemplars, spurious_directions=spurious_directions,
        )  # fmt: skip
        self._sections = self.result.sections
        self._decision = self.result.summary()
        return self.result

    def _epoch(self, trainer: pl.Trainer) -> int:
        """The epoch a run describes (at fit end, the last one trained)."""
        return finished_epoch(trainer) if self.when == "fit_end" else trainer.current_epoch

    def _resolve(self, data: Dataset[Any] | None, names: Sequence[str]) -> None:
        """Build the agent and backends ``backends.designer`` asks for (once), checking they
        can run; the resolved agent becomes :attr:`agent`."""
        if self._resolved is not None or not uses_agent(self.spurious, self.subgroups):
            return
        resolved = resolve_backends(
            self.backends, OWNER, dataset=data, class_names=list(names),
            candidate_attributes=self.candidate_attributes, seed=self.seed,
        )  # fmt: skip
        if data is not None:  # without data, it is tried again when the data is known
            self._resolved = resolved
            self.agent = resolved.agent

    def _waiting_for_remover(self) -> bool:
        """A remover is attached but has not judged yet, and nothing else gives units: say so
        once, not at every run."""
        waiting = (
            self._remover_attached
            and self.spurious.spurious_units is None
            and self.spurious.spurious_check
            and self.spurious.feature_layer is None
        )
        if waiting and not self._warned_no_units:
            rank_zero_warn(
                "MisclassificationFlagger: the SpuriousFeatureRemover has not judged any "
                "unit yet, so spurious reliance is left out until it has (run the "
                "flagger with when='fit_end', or the remover with when='epoch')"
            )
            self._warned_no_units = True
        return waiting

    # -- logging ----------------------------------------------------------------------------

    def _log(self, trainer: pl.Trainer, result: FlaggingResult, dataset: Dataset[Any]) -> None:
        step, epoch = trainer.global_step, self._epoch(trainer)
        top = result.top(self.thresholds.top_n)
        findings = pd.DataFrame([f.to_row() for f in result.findings])
        images = [dataset[int(i)][0].detach().float().clamp(0.0, 1.0) for i in top["index"]]
        captions = [
            f"#{row.index} {row.label} -> {row.prediction} (risk {row.maia:.2f}): {row.reason}"
            for row in top.itertuples()
        ]
        root = (
            self._root if self._root is not None else output_root(trainer, self.output.output_dir)
        )
        path = write_report(
            root / "flagger" / f"epoch-{epoch:03d}" / "report.html",
            result.sections,
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


def remover_spurious_units(callbacks: Sequence[Callback]) -> dict[int, str] | None:
    """Unit index -> description of the units a SpuriousFeatureRemover among ``callbacks``
    judged spurious (its latest ``judgements``), or None when there is no remover or it has not
    judged yet."""
    found = _remover_judgements(callbacks)
    if found is None:
        return None
    return {
        int(j.unit.index): unit_words(j.report.label) for j in found[1] if j.verdict == "spurious"
    }


def remover_spurious_directions(callbacks: Sequence[Callback], model: nn.Module) -> Tensor | None:
    """The feature directions the edits of a SpuriousFeatureRemover's latest run move the
    head's input along, where it judged a unit spurious
    (:func:`~lightning_maia.analysis._spurious.judged_directions`); None otherwise."""
    found = _remover_judgements(callbacks)
    if found is None:
        return None
    remover, judgements = found
    return judged_directions(
        model, judgements, getattr(remover, "candidate_attributes", ()),
        preprocess=getattr(remover, "preprocess", None),
    )  # fmt: skip


def _remover_judgements(callbacks: Sequence[Callback]) -> tuple[Callback, list[Any]] | None:
    """The first SpuriousFeatureRemover among ``callbacks`` that has judged, and its latest
    judgements (matched by name: a stand-in with the same interface serves too)."""
    for callback in callbacks:
        if type(callback).__name__ != "SpuriousFeatureRemover":
            continue
        judgements = list(getattr(callback, "judgements", None) or [])
        if judgements:
            return callback, judgements
    return None


def _find_head(model: nn.Module, name: str | None) -> tuple[str, nn.Linear]:
    from lightning_maia.analysis._masked_head import find_head

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


__all__ = [
    "Backends",
    "FlaggingResult",
    "GateResult",
    "MisclassificationFlagger",
    "Output",
    "SpuriousEvidence",
    "SubgroupAudit",
    "Thresholds",
]
