"""Logger adapters against the real packages: fit a tiny model with each logger, log through the
adapter, read what the logger stored back with the package's own reader, compare exactly."""

from __future__ import annotations

import io
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia.errors import ConfigurationError, MissingDependencyError
from lightning_maia.reporting import (
    CSVAdapter,
    LoggerAdapter,
    MLflowAdapter,
    TensorBoardAdapter,
    WandbAdapter,
    adapters_for,
)
from lightning_maia.reporting._tensorboard_adapter import markdown_table

FRAME = pd.DataFrame(
    {
        "unit": ["layer4:17", "layer4:18"],
        "label": ["red stars", "blue | stripes"],
        "description": ['Fires on "red" stars, <b>not</b> circles.', "Stripes; any colour."],
        "score": [0.75, 0.5],
        "rounds": [3, 4],
    }
)
LATER_FRAME = FRAME.assign(score=[0.25, 1.0])
RED = torch.zeros(3, 4, 6)
RED[0] = 1.0
BLUE = torch.zeros(3, 4, 6)
BLUE[2] = 1.0
CAPTIONS = ["red, activation 0.9", 'blue "stars" <i>0.1</i>']
TEXT = "The unit detects <red> stars & nothing else.\nSecond line."
RED_PIXELS = [[[255, 0, 0]] * 6] * 4
BLUE_PIXELS = [[[0, 0, 255]] * 6] * 4


class TinyRegression(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(logger: Logger | list[Logger], root: Path) -> Trainer:
    """One epoch of two batches, so the logger holds a real run when the adapter writes."""
    data = TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    trainer = Trainer(
        max_epochs=1,
        logger=logger,
        default_root_dir=root,
        accelerator="cpu",
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyRegression(), DataLoader(data, batch_size=4))
    return trainer


def only_adapter(trainer: Trainer) -> LoggerAdapter:
    adapters = adapters_for(trainer)
    assert len(adapters) == 1
    return adapters[0]


def log_everything(adapter: LoggerAdapter, report: Path) -> None:
    """Everything at step 5, then the same kinds again at step 3 (which must land at 5)."""
    adapter.log_table("unit_reports", FRAME, step=5)
    adapter.log_images("exemplars/layer4:17", [RED, BLUE], step=5, captions=CAPTIONS)
    adapter.log_text("summary", TEXT, step=5)
    adapter.log_table("unit_reports", LATER_FRAME, step=3)
    adapter.log_images("exemplars/layer4:17", [BLUE, RED], step=3)
    adapter.log_file(report, step=3)
    adapter.finalize()


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "report.html"
    path.parent.mkdir()
    path.write_text("<html><body>report</body></html>", encoding="utf-8")
    return path


def pixels(png: bytes | Path) -> list[Any]:
    data = png.read_bytes() if isinstance(png, Path) else png
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).tolist()


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_adapter_writes_tables_images_captions_and_text_beside_metrics(
    tmp_path: Path, report: Path
) -> None:
    logger = CSVLogger(tmp_path / "logs")
    adapter = only_adapter(fit(logger, tmp_path))
    assert isinstance(adapter, CSVAdapter)

    log_everything(adapter, report)

    log_dir = Path(logger.log_dir)
    assert (log_dir / "metrics.csv").is_file()
    maia = log_dir / "maia"
    assert sorted(str(p.relative_to(maia)) for p in maia.rglob("*") if p.is_file()) == [
        "exemplars/layer4_17/step-000005-0.png",
        "exemplars/layer4_17/step-000005-1.png",
        "exemplars/layer4_17/step-000005-captions.csv",
        "exemplars/layer4_17/step-000005_1-0.png",
        "exemplars/layer4_17/step-000005_1-1.png",
        "files/report.html",
        "summary/step-000005.txt",
        "unit_reports/step-000005.csv",
        "unit_reports/step-000005_1.csv",
    ]
    pd.testing.assert_frame_equal(pd.read_csv(maia / "unit_reports/step-000005.csv"), FRAME)
    pd.testing.assert_frame_equal(pd.read_csv(maia / "unit_reports/step-000005_1.csv"), LATER_FRAME)
    exemplars = maia / "exemplars/layer4_17"
    assert pixels(exemplars / "step-000005-0.png") == RED_PIXELS
    assert pixels(exemplars / "step-000005-1.png") == BLUE_PIXELS
    assert pixels(exemplars / "step-000005_1-0.png") == BLUE_PIXELS
    pd.testing.assert_frame_equal(
        pd.read_csv(exemplars / "step-000005-captions.csv"),
        pd.DataFrame({"file": ["step-000005-0.png", "step-000005-1.png"], "caption": CAPTIONS}),
    )
    assert (maia / "summary/step-000005.txt").read_text(encoding="utf-8") == TEXT
    assert (maia / "files/report.html").read_text() == report.read_text()


