"""UnitInterpreter in real Lightning fits: when it runs, what it logs, drift, resume, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from helpers.lightning_models import (
    ShapesClassifier,
    ShapesDataModule,
    SwitchingNeurons,
    shapes_loaders,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia._options import Backends, Output
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.analysis._interpretation import DESCRIBE_HINT
from lightning_maia.callbacks.unit_interpreter import Exemplars, Schedule, UnitInterpreter
from lightning_maia.errors import ConfigurationError, UnitSpecError
from lightning_maia.world import ShapesWorld


def trainer(tmp_path: Path, callbacks, epochs: int = 2, **kwargs) -> pl.Trainer:
    options = {
        "default_root_dir": tmp_path,
        "max_epochs": epochs,
        "logger": CSVLogger(tmp_path, name="logs"),
        "callbacks": callbacks,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_train_batches": 2,
        "num_sanity_val_steps": 1,
        "log_every_n_steps": 1,
    }
    return pl.Trainer(**{**options, **kwargs})


@pytest.mark.slow
def test_describes_units_every_epoch_and_logs_everything(tmp_path: Path) -> None:
    train, val = shapes_loaders()
    interpreter = UnitInterpreter(
        units=["features.2:*"],
        strategy="top_active",
        max_units=2,
        exemplars=Exemplars(k=6),
        output=Output(progress=False),
    )
    run = trainer(tmp_path, [interpreter])
    run.fit(ShapesClassifier(), train, val)

    # Sanity checking did not run it: one entry per epoch and unit.
    assert len(interpreter.history) == 2
    assert all([row["epoch"] for row in rows] == [0, 1] for rows in interpreter.history.values())
    assert len(interpreter.reports) == 2 and all(r.status == "ok" for r in interpreter.reports)
    metrics = pd.read_csv(Path(run.logger.log_dir) / "metrics.csv")
    described = metrics["maia/units_described"].dropna().tolist()
    assert described == [2.0, 2.0]
    log_dir = Path(run.logger.log_dir)
    tables = sorted((log_dir / "maia").rglob("*.csv"))
    assert tables, "the unit-report table was written beside metrics.csv"
    report = tmp_path / "logs" / "version_0" / "maia" / "report.html"
    assert report.exists() or (log_dir / "maia" / "report.html").exists()
    assert sorted((log_dir / "maia").glob("epoch-*/report.html")) or sorted(
        Path(run.log_dir, "maia").glob("epoch-*/report.html")
    )
    assert set(interpreter.drift_table().columns) == {
        "unit",
        "epoch",
        "label",
        "changed",
        "status",
        "score",
    }


def test_top_active_picks_the_units_with_highest_mean_activation(tmp_path: Path) -> None:
    train, val = shapes_loaders(val=64)
    interpreter = UnitInterpreter(
        units=["features.2:*"],
        strategy="top_active",
        max_units=3,
        exemplars=Exemplars(k=4),
        output=Output(progress=False),
    )
    model = ShapesClassifier()
    trainer(tmp_path, [interpreter], epochs=1).fit(model, train, val)
    from lightning_maia.exemplars import compute_exemplars

    exemplars = compute_exemplars(model, val.dataset, ["features.2:*"], k=4, progress=False)
    means = {u.spec: exemplars.mean_activation(u) for u in exemplars.units}
    expected = sorted(means, key=lambda spec: -means[spec])[:3]
    assert sorted(r.unit for r in interpreter.reports) == sorted(expected)


def test_fast_dev_run_skips(tmp_path: Path) -> None:
    train, val = shapes_loaders()
    interpreter = UnitInterpreter(units=["features.2:0"], output=Output(progress=False))
    pl.Trainer(
        default_root_dir=tmp_path,
        fast_dev_run=True,
        callbacks=[interpreter],
        enable_progress_bar=False,
    ).fit(ShapesClassifier(), train, val)
    assert interpreter.history == {}


def test_bad_specs_fail_at_setup_before_training(tmp_path: Path) -> None:
    train, val = shapes_loaders()
    model = ShapesClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UnitSpecError, match=r"no layer 'feature.2'.*closest: features.2"):
        trainer(tmp_path, [UnitInterpreter(units=["feature.2:0"])]).fit(model, train, val)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        # A Conv2d says its width: fails in setup.
        ("features.2:40", r"`units` can be channel indices 0-31 of 'features.2' \(it has 32\)"),
        # A ReLU does not: one forward on one item, before the first batch.
        ("features.3:5,99", r"0-31 of 'features.3' \(it has 32\), got 'features.3:99'"),
    ],
)
def test_channels_a_layer_lacks_fail_before_training(tmp_path: Path, spec: str, match: str) -> None:
    train, val = shapes_loaders()
    model = ShapesClassifier(width=32)
    before = [p.detach().clone() for p in model.parameters()]
    steps = []
    watch = pl.callbacks.LambdaCallback(on_train_batch_start=lambda *_: steps.append(1))
    with pytest.raises(ConfigurationError, match=match):
        trainer(tmp_path, [UnitInterpreter(units=[spec]), watch]).fit(model, train, val)
    assert steps == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_agent_by_name_or_an_object_else_refused() -> None:
    assert isinstance(
        UnitInterpreter(units=["x:0"], backends=Backends(agent="scientist")).agent, ScientistAgent
    )
    for agent in ("gpt-4o", 3):
        with pytest.raises(ConfigurationError, match=r"`agent` can be an agent object .* got "):
            UnitInterpreter(units=["x:0"], backends=Backends(agent=agent))


def test_lightning_cli_lists_the_choices_of_an_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        """
trainer:
  callbacks:
    - class_path: lightning_maia.callbacks.unit_interpreter.UnitInterpreter
      init_args:
        units: ["features.2:0"]
        strategy: loudest
