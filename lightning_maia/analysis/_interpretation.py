"""Describe units of a model on data, without a Trainer: exemplars, unit choice, the agent.

:func:`interpret_units` is one run of what :class:`~lightning_maia.callbacks.unit_interpreter.
UnitInterpreter` does at each scheduled point of a fit; ``lightning-maia audit``, the benchmarks
and users call it directly on a trained model::

    result = interpret_units(model, val_dataset, ["layer4:*"], strategy="top_active", max_units=4)
    result.reports          # one UnitReport per unit, in the order studied
    result.to_dataframe()   # the same as a table

The pieces are public too: :func:`choose_units` (which candidates to study) and
:class:`Interpreter` (an agent, its task and backends, run on chosen units of a model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lightning_maia._options import Backends, OnError
from lightning_maia.agents._agent_resolution import (
    ResolvedExperiments,
    resolve_agent,
    resolve_backends,
)
from lightning_maia.agents._records import UnitReport, reports_to_dataframe
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.errors import MaiaError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit, UnitSelection

log = logging.getLogger("lightning_maia")

STRATEGIES = ("top_active", "most_changed", "random")
#: How ``strategy=`` picks units (a ``Literal``, so LightningCLI lists the choices).
Strategy = Literal["top_active", "most_changed", "random"]
DESCRIBE_HINT = (
    "UnitInterpreter: the configured describer cannot describe these images, so only exemplars "
    "and activation statistics are logged. For descriptions of real images configure a "
    "captioner (CaptionDescriber), a CLIP vocabulary (ClipConceptScorer) or a VLM endpoint "
    "(VLMDescriber / VLMAgent)."
)


def check_strategy(strategy: Any, max_units: Any) -> None:
    """``strategy`` one of :data:`STRATEGIES` or None, ``max_units`` a positive integer."""
    if strategy is not None and strategy not in STRATEGIES:
        raise bad_option("strategy", ", ".join(STRATEGIES) + " or None", strategy)
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
        raise bad_option("max_units", "a positive integer", max_units)


@dataclass
class UnitRun:
    """One unit studied: the unit, the toolbox the agent worked with (its images), the report."""

    unit: Unit
    toolbox: Toolbox
    report: UnitReport


@dataclass
class Interpretation:
    """What one run found: a report per unit studied, with the evidence behind it."""

    #: The training epoch the run describes (0 outside a fit).
    epoch: int
    #: The exemplar pass the units were chosen from and studied with.
    exemplars: ExemplarResult
    #: One entry per unit studied, in the order studied.
    runs: list[UnitRun] = field(default_factory=list)

    @property
    def reports(self) -> list[UnitReport]:
        """The unit reports, in the order studied."""
        return [run.report for run in self.runs]

    def exemplar_indices(self) -> dict[str, list[int]]:
        """Each studied unit's exemplar dataset indices (what ``most_changed`` compares)."""
        return {
            run.unit.spec: self.exemplars.for_unit(run.unit).dataset_indices.tolist()
            for run in self.runs
        }

    def summary(self) -> dict[str, float]:
        """Counts of described, undescribed and failed units, and the mean score."""
        reports = self.reports
        scores = [r.score for r in reports if r.score is not None and np.isfinite(r.score)]
        figures = {
            "units_described": float(sum(r.ok for r in reports)),
            "units_undescribed": float(sum(r.status == "undescribed" for r in reports)),
            "units_failed": float(sum(r.failed_run for r in reports)),
        }
        if scores:
            figures["mean_score"] = float(np.mean(scores))
        return figures

    def to_dataframe(self) -> pd.DataFrame:
        """One row per report (``reports_to_dataframe``), with the epoch."""
        return reports_to_dataframe(self.reports).assign(epoch=self.epoch)