def test_csv_adapter_leaves_a_file_already_in_the_log_folder_where_it_is(tmp_path: Path) -> None:
    adapter = CSVAdapter(tmp_path)
    inside = tmp_path / "report.html"
    inside.write_text("<html></html>")

    adapter.log_file(inside, step=0)

    assert sorted(p.name for p in tmp_path.rglob("*")) == ["report.html"]


def test_csv_adapter_keeps_a_named_index_as_columns(tmp_path: Path) -> None:
    drift = pd.DataFrame({"epoch_0": ["stars"], "epoch_1": ["red stars"]}, index=["layer4:1"])
    drift.index.name = "unit"

    CSVAdapter(tmp_path).log_table("drift", drift, step=2)

    written = pd.read_csv(tmp_path / "maia/drift/step-000002.csv")
    pd.testing.assert_frame_equal(written, drift.reset_index())


# --- TensorBoard --------------------------------------------------------------------------------


def test_tensorboard_adapter_logs_markdown_tables_image_grids_and_text(
    tmp_path: Path, report: Path
) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    logger = TensorBoardLogger(tmp_path / "tb")
    adapter = only_adapter(fit(logger, tmp_path))
    assert isinstance(adapter, TensorBoardAdapter)

    log_everything(adapter, report)

    events = event_accumulator.EventAccumulator(
        logger.log_dir, size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0}
    )
    events.Reload()

    def texts(tag: str) -> list[tuple[int, str]]:
        return [
            (event.step, event.tensor_proto.string_val[0].decode("utf-8"))
            for event in events.Tensors(f"{tag}/text_summary")
        ]

    assert texts("maia/unit_reports") == [
        (5, markdown_table(FRAME)),
        (5, markdown_table(LATER_FRAME)),
    ]
    table = texts("maia/unit_reports")[0][1]
    for value in [
        "layer4:17",
        "blue \\| stripes",
        'Fires on "red" stars, <b>not</b> circles.',
        "0.75",
    ]:
        assert value in table
    assert texts("maia/summary") == [(5, TEXT)]
    assert texts("maia/exemplars/layer4_17/captions") == [
        (5, f"Left to right, top to bottom:\n\n1. {CAPTIONS[0]}\n2. {CAPTIONS[1]}")
    ]
    grids = events.Images("maia/exemplars/layer4_17")
    assert [grid.step for grid in grids] == [5, 5]
    # Two 4x6 images in one row, 2 pixels of padding around and between them.
    assert [(grid.width, grid.height) for grid in grids] == [(18, 8), (18, 8)]
    first = np.asarray(pixels(grids[0].encoded_image_string))
    assert first[2:6, 2:8].tolist() == RED_PIXELS
    assert first[2:6, 10:16].tolist() == BLUE_PIXELS
    assert first[:2].sum() == 0 and first[:, 8:10].sum() == 0
    assert (Path(logger.log_dir) / "maia/files/report.html").read_text() == report.read_text()


