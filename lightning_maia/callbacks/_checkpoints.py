"""Checkpoint chores of a callback that changes the model's head after ModelCheckpoint saved."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn


def refresh_checkpoints(trainer: pl.Trainer) -> list[str]:
    """Save again the ModelCheckpoint files that hold the final weights (saved at this global
    step), so that after a ``fit_end`` refit they hold the new head too. Every rank calls it
    (saving is collective); returns the paths."""
    paths: list[tuple[str, bool]] = []
    if trainer.is_global_zero:
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            saved = {*callback.best_k_models, callback.best_model_path, callback.last_model_path}
            for path in sorted(saved - {""}):
                if _saved_at_step(Path(path)) == trainer.global_step:
                    paths.append((str(path), callback.save_weights_only))
    paths = trainer.strategy.broadcast(paths, src=0)
    for path, weights_only in paths:
        trainer.save_checkpoint(path, weights_only=weights_only)
    return [path for path, _ in paths]


def _saved_at_step(path: Path) -> int | None:
    """The global step a local checkpoint file was saved at (None: not a local checkpoint)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, RuntimeError, ValueError):
        return None
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return int(step) if step is not None else None


def forget_optimizer_state(trainer: pl.Trainer, head: nn.Module) -> None:
    """Momentum built up for the old head would push the new one; drop it."""
    for optimizer in trainer.optimizers:
        for parameter in head.parameters():
            optimizer.state.pop(parameter, None)


__all__ = ["forget_optimizer_state", "refresh_checkpoints"]
