"""The recipes' LightningCLI YAML configs parse and build what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI
from PIL import Image

from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks.misclassification_flagger import MisclassificationFlagger
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import UnitInterpreter
from lightning_maia.recipes.__main__ import CONFIGS, config_path
from lightning_maia.recipes.lightning_modules import SpuriousShapesClassifier

TINY = [
    "--model.init_args.backbone_images=8",
    "--model.init_args.backbone_epochs=1",
    "--model.init_args.backbone_widths=[4, 4, 4, 8]",
]


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> LightningCLI:
    monkeypatch.setattr("sys.argv", ["recipes"])
    return LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
        save_config_callback=None,
    )


def test_every_recipe_ships_a_config() -> None:
    for name in CONFIGS:
        assert Path(config_path(name)).is_file()


def test_demo_config_builds_the_three_callbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = cli(
        ["--config", config_path("demo"), *TINY, f"--model.init_args.cache_dir={tmp_path}"],
        monkeypatch,
    )
    kinds = [type(c) for c in built.trainer.callbacks]
    for expected in (UnitInterpreter, SpuriousFeatureRemover, MisclassificationFlagger):
        assert expected in kinds
    assert isinstance(built.model, SpuriousShapesClassifier)
    assert built.model.hparams["class_names"] == ["circle", "square", "triangle", "star"]


def test_audit_config_builds_a_vlm_agent_without_a_key_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    built = cli(
        [
            "--config",
            config_path("audit_image_folder"),
            "--model.class_path=helpers.lightning_models.ShapesClassifier",
            f"--data.init_args.root={tmp_path}",
        ],
        monkeypatch,
    )
    (interpreter,) = [c for c in built.trainer.callbacks if isinstance(c, UnitInterpreter)]
    assert isinstance(interpreter.agent, VLMAgent)
    assert interpreter.agent.client.model == "gpt-4o"
    assert "api_key" not in Path(config_path("audit_image_folder")).read_text()


def test_ci_check_config_sets_the_gates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = cli(
        ["--config", config_path("ci_check"), *TINY, f"--model.init_args.cache_dir={tmp_path}"],
        monkeypatch,
    )
    (flagger,) = [c for c in built.trainer.callbacks if isinstance(c, MisclassificationFlagger)]
    assert (flagger.thresholds.max_flagged_rate, flagger.thresholds.max_subgroups) == (0.5, 4)
