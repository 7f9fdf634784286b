"""``lightning-maia bench overhead``: what UnitInterpreter costs a Lightning fit.

Fits of the same small CNN on ShapesWorld, in one run: without the callback; with it in
background mode against a stub VLM on 127.0.0.1 that answers each request after 1 s (those two
interleaved, ``repeats`` times, so a slow spell on a shared machine hits both alike); and once
with it describing 8 units every epoch synchronously (ScientistAgent).

A background fit counts only when the stub answered: every fit's request count is recorded
and the ratio is None (with ``problem`` saying why) when a fit never reached the stub. The JSON
says what the machine was doing (load averages before and after, cores, torch threads) and
splits each background fit into training (to ``on_fit_end``) and the wait at teardown for the
study still in flight, and times that last study (``background_last_study_s``: the last
validation end where it is submitted, its first and last stub requests, its report on disk).
``background_floor_ratio`` is the least ratio a fit that waits for that study could reach: the
last validation end plus one stub round trip, over the plain fit.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader

from lightning_maia._options import Backends, Output
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks._background import probed_modules
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.evaluation_constants import OVERHEAD_STUB_DELAY_S, OVERHEAD_UNITS
from lightning_maia.testing._chat_server import ChatServer, tool_call_reply
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.world import ShapesWorld

TABLE_KEYS = ("ratio_sync", "seconds_per_unit_sync", "ratio_background_stub_vlm")
#: Units interpreted every epoch, and the stub VLM's delay per call (the issue's setting).
UNITS = OVERHEAD_UNITS
STUB_DELAY_S = OVERHEAD_STUB_DELAY_S
#: How long each fit's stub VLM may live (a fit on a loaded machine can take minutes).
STUB_LIFETIME_S = 3600.0
PROBED_LAYER = "features.4"


class ShapesCNN(pl.LightningModule):
    """A small CNN that classifies ShapesWorld shapes; ``features.4`` has 64 channels."""

    def __init__(self, classes: int = 9) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _Clock(Callback):
    """When the last validation ended (the last study is submitted right after) and when
    ``on_fit_end`` ran: training is over, teardown (and its waits) still to come. Monotonic
    seconds, the clock the stub VLM stamps its requests with."""

    validation_end: float = float("nan")
    fit_end: float = float("nan")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_end = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_end = time.monotonic()


def _fit(
    callbacks: list[Callback], epochs: int, train: int, val: int, seed: int
) -> dict[str, float]:
    """Seconds of one fit: ``total`` (``trainer.fit`` returned), ``training`` (to fit end) and
    ``last_validation`` (to the end of the last validation); monotonic ``clock`` marks."""
    pl.seed_everything(seed, verbose=False)
    clock = _Clock()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        callbacks=[clock, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    train_loader = DataLoader(ShapesWorld(size=train, seed=seed), batch_size=32, shuffle=True)
    val_loader = DataLoader(ShapesWorld(size=val, seed=seed + 1, split="val"), batch_size=64)
    tic = time.monotonic()
    trainer.fit(ShapesCNN(), train_loader, val_loader)
    done = time.monotonic()
    return {
        "total": done - tic,
        "training": clock.fit_end - tic,
        "last_validation": clock.validation_end - tic,
        "started_clock": tic,
        "wall_minus_clock": time.time() - time.monotonic(),
    }


def _last_study(
    fit: dict[str, float], requests: list[float], report: Path, units: int
) -> dict[str, float | None]:
    """Where the last epoch's study spends its time, in seconds from the fit's start: the
    last validation end (the study is submitted), its first and last requests to the stub
    (``units`` of them, the last ones received), its report on disk, ``trainer.fit`` returned."""
    last = sorted(requests)[-units:]
    start = fit["started_clock"]
    written = report.stat().st_mtime - fit["wall_minus_clock"] - start if report.exists() else None
    return {
        "last_validation_end_s": fit["last_validation"],
        "fit_end_s": fit["training"],
        "first_request_s": last[0] - start if last else None,
        "last_request_s": last[-1] - start if last else None,
        "last_report_written_s": written,
        "fit_returned_s": fit["total"],
    }


def _snapshot_share() -> dict[str, int]:
    """Parameters of ShapesCNN a background snapshot copies (the probed sub-network)."""
    model = ShapesCNN()
    needed = probed_modules(model, [PROBED_LAYER], torch.zeros(1, 3, 64, 64))
    copied = sum(
        p.numel() for name in needed for p in model.get_submodule(name).parameters(recurse=False)
    )
    return {
        "snapshot_parameters": copied,
        "model_parameters": sum(p.numel() for p in model.parameters()),
    }


def _median_of(rows: list[dict[str, float | None]], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return statistics.median(values) if values else None  # type: ignore[type-var]


def _say(line: str) -> None:
    print(f"bench overhead: {line}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    return {
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    machine_before = _machine()
    epochs, train, val = (2, 640, 128) if quick else (3, 2048, 256)
    units = [f"{PROBED_LAYER}:*"]
    repeats = 1 if quick else 3
    reply = tool_call_reply(
        "final_answer", {"label": "stub", "description": "a stub answer"}
    ).delayed(STUB_DELAY_S)
    baselines: list[dict[str, float]] = []
    backgrounds: list[dict[str, float]] = []
    requests: list[int] = []
    statuses: list[dict[str, int]] = []
    failures: list[str] = []
    last_studies: list[dict[str, float | None]] = []
    # Interleaved repeats, so a slow spell on a shared machine hits both alike.
    for _ in range(repeats):
        baselines.append(_fit([], epochs, train, val, seed))
        # A stub per fit, alive as long as the fit may take (a loaded machine outlived the
        # default 120 s lifetime of one shared stub: every request was refused).
        with (
            ChatServer(lambda request: reply, max_lifetime_s=STUB_LIFETIME_S) as server,
            tempfile.TemporaryDirectory(prefix="maia-bench-overhead-") as reports,
        ):
            client = VLMClient(
                model="stub-vlm", base_url=server.base_url, timeout=30, max_retries=0
            )
            background = UnitInterpreter(
                units=units,
                strategy="top_active",
                max_units=UNITS,
                exemplars=Exemplars(k=10),
                backends=Backends(agent=VLMAgent(client)),
                output=Output(progress=False, output_dir=reports),
                background=True,
                concurrency=UNITS,
            )
            backgrounds.append(_fit([background], epochs, train, val, seed))
            requests.append(len(server.chat_requests))
            received = [r.received_at for r in server.chat_requests]
            report = Path(reports) / f"epoch-{epochs - 1:03d}" / "report.html"
            last_studies.append(_last_study(backgrounds[-1], received, report, UNITS))
        rows = [row for rows in background.history.values() for row in rows]
        statuses.append({s: sum(r["status"] == s for r in rows) for s in ("ok", "failed")})
        failures += [r.failure_reason or "" for r in background.reports if r.failed_run][:1]
        # Each pair as it finishes, so a run stopped by a time limit still says something.
        _say(
            f"repeat {len(baselines)}/{repeats}: baseline {baselines[-1]['total']:.1f} s, "
            f"background {backgrounds[-1]['total']:.1f} s (training "
            f"{backgrounds[-1]['training']:.1f} s), stub requests {requests[-1]}, "
            f"reports {statuses[-1]}, load {os.getloadavg()[0]:.1f}"
        )
    baseline = statistics.median(f["total"] for f in baselines)
    background_total = statistics.median(f["total"] for f in backgrounds)
    background_training = statistics.median(f["training"] for f in backgrounds)
    sync = UnitInterpreter(
        units=units,
        strategy="top_active",
        max_units=UNITS,
        exemplars=Exemplars(k=10),
        backends=Backends(agent=ScientistAgent(seed=seed)),
        output=Output(progress=False),
    )
    with_sync = _fit([sync], epochs, train, val, seed)["total"]
    _say(f"sync {with_sync:.1f} s")
    described = sum(len(rows) for rows in sync.history.values())
    problem = None
    if min(requests) == 0 or any(status["failed"] for status in statuses):
        problem = (
            f"a background fit did not get its descriptions from the stub VLM (requests per "
            f"fit: {requests}, reports: {statuses}, first failure: {failures[:1]})"
        )
    return {
        "ratio_sync": with_sync / baseline,
        "seconds_per_unit_sync": (with_sync - baseline) / max(described, 1),
        # None when a fit never reached the stub: a ratio without requests measures nothing.
        "ratio_background_stub_vlm": None if problem else background_total / baseline,
        "ratio_background_training": None if problem else background_training / baseline,
        "background_teardown_wait_s": statistics.median(
            f["total"] - f["training"] for f in backgrounds
        ),
        # The last epoch's study starts at the last validation end and needs at least one stub
        # round trip, so a fit that joins it cannot end before last validation + STUB_DELAY_S.
        "background_last_report_s": _median_of(last_studies, "last_report_written_s"),
        "background_floor_ratio": (
            statistics.median(f["last_validation"] for f in backgrounds) + STUB_DELAY_S
        )
        / baseline,
        "background_last_study_s": last_studies,
        "problem": problem,
        "fit_seconds": {
            "baseline": [f["total"] for f in baselines],
            "background": [f["total"] for f in backgrounds],
            "background_training": [f["training"] for f in backgrounds],
            "sync": with_sync,
        },
        "stub_requests": sum(requests),
        "stub_requests_per_fit": requests,
        "stub_requests_expected_per_fit": UNITS * epochs,
        "background_reports_per_fit": statuses,
        "background_failures": failures,
        **_snapshot_share(),
        "repeats": repeats,
        "units_per_epoch": UNITS,
        "epochs": epochs,
        "train_images": train,
        "val_images": val,
        "stub_delay_s": STUB_DELAY_S,
        "machine_before": machine_before,
        "machine_after": _machine(),
        "seconds": time.perf_counter() - started,
    }
