"""UnitInterpreter: describe selected units during training, and track how their meaning drifts.

>>> interpreter = UnitInterpreter(units=["features.3:*"], strategy="top_active", max_units=4)
>>> interpreter.state_key
"UnitInterpreter{'units': ['features.3:*'], 'strategy': 'top_active', 'task': 'describe_unit'}"
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from typing_extensions import override

from lightning_maia.agents.records import UnitReport, reports_to_dataframe
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_design import ExperimentDesigner
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks._experiment_setup import (
    ResolvedExperiments,
    given_agent,
    resolve_experiments,
    train_dataset_at_setup,
)
from lightning_maia.callbacks._shared import (
    check_unit_indices,
    finished_epoch,
    log_figures,
    output_root,
    resolve_agent,
    should_skip,
    snapshot,
    train_dataset,
    validation_dataset,
)
from lightning_maia.callbacks.options import ON_ERROR, OnError
from lightning_maia.errors import MaiaError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars, mask_images
from lightning_maia.reporting.adapters import LoggerAdapter, adapters_for
from lightning_maia.reporting.html_report import (
    UnitSection,
    sections_from_toolbox,
    write_report,
)
from lightning_maia.subject import Subject
from lightning_maia.tools.backends.base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit, UnitSelection, resolve_units

log = logging.getLogger("lightning_maia")

STRATEGIES = ("top_active", "most_changed", "random")
#: How ``strategy=`` picks units (a ``Literal``, so LightningCLI lists the choices).
Strategy = Literal["top_active", "most_changed", "random"]
WHEN = ("validation", "fit_end")
DESCRIBE_HINT = (
    "UnitInterpreter: the configured describer cannot describe these images, so only exemplars "
    "and activation statistics are logged. For descriptions of real images configure a "
    "captioner (CaptionDescriber), a CLIP vocabulary (ClipConceptScorer) or a VLM endpoint "
    "(VLMDescriber / VLMAgent)."
)


class UnitInterpreter(Callback):
    """Describe units of the model being trained and log the descriptions with their evidence.

    Args:
        units: unit specs (``"layer4:0-9"``); with a ``strategy`` they are the candidates.
        strategy: pick ``max_units`` of the candidates: ``top_active`` (highest mean activation
            on the data), ``most_changed`` (exemplars that changed most since the last run),
            ``random`` (seeded). None interprets every unit given.
        max_units: the cap on units per run.
        when: ``validation`` (at the end of validation, every ``every_n_epochs`` epochs) or
            ``fit_end`` (once, when fitting ends).
        every_n_epochs: run on every n-th validation.
        agent: the agent (default: the offline :class:`ScientistAgent`).
        task: the agent's task (``describe_unit``).
        dataset: exemplar data; the validation dataloader's dataset by default.
        k: exemplars per unit.
        class_names: names of the output classes (for ``output:NAME`` specs).
        preprocess: maps display images in [0, 1] to model inputs (e.g. normalisation).
        generator, editor, describer: image backends (procedural by default).
        designer: how the offline agent designs experiments on this data: ``retrieval`` (the
            exemplar data's attribute columns), ``procedural``, ``prompts``, ``auto`` or a
            designer object, with the backends that read it; None: the agent's own.
        background: run the agent on a snapshot of the weights in a worker thread, so that
            training goes on while a remote model thinks; results are logged when ready and
            joined when fitting ends.
        output_dir: where reports and images go (default ``<log_dir>/maia``).
        on_error: ``warn`` (log a warning and a failed report) or ``raise``.
        seed: seeds the agent's and the strategy's choices.
        progress: show a progress bar over units.
        concurrency: units studied at once by an agent that waits on a remote model (a
            :class:`VLMAgent`); the offline scientist studies one unit at a time.
    """

    def __init__(
        self,
        units: list[str],
        *,
        strategy: Strategy | None = None,
        max_units: int = 8,
        when: Literal["validation", "fit_end"] = "validation",
        every_n_epochs: int = 1,
        agent: ScientistAgent | VLMAgent | Literal["scientist"] | None = None,
        task: str = "describe_unit",
        dataset: Dataset[Any] | None = None,
        k: int = 15,
        class_names: list[str] | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        generator: ImageGenerator | None = None,
        editor: ImageEditor | None = None,
        describer: ImageDescriber | None = None,
        designer: str | ExperimentDesigner | None = None,
        background: bool = False,
        output_dir: str | None = None,
        on_error: OnError = "warn",
        seed: int = 0,
        progress: bool = True,
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
        if strategy is not None and strategy not in STRATEGIES:
            raise bad_option("strategy", ", ".join(STRATEGIES) + " or None", strategy)
        if when not in WHEN:
            raise bad_option("when", " or ".join(WHEN), when)
        if on_error not in ON_ERROR:
            raise bad_option("on_error", " or ".join(ON_ERROR), on_error)
        for name, value in (
            ("max_units", max_units),
            ("every_n_epochs", every_n_epochs),
            ("k", k),
            ("concurrency", concurrency),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        self.units = list(units)
        self.strategy = strategy
        self.max_units = max_units
        self.when = when
        self.every_n_epochs = every_n_epochs
        self.agent: Agent = resolve_agent(agent, seed)
        self.task = TaskSpec(task, class_names=tuple(class_names or ()))
        self.dataset = dataset
        self.k = k
        self.class_names = class_names
        self.preprocess = preprocess
        self.generator, self.editor, self.describer = generator, editor, describer
        self._given_agent = given_agent(agent, self.agent)
        self.designer = designer
        self._experiments: ResolvedExperiments | None = None
        self.background = background
        self.output_dir = output_dir
        self.on_error = on_error
        self.seed = seed
        self.progress = progress
        self.concurrency = concurrency
        #: unit spec -> one entry per run: epoch, label, changed, status, score.
        self.history: dict[str, list[dict[str, Any]]] = {}
        #: The latest reports, one per unit interpreted in the last finished run.
        self.reports: list[UnitReport] = []
        #: The latest run's report sections (reports with their images), for saving.
        self.sections: list[UnitSection] = []
        self._previous_exemplars: dict[str, list[int]] = {}
        self._selections: list[UnitSelection] = []
        self._adapters: list[LoggerAdapter] | None = None
        self._warned_describer = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[tuple[int, list[_UnitRun]]]] = []
        self._root: Path | None = None
        #: The HTML report of the latest run (``<output>/report.html``).
        self.report_path: Path | None = None
        self._unchecked: list[UnitSelection] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            units=self.units, strategy=self.strategy, task=self.task.name
        )

    # -- lifecycle --------------------------------------------------------------------------

    def _resolve_experiments(self, data: Dataset[Any] | None) -> None:
        """Build the agent and backends an explicit ``designer`` asks for (once)."""
        if self.designer is None or self._experiments is not None:
            return
        self._experiments = resolve_experiments(
            "UnitInterpreter", agent=self._given_agent, designer=self.designer, dataset=data,
            class_names=self.class_names, candidate_attributes=(), generator=self.generator,
            editor=self.editor, describer=self.describer, seed=self.seed,
        )  # fmt: skip
        if self._experiments is not None:
            self._experiments.install(self)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Bad specs fail here, at setup, never mid-training.
        self._selections = resolve_units(pl_module, self.units, self.class_names)
        data = self.dataset if self.dataset is not None else train_dataset_at_setup(trainer, "val")
        self._resolve_experiments(data)  # an unusable designer fails here
        # Channels a layer lacks fail here too, where its width is known (or `dataset` tells).
        self._unchecked = check_unit_indices(pl_module, self._selections, self.dataset)
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output_dir)
        if self.background and self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="maia-unit-interpreter"
            )

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
        self._log_finished(trainer, wait=False)
        if self.when != "validation" or should_skip(trainer):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        summary = self._run(trainer, pl_module)
        # Rank zero decides; every rank logs the same numbers (EarlyStopping may monitor them).
        summary = trainer.strategy.broadcast(summary, src=0)
        log_figures(trainer, pl_module, {f"maia/{k}": v for k, v in (summary or {}).items()})

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when == "fit_end" and not should_skip(trainer):
            summary = trainer.strategy.broadcast(self._run(trainer, pl_module), src=0)
            figures = {f"maia/{k}": v for k, v in (summary or {}).items()}
            log_figures(trainer, pl_module, figures, at_fit_end=True)
        self._log_finished(trainer, wait=True)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._executor is not None:
            self._log_finished(trainer, wait=True)
            self._executor.shutdown(wait=True)
            self._executor = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "previous_exemplars": self._previous_exemplars}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {unit: list(rows) for unit, rows in state_dict.get("history", {}).items()}
        self._previous_exemplars = dict(state_dict.get("previous_exemplars", {}))

    # -- one run ----------------------------------------------------------------------------

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float] | None:
        dataset = self.dataset if self.dataset is not None else validation_dataset(trainer)
        if dataset is None:
            rank_zero_warn(
                "UnitInterpreter found no data for exemplars: pass `dataset=` or give "
                "the trainer a validation dataloader; skipping"
            )
            return None
        self._resolve_experiments(dataset)
        # At fit end, the last epoch trained (``current_epoch`` is one past it by then).
        epoch = finished_epoch(trainer) if self.when == "fit_end" else trainer.current_epoch
        if self.background and trainer.world_size == 1:
            # One process: the exemplar pass moves into the worker too, off the training path.
            assert self._executor is not None
            self._pending.append(
                self._executor.submit(self._study, snapshot(pl_module), dataset, epoch)
            )
            return None
        # Every rank reads its shard; the merged exemplars are the same on all ranks.
        exemplars = compute_exemplars(
            pl_module,
            dataset,
            self._selections,
            k=self.k,
            progress=False,
            preprocess=self.preprocess,
        )
        if not trainer.is_global_zero:
            return None
        units = self._choose_units(exemplars, epoch)
        if self.background:
            assert self._executor is not None
            frozen = snapshot(pl_module)
            self._pending.append(
                self._executor.submit(self._interpret, frozen, exemplars, units, epoch)
            )
            return None
        _, runs = self._interpret(pl_module, exemplars, units, epoch)
        return self._record(trainer, epoch, runs)

    def _study(
        self, module: pl.LightningModule, dataset: Dataset[Any], epoch: int
    ) -> tuple[int, list[_UnitRun]]:
        """Exemplars, unit choice and the agent, all on a snapshot (background mode), at a
        lower priority than training."""
        _lower_worker_priority()
        exemplars = compute_exemplars(
            module, dataset, self._selections, k=self.k, progress=False, preprocess=self.preprocess
        )
        return self._interpret(module, exemplars, self._choose_units(exemplars, epoch), epoch)

    def _choose_units(self, exemplars: ExemplarResult, epoch: int) -> list[Unit]:
        candidates = exemplars.units
        if self.strategy is None:
            return candidates
        if self.strategy == "random":
            rng = np.random.default_rng([self.seed, epoch])
            picked = rng.choice(
                len(candidates), size=min(self.max_units, len(candidates)), replace=False
            )
            return [candidates[i] for i in sorted(picked)]
        scores = {u: exemplars.mean_activation(u) or 0.0 for u in candidates}
        if self.strategy == "most_changed" and self._previous_exemplars:
            scores = {
                u: _exemplar_change(
                    self._previous_exemplars.get(u.spec),
                    exemplars.for_unit(u).dataset_indices.tolist(),
                )
                for u in candidates
            }
        ranked = sorted(candidates, key=lambda u: (-scores[u], u))
        return ranked[: self.max_units]

    def _interpret(
        self,
        module: pl.LightningModule,
        exemplars: ExemplarResult,
        units: Sequence[Unit],
        epoch: int,
    ) -> tuple[int, list[_UnitRun]]:
        subject = Subject(
            module,
            [u.spec for u in units],
            preprocess=self.preprocess,
            class_names=self.class_names,
        )
        toolboxes = [
            Toolbox(
                subject,
                unit,
                exemplars=exemplars,
                generator=self.generator,
                editor=self.editor,
                describer=self.describer,
                seed=self.seed + epoch,
            )
            for unit in units
        ]
        remote = isinstance(self.agent, VLMAgent) and self.concurrency > 1
        if remote and all(self._can_describe(toolbox) for toolbox in toolboxes):
            reports = self._run_concurrently(toolboxes)
        else:
            reports = [
                self._report(toolbox, exemplars, toolbox.unit)
                for toolbox in tqdm(
                    toolboxes,
                    desc=f"interpreting units (epoch {epoch})",
                    leave=False,
                    disable=not self.progress,
                )
            ]
        runs = [_UnitRun(t.unit, t, r) for t, r in zip(toolboxes, reports, strict=True)]
        return epoch, runs

    def _report(self, toolbox: Toolbox, exemplars: ExemplarResult, unit: Unit) -> UnitReport:
        if not self._can_describe(toolbox):
            if not self._warned_describer:
                rank_zero_warn(DESCRIBE_HINT)
                self._warned_describer = True
            toolbox.dataset_exemplars()
            return UnitReport.undescribed(
                unit.spec,
                self.task.name,
                self.agent.name,
                "no describer can describe these images (configure a describer)",
                label="(no describer)",
                details={"mean_activation": exemplars.mean_activation(unit)},
            )
        try:
            return self.agent.run(toolbox, self.task)
        except Exception as error:  # a failing agent fails its unit's report, never the fit
            if self.on_error == "raise":
                raise
            if not isinstance(error, MaiaError | OSError | TimeoutError):
                log.error("UnitInterpreter: the agent failed on %s", unit.spec, exc_info=True)
            rank_zero_warn(f"UnitInterpreter: the agent failed on {unit.spec}: {error}")
            return UnitReport.failed(unit.spec, self.task.name, self.agent.name, str(error))

    def _run_concurrently(self, toolboxes: list[Toolbox]) -> list[UnitReport]:
        assert isinstance(self.agent, VLMAgent)
        try:
            return self.agent.run_many(toolboxes, self.task, concurrency=self.concurrency)
        except Exception as error:  # a failing agent fails the reports, never the fit
            if self.on_error == "raise":
                raise
            if not isinstance(error, MaiaError | OSError | TimeoutError):
                log.error("UnitInterpreter: the agent failed", exc_info=True)
            rank_zero_warn(f"UnitInterpreter: the agent failed: {error}")
            return [
                UnitReport.failed(t.unit.spec, self.task.name, self.agent.name, str(error))
                for t in toolboxes
            ]

    def _can_describe(self, toolbox: Toolbox) -> bool:
        check = getattr(toolbox.describer, "can_describe", None)
        if check is None:
            return True
        exemplars = toolbox.dataset_exemplars()
        return bool(exemplars) and bool(check(toolbox.images.get(exemplars[0].id).item()))

    # -- results ----------------------------------------------------------------------------

    def _log_finished(self, trainer: pl.Trainer, wait: bool) -> None:
        still: list[concurrent.futures.Future[tuple[int, list[_UnitRun]]]] = []
        for future in self._pending:
            if wait or future.done():
                epoch, runs = future.result()
                summary = self._record(trainer, epoch, runs)
                for logger in trainer.loggers:
                    logger.log_metrics(
                        {f"maia/{k}": v for k, v in summary.items()}, step=trainer.global_step
                    )
            else:
                still.append(future)
        self._pending = still

    def _record(self, trainer: pl.Trainer, epoch: int, runs: list[_UnitRun]) -> dict[str, float]:
        """Update the drift history, log tables, images and the report; return the numbers."""
        changes = 0
        for run in runs:
            report = run.report
            past = self.history.setdefault(report.unit, [])
            previous = next((row for row in reversed(past) if row["status"] == "ok"), None)
            changed = bool(previous is not None and report.ok and previous["label"] != report.label)
            changes += changed
            past.append(
                {
                    "epoch": epoch,
                    "label": report.label,
                    "changed": changed,
                    "status": report.status,
                    "score": report.score,
                }
            )
            exemplar_ids = run.toolbox.exemplar_result
            if exemplar_ids is not None:
                self._previous_exemplars[report.unit] = exemplar_ids.for_unit(
                    run.unit
                ).dataset_indices.tolist()
        self.reports = [run.report for run in runs]
        self._log(trainer, epoch, runs)
        scores = [r.score for r in self.reports if r.score is not None and math.isfinite(r.score)]
        summary = {
            "units_described": float(sum(r.ok for r in self.reports)),
            "units_undescribed": float(sum(r.status == "undescribed" for r in self.reports)),
            "units_failed": float(sum(r.failed_run for r in self.reports)),
            "label_changes": float(changes),
        }
        if scores:
            summary["mean_score"] = float(np.mean(scores))
        return summary

    def drift_table(self) -> pd.DataFrame:
        """Every unit's label per run, with the runs where it changed marked."""
        rows = [{"unit": unit, **row} for unit, rows in self.history.items() for row in rows]
        return pd.DataFrame(rows, columns=["unit", "epoch", "label", "changed", "status", "score"])

    def _log(self, trainer: pl.Trainer, epoch: int, runs: list[_UnitRun]) -> None:
        if self._adapters is None:
            self._adapters = adapters_for(trainer)
        step = trainer.global_step
        frame = reports_to_dataframe(self.reports).assign(epoch=epoch)
        root = self._root if self._root is not None else output_root(trainer, self.output_dir)
        sections = [
            sections_from_toolbox(
                run.report, run.toolbox, history=self.history.get(run.report.unit, [])
            )
            for run in runs
        ]
        self.sections = sections
        report_path = write_report(
            root / f"epoch-{epoch:03d}" / "report.html",
            sections,
            title=f"UnitInterpreter — epoch {epoch}",
            meta={"agent": self.agent.name, "task": self.task.name, "epoch": str(epoch)},
        )
        self.report_path = write_report(
            root / "report.html",
            sections,
            title="UnitInterpreter — latest run",
            meta={"agent": self.agent.name, "epoch": str(epoch)},
        )
        for adapter in self._adapters:
            adapter.log_table("maia/unit_reports", frame, step)
            adapter.log_table("maia/drift", self.drift_table(), step)
            for run in runs:
                images, captions = _exemplar_panel(run)
                if images:
                    adapter.log_images(f"maia/exemplars/{run.unit.spec}", images, step, captions)
            adapter.log_file(report_path, step)


#: Nice increment of the background worker thread (Linux): training keeps the cores it needs.
WORKER_NICE = 10


def _lower_worker_priority() -> None:
    """Run the calling worker thread on one intra-op thread and, on Linux, at a higher nice
    value. Both are per-thread there (OpenMP thread counts; Linux nice values belong to a
    thread), so the training thread keeps its threads and priority. Never on the main thread,
    and elsewhere than Linux only the thread count (``os.nice`` would slow the whole process)."""
    if threading.current_thread() is threading.main_thread():
        return
    torch.set_num_threads(1)
    if sys.platform.startswith("linux") and not getattr(_worker, "niced", False):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        _worker.niced = True


_worker = threading.local()


class _UnitRun:
    """A unit, the toolbox the agent used, and its report."""

    def __init__(self, unit: Unit, toolbox: Toolbox, report: UnitReport) -> None:
        self.unit, self.toolbox, self.report = unit, toolbox, report


def _exemplar_change(previous: list[int] | None, current: list[int]) -> float:
    """1 - Jaccard overlap of two exemplar sets (1.0 when there was none before)."""
    if not previous:
        return 1.0
    a, b = set(previous), set(current)
    return 1.0 - len(a & b) / max(len(a | b), 1)


def _exemplar_panel(run: _UnitRun) -> tuple[list[Tensor], list[str]]:
    images, captions = [], []
    for stored in run.toolbox.images:
        if stored.source != "exemplar":
            continue
        image = stored.image
        if stored.mask is not None:
            image = mask_images(image[None], stored.mask[None])[0]
        images.append(image)
        captions.append(f"{stored.id}: {stored.activation:.3f}")
    return images, captions


__all__ = ["UnitInterpreter"]
