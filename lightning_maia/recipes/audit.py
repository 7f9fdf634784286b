"""Audit a trained model after training: interpret units, check spurious features, flag likely
misclassifications — and gate CI on the findings.

``run_audit`` writes, under ``out``: ``results.json`` and ``images/`` (re-render with
``lightning-maia report``), ``reports.csv``, ``report.html``, ``figures.json`` and ``checks.xml``
(JUnit: one test case per task and per ``--fail-on`` condition). Its exit code is 0 when every
check passed, 1 when one failed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.analysis.gates import evaluate_gates, parse_gate
from lightning_maia.callbacks.unit_interpreter import Strategy, UnitInterpreter
from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.recipes.audit_tasks import flagging_task, spurious_task
from lightning_maia.recipes.loading import import_class, load_model, validation_loader
from lightning_maia.reporting.html_report import UnitSection, write_report
from lightning_maia.reporting.junit import CheckResult, write_junit
from lightning_maia.reporting.results_store import load_results, save_results
from lightning_maia.tools.backends.base import ImageEditor, ImageGenerator
from lightning_maia.tools.backends.vlm import VLMClient

TASKS = ("interpret", "spurious", "flagging")
AGENTS = ("scientist", "vlm", "vlm-code")


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
    tasks: list[str] = field(default_factory=lambda: ["interpret"])
    agent: str = "scientist"
    vlm_model: str | None = None
    vlm_base_url: str | None = None
    generator_pipeline: str | None = None
    editor_pipeline: str | None = None
    class_names: list[str] | None = None
    strategy: Strategy | None = None
    max_units: int = 8
    k: int = 15
    seed: int = 0
    out: Path = Path("maia_audit")
    fail_on: list[str] = field(default_factory=list)
    baseline: Path | None = None
    spurious_attributes: list[str] = field(default_factory=lambda: ["background"])

    def check(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise bad_option("--tasks", ", ".join(TASKS), ",".join(self.tasks))
        if self.agent not in AGENTS:
            raise bad_option("--agent", ", ".join(AGENTS), self.agent)
        for condition in self.fail_on:
            parse_gate(condition)  # malformed conditions are usage errors, before any work
        if self.baseline is not None and not self.baseline.exists():
            raise ConfigurationError(f"`--baseline`: no such results {str(self.baseline)!r}")


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


def make_backends(options: AuditOptions) -> tuple[ImageGenerator | None, ImageEditor | None]:
    generator: ImageGenerator | None = None
    editor: ImageEditor | None = None
    if options.generator_pipeline is not None:
        from lightning_maia.tools.backends.diffusers_backend import DiffusersGenerator

        generator = DiffusersGenerator(options.generator_pipeline)
    if options.editor_pipeline is not None:
        from lightning_maia.tools.backends.diffusers_backend import DiffusersEditor

        editor = DiffusersEditor(options.editor_pipeline)
    return generator, editor


def _validate_with(
    model: pl.LightningModule, loader: DataLoader[Any], callbacks: list[Callback], out: Path
) -> pl.Trainer:
    trainer = pl.Trainer(
        default_root_dir=out,
        logger=CSVLogger(out, name="logs"),
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        limit_val_batches=1,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.validate(model, dataloaders=loader, verbose=False)
    return trainer


def _label_drift(baseline: Path, sections: list[UnitSection]) -> float:
    previous, _ = load_results(baseline)
    labels = {s.report.unit: s.report.label for s in previous}
    return float(
        sum(
            1
            for s in sections
            if s.report.unit in labels and labels[s.report.unit] != s.report.label
        )
    )


def run_audit(options: AuditOptions) -> AuditOutcome:
    """Run the audit; usage errors raise ConfigurationError (exit code 2 in the command)."""
    options.check()
    started = time.perf_counter()
    model, datamodule = load_model(options.model, options.ckpt, options.config, options.seed)
    if datamodule is None and options.datamodule is not None and options.image_folder is None:
        datamodule = import_class(options.datamodule, "--datamodule")()
    loader = validation_loader(datamodule, None, options.image_folder, options.image_size)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}
    checks: list[CheckResult] = []
    sections: list[UnitSection] = []
    if "interpret" in options.tasks:
        tic = time.perf_counter()
        generator, editor = make_backends(options)
        interpreter = UnitInterpreter(
            units=options.units,
            strategy=options.strategy,
            max_units=options.max_units,
            agent=make_agent(options),
            dataset=loader.dataset,
            k=options.k,
            class_names=options.class_names,
            generator=generator,
            editor=editor,
            output_dir=str(out / "interpret"),
            seed=options.seed,
        )
        _validate_with(model, loader, [interpreter], out)
        sections = interpreter.sections
        figures["units_described"] = float(sum(r.ok for r in interpreter.reports))
        figures["units_failed"] = float(sum(not r.ok for r in interpreter.reports))
        if options.baseline is not None:
            figures["label_drift"] = _label_drift(options.baseline, sections)
        checks.append(
            CheckResult(
                "interpret",
                figures["units_failed"] == 0,
                f"{int(figures['units_described'])} units described, "
                f"{int(figures['units_failed'])} failed",
                time.perf_counter() - tic,
            )
        )
    state: dict[str, Any] = {}
    for task, run in (("spurious", spurious_task), ("flagging", flagging_task)):
        if task in options.tasks:
            tic = time.perf_counter()
            found = run(options, model, loader, datamodule, state)
            figures.update(found)
            summary = ", ".join(f"{k}={v:.3g}" for k, v in sorted(found.items()))
            checks.append(CheckResult(task, True, summary, time.perf_counter() - tic))
    checks.extend(evaluate_gates(options.fail_on, figures))
    meta = {
        "model": type(model).__name__,
        "agent": options.agent,
        "tasks": ",".join(options.tasks),
        "checkpoint": str(options.ckpt or ""),
    }
    save_results(out, sections, meta)
    write_report(out / "report.html", sections, title="lightning-maia audit", meta=meta)
    figures["seconds"] = time.perf_counter() - started
    partial = out / "figures.json.partial"
    partial.write_text(json.dumps(figures, indent=2) + "\n")
    os.replace(partial, out / "figures.json")
    write_junit(out / "checks.xml", "lightning-maia audit", checks)
    return AuditOutcome(figures, checks, out)
