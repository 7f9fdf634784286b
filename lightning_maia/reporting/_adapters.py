"""One small adapter per Lightning logger, behind one protocol; :func:`adapters_for` picks them.

A callback calls ``adapters_for(trainer)`` once and then, for each adapter, ``log_table``,
``log_images``, ``log_text`` and ``log_file`` as results come, and ``finalize`` at the end. What
every adapter shares lives here:

- keys are relative names (``"unit_reports"``, ``"exemplars/layer4:17"``); :func:`log_key` makes
  them safe for paths and tags and puts them under the ``maia/`` namespace, the same in every
  logger (``maia/exemplars/layer4_17``);
- steps never go backwards (:class:`StepClock`): a step below the last one used is logged at the
  last one, since W&B drops history rows with a smaller step;
- file names come from the step (:class:`ArtifactNames`): ``step-000120``, and ``step-000120_1``
  for a second entry under the same key and step, so nothing logged is overwritten;
- only global rank zero writes: :func:`adapters_for` returns no adapter on the other ranks.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from lightning_maia.errors import bad_option

#: Every key is logged under this prefix.
NAMESPACE = "maia"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@runtime_checkable
class LoggerAdapter(Protocol):
    """Writes the agent's results into one logger."""

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        """One table (e.g. one row per unit report)."""

    def log_images(
        self, key: str, images: Sequence[Tensor], step: int, captions: Sequence[str] | None = None
    ) -> None:
        """Images, each float (3, H, W) in [0, 1], with one caption per image where given."""

    def log_text(self, key: str, text: str, step: int) -> None:
        """Plain text, stored as data (never interpreted as HTML)."""

    def log_file(self, path: Path, step: int) -> None:
        """A file (e.g. the HTML report) kept with the run; a later one of the same name wins."""

    def finalize(self) -> None:
        """Flush what is buffered; the logger itself stays open (Lightning closes it)."""


class StepClock:
    """The step to log at: the step asked for, or the last one used if that is larger.

    >>> clock = StepClock()
    >>> clock(5), clock(3), clock(7)
    (5, 5, 7)
    """

    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, step: int) -> int:
        step = int(step)
        if step < 0:
            raise bad_option("step", "a non-negative int", step)
        if self.last is not None:
            step = max(step, self.last)
        self.last = step
        return step


class ArtifactNames:
    """File stems by key and step, never the same one twice.

    >>> names = ArtifactNames()
    >>> names.stem("unit_reports", 120), names.stem("unit_reports", 120), names.stem("drift", 120)
    ('step-000120', 'step-000120_1', 'step-000120')
    """

    def __init__(self) -> None:
        self._used: dict[tuple[str, int], int] = {}

    def stem(self, key: str, step: int) -> str:
        repeat = self._used.get((key, step), 0)
        self._used[(key, step)] = repeat + 1
        return f"step-{step:06d}" + (f"_{repeat}" if repeat else "")


def log_key(key: str) -> str:
    """``key`` under the ``maia/`` namespace, each part reduced to letters, digits, ``_.-``.

    >>> log_key("exemplars/layer4.1.conv2:17"), log_key("maia/drift"), log_key("../a b")
    ('maia/exemplars/layer4.1.conv2_17', 'maia/drift', 'maia/_/a_b')
    """
    parts = [_UNSAFE.sub("_", part) for part in key.split("/") if part.strip()]
    parts = ["_" if set(part) == {"."} else part for part in parts]
    if not parts:
        raise bad_option("key", "a non-empty name", key)
    if parts[0] != NAMESPACE:
        parts.insert(0, NAMESPACE)
    return "/".join(parts)


def flat_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a named index turned into leading columns and every column name a str.

    An unnamed index (0, 1, 2, ... or what filtering left of it) is dropped.

    >>> flat_table(pd.DataFrame({"a": [1]}, index=pd.Index(["x"], name="unit"))).columns.tolist()
    ['unit', 'a']
    """
    table = frame.reset_index() if any(name is not None for name in frame.index.names) else frame
    if all(isinstance(column, str) for column in table.columns):
        return table
    return table.rename(columns=str)


def check_captions(images: Sequence[Tensor], captions: Sequence[str] | None) -> list[str] | None:
    """``captions`` as a list of str, after checking there is one per image."""
    if captions is None:
        return None
    if isinstance(captions, str) or len(captions) != len(images):
        got = repr(captions) if isinstance(captions, str) else f"{len(captions)} captions"
        raise bad_option("captions", f"one caption per image ({len(images)})", got)
    return [str(caption) for caption in captions]


def copy_into(path: Path, folder: Path) -> Path:
    """Copy the file or folder ``path`` into ``folder``, replacing one of the same name."""
    target = folder / path.name
    folder.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        shutil.copy2(path, target)
    return target


def adapters_for(source: Trainer | Logger | Iterable[Logger]) -> list[LoggerAdapter]:
    """One adapter per supported logger of ``source`` (a trainer, a logger or loggers).

    Supported: ``CSVLogger``, ``TensorBoardLogger``, ``WandbLogger``, ``MLFlowLogger``; a logger
    of another type is skipped with one warning per type. Returns ``[]`` on any rank but global
    rank zero, so that only one process writes.

    >>> adapters_for([])
    []
    """
    if isinstance(source, Trainer):
        if not source.is_global_zero:
            return []
        loggers: list[Logger] = list(source.loggers)
    else:
        if getattr(rank_zero_only, "rank", 0) != 0:
            return []
        loggers = [source] if isinstance(source, Logger) else list(source)
    supported = _supported()
    adapters: list[LoggerAdapter] = []
    unsupported: list[str] = []
    for logger in loggers:
        factory = next((make for kind, make in supported if isinstance(logger, kind)), None)
        if factory is not None:
            adapters.append(factory(logger))
        elif type(logger).__name__ not in unsupported:
            unsupported.append(type(logger).__name__)
    for name in unsupported:
        warnings.warn(
            f"lightning_maia cannot log reports to a `{name}`; it is skipped (supported: "
            + ", ".join(kind.__name__ for kind, _ in supported)
            + ")",
            UserWarning,
            stacklevel=2,
        )
    return adapters


def _supported() -> list[tuple[type[Logger], Callable[[Any], LoggerAdapter]]]:
    # Imported here: the adapter modules import this one.
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    from lightning_maia.reporting._csv_adapter import CSVAdapter
    from lightning_maia.reporting._mlflow_adapter import MLflowAdapter
    from lightning_maia.reporting._tensorboard_adapter import TensorBoardAdapter
    from lightning_maia.reporting._wandb_adapter import WandbAdapter

    return [
        (CSVLogger, CSVAdapter),
        (TensorBoardLogger, TensorBoardAdapter),
        (WandbLogger, WandbAdapter),
        (MLFlowLogger, MLflowAdapter),
    ]
