"""Audit a trained model after training: interpret units, check spurious features, flag likely
misclassifications — and gate CI on the findings.

``run_audit`` writes, under ``out``: ``results.json`` and ``images/`` (re-render with
``lightning-maia report``), ``reports.csv``, ``report.html``, ``figures.json`` and ``checks.xml``
(JUnit: one test case per task and per ``--fail-on`` condition). Its exit code is 0 when every
check passed, 1 when one failed.

Everything that can be checked without the model runs first (:meth:`AuditOptions.check`): the
tasks, the agent, the backends, every ``--fail-on`` condition and the figure it names, the files;
then the model, the data and the unit specs, before any exemplar pass. The ``interpret`` check
fails when no unit got a real description (a placeholder for an undescribed unit is no
description), and ``label_drift`` compares real descriptions only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_maia._atomic import write_text_atomically
from lightning_maia._options import Backends
from lightning_maia.agents._records import UnitReport
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import (
    DESIGNERS,
    check_experiment_setup,
    experiment_setup,
)
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.analysis._gates import evaluate_gates, parse_gate
from lightning_maia.analysis._interpretation import Strategy, interpret_units
from lightning_maia.errors import ConfigurationError, bad_option, closest_names
from lightning_maia.image_folder import ImageFolder
from lightning_maia.recipes._audit_tasks import (
    TASK_FIGURES,
    AuditData,
    flagging_task,
    spurious_task,
)
from lightning_maia.recipes._backend_registry import (
    BackendContext,
    build_backend,
    check_backend_spec,
)
from lightning_maia.recipes._loading import (
    import_class,
    load_model,
    load_preprocess,
    validation_loader,
)
from lightning_maia.reporting._audit_sections import AuditFindings, flagged_inputs
from lightning_maia.reporting._html_report import UnitSection, sections_from_toolbox, write_report
from lightning_maia.reporting._junit import CheckResult, write_junit
from lightning_maia.reporting._results_store import load_results, save_results
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.units import resolve_units

TASKS = ("interpret", "spurious", "flagging")
AGENTS = ("scientist", "vlm", "vlm-code")
#: Flagged inputs shown in the report.
FLAGGED_SHOWN = 24


@dataclass
class AuditOptions:
    """What to audit and how (the ``lightning-maia audit`` options)."""

    units: list[str]
    model: str | None = None
    ckpt: Path | None = None
    config: Path | None = None
    datamodule: str | None = None
    image_folder: Path | None = None
    image_size: int = 224
    #: A CSV of the image folder's attributes: a ``file`` column and one column per attribute.
    attributes: Path | None = None
    #: How the offline agent designs experiments: one of ``DESIGNERS`` (None: from the data).
    designer: str | None = None
    #: ``none``, ``imagenet[:SIZE]`` or a function path: display images in [0, 1] -> model input.
    preprocess: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["interpret"])
    agent: str = "scientist"
    vlm_model: str | None = None
    vlm_base_url: str | None = None
    #: Backend specs: ``NAME`` or ``NAME:ARG`` (see ``recipes/_backend_registry.py``).
    describer: str | None = None
    generator: str | None = None
    editor: str | None = None
    vocabulary: list[str] = field(default_factory=list)
    generator_pipeline: str | None = None
    editor_pipeline: str | None = None
    class_names: list[str] | None = None
    strategy: Strategy | None = None
    max_units: int = 8
    k: int = 15
    #: Share of an image folder held out when the ``spurious`` task needs a split.
    val_fraction: float = 0.25
    seed: int = 0
    out: Path = Path("maia_audit")
    fail_on: list[str] = field(default_factory=list)
    baseline: Path | None = None
    spurious_attributes: list[str] = field(default_factory=lambda: ["background"])

    def __post_init__(self) -> None:
        # The older pipeline options are the diffusers backends by another name.
        if self.generator_pipeline is not None and self.generator is None:
            self.generator = f"diffusers:{self.generator_pipeline}"
        if self.editor_pipeline is not None and self.editor is None:
            self.editor = f"diffusers:{self.editor_pipeline}"

    @property
    def backend_context(self) -> BackendContext:
        return BackendContext(tuple(self.vocabulary), self.vlm_model, self.vlm_base_url)

    def known_figures(self) -> list[str]:
        """Every figure this audit can report: what ``--fail-on`` may name."""
        names = [name for task in self.tasks for name in TASK_FIGURES.get(task, ())]
        if "interpret" in self.tasks and self.baseline is not None:
            names += ["label_drift", "label_drift_compared"]
        return list(dict.fromkeys(names))

    def check(self) -> None:
        """Every usage error that needs no model or data, before any work."""
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise bad_option("--tasks", ", ".join(TASKS), ",".join(self.tasks))
        if self.agent not in AGENTS:
            raise bad_option("--agent", ", ".join(AGENTS), self.agent)
        if not self.units:
            raise bad_option("--units", "unit specs such as 'layer4:0-9'", self.units)
        for name, value in (
            ("--max-units", self.max_units),
            ("--k", self.k),
            ("--image-size", self.image_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if not 0.0 < self.val_fraction < 1.0:
            raise bad_option("--val-fraction", "a number in (0, 1)", self.val_fraction)
        if self.designer is not None and self.designer not in DESIGNERS:
            raise bad_option("--designer", ", ".join(DESIGNERS), self.designer)
        if self.attributes is not None and self.image_folder is None:
            raise ConfigurationError("`--attributes` describes an `--image-folder`: give both")
        context = self.backend_context
        for role in ("describer", "generator", "editor"):
            spec = getattr(self, role)
            if spec is not None:
                check_backend_spec(role, spec, context)
        known = self.known_figures()
        for condition in self.fail_on:
            gate = parse_gate(condition)  # malformed conditions are usage errors, before any work
            if gate.metric not in known:
                hint = (
                    " (label_drift needs `--baseline` and the interpret task)"
                    if gate.metric == "label_drift"
                    else ""
                )
                raise ConfigurationError(
                    f"`--fail-on` {condition!r} names an unknown figure {gate.metric!r}{hint}; "
                    f"the tasks {','.join(self.tasks)} report: {closest_names(gate.metric, known)}"
                )
        for name, path in (
            ("--ckpt", self.ckpt),
            ("--config", self.config),
            ("--image-folder", self.image_folder),
            ("--attributes", self.attributes),
        ):
            if path is not None and not path.exists():
                raise ConfigurationError(f"`{name}`: no such file or folder {str(path)!r}")
        if self.baseline is not None and not self.baseline.exists():
            raise ConfigurationError(f"`--baseline`: no such results {str(self.baseline)!r}")
        data = (self.image_folder, self.datamodule, self.config)
        if "spurious" in self.tasks and all(source is None for source in data):
            raise ConfigurationError(
                "the `spurious` task refits the head on training data: give `--image-folder` "
                "(split by `--val-fraction`), `--datamodule` or a `--config` with data"
            )
        load_preprocess(self.preprocess)  # an unknown preprocess fails here too


@dataclass
class AuditOutcome:
    """What the audit found and where it wrote it."""

    figures: dict[str, float]
    checks: list[CheckResult]
    out: Path

    @property
    def exit_code(self) -> int:
        return 0 if all(check.passed for check in self.checks) else 1


def make_agent(options: AuditOptions) -> ScientistAgent | VLMAgent:
    if options.agent == "scientist":
        return ScientistAgent(seed=options.seed)
    client = VLMClient(model=options.vlm_model, base_url=options.vlm_base_url)
    return VLMAgent(client, mode="code" if options.agent == "vlm-code" else "tools")


def _label_drift(baseline: Path, sections: list[UnitSection]) -> tuple[int, int]:
    """How many units have a real description in both runs, and how many of those changed
    since ``baseline``; placeholders of undescribed or failed runs are never compared."""
    previous, _ = load_results(baseline)
    labels = {s.report.unit: s.report.label for s in previous if s.report.ok}
    compared = [s for s in sections if s.report.ok and s.report.unit in labels]
    return len(compared), sum(labels[s.report.unit] != s.report.label for s in compared)


def _data(options: AuditOptions, datamodule: Any) -> AuditData:
    """The interpreted data and, for the spurious task, train and held-out parts."""
    if datamodule is None and options.datamodule is not None and options.image_folder is None:
        datamodule = import_class(options.datamodule, "--datamodule")()
    loader = validation_loader(
        datamodule, None, options.image_folder, options.image_size, attributes=options.attributes
    )
    if "spurious" not in options.tasks:
        return AuditData(loader)
    if options.image_folder is not None:
        folder = loader.dataset
        assert isinstance(folder, ImageFolder)
        if folder.class_names == []:
            raise ConfigurationError(
                "the `spurious` task needs labels: give `--image-folder` class subfolders"
            )
        train, held_out = folder.split(options.val_fraction, options.seed)
        return AuditData(loader, train, held_out)
    if datamodule is None or not hasattr(datamodule, "train_dataloader"):
        raise ConfigurationError(
            "the `spurious` task refits the head on training data: give `--image-folder`, "
            "`--datamodule` or a `--config` whose data has a train_dataloader"
        )
    datamodule.setup("fit")
    return AuditData(loader, datamodule.train_dataloader().dataset)


def _check_experiments(
    options: AuditOptions, data: AuditData, class_names: list[str] | None, state: dict[str, Any]
) -> None:
    """The offline agent must be able to design the spurious and flagging tasks' experiments
    on this data; checked before any pass, so a folder of photos without attribute columns fails
    at once with the options that would make it run."""
    if options.agent != "scientist" or not {"spurious", "flagging"} & set(options.tasks):
        return
    if options.designer is None and state["generator"] is not None:
        return  # the generator draws what the agent asks for
    try:
        setup = experiment_setup(
            options.designer or "auto",
            dataset=data.train if data.train is not None else data.loader.dataset,
            class_names=class_names,
            generator=state["generator"],
            editor=state["editor"],
            describer=state["describer"],
        )
        check_experiment_setup(
            setup,
            class_names=class_names or [],
            candidate_attributes=options.spurious_attributes,
            owner="the spurious and flagging tasks",
        )
    except ConfigurationError as error:
        raise ConfigurationError(
            f"{error}. In `audit`: give the images' attributes with `--attributes CSV` (a `file` "
            "column and one column per attribute, `--spurious-attributes` among them) and "
            "`--designer retrieval`, a `--generator`, or `--agent vlm`"
        ) from None


def _interpret_check(
    figures: dict[str, float], reports: list[UnitReport], seconds: float
) -> CheckResult:
    described, failed = int(figures["units_described"]), int(figures["units_failed"])
    undescribed = int(figures["units_undescribed"])
    message = f"{described} units described, {undescribed} undescribed, {failed} failed"
    reasons = [r.failure_reason for r in reports if r.failed_run and r.failure_reason]
    if reasons:
        message += f"; first failure: {reasons[0]}"
    if undescribed and not described:
        message += (
            "; no unit was described: give a describer that can read these images "
            "(`--describer caption:DIR`, `clip:DIR` with `--vocabulary`, or `vlm`)"
        )
    return CheckResult("interpret", described > 0 and failed == 0, message, seconds)


def run_audit(options: AuditOptions) -> AuditOutcome:
    """Run the audit; usage errors raise ConfigurationError (exit code 2 in the command)."""
    options.check()
    started = time.perf_counter()
    model, datamodule = load_model(options.model, options.ckpt, options.config, options.seed)
    data = _data(options, datamodule)
    class_names = (
        options.class_names
        or list(getattr(data.loader.dataset, "class_names", None) or [])
        or list(getattr(model, "class_names", None) or [])
        or None
    )
    resolve_units(model, options.units, class_names)  # bad specs fail before any pass
    context = options.backend_context
    state: dict[str, Any] = {
        "class_names": class_names,
        "preprocess": load_preprocess(options.preprocess),
        "describer": build_backend("describer", options.describer, context),
        "generator": build_backend("generator", options.generator, context),
        "editor": build_backend("editor", options.editor, context),
        "agent": make_agent(options),
    }
    _check_experiments(options, data, class_names, state)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}
    checks: list[CheckResult] = []
    sections: list[UnitSection] = []
    if "interpret" in options.tasks:
        tic = time.perf_counter()
        interpreted = interpret_units(
            model,
            data.loader.dataset,
            options.units,
            strategy=options.strategy,
            max_units=options.max_units,
            k=options.k,
            class_names=class_names,
            preprocess=state["preprocess"],
            backends=Backends(
                agent=state["agent"],
                designer=options.designer,
                generator=state["generator"],
                editor=state["editor"],
                describer=state["describer"],
            ),
            seed=options.seed,
        )
        sections = [sections_from_toolbox(run.report, run.toolbox) for run in interpreted.runs]
        write_report(out / "interpret" / "report.html", sections, title="lightning-maia audit")
        reports = interpreted.reports
        figures["units_described"] = float(sum(r.ok for r in reports))
        figures["units_undescribed"] = float(sum(r.status == "undescribed" for r in reports))
        figures["units_failed"] = float(sum(r.failed_run for r in reports))
        scores = [r.score for r in reports if r.ok and r.score is not None]
        if scores and all(math.isfinite(s) for s in scores):
            figures["mean_score"] = float(sum(scores) / len(scores))
        if options.baseline is not None:
            compared, changed = _label_drift(options.baseline, sections)
            figures["label_drift_compared"] = float(compared)
            if compared:  # with nothing to compare, a drift gate fails as "not reported"
                figures["label_drift"] = float(changed)
        checks.append(_interpret_check(figures, reports, time.perf_counter() - tic))
    for task, run in (("spurious", spurious_task), ("flagging", flagging_task)):
        if task in options.tasks:
            tic = time.perf_counter()
            found, problem = run(options, model, data, state)
            figures.update(found)
            summary = ", ".join(f"{k}={v:.3g}" for k, v in sorted(found.items()))
            if problem:
                summary = f"{problem}; {summary}"
            checks.append(CheckResult(task, not problem, summary, time.perf_counter() - tic))
    checks.extend(evaluate_gates(options.fail_on, figures, options.known_figures()))
    meta = {
        "model": type(getattr(model, "audited", model)).__name__,
        "agent": options.agent,
        "tasks": ",".join(options.tasks),
        "checkpoint": str(options.ckpt or ""),
        "describer": options.describer or "procedural",
        "designer": options.designer or "auto",
        "preprocess": options.preprocess or "none",
    }
    findings = AuditFindings(checks=checks, figures=dict(figures))
    if "flagging" in state:
        result, dataset = state["flagging"]
        findings.flagged, findings.flagged_total = flagged_inputs(
            result.table, dataset, FLAGGED_SHOWN
        )
        findings.scored_total = len(result.table)
    save_results(out, sections, meta, audit=findings)
    write_report(
        out / "report.html", sections, title="lightning-maia audit", meta=meta, audit=findings
    )
    figures["seconds"] = time.perf_counter() - started
    write_text_atomically(out / "figures.json", json.dumps(figures, indent=2) + "\n")
    write_junit(out / "checks.xml", "lightning-maia audit", checks)
    return AuditOutcome(figures, checks, out)