"""
    )
    monkeypatch.setattr("sys.argv", ["train.py"])
    with pytest.raises(SystemExit):
        LightningCLI(
            ShapesClassifier,
            ShapesDataModule,
            run=False,
            args=["--config", str(config)],
            save_config_callback=None,
        )
    error = capsys.readouterr().err
    assert "loudest" in error
    assert all(choice in error for choice in ("top_active", "most_changed", "random"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": []}, "`units`"),
        ({"units": 5}, r"`units` can be a list of unit specs such as \['layer4:0-9'\], got 5"),
        ({"units": ["a:0", 5]}, "`units` can be a list of unit specs"),
        ({"strategy": "loudest"}, "`strategy` can be top_active, most_changed, random or None"),
        (
            {"schedule": lambda: Schedule(when="always")},
            "`when` can be validation or fit_end, got 'always'",
        ),
        (
            {"output": lambda: Output(on_error="ignore")},
            r"`on_error` can be one of \('warn', 'raise'\)",
        ),
        (
            {"schedule": lambda: Schedule(every_n_epochs=0)},
            "`every_n_epochs` can be a positive integer, got 0",
        ),
        ({"exemplars": lambda: Exemplars(k=0)}, "`k` can be a positive integer, got 0"),
        ({"max_units": 0}, "`max_units` can be a positive integer, got 0"),
        ({"unstarted": "drop"}, "`unstarted` can be finish or pending, got 'drop'"),
    ],
)
def test_bad_options_are_named(kwargs: dict, match: str) -> None:
    def build() -> UnitInterpreter:
        # An option group fails as it is built, before the callback sees it.
        built = {name: value() if callable(value) else value for name, value in kwargs.items()}
        return UnitInterpreter(**{"units": ["features.2:0"], **built})

    with pytest.raises(ConfigurationError, match=match):
        build()


@pytest.mark.slow
def test_drift_marks_when_a_label_flips(tmp_path: Path) -> None:
    val = DataLoader(ShapesWorld(size=128, seed=5, split="val"), batch_size=64)
    train = DataLoader(ShapesWorld(size=8, seed=6), batch_size=8)
    interpreter = UnitInterpreter(
        units=["neurons:0"], exemplars=Exemplars(k=8), output=Output(progress=False)
    )
    trainer(tmp_path, [interpreter], epochs=2, limit_train_batches=1).fit(
        SwitchingNeurons(), train, val
    )
    rows = interpreter.history["neurons:0"]
    assert [row["changed"] for row in rows] == [False, True]
    assert rows[0]["label"] == "stars" and rows[1]["label"] != "stars"
    assert interpreter.reports[0].concepts == ("colour=red",)
    drift = interpreter.drift_table()
    assert drift["changed"].tolist() == [False, True]


@pytest.mark.slow
def test_history_survives_resume(tmp_path: Path) -> None:
    train, val = shapes_loaders(val=48)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = UnitInterpreter(
        units=["features.2:0"], exemplars=Exemplars(k=4), output=Output(progress=False)
    )
    trainer(tmp_path, [first, checkpoint], epochs=1).fit(ShapesClassifier(), train, val)
    resumed = UnitInterpreter(
        units=["features.2:0"], exemplars=Exemplars(k=4), output=Output(progress=False)
    )
    trainer(tmp_path, [resumed], epochs=2).fit(
        ShapesClassifier(), train, val, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert [row["epoch"] for row in resumed.history["features.2:0"]] == [0, 1]


def test_undescribable_data_logs_exemplars_and_says_what_to_configure(tmp_path: Path) -> None:
    noise = TensorDataset(torch.rand(40, 3, 32, 32), torch.randint(0, 9, (40,)))
    interpreter = UnitInterpreter(
        units=["features.2:0-1"], exemplars=Exemplars(k=4), output=Output(progress=False)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [interpreter], epochs=2).fit(
            ShapesClassifier(), DataLoader(noise, batch_size=20), DataLoader(noise, batch_size=20)
        )
    hints = [w for w in caught if DESCRIBE_HINT in str(w.message)]
    assert len(hints) == 1  # said once, not every epoch
    assert [r.label for r in interpreter.reports] == ["(no describer)"] * 2
    assert all(r.details["mean_activation"] is not None for r in interpreter.reports)
