"""UnitInterpreter in background mode (a slow VLM), under DDP, and from a LightningCLI YAML."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
from helpers.lightning_models import ShapesClassifier, ShapesDataModule, shapes_loaders
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from lightning_maia._options import Backends, Output
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.testing._chat_server import ChatServer, tool_call_reply
from lightning_maia.tools.backends.vlm import VLMClient

FINAL = {"label": "edges", "description": "fires on edges", "concepts": [], "logic": "single"}


@pytest.mark.slow
def test_background_mode_logs_results_when_ready_and_joins_at_fit_end(tmp_path: Path) -> None:
    reply = tool_call_reply("final_answer", FINAL).delayed(0.3)
    with ChatServer(lambda request: reply) as server:
        agent = VLMAgent(
            VLMClient(model="stub", base_url=server.base_url, timeout=5, max_retries=0)
        )
        interpreter = UnitInterpreter(
            units=["features.2:0-1"],
            backends=Backends(agent=agent),
            exemplars=Exemplars(k=4),
            output=Output(progress=False),
            background=True,
        )
        train, val = shapes_loaders(val=48)
        trainer = pl.Trainer(
            default_root_dir=tmp_path,
            max_epochs=2,
            limit_train_batches=2,
            logger=CSVLogger(tmp_path),
            callbacks=[interpreter],
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
        )
        trainer.fit(ShapesClassifier(), train, val)
        assert len(server.chat_requests) == 4  # 2 units x 2 epochs, one round each
    assert {unit: [row["epoch"] for row in rows] for unit, rows in interpreter.history.items()} == {
        "features.2:0": [0, 1],
        "features.2:1": [0, 1],
    }
    assert [r.label for r in interpreter.reports] == ["edges", "edges"]
    metrics = pd.read_csv(Path(trainer.logger.log_dir) / "metrics.csv")
    assert metrics["maia/units_described"].dropna().tolist() == [2.0, 2.0]
    assert interpreter._worker is None  # the worker was shut down at teardown


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes_rank_zero_runs_the_agent(tmp_path: Path) -> None:
    interpreter = UnitInterpreter(
        units=["features.2:0"],
        exemplars=Exemplars(k=4),
        output=Output(output_dir=str(tmp_path / "maia"), progress=False),
    )
    train, val = shapes_loaders(train=64, val=64, batch_size=16)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        logger=CSVLogger(tmp_path),
        callbacks=[interpreter],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(ShapesClassifier(), train, val)
    assert (tmp_path / "maia" / "report.html").exists()
    assert (tmp_path / "maia" / "epoch-000" / "report.html").exists()
    (metrics_file,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    metrics = pd.read_csv(metrics_file)
    assert metrics["maia/units_described"].dropna().tolist() == [1.0]


def test_configured_from_a_lightning_cli_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["train.py"])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 1
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_maia.callbacks.unit_interpreter.UnitInterpreter
      init_args:
        units: ["features.2:0-3"]
        strategy: random
        max_units: 2
        exemplars: {{k: 5}}
        schedule: {{every_n_epochs: 2}}
        output: {{on_error: raise}}
        seed: 3
"""
    )
    cli = LightningCLI(
        ShapesClassifier,
        ShapesDataModule,
        run=False,
        args=["--config", str(config)],
        save_config_callback=None,
    )
    (interpreter,) = [c for c in cli.trainer.callbacks if isinstance(c, UnitInterpreter)]
    assert (
        interpreter.units,
        interpreter.strategy,
        interpreter.max_units,
        interpreter.exemplars.k,
        interpreter.seed,
    ) == (["features.2:0-3"], "random", 2, 5, 3)
    assert interpreter.schedule.every_n_epochs == 2
    assert interpreter.output.on_error == "raise"
