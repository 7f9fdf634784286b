"""Load what an audit needs: a LightningModule (class path + checkpoint, or a LightningCLI
config) and validation data (a LightningDataModule or an image folder)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_maia.errors import ConfigurationError
from lightning_maia.image_folder import ImageFolder


def import_class(path: str, option: str) -> type:
    """``package.module.Class`` or ``package.module:Class``; errors name ``option``."""
    module_name, sep, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not name:
        raise ConfigurationError(
            f"`{option}` must be a class path like 'package.module.Class', got {path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"`{option}`: cannot import {module_name!r} ({error})") from error
    found = getattr(module, name, None)
    if not isinstance(found, type):
        raise ConfigurationError(f"`{option}`: {module_name!r} has no class {name!r}")
    return found


def load_from_config(config: Path, seed: int) -> tuple[pl.LightningModule, Any]:
    """The model and datamodule a LightningCLI config describes (``class_path``/``init_args``)."""
    from lightning.pytorch.cli import LightningCLI

    if not config.exists():
        raise ConfigurationError(f"`--config`: no such file {str(config)!r}")
    cli = LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(config)],
        save_config_callback=None,
        seed_everything_default=seed,
        auto_configure_optimizers=False,
    )
    return cli.model, cli.datamodule


def load_model(
    model: str | None, ckpt: Path | None, config: Path | None, seed: int
) -> tuple[pl.LightningModule, Any]:
    """The model (weights from ``ckpt`` where given) and, from a config, its datamodule."""
    if ckpt is not None and not ckpt.exists():
        raise ConfigurationError(f"`--ckpt`: no such file {str(ckpt)!r}")
    if config is not None:
        module, datamodule = load_from_config(config, seed)
        if ckpt is not None:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            module.load_state_dict(state["state_dict"])
        return module, datamodule
    if model is None:
        raise ConfigurationError("give the model: `--model CLASS_PATH --ckpt FILE` or `--config`")
    cls = import_class(model, "--model")
    if not issubclass(cls, pl.LightningModule):
        raise ConfigurationError(f"`--model` must name a LightningModule, got {cls.__name__}")
    if ckpt is None:
        raise ConfigurationError("`--ckpt` is needed with `--model` (the weights to audit)")
    loaded = cls.load_from_checkpoint(ckpt, map_location="cpu")
    return loaded, None


def validation_loader(
    datamodule: Any,
    datamodule_path: str | None,
    image_folder: Path | None,
    image_size: int,
    batch_size: int = 64,
) -> DataLoader[Any]:
    """The validation data: an image folder, a datamodule class path, or the config's one."""
    if image_folder is not None:
        return DataLoader(ImageFolder(image_folder, size=image_size), batch_size=batch_size)
    if datamodule is None and datamodule_path is not None:
        datamodule = import_class(datamodule_path, "--datamodule")()
    if datamodule is None:
        raise ConfigurationError(
            "give the data: `--datamodule CLASS_PATH`, `--image-folder DIR`, or a `--config` "
            "with a data section"
        )
    datamodule.setup("validate")
    loaders = datamodule.val_dataloader()
    if isinstance(loaders, Sequence) and not isinstance(loaders, DataLoader):
        loaders = loaders[0]
    if not isinstance(loaders, DataLoader):
        raise ConfigurationError("the datamodule's val_dataloader() must return a DataLoader")
    return loaders
