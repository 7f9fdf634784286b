"""Every command a shipped recipe config shows in its header runs, as a user would type it.

The commands are read from the headers; each runs in a subprocess from a fresh folder, with the
model and data made small (CLI overrides, or for ``lightning-maia audit``, which takes no
overrides, a copy of the config with the same sizes). The audit recipe talks to the loopback
chat-completions server, like a VLM endpoint.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_sample_images

from lightning_maia.recipes.__main__ import CONFIGS, config_path
from lightning_maia.testing._chat_server import ChatServer, text_reply, tool_call_reply

ROOT = Path(__file__).resolve().parents[2]
SMALL_MODEL = {
    "backbone_images": 8,
    "backbone_epochs": 1,
    "backbone_widths": [4, 4, 4, 4],  # 4 penultimate units: the agents study few
}
SMALL_DATA = {"train": 64, "val": 32}
API_KEY = "sk-test-never-logged"


def header_commands(name: str) -> list[str]:
    """The commands in a config's leading comment (continuation lines joined)."""
    commands: list[str] = []
    pending: str | None = None
    for line in Path(config_path(name)).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if pending is not None:
            pending += " " + text
        elif text.startswith(("python -m lightning_maia", "lightning-maia ")):
            pending = text
        else:
            continue
        if pending.endswith("\\"):
            pending = pending.removesuffix("\\").rstrip()
        else:
            commands.append(pending)
            pending = None
    return commands


#: Every header command, and the test that runs it.
COMMANDS = {
    "demo": [
        'python -m lightning_maia.recipes fit --config "$(python -m lightning_maia.recipes path '
        'demo)"',
    ],
    "ci_check": [
        "python -m lightning_maia.recipes fit --config ci_check.yaml",
        "python -m lightning_maia.recipes validate --config ci_check.yaml --ckpt_path "
        "maia_ci/checkpoints/last.ckpt",
        "lightning-maia audit --config ci_check.yaml --ckpt maia_ci/checkpoints/last.ckpt --units "
        '"backbone.pool:*" --tasks interpret --fail-on "units_failed>0" --out audit/',
    ],
    "audit_image_folder": [
        "python -m lightning_maia.recipes validate --config audit_image_folder.yaml "
        "--model.class_path mypkg.models.Classifier --ckpt_path last.ckpt --data.root "
        "path/to/images",
    ],
    "tinted_digits": [
        "python -m lightning_maia.recipes fit --config $(python -m lightning_maia.recipes path "
        "tinted_digits)",
    ],
}


def test_every_header_command_is_run_below() -> None:
    assert set(COMMANDS) == set(CONFIGS)
    for name in CONFIGS:
        assert header_commands(name) == COMMANDS[name], name


