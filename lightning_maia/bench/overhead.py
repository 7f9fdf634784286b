"""``lightning-maia bench overhead``: what UnitInterpreter costs a Lightning fit.

Three fits of the same small CNN on ShapesWorld, in one run: without the callback; with it
describing 8 units every epoch (ScientistAgent, synchronous); and with it in background mode
against a stub VLM on 127.0.0.1 that answers each request after 1 s.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader

from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks.unit_interpreter import UnitInterpreter
from lightning_maia.testing.chat_server import ChatServer, tool_call_reply
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.world import ShapesWorld

TABLE_KEYS = ("ratio_sync", "seconds_per_unit_sync", "ratio_background_stub_vlm")
UNITS = 8
STUB_DELAY_S = 1.0


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


def _fit(callbacks: list[Callback], epochs: int, train: int, val: int, seed: int) -> float:
    pl.seed_everything(seed, verbose=False)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    train_loader = DataLoader(ShapesWorld(size=train, seed=seed), batch_size=32, shuffle=True)
    val_loader = DataLoader(ShapesWorld(size=val, seed=seed + 1, split="val"), batch_size=64)
    tic = time.perf_counter()
    trainer.fit(ShapesCNN(), train_loader, val_loader)
    return time.perf_counter() - tic


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    epochs, train, val = (2, 640, 128) if quick else (3, 2048, 256)
    units = ["features.4:*"]
    repeats = 1 if quick else 3
    reply = tool_call_reply(
        "final_answer", {"label": "stub", "description": "a stub answer"}
    ).delayed(STUB_DELAY_S)
    baselines, backgrounds = [], []
    with ChatServer(lambda request: reply) as server:
        client = VLMClient(model="stub-vlm", base_url=server.base_url, timeout=30, max_retries=0)
        # Interleaved repeats, so a slow spell on a shared machine hits both alike.
        for _ in range(repeats):
            baselines.append(_fit([], epochs, train, val, seed))
            background = UnitInterpreter(
                units=units,
                strategy="top_active",
                max_units=UNITS,
                k=10,
                agent=VLMAgent(client),
                background=True,
                concurrency=UNITS,
                progress=False,
            )
            backgrounds.append(_fit([background], epochs, train, val, seed))
        requests = len(server.chat_requests)
    baseline = statistics.median(baselines)
    with_background = statistics.median(backgrounds)
    sync = UnitInterpreter(
        units=units,
        strategy="top_active",
        max_units=UNITS,
        k=10,
        agent=ScientistAgent(seed=seed),
        progress=False,
    )
    with_sync = _fit([sync], epochs, train, val, seed)
    described = sum(len(rows) for rows in sync.history.values())
    return {
        "ratio_sync": with_sync / baseline,
        "seconds_per_unit_sync": (with_sync - baseline) / max(described, 1),
        "ratio_background_stub_vlm": with_background / baseline,
        "fit_seconds": {"baseline": baselines, "sync": with_sync, "background": backgrounds},
        "repeats": repeats,
        "units_per_epoch": UNITS,
        "epochs": epochs,
        "train_images": train,
        "stub_delay_s": STUB_DELAY_S,
        "stub_requests": requests,
        "seconds": time.perf_counter() - started,
    }
