"""What the three callbacks share: when to skip, where files go, the exemplar data."""

from __future__ import annotations

import copy
import logging
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_maia.errors import bad_option
from lightning_maia.units import OUTPUT_LAYER, UnitSelection, find_layer, static_width

log = logging.getLogger("lightning_maia")


def check_number(name: str, value: Any, low: float, high: float, what: str) -> None:
    """A real number in ``[low, high]`` (``what`` says so in the error), never a bool or text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_option(name, what, value)
    if not low <= float(value) <= high:
        raise bad_option(name, what, value)


def check_unit_indices(
    model: nn.Module, selections: list[UnitSelection], dataset: Dataset[Any] | None
) -> list[UnitSelection]:
    """Fail when a spec names a channel the layer does not have (``features.3:99`` on 32).

    The width comes from the module type where it says it, else from one forward pass on one
    item of ``dataset``; returns the selections whose width is still unknown (no data yet).
    """
    unknown = []
    for selection in selections:
        if selection.indices is None or selection.layer == OUTPUT_LAYER:
            continue
        width = static_width(find_layer(model, selection.layer))
        if width is None and dataset is not None:
            width = _forward_width(model, selection.layer, dataset)
        if width is None:
            unknown.append(selection)
        elif max(selection.indices) >= width:
            bad = [i for i in selection.indices if i >= width]
            raise bad_option(
                "units",
                f"channel indices 0-{width - 1} of {selection.layer!r} (it has {width})",
                f"{selection.layer}:{','.join(map(str, bad))}",
            )
    return unknown


@torch.no_grad()
def _forward_width(model: nn.Module, layer: str, dataset: Dataset[Any]) -> int | None:
    """The channel count of ``layer``'s output on one item (dim 1, or the last of 2-D/3-D)."""
    widths: list[int] = []

    def hook(_: nn.Module, __: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.ndim >= 2:
            widths.append(int(output.shape[1] if output.ndim == 4 else output.shape[-1]))

    handle = find_layer(model, layer).register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        item = dataset[0]
        image = item[0] if isinstance(item, (tuple, list)) else item
        device = next(iter(model.parameters()), torch.zeros(())).device
        model(torch.as_tensor(image)[None].to(device))
    except (IndexError, KeyError, TypeError, RuntimeError, ValueError):
        return None  # a dataset the model cannot read this way: the first real pass tells
    finally:
        handle.remove()
        model.train(was_training)
    return widths[0] if widths else None


def should_skip(trainer: pl.Trainer) -> bool:
    """Sanity checking and ``fast_dev_run`` never run the agent."""
    return bool(trainer.sanity_checking or getattr(trainer, "fast_dev_run", False))


def output_root(trainer: pl.Trainer, output_dir: str | Path | None) -> Path:
    """Where reports and images go: ``output_dir``, else ``<log_dir>/maia``.

    Under DDP ``trainer.log_dir`` is a collective call (rank zero broadcasts it), so call this on
    every rank at the same point (the callbacks do it in ``setup``), never from rank zero alone.
    """
    if output_dir is not None:
        return Path(output_dir)
    base = trainer.log_dir or trainer.default_root_dir
    return Path(base) / "maia"


def finished_epoch(trainer: pl.Trainer) -> int:
    """The epoch a run at fit end describes: the last one trained (``current_epoch`` has moved
    one past it by ``on_fit_end``)."""
    return max(trainer.current_epoch - 1, 0)


def log_figures(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    figures: Mapping[str, float],
    *,
    at_fit_end: bool = False,
) -> None:
    """Make ``figures`` (equal on every rank: broadcast them first) monitorable, as ``self.log``.

    At an epoch end they go through ``pl_module.log``, so they reach ``trainer.callback_metrics``
    (EarlyStopping, ModelCheckpoint) and the loggers at Lightning's own step. Lightning refuses
    ``self.log`` in ``on_fit_end``, so there they are put into ``trainer.callback_metrics`` on
    every rank and written by rank zero to the loggers at the step (and with the ``epoch``) of the
    last epoch's metrics.
    """
    if not figures:
        return
    if not at_fit_end:
        for name, value in figures.items():
            # Equal on every rank, so syncing changes nothing; it keeps Lightning's DDP check quiet.
            pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True)
        return
    trainer.callback_metrics.update(
        {name: torch.tensor(float(value)) for name, value in figures.items()}
    )
    if trainer.is_global_zero:
        row = {name: float(value) for name, value in figures.items()}
        for logger in trainer.loggers:
            logger.log_metrics(
                {**row, "epoch": finished_epoch(trainer)}, step=max(trainer.global_step - 1, 0)
            )
            logger.save()


def train_dataset(trainer: pl.Trainer) -> Dataset[Any] | None:
    """The dataset of the (first) training dataloader, when the trainer has one."""
    return _dataset_of(trainer.train_dataloader)


def validation_dataset(trainer: pl.Trainer) -> Dataset[Any] | None:
    """The dataset of the (first) validation dataloader, when the trainer has one."""
    return _dataset_of(trainer.val_dataloaders)


def _dataset_of(loaders: Any) -> Dataset[Any] | None:
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, DataLoader):
        dataset: Dataset[Any] = loaders.dataset
        return dataset
    return None


@contextmanager
def detached_from_trainer(module: pl.LightningModule) -> Iterator[None]:
    """Detach the trainer for a moment, e.g. to deep-copy the module without it."""
    trainer = module._trainer
    module._trainer = None
    try:
        yield
    finally:
        module._trainer = trainer


@contextmanager
def with_autograd() -> Iterator[None]:
    """Autograd back on inside a hook: ``trainer.validate`` runs hooks under inference mode, and
    the analyses fit small models (risk combiners, heads) by gradient descent."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def snapshot(module: pl.LightningModule) -> pl.LightningModule:
    """A copy of the module's current weights that training cannot change under a worker."""
    with detached_from_trainer(module):
        copied = copy.deepcopy(module)
    copied.eval()
    return copied
