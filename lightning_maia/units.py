"""Units of a vision model and the spec strings that name them.

A unit is one channel of one module's output: a conv channel (``"layer4.1.conv2:17"``), a linear
feature, a token feature, or a class logit (``"output:3"``, ``"output:cat"``). A spec names one
layer and a selection of its channels:

=====================  ==================================================
``"layer4.1.conv2:17"``  channel 17
``"layer4:0-9,12"``      channels 0 to 9 and 12
``"features:*"``         every channel (the width is found from the module or at the first forward)
``"output:3"``           class logit 3 (the model's output, unless it has a child called ``output``)
``"output:cat"``         the logit of class ``cat`` in ``class_names``
=====================  ==================================================

Specs resolve against an ``nn.Module`` at setup: an unknown layer fails with the closest module
names. A channel past the layer's real width fails at the first forward (see ``recording``).

>>> import torch.nn as nn
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
>>> resolve_units(model, ["0:0-2", "output:cat"], class_names=["dog", "cat", "cow", "fox"])
[UnitSelection(layer='0', indices=(0, 1, 2)), UnitSelection(layer='output', indices=(1,))]
>>> resolve_units(model, ["0:*"])[0].units()[-1]
Unit(layer='0', index=7)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from lightning_maia.errors import UnitSpecError, closest_names

OUTPUT_LAYER = "output"

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


@dataclass(frozen=True, order=True)
class Unit:
    """One channel of one layer: ``layer`` is a module path, or ``"output"`` (the logits)."""

    layer: str
    index: int

    @property
    def spec(self) -> str:
        """The spec string that names this unit alone.

        >>> Unit("layer4.1.conv2", 17).spec
        'layer4.1.conv2:17'
        """
        return f"{self.layer}:{self.index}"

    @property
    def is_class_logit(self) -> bool:
        return self.layer == OUTPUT_LAYER

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class UnitSelection:
    """The channels of one layer named by a spec; ``indices=None`` means every channel."""

    layer: str
    indices: tuple[int, ...] | None

    def units(self, width: int | None = None) -> list[Unit]:
        """The selected units; ``width`` is needed when the spec selected every channel."""
        if self.indices is not None:
            return [Unit(self.layer, i) for i in self.indices]
        if width is None:
            raise UnitSpecError(
                f"`{self.layer}:*` selects every channel, but the width of {self.layer!r} is not "
                "known before a forward pass; run one batch through the model first"
            )
        return [Unit(self.layer, i) for i in range(width)]


def parse_unit_spec(spec: str, class_names: Sequence[str] | None = None) -> UnitSelection:
    """Parse one spec string without a model (class names resolve ``output:NAME``).

    >>> parse_unit_spec("layer4:0-3,7")
    UnitSelection(layer='layer4', indices=(0, 1, 2, 3, 7))
    >>> parse_unit_spec("features:*")
    UnitSelection(layer='features', indices=None)
    """
    if not isinstance(spec, str):
        raise UnitSpecError(f"a unit spec must be a string like 'layer4:0-9', got {spec!r}")
    layer, sep, selector = spec.strip().rpartition(":")
    layer, selector = layer.strip(), selector.strip()
    if not sep or not layer or not selector:
        raise UnitSpecError(
            f"a unit spec is LAYER:CHANNELS, e.g. 'layer4.1.conv2:17', 'layer4:0-9,12', "
            f"'features:*', 'output:3' or 'output:cat'; got {spec!r}"
        )
    if selector == "*":
        return UnitSelection(layer, None)
    indices: list[int] = []
    for part in (p.strip() for p in selector.split(",")):
        indices.extend(_parse_part(part, spec, layer, class_names))
    return UnitSelection(layer, tuple(dict.fromkeys(indices)))


def _parse_part(
    part: str, spec: str, layer: str, class_names: Sequence[str] | None
) -> Iterable[int]:
    if part.isdecimal():  # not isdigit: int() rejects digits such as '²'
        return [int(part)]
    if match := _RANGE.match(part):
        start, stop = int(match[1]), int(match[2])
        if stop < start:
            raise UnitSpecError(f"range {part!r} in unit spec {spec!r} runs backwards")
        return range(start, stop + 1)
    if layer == OUTPUT_LAYER and class_names is not None:
        if part in class_names:
            return [list(class_names).index(part)]
        if len(class_names) > 10:  # an ImageNet head: never print every name
            raise UnitSpecError(
                f"unknown class {part!r} in unit spec {spec!r}; closest class names: "
                f"{closest_names(part, class_names)}"
            )
        close = difflib.get_close_matches(part, list(class_names), n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnitSpecError(
            f"unknown class {part!r} in unit spec {spec!r}; class_names are "
            f"{', '.join(class_names)}{hint}"
        )
    what = "channel indices" if layer != OUTPUT_LAYER else "class indices (or pass class_names)"
    raise UnitSpecError(
        f"cannot read {part!r} in unit spec {spec!r}: expected {what}, ranges like 0-9, or *"
    )


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module a layer path names; ``"output"`` is the model itself unless a child has that name.

    >>> find_layer(nn.Sequential(nn.Linear(2, 2)), "0")
    Linear(in_features=2, out_features=2, bias=True)
    """
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer]
    if layer == OUTPUT_LAYER:
        return model
    names = [name for name in modules if name]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    more = f" (of {len(names)})" if len(names) > 5 else ""
    hint = f"closest: {', '.join(close)}" if close else f"layers: {', '.join(names[:5])}{more}"
    raise UnitSpecError(f"no layer {layer!r} in {type(model).__name__}; {hint}")