def choose_units(
    exemplars: ExemplarResult,
    strategy: Strategy | None = None,
    max_units: int = 8,
    *,
    seed: int = 0,
    epoch: int = 0,
    previous: Mapping[str, Sequence[int]] | None = None,
) -> list[Unit]:
    """Pick the units to study among ``exemplars.units``.

    ``top_active``: the highest mean activation on the data; ``most_changed``: the exemplar sets
    that changed most since ``previous`` (unit spec -> dataset indices; ``top_active`` when there
    is none); ``random``: seeded by ``seed`` and ``epoch``; None: every candidate.
    """
    check_strategy(strategy, max_units)
    candidates = exemplars.units
    if strategy is None:
        return candidates
    if strategy == "random":
        rng = np.random.default_rng([seed, epoch])
        picked = rng.choice(len(candidates), size=min(max_units, len(candidates)), replace=False)
        return [candidates[i] for i in sorted(picked)]
    scores = {u: exemplars.mean_activation(u) or 0.0 for u in candidates}
    if strategy == "most_changed" and previous:
        scores = {
            u: exemplar_change(previous.get(u.spec), exemplars.for_unit(u).dataset_indices.tolist())
            for u in candidates
        }
    return sorted(candidates, key=lambda u: (-scores[u], u))[:max_units]


def exemplar_change(previous: Sequence[int] | None, current: Sequence[int]) -> float:
    """1 - Jaccard overlap of two exemplar sets (1.0 when there was none before)."""
    if not previous:
        return 1.0
    a, b = set(previous), set(current)
    return 1.0 - len(a & b) / max(len(a | b), 1)


