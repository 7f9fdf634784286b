"""UnitInterpreter resolves its designer's backends through the core's path
(:func:`~lightning_maia.analysis._interpretation.resolve_interpreter_backends`, as
``interpret_units`` does): configuration errors at ``setup``, before any training; once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.lightning_models import ShapesClassifier
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia._options import Backends, Output
from lightning_maia.analysis import _interpretation as interpretation
from lightning_maia.callbacks import unit_interpreter
from lightning_maia.callbacks.unit_interpreter import Exemplars, Schedule, UnitInterpreter
from lightning_maia.errors import ConfigurationError
from lightning_maia.world import ShapesWorld


class _Started(Callback):
    """Records whether fit got past setup."""

    def __init__(self) -> None:
        self.started = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True


def _trainer(tmp_path: Path, callbacks: list[Any], epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip


def _plain(n: int = 16) -> TensorDataset:
    return TensorDataset(torch.rand(n, 3, 64, 64), torch.arange(n) % 9)


@pytest.mark.parametrize("given", [False, True])
def test_data_the_designer_cannot_read_fails_at_setup_before_training(
    tmp_path: Path, given: bool
) -> None:
    plain = _plain()
    interpreter = UnitInterpreter(
        units=["features.2:0"],
        exemplars=Exemplars(dataset=plain) if given else None,
        backends=Backends(designer="retrieval"),
        output=Output(progress=False),
    )
    started = _Started()
    run = _trainer(tmp_path, [interpreter, started])
    loader = DataLoader(plain, batch_size=8)
    with pytest.raises(ConfigurationError, match="needs attribute columns") as raised:
        run.fit(ShapesClassifier(), loader, loader)
    # The same message interpret_units gives on that data, and before any training step.
    with pytest.raises(ConfigurationError) as core:
        interpretation.build_interpreter(plain, backends=Backends(designer="retrieval"))
    assert str(raised.value) == str(core.value)
    assert not started.started and run.global_step == 0


def test_the_resolution_runs_once_and_is_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    resolve = interpretation.resolve_interpreter_backends

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return resolve(*args, **kwargs)

    monkeypatch.setattr(unit_interpreter, "resolve_interpreter_backends", counting)
    val = ShapesWorld(size=32, seed=5, split="val")
    interpreter = UnitInterpreter(
        units=["features.2:0"],
        schedule=Schedule(every_n_epochs=1),
        exemplars=Exemplars(k=4),
        backends=Backends(designer="procedural"),
        output=Output(progress=False),
    )
    train = DataLoader(ShapesWorld(size=8, seed=6), batch_size=8)
    _trainer(tmp_path, [interpreter], epochs=2).fit(
        ShapesClassifier(), train, DataLoader(val, batch_size=16)
    )
    assert calls == [val]  # at setup, on the validation data; cached for both epochs
    core = interpretation.build_interpreter(val, backends=Backends(designer="procedural"))
    assert type(interpreter.agent.designer) is type(core.agent.designer)
    assert len(interpreter.history["features.2:0"]) == 2


def test_without_data_a_designer_that_reads_it_is_resolved_once_the_data_is_known() -> None:
    interpreter = UnitInterpreter(units=["x:0"], backends=Backends(designer="retrieval"))
    before = interpreter.agent
    interpreter._resolve_experiments(None)  # setup saw no data: nothing decided, nothing kept
    assert interpreter._experiments is None and interpreter.agent is before
    with pytest.raises(ConfigurationError, match="needs attribute columns"):
        interpreter._resolve_experiments(_plain())  # then the data decides, and fails
