"""Record unit activations with forward hooks, removed in ``finally``.

Every layer output is brought to one shape, (N, C, h, w):

- conv maps (N, C, H, W) stay as they are;
- features (N, C) become (N, C, 1, 1);
- tokens (N, T, C) become (N, C, h, w) when the tokens (after dropping a CLS token, if asked)
  fold into a square grid, else (N, C, 1, T).

A unit's activation on an image is its map reduced over space: ``max`` (MAIA's default) or
``mean``.

>>> import torch
>>> from torch import nn
>>> from lightning_maia.units import resolve_units
>>> model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False))
>>> with torch.no_grad():
...     _ = model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
>>> with ActivationRecorder(model, resolve_units(model, "0:*")) as recorder:
...     _ = model(torch.arange(1.0, 5.0).view(1, 1, 2, 2))
>>> recorder.activations["0"].tolist()
[[4.0, -1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_maia.errors import UnitIndexError, UnitSpecError, bad_option
from lightning_maia.units import OUTPUT_LAYER, Unit, UnitSelection, find_layer

Reduction = Literal["max", "mean"]
REDUCTIONS: tuple[str, ...] = ("max", "mean")


@dataclass(frozen=True)
class TokenLayout:
    """How to read (N, T, C) token outputs.

    ``drop_cls`` drops the first token (a ViT's CLS token); ``fold_grid`` folds the remaining
    tokens into a square grid when their count is a perfect square, so that a token unit has a
    spatial map like a conv channel.
    """

    drop_cls: bool = False
    fold_grid: bool = True


def output_tensor(output: Any, prefer_logits: bool = False) -> Tensor:
    """The tensor in a module's output: itself, the first tensor of a tuple, or a model output's
    ``logits`` / ``last_hidden_state``."""
    if isinstance(output, Tensor):
        return output
    keys = ("logits", "last_hidden_state") if prefer_logits else ("last_hidden_state", "logits")
    for key in keys:
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(value, Tensor):
            return value
    values = output.values() if isinstance(output, Mapping) else output
    if isinstance(values, Sequence) or isinstance(output, Mapping):
        for value in values:
            if isinstance(value, Tensor):
                return value
    raise UnitSpecError(f"cannot find a tensor in a layer output of type {type(output).__name__}")


def to_channel_maps(tensor: Tensor, tokens: TokenLayout = TokenLayout()) -> Tensor:
    """Bring a layer output to (N, C, h, w).

    >>> to_channel_maps(torch.zeros(2, 5)).shape
    torch.Size([2, 5, 1, 1])
    >>> to_channel_maps(torch.zeros(2, 17, 8), TokenLayout(drop_cls=True)).shape
    torch.Size([2, 8, 4, 4])
    """
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim == 2:
        return tensor[:, :, None, None]
    if tensor.ndim == 3:
        if tokens.drop_cls:
            tensor = tensor[:, 1:, :]
        count = tensor.shape[1]
        side = math.isqrt(count)
        channels_first = tensor.transpose(1, 2)
        if tokens.fold_grid and side * side == count:
            return channels_first.reshape(tensor.shape[0], tensor.shape[2], side, side)
        return channels_first.unsqueeze(2)
    raise UnitSpecError(
        f"cannot read a layer output of shape {tuple(tensor.shape)}: expected (N,C,H,W) maps, "
        "(N,C) features or (N,T,C) tokens"
    )


def reduce_maps(maps: Tensor, reduction: str = "max") -> Tensor:
    """(N, C, h, w) maps -> (N, C) activations.

    >>> reduce_maps(torch.tensor([[[[1.0, 3.0]]]]), "mean")
    tensor([[2.]])
    """
    if reduction == "max":
        return maps.amax(dim=(2, 3))
    if reduction == "mean":
        return maps.mean(dim=(2, 3))
    raise bad_option("reduction", " or ".join(REDUCTIONS), reduction)


@dataclass
class LayerRecord:
    """What one layer gave on the last forward: selected channels only."""

    selection: UnitSelection
    width: int
    maps: Tensor | None
    activations: Tensor


@dataclass
class ActivationRecorder:
    """A context manager that records the selected channels of each layer on every forward.

    The last forward's results are in :attr:`records` (per layer), :attr:`activations` (reduced,
    (N, C_selected)) and :attr:`maps` ((N, C_selected, h, w), when ``keep_maps``). Hooks are
    removed on exit, also when the forward raised. A channel past a layer's width raises
    :class:`UnitIndexError` with the real width at the first forward.
    """

    model: nn.Module
    selections: Sequence[UnitSelection]
    reduction: str = "max"
    keep_maps: bool = True
    tokens: TokenLayout = field(default_factory=TokenLayout)
    records: dict[str, LayerRecord] = field(default_factory=dict, init=False)
    _handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list, init=False)
    _index_cache: dict[tuple[str, str], Tensor] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise bad_option("reduction", " or ".join(REDUCTIONS), self.reduction)
        layers = [selection.layer for selection in self.selections]
        if len(set(layers)) != len(layers):
            raise UnitSpecError(f"each layer may appear once in the selections, got {layers}")
        self._modules = [(s, find_layer(self.model, s.layer)) for s in self.selections]

    def __enter__(self) -> ActivationRecorder:
        try:
            for selection, module in self._modules:
                self._handles.append(module.register_forward_hook(self._hook_for(selection)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _hook_for(self, selection: UnitSelection) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._record(selection, output)

        return hook

    def _record(self, selection: UnitSelection, output: Any) -> None:
        tensor = output_tensor(output, prefer_logits=selection.layer == OUTPUT_LAYER)
        maps = to_channel_maps(tensor.detach(), self.tokens)
        width = maps.shape[1]
        if selection.indices is not None:
            largest = max(selection.indices, default=-1)
            if largest >= width:
                raise UnitIndexError(
                    f"unit {selection.layer}:{largest} is out of range: layer "
                    f"{selection.layer!r} has {width} channels (valid indices 0-{width - 1})"
                )
            if selection.indices != tuple(range(width)):  # every channel needs no copy
                maps = maps.index_select(1, self._indices(selection, maps.device))
        elif self.keep_maps:
            maps = maps.clone()  # else a later in-place op (ReLU(inplace=True)) rewrites the record
        activations = reduce_maps(maps, self.reduction)
        self.records[selection.layer] = LayerRecord(
            selection=selection,
            width=width,
            maps=maps if self.keep_maps else None,
            activations=activations,
        )

    def _indices(self, selection: UnitSelection, device: torch.device) -> Tensor:
        key = (selection.layer, str(device))
        if key not in self._index_cache:
            assert selection.indices is not None
            self._index_cache[key] = torch.tensor(selection.indices, device=device)
        return self._index_cache[key]

    @property
    def activations(self) -> dict[str, Tensor]:
        return {layer: record.activations for layer, record in self.records.items()}

    @property
    def maps(self) -> dict[str, Tensor]:
        return {
            layer: record.maps for layer, record in self.records.items() if record.maps is not None
        }

    def units(self) -> list[Unit]:
        """Every recorded unit, in selection order (``*`` selections expand once seen)."""
        found: list[Unit] = []
        for selection in self.selections:
            record = self.records.get(selection.layer)
            width = record.width if record is not None else None
            found.extend(selection.units(width))
        return found

    def unit_activations(self, unit: Unit) -> Tensor:
        """(N,) activations of one unit on the last forward."""
        record, position = self._locate(unit)
        return record.activations[:, position]

    def unit_maps(self, unit: Unit) -> Tensor:
        """(N, h, w) maps of one unit on the last forward."""
        record, position = self._locate(unit)
        if record.maps is None:
            raise UnitSpecError("maps were not kept: create the recorder with keep_maps=True")
        return record.maps[:, position]

    def _locate(self, unit: Unit) -> tuple[LayerRecord, int]:
        record = self.records.get(unit.layer)
        if record is None:
            raise UnitSpecError(f"layer {unit.layer!r} was not recorded (or not reached)")
        indices = record.selection.indices
        if indices is None:
            if not 0 <= unit.index < record.width:
                raise UnitIndexError(
                    f"unit {unit.spec} is out of range: layer {unit.layer!r} has {record.width} "
                    f"channels (valid indices 0-{record.width - 1})"
                )
            return record, unit.index
        if unit.index not in indices:
            raise UnitSpecError(f"unit {unit.spec} is not among the recorded units")
        return record, indices.index(unit.index)


def record_units(
    model: nn.Module,
    images: Tensor,
    selections: Sequence[UnitSelection],
    *,
    reduction: str = "max",
    tokens: TokenLayout = TokenLayout(),
) -> ActivationRecorder:
    """Run one forward under ``torch.inference_mode`` and return the filled recorder."""
    recorder = ActivationRecorder(model, selections, reduction=reduction, tokens=tokens)
    with recorder, torch.inference_mode():
        model(images)
    return recorder