@dataclass
class Interpreter:
    """An agent, its task and backends, and how to run them on chosen units of a model."""

    #: Runs the task on a toolbox (``ScientistAgent``, ``VLMAgent``).
    agent: Agent
    #: The task, with the class names it may mention.
    task: TaskSpec
    #: Image backends; None: the toolbox's procedural ones.
    generator: ImageGenerator | None = None
    editor: ImageEditor | None = None
    describer: ImageDescriber | None = None
    #: Maps display images in [0, 1] to model inputs.
    preprocess: Callable[[Tensor], Tensor] | None = None
    #: Names of the output classes (for ``output:NAME`` specs).
    class_names: list[str] | None = None
    #: Seeds the toolbox (plus the epoch, so each run draws afresh).
    seed: int = 0
    #: ``warn``: a failing agent fails its unit's report; ``raise``: the error propagates.
    on_error: OnError = "warn"
    #: A progress bar over units.
    progress: bool = True
    #: Units studied at once by a remote agent (:class:`VLMAgent`).
    concurrency: int = 4

    def interpret(
        self, model: nn.Module, exemplars: ExemplarResult, units: Sequence[Unit], epoch: int = 0
    ) -> Interpretation:
        """Study ``units`` of ``model`` (exemplars from ``exemplars``); one report per unit."""
        subject = Subject(
            model, [u.spec for u in units], preprocess=self.preprocess, class_names=self.class_names
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
        if remote and all(self.can_describe(toolbox) for toolbox in toolboxes):
            reports = self._run_concurrently(toolboxes)
        else:
            bar = tqdm(
                toolboxes,
                desc=f"interpreting units (epoch {epoch})",
                leave=False,
                disable=not self.progress,
            )
            reports = [self._report(toolbox, exemplars) for toolbox in bar]
        runs = [UnitRun(t.unit, t, r) for t, r in zip(toolboxes, reports, strict=True)]
        return Interpretation(epoch, exemplars, runs)

    def can_describe(self, toolbox: Toolbox) -> bool:
        """Whether the toolbox's describer can read the unit's exemplar images."""
        check = getattr(toolbox.describer, "can_describe", None)
        if check is None:
            return True
        exemplars = toolbox.dataset_exemplars()
        return bool(exemplars) and bool(check(toolbox.images.get(exemplars[0].id).item()))

    def _report(self, toolbox: Toolbox, exemplars: ExemplarResult) -> UnitReport:
        unit = toolbox.unit
        if not self.can_describe(toolbox):
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


def build_interpreter(
    data: Dataset[Any] | None,
    *,
    backends: Backends | None = None,
    task: str = "describe_unit",
    class_names: Sequence[str] | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    on_error: OnError = "warn",
    progress: bool = True,
    concurrency: int = 4,
) -> Interpreter:
    """The :class:`Interpreter` ``backends`` describe, for ``data``: the agent by name or object,
    and the designer's backends resolved (and checked) against the data."""
    backends = backends or Backends()
    agent = resolve_agent(backends.agent, seed)
    names = list(class_names) if class_names is not None else None
    interpreter = Interpreter(
        agent, TaskSpec(task, class_names=tuple(names or ())),
        backends.generator, backends.editor, backends.describer, preprocess, names,
        seed, on_error, progress, concurrency,
    )  # fmt: skip
    resolved = resolve_interpreter_backends(backends, data, class_names=names, seed=seed)
    if resolved is not None:
        resolved.install(interpreter)
    return interpreter


def resolve_interpreter_backends(
    backends: Backends | None,
    data: Dataset[Any] | None,
    *,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> ResolvedExperiments | None:
    """The agent and backends a ``designer`` in ``backends`` asks for on ``data``, checked they
    can run (:func:`~lightning_maia.agents._agent_resolution.resolve_backends`); None without a
    designer, where the agent and backends serve as given. Raises ConfigurationError naming
    what to configure (as ``UnitInterpreter``). With ``data`` None the result may be unsettled
    (``settled`` False): resolve again once the data is known."""
    given = backends or Backends()
    if given.designer is None:
        return None
    names = list(class_names) if class_names is not None else None
    return resolve_backends(given, "UnitInterpreter", dataset=data, class_names=names, seed=seed)


def interpret_units(
    model: nn.Module,
    data: Dataset[Any] | DataLoader[Any],
    units: Sequence[str] | Sequence[UnitSelection],
    *,
    strategy: Strategy | None = None,
    max_units: int = 8,
    k: int = 15,
    class_names: Sequence[str] | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    backends: Backends | None = None,
    task: str = "describe_unit",
    seed: int = 0,
    epoch: int = 0,
    previous: Mapping[str, Sequence[int]] | None = None,
    on_error: OnError = "warn",
    progress: bool = True,
    concurrency: int = 4,
) -> Interpretation:
    """Describe units of ``model``: an exemplar pass over ``data``, a choice of units, the agent.

    Args:
        model: any ``nn.Module`` (run in eval mode, restored after).
        data: a map-style dataset (or a DataLoader over one) the exemplars come from.
        units: unit specs (``"layer4:0-9"``); with a ``strategy`` they are the candidates.
        strategy, max_units: how many and which candidates to study (:func:`choose_units`).
        k: exemplars per unit.
        class_names: names of the output classes (for ``output:NAME`` specs and the task).
        preprocess: maps display images in [0, 1] to model inputs (e.g. normalisation).
        backends: the agent and image backends (the offline scientist by default).
        task: the agent's task.
        seed: seeds the agent's and the strategy's choices.
        epoch: the epoch the run describes (seeds ``random`` and the toolbox with ``seed``).
        previous: unit spec -> exemplar indices of an earlier run (for ``most_changed``).
        on_error: ``warn`` (a failing agent fails its unit's report) or ``raise``.
        progress: progress bars over the exemplar pass and the units.
        concurrency: units studied at once by a remote agent.
    """
    check_strategy(strategy, max_units)
    dataset = data.dataset if isinstance(data, DataLoader) else data
    interpreter = build_interpreter(
        dataset, backends=backends, task=task, class_names=class_names, preprocess=preprocess,
        seed=seed, on_error=on_error, progress=progress, concurrency=concurrency,
    )  # fmt: skip
    exemplars = compute_exemplars(
        model, data, units, k=k, class_names=class_names, progress=progress, preprocess=preprocess
    )
    chosen = choose_units(exemplars, strategy, max_units, seed=seed, epoch=epoch, previous=previous)
    result = interpreter.interpret(model, exemplars, chosen, epoch)
    if any(r.status == "undescribed" for r in result.reports):
        rank_zero_warn(DESCRIBE_HINT)
    return result


__all__ = [
    "DESCRIBE_HINT",
    "STRATEGIES",
    "Interpretation",
    "Interpreter",
    "Strategy",
    "UnitRun",
    "build_interpreter",
    "choose_units",
    "exemplar_change",
    "interpret_units",
    "resolve_interpreter_backends",
]
