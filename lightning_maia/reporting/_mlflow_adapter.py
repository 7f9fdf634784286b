"""Reports in MLflow, as artifacts of the logger's run, named by key and step::

maia/unit_reports/step-000120.json                  a table (MlflowClient.log_table)
maia/exemplars/layer4_17/step-000120-0.png          images (MlflowClient.log_image)
maia/exemplars/layer4_17/step-000120-captions.json  a file/caption table
maia/summary/step-000120.txt                        text (MlflowClient.log_text)
maia/files/report.html                              a logged file (the latest wins)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import MLFlowLogger
from torch import Tensor

from lightning_maia._optional import require
from lightning_maia.reporting._adapters import (
    NAMESPACE,
    ArtifactNames,
    StepClock,
    check_captions,
    flat_table,
    log_key,
)
from lightning_maia.reporting._images import to_uint8


class MLflowAdapter:
    """Writes artifacts into the run of a Lightning ``MLFlowLogger`` through its client."""

    def __init__(self, logger: MLFlowLogger) -> None:
        require("mlflow", extra="mlflow")
        self._logger = logger
        self._clock = StepClock()
        self._names = ArtifactNames()

    @property
    def _client(self) -> Any:
        return self._logger.experiment

    @property
    def _run_id(self) -> str:
        run_id = self._logger.run_id
        assert run_id is not None  # the logger makes its run when `experiment` is first read
        return run_id

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        place = self._place(key, step)
        self._client.log_table(self._run_id, data=_for_mlflow(frame), artifact_file=f"{place}.json")

    def log_images(
        self, key: str, images: Sequence[Tensor], step: int, captions: Sequence[str] | None = None
    ) -> None:
        texts = check_captions(images, captions)
        if not images:
            return
        place = self._place(key, step)
        files = [f"{place}-{index}.png" for index in range(len(images))]
        for image, file in zip(images, files, strict=True):
            self._client.log_image(self._run_id, to_uint8(image), artifact_file=file)
        if texts is not None:
            names = pd.DataFrame({"file": [file.rsplit("/", 1)[-1] for file in files]})
            self._client.log_table(
                self._run_id,
                data=_for_mlflow(names.assign(caption=texts)),
                artifact_file=f"{place}-captions.json",
            )

    def log_text(self, key: str, text: str, step: int) -> None:
        self._client.log_text(self._run_id, text, artifact_file=f"{self._place(key, step)}.txt")

    def log_file(self, path: Path, step: int) -> None:
        self._clock(step)
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(
                self._run_id, str(path), artifact_path=f"{NAMESPACE}/files/{path.name}"
            )
        else:
            self._client.log_artifact(self._run_id, str(path), artifact_path=f"{NAMESPACE}/files")

    def finalize(self) -> None:
        """Nothing to do: every artifact is stored when it is logged."""

    def _place(self, key: str, step: int) -> str:
        key = log_key(key)
        return f"{key}/{self._names.stem(key, self._clock(step))}"


def _for_mlflow(frame: pd.DataFrame) -> pd.DataFrame:
    """``flat_table(frame)`` with text columns as ``object``, the dtype MLflow checks for (under
    pandas 3 it would otherwise warn, on every table, that ``str`` columns match ``object``)."""
    table = flat_table(frame)
    text = [name for name, dtype in table.dtypes.items() if isinstance(dtype, pd.StringDtype)]
    return table.astype(dict.fromkeys(text, object)) if text else table
