"""The end-to-end demo (``lightning-maia demo``, ``make demo``), in the spurious benchmark's
setting on this machine's CPU.

A backbone pretrained on group-balanced procedural images (cached after its first run) stays
frozen; a fresh linear head is trained with Lightning on ``SpuriousShapes``, where each shape
sits on its own background 95% of the time — so the head leans on the background. All three
callbacks are attached: the :class:`UnitInterpreter` describes penultimate units, the
:class:`SpuriousFeatureRemover` finds units that carry the background and refits the head
without them, and the :class:`MisclassificationFlagger` scores every test input for its risk
of being misclassified. The demo prints a summary and leaves the logs and HTML reports in
``out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_maia._options import Output
from lightning_maia.analysis._spurious_options import SearchBudget
from lightning_maia.callbacks.misclassification_flagger import MisclassificationFlagger
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import Exemplars, Schedule, UnitInterpreter
from lightning_maia.recipes.shapes_backbone import (
    CLASSIFIER_FEATURE_LAYER,
    BackboneConfig,
    load_backbone,
    spurious_splits,
    train_erm_classifier,
)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo runs; ``quick`` is the size CI runs."""

    train: int = 2000
    val: int = 400
    test: int = 800
    holdout: int = 800
    epochs: int = 4
    units_described: int = 4
    units_judged: int = 24


FULL = DemoSize()
QUICK = DemoSize(
    train=960, val=160, test=320, holdout=320, epochs=4, units_described=2, units_judged=8
)


def _accuracy(model: torch.nn.Module, dataset: Any) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=256)
    correct = total = 0
    model.eval()
    with torch.inference_mode():
        for images, labels in loader:
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / max(total, 1)


def run_demo(
    out: str | Path = "maia_demo",
    *,
    quick: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    backbone: BackboneConfig | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the summary it prints. ``backbone`` overrides the pretraining
    setup (tests use a smaller one)."""
    started = time.perf_counter()
    out = Path(out)
    size = QUICK if quick else FULL
    pretrained = load_backbone(
        seed, backbone or BackboneConfig(), cache_dir=cache_dir, progress=progress
    )
    splits = spurious_splits(
        seed, train=size.train, val=size.val, test=size.test, holdout=size.holdout
    )
    class_names = list(splits["train"].class_names)
    units = [f"{CLASSIFIER_FEATURE_LAYER}:*"]
    interpreter = UnitInterpreter(
        units=units,
        strategy="top_active",
        max_units=size.units_described,
        schedule=Schedule(when="fit_end"),
        exemplars=Exemplars(dataset=splits["val"], class_names=class_names),
        output=Output(output_dir=str(out / "interpret"), progress=progress),
        seed=seed,
    )
    remover = SpuriousFeatureRemover(
        class_names=class_names,
        candidate_attributes=("background",),
        dataset=splits["train"],
        val_dataset=splits["test"],
        budget=SearchBudget(k=size.units_judged),
        output=Output(output_dir=str(out / "spurious"), progress=progress),
        seed=seed,
    )
    flagger = MisclassificationFlagger(
        when="fit_end",
        class_names=class_names,
        dataset=splits["test"],
        calibration_data=splits["holdout"],
        candidate_attributes=("background",),
        seed=seed,
        output=Output(output_dir=str(out / "flagging")),
    )
    # The flagger reads the remover's verdicts, so the remover comes first.
    model = train_erm_classifier(
        pretrained,
        splits["train"],
        val_data=splits["val"],
        class_names=class_names,
        epochs=size.epochs,
        seed=seed,
        root_dir=out,
        progress=progress,
        callbacks=[interpreter, remover, flagger],
        logger=CSVLogger(out, name="logs"),
    )
    after = _accuracy(model, splits["test"])
    history = remover.history[-1] if remover.history else {}
    flagged = flagger.result.summary() if flagger.result is not None else {}
    summary: dict[str, Any] = {
        "units_described": {r.unit: r.label for r in interpreter.reports},
        "units_spurious": history.get("units_spurious"),
        "units_core": history.get("units_core"),
        "test_accuracy_after": after,
        "spurious_figures": {
            k: v for k, v in history.items() if isinstance(v, (int, float, str)) and k != "epoch"
        },
        "flagging": flagged,
        # The report.html files themselves, as the callbacks wrote them.
        "reports": {
            name: str(callback.report_path)
            for name, callback in (
                ("interpret", interpreter),
                ("spurious", remover),
                ("flagging", flagger),
            )
            if callback.report_path is not None
        },
        "seconds": time.perf_counter() - started,
    }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The short summary the command prints."""
    print("\nlightning-maia demo")
    print("  units described:")
    for unit, label in summary["units_described"].items():
        print(f"    {unit:<22} {label}")
    figures = summary["spurious_figures"]
    print(
        f"  spurious units: {summary['units_spurious']} judged spurious, "
        f"{summary['units_core']} core"
    )
    for key in sorted(k for k in figures if "accuracy" in k):
        print(f"    {key:<34} {figures[key]:.3f}")
    print(f"  test accuracy with the refitted head: {summary['test_accuracy_after']:.3f}")
    flagging = summary["flagging"]
    if flagging:
        print(
            f"  flagged rate {flagging.get('flagged_rate', float('nan')):.3f}, "
            f"subgroups found {int(flagging.get('subgroups_found', 0))}"
        )
        for key in sorted(k for k in flagging if k.startswith("auroc_")):
            print(f"    {key:<34} {flagging[key]:.3f}")
    for name, path in summary["reports"].items():
        print(f"  {name} report: {path}")
    print(f"  {summary['seconds']:.0f} s")
