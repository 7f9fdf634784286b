"""`lightning-maia audit` on a checkpoint from a real Lightning run; gates; report; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import xmlschema
from helpers.lightning_models import ShapesClassifier, shapes_loaders

from lightning_maia import cli

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit.xsd")
MODEL = "helpers.lightning_models.ShapesClassifier"
DATA = "helpers.lightning_models.ShapesDataModule"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    train, val = shapes_loaders(train=64, val=32)
    trainer = pl.Trainer(
        default_root_dir=folder,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ShapesClassifier(), train, val)
    path = folder / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def audit(checkpoint: Path, out: Path, *extra: str) -> int:
    return cli.main(
        [
            "audit",
            "--model",
            MODEL,
            "--ckpt",
            str(checkpoint),
            "--datamodule",
            DATA,
            "--units",
            "features.2:0-1",
            "--k",
            "5",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.slow
def test_audit_writes_everything_and_gates_pass_and_fail(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = tmp_path / "first"
    assert audit(checkpoint, first, "--fail-on", "units_failed>0") == 0
    for name in ("results.json", "reports.csv", "report.html", "figures.json", "checks.xml"):
        assert (first / name).exists(), name
    figures = json.loads((first / "figures.json").read_text())
    assert figures["units_described"] == 2.0 and figures["units_failed"] == 0.0
    SCHEMA.validate(str(first / "checks.xml"))
    assert "PASS  units_failed>0: passed: units_failed = 0" in capsys.readouterr().out

    second = tmp_path / "second"
    code = audit(
        checkpoint,
        second,
        "--fail-on",
        "units_described>=2",
        "--baseline",
        str(first),
        "--fail-on",
        "label_drift",
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL  units_described>=2: failed: units_described = 2" in out
    assert "PASS  label_drift: passed: label_drift = 0" in out  # same weights, same labels
    suite = SCHEMA.to_dict(str(second / "checks.xml"))["testsuite"][0]
    assert suite["@failures"] == "1"

    assert cli.main(["report", str(first), "--out", str(tmp_path / "again.html")]) == 0
    assert "unit-features-2-0" in (tmp_path / "again.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tasks", "interpret,astrology"], "`--tasks` can be interpret, spurious, flagging"),
        (["--fail-on", "units_failed >"], "`--fail-on` takes METRIC OP NUMBER"),
        (["--agent", "oracle"], "`--agent` can be scientist, vlm, vlm-code"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    extra: list[str],
    message: str,
) -> None:
    assert audit(checkpoint, tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert audit(tmp_path / "nope.ckpt", tmp_path) == 2
    assert "`--ckpt`: no such file" in capsys.readouterr().err
    assert cli.main(["audit", "--units", "a:0", "--out", str(tmp_path)]) == 2
    assert "give the model" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "none")]) == 2
    assert "no saved results" in capsys.readouterr().err


@pytest.mark.slow
def test_audit_spurious_and_flagging_tasks_report_their_figures(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tasks"
    code = cli.main(
        [
            "audit",
            "--model",
            MODEL,
            "--ckpt",
            str(checkpoint),
            "--datamodule",
            DATA,
            "--units",
            "features.2:0-1",
            "--tasks",
            "spurious,flagging",
            "--max-units",
            "2",
            "--out",
            str(out),
            "--fail-on",
            "flagged_rate>1",
        ]
    )
    assert code == 0
    figures = json.loads((out / "figures.json").read_text())
    assert "spurious_units" in figures and "units_judged" in figures
    assert 0.0 <= figures["flagged_rate"] <= 1.0
    assert "auroc_msp" in figures
    suite = SCHEMA.to_dict(str(out / "checks.xml"))["testsuite"][0]
    assert [case["@name"] for case in suite["testcase"]] == [
        "spurious",
        "flagging",
        "flagged_rate>1",
    ]
