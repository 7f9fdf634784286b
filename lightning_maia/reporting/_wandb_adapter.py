"""Reports in Weights & Biases: ``wandb.Table`` for tables and text, ``wandb.Image`` for images.

Everything goes through ``WandbLogger.log_metrics``, as Lightning's own ``log_table`` and
``log_image`` do: the step is the ``trainer/global_step`` of the row, so the media line up with
the metrics (and the logger's prefix applies). Text is a one-cell table, shown as plain text.
Logged files are copied into the run folder under ``maia/files/`` and saved with the run.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_maia._optional import require
from lightning_maia.reporting._adapters import (
    NAMESPACE,
    StepClock,
    check_captions,
    copy_into,
    flat_table,
    log_key,
)
from lightning_maia.reporting._images import to_uint8


class WandbAdapter:
    """Writes into the run of a Lightning ``WandbLogger``."""

    def __init__(self, logger: WandbLogger) -> None:
        self._wandb = require("wandb", extra="wandb")
        self._logger = logger
        self._clock = StepClock()

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        self._log(key, self._wandb.Table(dataframe=flat_table(frame)), step)

    def log_images(
        self, key: str, images: Sequence[Tensor], step: int, captions: Sequence[str] | None = None
    ) -> None:
        texts = check_captions(images, captions)
        if not images:
            return
        media = [
            self._wandb.Image(to_uint8(image), caption=None if texts is None else texts[index])
            for index, image in enumerate(images)
        ]
        self._log(key, media, step)

    def log_text(self, key: str, text: str, step: int) -> None:
        self._log(key, self._wandb.Table(columns=["text"], data=[[text]]), step)

    def log_file(self, path: Path, step: int) -> None:
        self._clock(step)
        run = self._logger.experiment
        run_dir = Path(run.dir)
        # A copy, so that the run keeps this version even if the original changes or goes away.
        copy = copy_into(Path(path), run_dir / NAMESPACE / "files")
        files = sorted(p for p in copy.rglob("*") if p.is_file()) if copy.is_dir() else [copy]
        for file in files:
            run.save(glob.escape(str(file)), base_path=str(run_dir), policy="now")

    def finalize(self) -> None:
        """Nothing to do: the run is finished by the logger."""

    def _log(self, key: str, value: Any, step: int) -> None:
        self._logger.log_metrics({log_key(key): value}, step=self._clock(step))