# Modules that keep the channel count, so a Sequential may look past them to an earlier child.
_WIDTH_PRESERVING = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool2d,
)


def static_width(module: nn.Module) -> int | None:
    """A module's output width when its type says it; None when only a forward can tell."""
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module.children())):
            width = static_width(child)
            if width is not None:
                return width
            if not isinstance(child, _WIDTH_PRESERVING):
                return None  # an unknown child may change the width
        return None
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    if next(module.children(), None) is not None:
        return None  # a composite's width attributes may describe its insides (timm's num_features)
    for attribute in ("out_channels", "out_features", "num_features"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return int(module.normalized_shape[0])
    return None


def resolve_units(
    model: nn.Module, specs: str | Sequence[str], class_names: Sequence[str] | None = None
) -> list[UnitSelection]:
    """Parse specs and check each layer exists in ``model``; one selection per layer, in order.

    Specs for the same layer merge. ``*`` becomes explicit indices where the width is known from
    the module type; otherwise it stays None until the first forward.
    """
    if isinstance(specs, str) or not isinstance(specs, Iterable):
        specs = [specs]  # a lone non-string spec then fails in parse_unit_spec, naming itself
    if not specs:
        raise UnitSpecError("no units given: pass at least one spec such as 'layer4:0-9'")
    merged: dict[str, list[int] | None] = {}
    for spec in specs:
        selection = parse_unit_spec(spec, class_names)
        module = find_layer(model, selection.layer)
        indices: list[int] | None = (
            list(selection.indices) if selection.indices is not None else None
        )
        if indices is None:
            width = static_width(module)
            indices = list(range(width)) if width is not None else None
        if selection.layer in merged:
            previous = merged[selection.layer]
            merged[selection.layer] = (
                None if previous is None or indices is None else previous + indices
            )
        else:
            merged[selection.layer] = indices
    return [
        UnitSelection(layer, None if indices is None else tuple(dict.fromkeys(indices)))
        for layer, indices in merged.items()
    ]


def units_of(selections: Sequence[UnitSelection]) -> list[Unit]:
    """Every unit of explicit selections, in order."""
    return [unit for selection in selections for unit in selection.units()]
