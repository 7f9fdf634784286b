"""UnitInterpreter: describe selected units during training, and track how their meaning drifts.

A thin adapter over :func:`~lightning_maia.analysis._interpretation.interpret_units`: it picks
the points of a fit to run at, keeps the drift history across runs (and checkpoints), logs
tables, images and an HTML report, and in background mode runs on a worker thread.

**Why one file.** One callback per file, as in Lightning; the analysis is in the core, the
worker in ``callbacks/_background.py`` and the logging in ``callbacks/_interpreter_log.py``, so
what is left here is the callback's options, hooks, state and scheduling.

>>> interpreter = UnitInterpreter(units=["features.3:*"], strategy="top_active", max_units=4)
>>> interpreter.state_key
"UnitInterpreter{'units': ['features.3:*'], 'strategy': 'top_active', 'task': 'describe_unit'}"
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_maia._options import Backends, Output
from lightning_maia.agents._agent_resolution import ResolvedExperiments, resolve_agent
from lightning_maia.agents._records import UnitReport
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.analysis._interpretation import (
    DESCRIBE_HINT,
    Interpretation,
    Interpreter,
    Strategy,
    check_strategy,
    choose_units,
    resolve_interpreter_backends,
)
from lightning_maia.callbacks._background import (
    BackgroundWorker,
    Job,
    probed_modules_on_item,
    probed_snapshot,
    write_pending,
)
from lightning_maia.callbacks._experiment_setup import train_dataset_at_setup
from lightning_maia.callbacks._interpreter_log import (
    WrittenRun,
    log_to_adapters,
    write_interpretation,
)
from lightning_maia.callbacks._interpreter_options import Exemplars, Schedule, check_positive
from lightning_maia.callbacks._shared import (
    check_unit_indices,
    finished_epoch,
    log_figures,
    output_root,
    should_skip,
    train_dataset,
    validation_dataset,
)
from lightning_maia.errors import bad_option
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.reporting._adapters import LoggerAdapter, adapters_for
from lightning_maia.units import UnitSelection, resolve_units

UNSTARTED = ("finish", "pending")


class UnitInterpreter(Callback):
    """Describe units of the model being trained and log the descriptions with their evidence.

    Args:
        units: unit specs (``"layer4:0-9"``); with a ``strategy`` they are the candidates.
        strategy: pick ``max_units`` of the candidates: ``top_active`` (highest mean activation
            on the data), ``most_changed`` (exemplars that changed most since the last run),
            ``random`` (seeded). None interprets every unit given.
        max_units: the cap on units per run.
        schedule: when to run (:class:`Schedule`: at validation ends, or at fit end).
        exemplars: the exemplar data, ``k``, class names and preprocess (:class:`Exemplars`).
        backends: the agent and image backends (:class:`~lightning_maia._options.
            Backends`; the offline :class:`ScientistAgent` by default).
        output: where reports go, ``on_error`` and progress bars
            (:class:`~lightning_maia._options.Output`).
        task: the agent's task (``describe_unit``).
        background: run each study (with one process, the exemplar pass too) on a worker
            thread, on a copy of only the probed layers' sub-network, at a lower priority, so
            that training goes on while a remote model thinks. Results are logged when ready;
            when fitting ends only the study in flight is waited for.
        unstarted: what teardown does with background studies not started when fitting ends:
            ``finish`` runs them; ``pending`` skips them and lists them in
            ``<output>/pending.json`` (and :attr:`pending`), so none is lost silently.
        seed: seeds the agent's and the strategy's choices.
        concurrency: units studied at once by an agent that waits on a remote model (a
            :class:`VLMAgent`); the offline scientist studies one unit at a time.
    """

    def __init__(
        self,
        units: list[str],
        *,
        strategy: Strategy | None = None,
        max_units: int = 8,
        schedule: Schedule | None = None,
        exemplars: Exemplars | None = None,
        backends: Backends | None = None,
        output: Output | None = None,
        task: str = "describe_unit",
        background: bool = False,
        unstarted: Literal["finish", "pending"] = "finish",
        seed: int = 0,
        concurrency: int = 4,
    ) -> None:
        if isinstance(units, str):
            units = [units]
        if (
            not isinstance(units, (list, tuple))
            or not units
            or not all(isinstance(spec, str) for spec in units)
        ):
            raise bad_option("units", "a list of unit specs such as ['layer4:0-9']", units)
        check_strategy(strategy, max_units)
        check_positive("concurrency", concurrency)
        if unstarted not in UNSTARTED:
            raise bad_option("unstarted", " or ".join(UNSTARTED), unstarted)
        self.units = list(units)
        self.strategy = strategy
        self.max_units = max_units
        self.schedule = schedule or Schedule()
        self.exemplars = exemplars or Exemplars()
        self.backends = backends or Backends()
        self.output = output or Output()
        self.task = task
        self.background = background
        self.unstarted = unstarted
        self.seed = seed
        self.concurrency = concurrency
        # The agent and backends runs use (a designer may replace them at setup).
        self.agent = resolve_agent(self.backends.agent, seed)
        self.generator, self.editor = self.backends.generator, self.backends.editor
        self.describer = self.backends.describer
        self._experiments: ResolvedExperiments | None = None
        #: unit spec -> one entry per run: epoch, label, changed, status, score.
        self.history: dict[str, list[dict[str, Any]]] = {}
        #: The latest reports, one per unit interpreted in the last finished run.
        self.reports: list[UnitReport] = []
        #: The latest run's report sections (reports with their images), for saving.
        self.sections: list[Any] = []
        #: The HTML report of the latest run (``<output>/report.html``).
        self.report_path: Path | None = None
        #: Background studies skipped at teardown (``unstarted="pending"``): epoch and units.
        self.pending: list[dict[str, Any]] = []
        self._previous_exemplars: dict[str, list[int]] = {}
        self._selections: list[UnitSelection] = []
        self._unchecked: list[UnitSelection] = []
        self._adapters: list[LoggerAdapter] | None = None
        self._warned_describer = False
        self._worker: BackgroundWorker[WrittenRun] | None = None
        # The history is written by the background worker and read by checkpointing.
        self._state_lock = threading.RLock()
        self._probed: set[str] | None = None
        self._root: Path | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(units=self.units, strategy=self.strategy, task=self.task)

    # -- lifecycle --------------------------------------------------------------------------

    def _resolve_experiments(self, data: Dataset[Any] | None) -> None:
        """Build the agent and backends an explicit ``designer`` asks for, as
        :func:`interpret_units` does (once: a resolution without data is tried again when the
        data is known)."""
        if self._experiments is not None:
            return
        resolved = resolve_interpreter_backends(
            self.backends, data, class_names=self.exemplars.class_names, seed=self.seed
        )
        if resolved is not None and resolved.settled:
            self._experiments = resolved
            resolved.install(self)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Bad specs fail here, at setup, never mid-training.
        self._selections = resolve_units(pl_module, self.units, self.exemplars.class_names)
        given = self.exemplars.dataset
        self._resolve_experiments(
            given if given is not None else train_dataset_at_setup(trainer, "val")
        )
        # Channels a layer lacks fail here too, where its width is known (or `dataset` tells).
        self._unchecked = check_unit_indices(pl_module, self._selections, given)
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output.output_dir)
        if self.background and self._worker is None:
            self._worker = BackgroundWorker("maia-unit-interpreter")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_units(trainer, pl_module)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_units(trainer, pl_module)

    def _check_units(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Widths only a forward pass tells: checked on one item once the data is there,
        before the first training batch (or validation)."""
        if self._unchecked:
            data = validation_dataset(trainer)
            data = data if data is not None else train_dataset(trainer)
            self._unchecked = check_unit_indices(pl_module, self._unchecked, data)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_jobs(trainer, self._worker.finished() if self._worker else [])
        if self.schedule.when != "validation" or should_skip(trainer):
            return
        if (trainer.current_epoch + 1) % self.schedule.every_n_epochs != 0:
            return
        summary = self._run(trainer, pl_module)
        # Rank zero decides; every rank logs the same numbers (EarlyStopping may monitor them).
        summary = trainer.strategy.broadcast(summary, src=0)
        log_figures(trainer, pl_module, {f"maia/{k}": v for k, v in (summary or {}).items()})

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.when == "fit_end" and not should_skip(trainer):
            summary = trainer.strategy.broadcast(self._run(trainer, pl_module), src=0)
            figures = {f"maia/{k}": v for k, v in (summary or {}).items()}
            log_figures(trainer, pl_module, figures, at_fit_end=True)
        # What is done is logged; nothing is waited for here (teardown does that).
        self._record_jobs(trainer, self._worker.finished() if self._worker else [])

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        try:
            # Skip what has not started first, so the worker cannot pick it up meanwhile.
            skipped = worker.cancel_unstarted() if self.unstarted == "pending" else []
            self._record_jobs(trainer, worker.finish_all())
            self._write_pending(trainer, skipped)
        finally:
            worker.shutdown()

    @override
    def state_dict(self) -> dict[str, Any]:
        with self._state_lock:  # a copy: the worker may record a run while it is saved
            history = {unit: list(rows) for unit, rows in self.history.items()}
            return {"history": history, "previous_exemplars": dict(self._previous_exemplars)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with self._state_lock:
            history = state_dict.get("history", {})
            self.history = {unit: list(rows) for unit, rows in history.items()}
            self._previous_exemplars = dict(state_dict.get("previous_exemplars", {}))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_state_lock"]  # a lock does not pickle (spawned processes get their own)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state_lock = threading.RLock()

    # -- one run ----------------------------------------------------------------------------

    def interpreter(self) -> Interpreter:
        """The agent, task and backends a run uses now (after setup: as the designer chose)."""
        names = self.exemplars.class_names
        task = TaskSpec(self.task, class_names=tuple(names or ()))
        return Interpreter(
            self.agent, task, self.generator, self.editor, self.describer,
            self.exemplars.preprocess, names, self.seed, self.output.on_error,
            self.output.progress, self.concurrency,
        )  # fmt: skip

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float] | None:
        given = self.exemplars.dataset
        dataset = given if given is not None else validation_dataset(trainer)
        if dataset is None:
            rank_zero_warn(
                "UnitInterpreter found no data for exemplars: give `exemplars=Exemplars("
                "dataset=...)` or the trainer a validation dataloader; skipping"
            )
            return None
        self._resolve_experiments(dataset)
        # At fit end, the last epoch trained (``current_epoch`` is one past it by then).
        at_end = self.schedule.when == "fit_end"
        epoch = finished_epoch(trainer) if at_end else trainer.current_epoch
        if self._worker is not None and trainer.world_size == 1:
            # One process: the exemplar pass moves into the worker too, off the training path.
            frozen = self._snapshot(pl_module, dataset)
            self._worker.submit(epoch, self._study, frozen, dataset, epoch, self._output(trainer))
            return None
        # Every rank reads its shard; the merged exemplars are the same on all ranks.
        exemplars = compute_exemplars(
            pl_module, dataset, self._selections, k=self.exemplars.k, progress=False,
            preprocess=self.exemplars.preprocess,
        )  # fmt: skip
        if not trainer.is_global_zero:
            return None
        units = self._choose(exemplars, epoch)
        if self._worker is not None:
            frozen = self._snapshot(pl_module, dataset)
            self._worker.submit(
                epoch, self._interpret, frozen, exemplars, units, epoch, self._output(trainer)
            )
            return None
        result = self.interpreter().interpret(pl_module, exemplars, units, epoch)
        return self._log(trainer, self._write(result, self._output(trainer)))

    def _choose(self, exemplars: Any, epoch: int) -> list[Any]:
        with self._state_lock:
            previous = dict(self._previous_exemplars)
        return choose_units(
            exemplars, self.strategy, self.max_units, seed=self.seed, epoch=epoch,
            previous=previous,
        )  # fmt: skip

    def _study(
        self, module: nn.Module, dataset: Dataset[Any], epoch: int, root: Path
    ) -> WrittenRun:
        """Exemplars, unit choice, the agent and the reports, all on a snapshot (background
        mode, on the worker)."""
        exemplars = compute_exemplars(
            module, dataset, self._selections, k=self.exemplars.k, progress=False,
            preprocess=self.exemplars.preprocess,
        )  # fmt: skip
        units = self._choose(exemplars, epoch)
        return self._interpret(module, exemplars, units, epoch, root)

    def _interpret(
        self, module: nn.Module, exemplars: Any, units: list[Any], epoch: int, root: Path
    ) -> WrittenRun:
        """The agent on chosen units, then the reports (background mode, on the worker)."""
        return self._write(self.interpreter().interpret(module, exemplars, units, epoch), root)

    def _snapshot(self, pl_module: pl.LightningModule, dataset: Dataset[Any]) -> nn.Module:
        """A copy of the weights the probed layers depend on (found once, on one item)."""
        layers = [s.layer for s in self._selections]
        if self._probed is None:
            preprocess = self.exemplars.preprocess
            self._probed = probed_modules_on_item(pl_module, layers, dataset, preprocess)
        return probed_snapshot(pl_module, layers, self._probed or None)

    # -- results ----------------------------------------------------------------------------

    def _record_jobs(self, trainer: pl.Trainer, jobs: list[Job[WrittenRun]]) -> None:
        for job in jobs:
            summary = self._log(trainer, job.future.result())
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"maia/{k}": v for k, v in summary.items()}, step=trainer.global_step
                )

    def _output(self, trainer: pl.Trainer) -> Path:
        return (
            self._root if self._root is not None else output_root(trainer, self.output.output_dir)
        )

    def _write(self, result: Interpretation, root: Path) -> WrittenRun:
        """Update the drift history and write the reports: no logger is touched, so background
        mode runs this on the worker, and training never waits for a report to render."""
        changes = 0
        with self._state_lock:
            for report in result.reports:
                past = self.history.setdefault(report.unit, [])
                previous = next((row for row in reversed(past) if row["status"] == "ok"), None)
                changed = bool(
                    previous is not None and report.ok and previous["label"] != report.label
                )
                changes += changed
                past.append(
                    {
                        "epoch": result.epoch,
                        "label": report.label,
                        "changed": changed,
                        "status": report.status,
                        "score": report.score,
                    }
                )
            self._previous_exemplars.update(result.exemplar_indices())
            history = {unit: list(rows) for unit, rows in self.history.items()}
            drift = self.drift_table()
        if not self._warned_describer and any(r.status == "undescribed" for r in result.reports):
            rank_zero_warn(DESCRIBE_HINT)
            self._warned_describer = True
        summary = {**result.summary(), "label_changes": float(changes)}
        return write_interpretation(
            result, root, history, self.agent.name, self.task, summary, drift
        )

    def _log(self, trainer: pl.Trainer, written: WrittenRun) -> dict[str, float]:
        """Log a written run to the trainer's loggers (on the training thread); return its
        numbers."""
        self.reports = written.result.reports
        self.sections, self.report_path = written.sections, written.latest
        if self._adapters is None:
            self._adapters = adapters_for(trainer)
        log_to_adapters(written, self._adapters, trainer.global_step)
        return written.summary

    def _write_pending(self, trainer: pl.Trainer, jobs: list[Job[WrittenRun]]) -> None:
        """List the background studies skipped at teardown in ``pending.json``."""
        root = self._output(trainer)
        self.pending = [
            {"epoch": job.epoch, "units": list(self.units), "status": "pending"} for job in jobs
        ]
        path = write_pending(root / "pending.json", self.pending)
        if self.pending:
            rank_zero_warn(
                f"UnitInterpreter: fitting ended before the background studies of epochs "
                f"{[job.epoch for job in jobs]} started; they are listed as pending in {path}"
            )

    def drift_table(self) -> pd.DataFrame:
        """Every unit's label per run, with the runs where it changed marked."""
        with self._state_lock:
            rows = [{"unit": unit, **row} for unit, rows in self.history.items() for row in rows]
        return pd.DataFrame(rows, columns=["unit", "epoch", "label", "changed", "status", "score"])


__all__ = ["Exemplars", "Schedule", "UnitInterpreter"]