def run(command: str, cwd: Path, extra: list[str] = (), **env: str) -> subprocess.CompletedProcess:
    """One header command, with the config names resolved and ``extra`` arguments appended."""
    command = re.sub(
        r'"?\$\(python -m lightning_maia\.recipes path (\w+)\)"?',
        lambda match: shlex.quote(config_path(match[1])),
        command,
    )
    words = shlex.split(command)
    if words[0] == "lightning-maia":  # the console script of this checkout
        words = [sys.executable, "-m", "lightning_maia.cli", *words[1:]]
    elif words[0] == "python":
        words[0] = sys.executable
    path = os.pathsep.join([str(ROOT), str(cwd), os.environ.get("PYTHONPATH", "")])
    environment = {**os.environ, "PYTHONPATH": path, "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    done = subprocess.run(
        [*words, *extra],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done


def small(cache: Path) -> list[str]:
    return [
        *(f"--model.init_args.{k}={v}" for k, v in SMALL_MODEL.items()),
        f"--model.init_args.cache_dir={cache}",
        *(f"--data.init_args.{k}={v}" for k, v in SMALL_DATA.items()),
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
    ]


@pytest.mark.slow
def test_the_demo_config_trains_with_all_three_callbacks(tmp_path: Path) -> None:
    (command,) = COMMANDS["demo"]
    done = run(command, tmp_path, small(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-4000:]
    (log_dir,) = (tmp_path / "maia_demo" / "lightning_logs").glob("version_*")
    for report in ("report.html", "spurious/report.html", "flagger/epoch-000/report.html"):
        assert (log_dir / "maia" / report).is_file(), report
    assert list((log_dir / "checkpoints").glob("*.ckpt"))


def ci_config(tmp_path: Path) -> None:
    """``ci_check.yaml`` in the working folder: the shipped one with the small sizes."""
    config = yaml.safe_load(Path(config_path("ci_check")).read_text())
    config["model"]["init_args"] = {**SMALL_MODEL, "cache_dir": str(tmp_path / "cache")}
    config["data"]["init_args"].update(SMALL_DATA)
    config["trainer"].update(max_epochs=1, enable_progress_bar=False)
    (tmp_path / "ci_check.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_the_ci_check_commands_train_validate_and_audit(tmp_path: Path) -> None:
    ci_config(tmp_path)
    fit, validate, audit = COMMANDS["ci_check"]
    done = run(fit, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "maia_ci" / "checkpoints" / "last.ckpt").is_file()
    done = run(validate, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "maia/flagged_rate" in done.stdout  # the flagger's figures in Lightning's table
    done = run(audit, tmp_path)
    assert done.returncode in (0, 1), done.stderr[-4000:]  # 1: a gate failed, as CI reads it
    assert (tmp_path / "audit" / "report.html").is_file()
    assert list((tmp_path / "audit").glob("*.xml"))  # JUnit for the CI system


CLASSIFIER = '''
import lightning.pytorch as pl
import torch
from torch import nn


class Classifier(pl.LightningModule):
    """A user's own classifier with a ResNet-like ``layer4``."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU())
        self.layer4 = nn.Conv2d(4, 6, 3, stride=2)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(self.stem(x)).relu().mean(dim=(2, 3)))

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))
'''


def reply(request: dict[str, Any]) -> Any:
    """The agent (it sends tools) gets a final answer; the describer a caption."""
    if request.get("tools"):
        final = {"label": "textures", "description": "fires on texture", "concepts": [],
                 "logic": "single"}  # fmt: skip
        return tool_call_reply("final_answer", final)
    return text_reply("a photograph of a building")


@pytest.mark.slow
def test_the_image_folder_audit_validates_a_users_model_on_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(CLASSIFIER))
    monkeypatch.syspath_prepend(str(tmp_path))
    from mypkg.models import Classifier  # type: ignore[import-not-found]

    images = tmp_path / "path" / "to" / "images"
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        (images / name).mkdir(parents=True)
        Image.fromarray(np.asarray(photo)).save(images / name / f"{name}.jpg")
    # A checkpoint of the user's model, as their training would leave it.
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(Classifier())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    (tmp_path / "audit_image_folder.yaml").write_text(
        Path(config_path("audit_image_folder")).read_text()
    )
    (command,) = COMMANDS["audit_image_folder"]
    with ChatServer(reply) as server:
        done = run(command, tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=server.base_url)
    assert done.returncode == 0, done.stderr[-4000:]
    assert server.chat_requests  # the agent and the describer reached the endpoint
    report = next((tmp_path / "maia_audit").rglob("report.html")).read_text()
    assert "layer4:" in report and "textures" in report
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in {".html", ".csv", ".json", ".yaml", ".log"}:
            assert API_KEY not in path.read_text(errors="ignore"), path
    assert API_KEY not in done.stdout + done.stderr
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["hyper_parameters"] == {
        "classes": 2
    }


@pytest.mark.slow
def test_the_tinted_digits_config_removes_colour_units_from_the_head(tmp_path: Path) -> None:
    (command,) = COMMANDS["tinted_digits"]
    extra = [
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.backbone_epochs=20",
    ]
    done = run(command, tmp_path, extra)
    assert done.returncode == 0, done.stderr[-4000:]
    (log_dir,) = (tmp_path / "maia_tinted_digits" / "lightning_logs").glob("version_*")
    report = (log_dir / "maia" / "spurious" / "report.html").read_text()
    # The config's k=12 head inputs were all judged, at least one of them by its ink colour.
    assert "<dt>units_judged</dt><dd>12</dd>" in report
    assert "<dt>units_failed</dt><dd>0</dd>" in report
    assert re.search(r"spurious: follows colour (red|green|cyan|yellow|blue|magenta)", report)
