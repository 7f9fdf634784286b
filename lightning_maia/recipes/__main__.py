"""``python -m lightning_maia.recipes fit|validate --config FILE``: LightningCLI for the recipes;
``python -m lightning_maia.recipes path NAME`` prints the path of a shipped config."""

from __future__ import annotations

import sys
from importlib import resources

from lightning.pytorch.cli import LightningCLI

CONFIGS = ("demo", "audit_image_folder", "ci_check", "tinted_digits")


def config_path(name: str) -> str:
    """The file of a shipped recipe config (``demo``, ``audit_image_folder``, ``ci_check``)."""
    if name not in CONFIGS:
        raise SystemExit(f"unknown recipe {name!r}; recipes: {', '.join(CONFIGS)}")
    return str(resources.files("lightning_maia.recipes").joinpath("configs", f"{name}.yaml"))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "path":
        print(config_path(sys.argv[2]))
        return
    LightningCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_callback=None)


if __name__ == "__main__":
    main()
