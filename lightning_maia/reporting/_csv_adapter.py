"""Reports as plain files beside Lightning's ``metrics.csv``.

Everything goes under ``<log_dir>/maia/<key>/``, named by step::

    maia/unit_reports/step-000120.csv             a table
    maia/exemplars/layer4_17/step-000120-0.png    images, in order
    maia/exemplars/layer4_17/step-000120-captions.csv   file,caption
    maia/summary/step-000120.txt                  text (UTF-8)
    maia/files/report.html                        a copy of a logged file (the latest wins)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor

from lightning_maia.reporting._adapters import (
    NAMESPACE,
    ArtifactNames,
    StepClock,
    check_captions,
    copy_into,
    flat_table,
    log_key,
)
from lightning_maia.reporting._images import save_png


class CSVAdapter:
    """Writes tables as CSV, images as PNG and text as ``.txt`` files under a log folder.

    ``target`` is a ``CSVLogger`` (its ``log_dir``, where ``metrics.csv`` lives) or a folder,
    for runs without a trainer.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> CSVAdapter(folder).log_text("summary", "stars", step=3)
    >>> (folder / "maia" / "summary" / "step-000003.txt").read_text()
    'stars'
    """

    def __init__(self, target: CSVLogger | str | Path) -> None:
        self._target = target
        self._clock = StepClock()
        self._names = ArtifactNames()

    @property
    def log_dir(self) -> Path:
        if isinstance(self._target, CSVLogger):
            return Path(self._target.log_dir)
        return Path(self._target)

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        folder, stem = self._place(key, step)
        folder.mkdir(parents=True, exist_ok=True)
        flat_table(frame).to_csv(folder / f"{stem}.csv", index=False)

    def log_images(
        self, key: str, images: Sequence[Tensor], step: int, captions: Sequence[str] | None = None
    ) -> None:
        texts = check_captions(images, captions)
        if not images:
            return
        folder, stem = self._place(key, step)
        names = [
            save_png(image, folder / f"{stem}-{index}.png").name
            for index, image in enumerate(images)
        ]
        if texts is not None:
            pd.DataFrame({"file": names, "caption": texts}).to_csv(
                folder / f"{stem}-captions.csv", index=False
            )

    def log_text(self, key: str, text: str, step: int) -> None:
        folder, stem = self._place(key, step)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")

    def log_file(self, path: Path, step: int) -> None:
        self._clock(step)
        path, log_dir = Path(path).resolve(), self.log_dir.resolve()
        if not path.is_relative_to(log_dir):  # a file already in the log folder stays where it is
            copy_into(path, log_dir / NAMESPACE / "files")

    def finalize(self) -> None:
        """Nothing to do: every file is written when it is logged."""

    def _place(self, key: str, step: int) -> tuple[Path, str]:
        key = log_key(key)
        return self.log_dir / key, self._names.stem(key, self._clock(step))
