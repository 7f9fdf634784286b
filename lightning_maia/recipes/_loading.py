"""Load what an audit needs: the model (a LightningModule or a plain ``nn.Module``: a class path
or a factory, weights from a checkpoint or its own), its preprocessing, and the data (a
LightningDataModule or an image folder).

``--model`` names ``package.module.Name`` or ``package.module:Name`` where ``Name`` is a class
(built without arguments unless a checkpoint carries its hyperparameters) or a function that
returns the model. ``--ckpt`` is a Lightning checkpoint or a ``state_dict`` file; without it the
model keeps the weights its constructor loaded. A plain module is audited through
:class:`PlainModule`, which keeps the module's own layer names (``layer4``, not ``model.layer4``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_maia.errors import ConfigurationError, closest_names
from lightning_maia.image_folder import ImageFolder
from lightning_maia.subject import Preprocess, imagenet_preprocess


def import_object(path: str, option: str) -> Any:
    """The object ``package.module.Name`` or ``package.module:Name`` names; errors name
    ``option`` and, for a missing name, the closest names the module has."""
    module_name, sep, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not name:
        raise ConfigurationError(
            f"`{option}` must be a path like 'package.module.Name', got {path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"`{option}`: cannot import {module_name!r} ({error}); the current folder is on "
            "the import path, so a module beside you is found as 'file_name.Name'"
        ) from error
    if not hasattr(module, name):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ConfigurationError(
            f"`{option}`: {module_name!r} has no {name!r}; closest: {closest_names(name, public)}"
        )
    return getattr(module, name)


def import_class(path: str, option: str) -> type:
    """``package.module.Class`` or ``package.module:Class``; errors name ``option``."""
    found = import_object(path, option)
    if not isinstance(found, type):
        raise ConfigurationError(f"`{option}`: {path!r} is not a class")
    return found


class PlainModule(pl.LightningModule):
    """A plain ``nn.Module`` under audit as a LightningModule, with the module's own layer names:
    its children become this module's children (the same objects), and its forward is used."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_audited", module)  # not a child: no "module." prefix
        for name, child in module.named_children():
            self.add_module(name, child)
        for name, parameter in module.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in module.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        names = getattr(module, "class_names", None)
        if names is not None:
            self.class_names = list(names)

    @property
    def audited(self) -> nn.Module:
        audited: nn.Module = self.__dict__["_audited"]
        return audited

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.audited(*args, **kwargs)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        return None  # the audit's callbacks do the work; nothing to compute per batch


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


def _state_dict(ckpt: Path) -> Mapping[str, Tensor]:
    try:
        loaded = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ConfigurationError(f"`--ckpt`: cannot read {str(ckpt)!r} ({error})") from error
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        return loaded["state_dict"]  # a Lightning checkpoint
    if isinstance(loaded, Mapping) and all(isinstance(v, Tensor) for v in loaded.values()):
        return loaded
    raise ConfigurationError(
        f"`--ckpt`: {str(ckpt)!r} holds neither a state_dict nor a Lightning checkpoint"
    )


def load_weights(module: nn.Module, ckpt: Path) -> None:
    """Load ``ckpt`` into ``module``: a state_dict, or a Lightning checkpoint of a module that
    held this one under a prefix (``model.``) — the prefix is taken off."""
    state = dict(_state_dict(ckpt))
    own = set(module.state_dict())
    if set(state) != own:
        prefixes = {key.split(".", 1)[0] for key in state}
        if len(prefixes) == 1 and all("." in key for key in state):
            prefix = f"{prefixes.pop()}."
            unprefixed = {key[len(prefix) :]: value for key, value in state.items()}
            if set(unprefixed) == own:
                state = unprefixed
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise ConfigurationError(
            f"`--ckpt`: the weights do not fit {type(module).__name__}: missing "
            f"{', '.join(missing[:5]) or 'none'}{' ...' if len(missing) > 5 else ''}; unexpected "
            f"{', '.join(unexpected[:5]) or 'none'}{' ...' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict(state)


def _build(found: Any, path: str) -> nn.Module:
    if isinstance(found, type) and not issubclass(found, nn.Module):
        raise ConfigurationError(
            f"`--model` must name an nn.Module (or LightningModule) class or a function that "
            f"returns one, got class {found.__name__}"
        )
    if not callable(found):
        raise ConfigurationError(f"`--model` {path!r} is not a class or a function")
    try:
        built = found()
    except TypeError as error:
        raise ConfigurationError(
            f"`--model` {path!r} cannot be built without arguments ({error}); point it at a "
            "function that builds the model"
        ) from error
    if not isinstance(built, nn.Module):
        raise ConfigurationError(
            f"`--model` {path!r} returned {type(built).__name__}, not an nn.Module"
        )
    return built


def _has_hyperparameters(ckpt: Path) -> bool:
    loaded = torch.load(ckpt, map_location="cpu", weights_only=False)
    return isinstance(loaded, Mapping) and "hyper_parameters" in loaded


def load_model(
    model: str | None, ckpt: Path | None, config: Path | None, seed: int
) -> tuple[pl.LightningModule, Any]:
    """The model (weights from ``ckpt`` where given) and, from a config, its datamodule."""
    if ckpt is not None and not ckpt.exists():
        raise ConfigurationError(f"`--ckpt`: no such file {str(ckpt)!r}")
    if config is not None:
        module, datamodule = load_from_config(config, seed)
        if ckpt is not None:
            load_weights(module, ckpt)
        return module, datamodule
    if model is None:
        raise ConfigurationError(
            "give the model: `--model CLASS_OR_FACTORY [--ckpt FILE]` or `--config`"
        )
    found = import_object(model, "--model")
    lightning = isinstance(found, type) and issubclass(found, pl.LightningModule)
    if lightning and ckpt is not None and _has_hyperparameters(ckpt):
        return found.load_from_checkpoint(ckpt, map_location="cpu"), None
    built = _build(found, model)
    if ckpt is not None:
        load_weights(built, ckpt)
    return (built if isinstance(built, pl.LightningModule) else PlainModule(built)), None


def load_preprocess(spec: str | None) -> Preprocess | None:
    """``none``, ``imagenet`` or ``imagenet:SIZE`` (resize, then ImageNet mean/std), or the path
    of a function: a preprocess itself (one tensor argument) or a factory returning one."""
    if spec is None or spec == "none":
        return None
    name, _, size = spec.partition(":")
    if name == "imagenet":
        if size and not size.isdecimal():
            raise ConfigurationError(f"`--preprocess` imagenet:SIZE takes a number, got {size!r}")
        return imagenet_preprocess(int(size) if size else None)
    found = import_object(spec, "--preprocess")
    if not callable(found):
        raise ConfigurationError(f"`--preprocess` {spec!r} is not a function")
    try:
        takes = len(inspect.signature(found).parameters)
    except (TypeError, ValueError):
        takes = 1
    transform: Callable[..., Any] = found() if takes == 0 else found
    if not callable(transform):
        raise ConfigurationError(f"`--preprocess` {spec!r} returned no function")
    return transform


def validation_loader(
    datamodule: Any,
    datamodule_path: str | None,
    image_folder: Path | None,
    image_size: int,
    batch_size: int = 64,
    attributes: Path | None = None,
) -> DataLoader[Any]:
    """The validation data: an image folder (with its ``attributes`` CSV), a datamodule class
    path, or the config's one."""
    if image_folder is not None:
        folder = ImageFolder(image_folder, size=image_size, attributes=attributes)
        return DataLoader(folder, batch_size=batch_size)
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
