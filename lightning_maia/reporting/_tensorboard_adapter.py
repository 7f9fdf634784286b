"""Reports in TensorBoard: tables and text in the Text tab, image grids in the Images tab.

A table is a markdown table (``experiment.add_text``), images one grid per call
(``experiment.add_image``, CHW) with their captions as a numbered list under ``<tag>/captions``.
Logged files are copied beside the event files, under ``<log_dir>/maia/files/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_maia.reporting._adapters import (
    NAMESPACE,
    StepClock,
    check_captions,
    copy_into,
    flat_table,
    log_key,
)
from lightning_maia.reporting._images import make_grid

#: Images per row of a grid.
GRID_COLUMNS = 8


class TensorBoardAdapter:
    """Writes through the ``SummaryWriter`` of a Lightning ``TensorBoardLogger``."""

    def __init__(self, logger: TensorBoardLogger) -> None:
        self._logger = logger
        self._clock = StepClock()

    @property
    def _writer(self) -> Any:
        return self._logger.experiment

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        self._writer.add_text(log_key(key), markdown_table(frame), global_step=self._clock(step))

    def log_images(
        self, key: str, images: Sequence[Tensor], step: int, captions: Sequence[str] | None = None
    ) -> None:
        texts = check_captions(images, captions)
        if not images:
            return
        tag, step = log_key(key), self._clock(step)
        grid = make_grid(images, ncol=GRID_COLUMNS)
        # uint8, so the writer stores our rounding rather than truncating floats itself.
        pixels = (grid * 255.0).round().to(torch.uint8)
        self._writer.add_image(tag, pixels, global_step=step, dataformats="CHW")
        if texts is not None:
            lines = [f"{index}. {_one_line(text)}" for index, text in enumerate(texts, start=1)]
            listing = "Left to right, top to bottom:\n\n" + "\n".join(lines)
            self._writer.add_text(f"{tag}/captions", listing, global_step=step)

    def log_text(self, key: str, text: str, step: int) -> None:
        self._writer.add_text(log_key(key), text, global_step=self._clock(step))

    def log_file(self, path: Path, step: int) -> None:
        self._clock(step)
        copy_into(Path(path), Path(self._logger.log_dir) / NAMESPACE / "files")

    def finalize(self) -> None:
        self._writer.flush()


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table; cells on one line, ``|`` escaped, missing values empty.

    >>> print(markdown_table(pd.DataFrame({"unit": ["a|b"], "score": [None]})))
    | unit | score |
    | --- | --- |
    | a\\|b |  |
    """
    table = flat_table(frame)
    header = [_cell(column) for column in table.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in table.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _one_line(str(value)).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())