# --- W&B ----------------------------------------------------------------------------------------


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    wandb = pytest.importorskip("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield wandb
    finally:
        wandb.finish()
        wandb.teardown()  # stops the wandb-core service process


def wandb_history(path: Path) -> list[dict[str, Any]]:
    """The history rows of an offline run's ``.wandb`` file (a LevelDB-style record log).

    wandb >= 0.20 no longer ships a Python reader; the format is a 7-byte header (":W&B", magic,
    version) then 32 KiB blocks of records, each with a 7-byte header (crc, length, type) and
    split across blocks as first/middle/last pieces.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    rows, position, pending = [], 7, b""
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        if left_in_block < 7:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left_in_block
            continue
        piece, position = data[position + 7 : position + 7 + length], position + 7 + length
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):  # full record, or the last piece of one
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def test_wandb_adapter_logs_tables_images_and_text_into_the_offline_run(
    offline_wandb: Any, tmp_path: Path, report: Path
) -> None:
    logger = WandbLogger(save_dir=str(tmp_path / "wandb-dir"), mode="offline")
    adapter = only_adapter(fit(logger, tmp_path))
    assert isinstance(adapter, WandbAdapter)

    log_everything(adapter, report)
    files = Path(logger.experiment.dir)
    offline_wandb.finish()
    offline_wandb.teardown()  # waits for the service to close the run's files

    history = wandb_history(next(files.parent.glob("*.wandb")))
    steps = [row["trainer/global_step"] for row in history if "trainer/global_step" in row]
    assert steps == sorted(steps)
    assert any("train_loss" in row for row in history)

    tables = [row for row in history if "maia/unit_reports/path" in row]
    assert [row["trainer/global_step"] for row in tables] == [5, 5]
    for row, frame in zip(tables, [FRAME, LATER_FRAME], strict=True):
        stored = json.loads((files / row["maia/unit_reports/path"]).read_text())
        assert stored["columns"] == list(frame.columns)
        assert stored["data"] == frame.values.tolist()

    grids = [row for row in history if "maia/exemplars/layer4_17/filenames" in row]
    assert [row["trainer/global_step"] for row in grids] == [5, 5]
    assert grids[0]["maia/exemplars/layer4_17/captions"] == CAPTIONS
    assert "maia/exemplars/layer4_17/captions" not in grids[1]
    first, second = grids[0]["maia/exemplars/layer4_17/filenames"]
    assert pixels(files / first) == RED_PIXELS
    assert pixels(files / second) == BLUE_PIXELS

    (text_row,) = [row for row in history if "maia/summary/path" in row]
    assert text_row["trainer/global_step"] == 5
    stored_text = json.loads((files / text_row["maia/summary/path"]).read_text())
    assert stored_text == {"columns": ["text"], "data": [[TEXT]]}

    assert (files / "maia/files/report.html").read_text() == report.read_text()


# --- MLflow -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # mlflow's SQL
def test_mlflow_adapter_logs_artifacts_into_the_run(tmp_path: Path, report: Path) -> None:
    tracking = pytest.importorskip("mlflow.tracking")
    # MLflow 3 refuses a file: tracking store unless opted in; SQLite is what it recommends.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(
        experiment_name="maia", tracking_uri=uri, artifact_location=str(tmp_path / "artifacts")
    )
    adapter = only_adapter(fit(logger, tmp_path))
    assert isinstance(adapter, MLflowAdapter)

    log_everything(adapter, report)

    client = tracking.MlflowClient(tracking_uri=uri)
    run_id = logger.run_id
    assert run_id is not None
    listed = [item.path for item in client.list_artifacts(run_id, "maia/unit_reports")]
    assert listed == ["maia/unit_reports/step-000005.json", "maia/unit_reports/step-000005_1.json"]
    local = Path(client.download_artifacts(run_id, "maia", str(tmp_path / "download")))

    def table(name: str) -> pd.DataFrame:
        stored = json.loads((local / name).read_text())
        return pd.DataFrame(stored["data"], columns=stored["columns"])

    pd.testing.assert_frame_equal(table("unit_reports/step-000005.json"), FRAME)
    pd.testing.assert_frame_equal(table("unit_reports/step-000005_1.json"), LATER_FRAME)
    assert pixels(local / "exemplars/layer4_17/step-000005-0.png") == RED_PIXELS
    assert pixels(local / "exemplars/layer4_17/step-000005-1.png") == BLUE_PIXELS
    assert pixels(local / "exemplars/layer4_17/step-000005_1-0.png") == BLUE_PIXELS
    pd.testing.assert_frame_equal(
        table("exemplars/layer4_17/step-000005-captions.json"),
        pd.DataFrame({"file": ["step-000005-0.png", "step-000005-1.png"], "caption": CAPTIONS}),
    )
    assert not (local / "exemplars/layer4_17/step-000005_1-captions.json").exists()
    assert (local / "summary/step-000005.txt").read_text(encoding="utf-8") == TEXT
    assert (local / "files/report.html").read_text() == report.read_text()


# --- choosing adapters --------------------------------------------------------------------------


class NotebookLogger(Logger):
    """A logger type the reporting layer does not know."""

    @property
    def name(self) -> str:
        return "notebook"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class OtherLogger(NotebookLogger):
    pass


def test_adapters_for_picks_one_adapter_per_supported_logger_and_warns_once_per_other_type(
    tmp_path: Path,
) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    loggers: list[Logger] = [
        CSVLogger(tmp_path),
        NotebookLogger(),
        TensorBoardLogger(tmp_path),
        WandbLogger(save_dir=str(tmp_path), mode="offline"),
        MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
        NotebookLogger(),
        OtherLogger(),
        CSVLogger(tmp_path, name="second"),
    ]
    trainer = Trainer(logger=loggers, default_root_dir=tmp_path, enable_progress_bar=False)

    with pytest.warns(UserWarning, match="cannot log reports") as warned:
        adapters = adapters_for(trainer)

    assert [type(adapter) for adapter in adapters] == [
        CSVAdapter,
        TensorBoardAdapter,
        WandbAdapter,
        MLflowAdapter,
        CSVAdapter,
    ]
    assert all(isinstance(adapter, LoggerAdapter) for adapter in adapters)
    messages = [str(w.message) for w in warned if "cannot log reports" in str(w.message)]
    assert len(messages) == 2
    assert "`NotebookLogger`" in messages[0] and "`OtherLogger`" in messages[1]
    assert "CSVLogger, TensorBoardLogger, WandbLogger, MLFlowLogger" in messages[0]
    # Choosing adapters starts no run: the W&B run is made on the first write.
    assert not (tmp_path / "wandb").exists()


def test_adapters_for_returns_none_without_loggers_or_off_global_rank_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert adapters_for(Trainer(logger=False, default_root_dir=tmp_path)) == []
    assert adapters_for([]) == []
    trainer = Trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path)
    assert len(adapters_for(trainer)) == 1
    assert len(adapters_for(trainer.loggers[0])) == 1

    monkeypatch.setattr(Trainer, "is_global_zero", property(lambda self: False))
    monkeypatch.setattr(rank_zero_only, "rank", 1)

    assert adapters_for(trainer) == []
    assert adapters_for(trainer.loggers) == []


def test_a_missing_package_raises_with_its_pip_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), mode="offline")
    monkeypatch.setitem(sys.modules, "wandb", None)

    with pytest.raises(MissingDependencyError, match=r"pip install 'lightning-maia\[wandb\]'"):
        WandbAdapter(logger)


def test_steps_never_go_back_and_captions_must_match_the_images(tmp_path: Path) -> None:
    adapter = CSVAdapter(tmp_path)
    adapter.log_text("notes", "late", step=9)
    adapter.log_text("notes", "early", step=2)

    assert (tmp_path / "maia/notes/step-000009_1.txt").read_text() == "early"
    with pytest.raises(ConfigurationError, match=r"one caption per image \(2\), got '1 captions'"):
        adapter.log_images("exemplars", [RED, BLUE], step=9, captions=["only one"])
    with pytest.raises(ConfigurationError, match="`step` can be a non-negative int"):
        adapter.log_text("notes", "x", step=-1)
