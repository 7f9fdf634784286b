"""``python -m lightning_maia.recipes fit|validate --config FILE``: LightningCLI for the recipes;
``python -m lightning_maia.recipes path NAME`` prints the path of a shipped config."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

CONFIGS = ("demo", "audit_image_folder", "ci_check", "tinted_digits")


def config_path(name: str) -> str:
    """The file of a shipped recipe config (``demo``, ``audit_image_folder``, ``ci_check``)."""
    if name not in CONFIGS:
        raise SystemExit(f"unknown recipe {name!r}; recipes: {', '.join(CONFIGS)}")
    return str(resources.files("lightning_maia.recipes").joinpath("configs", f"{name}.yaml"))


class RecipeCLI(LightningCLI):
    """LightningCLI that also validates checkpoints of models trained without a CLI.

    Their hyperparameters name no ``_class_path``, and Lightning then parses them against the
    base ``LightningModule`` and fails (``Option '...' is not accepted``); here the class given
    as ``--model.class_path`` (or in the config) reads them.
    """

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
            hparams = dict(checkpoint.get("hyper_parameters") or {})
            model = self.config[subcommand].get("model")
            class_path = getattr(model, "class_path", None)
            if hparams and "_class_path" not in hparams and class_path:
                update = {"model": {"class_path": class_path, "init_args": hparams}}
                self.config = self.parser.parse_object({subcommand: update}, self.config)
                return
        super()._parse_ckpt_path()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "path":
        print(config_path(sys.argv[2]))
        return
    RecipeCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_callback=None)


if __name__ == "__main__":
    main()
