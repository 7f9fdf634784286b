"""The model under study: a model, its preprocessing and the units an agent may probe.

``Subject.call_units(images)`` takes display images — float (N, 3, H, W) in [0, 1], what the
tools generate and edit — applies the subject's preprocessing (resize, normalise) and returns
each unit's activation and map. A class-logit unit (``output:k``) reports the logit, or the
class probability with ``logits_as="probability"``.

This is the library's one input convention: data yield display images in [0, 1] and the model
sees ``preprocess(images)``, on every path (``compute_exemplars`` given the Subject or its
preprocess, the callbacks, the audit), so an exemplar's activation is what ``call_units`` gives
on its picture. Data that yield normalised tensors declare a ``denormalize`` instead (see
:mod:`lightning_maia.exemplars`).

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False))
>>> with torch.no_grad():
...     _ = model[0].weight.fill_(1.0)
>>> subject = Subject(model, ["0:1"])
>>> subject.call_units(torch.ones(2, 3, 4, 4)).activations.tolist()
[[3.0], [3.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_maia.errors import bad_option, closest_names
from lightning_maia.recording import REDUCTIONS, ActivationRecorder, TokenLayout, reduce_maps
from lightning_maia.units import OUTPUT_LAYER, Unit, UnitSelection, resolve_units

Preprocess = Callable[[Tensor], Tensor]


@dataclass
class UnitResponse:
    """What the units did on a batch: (N, U) activations, and maps per layer."""

    units: list[Unit]
    activations: Tensor
    layer_maps: dict[str, Tensor]  # layer -> (N, units of that layer, h, w)

    def unit_activations(self, unit: Unit) -> Tensor:
        """(N,) activations of one unit."""
        return self.activations[:, self._position(unit)]

    def unit_maps(self, unit: Unit) -> Tensor:
        """(N, h, w) maps of one unit."""
        layer_units = [u for u in self.units if u.layer == unit.layer]
        self._position(unit)
        return self.layer_maps[unit.layer][:, layer_units.index(unit)]

    def _position(self, unit: Unit) -> int:
        if unit not in self.units:
            known = [u.spec for u in self.units]
            raise bad_option(
                "unit", f"a unit of this response: {closest_names(unit.spec, known)}", unit.spec
            )
        return self.units.index(unit)


def imagenet_preprocess(size: int | None = None) -> Preprocess:
    """Resize (optional) and normalise with the ImageNet mean and std, as torchvision models
    expect — without importing torchvision."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def preprocess(images: Tensor) -> Tensor:
        if size is not None and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return (images - mean.to(images.device)) / std.to(images.device)

    return preprocess


@dataclass
class Subject:
    """A model, how to feed it display images, and the units under study."""

    model: nn.Module
    units: Sequence[str] | Sequence[Unit]
    preprocess: Preprocess | None = None
    class_names: Sequence[str] | None = None
    reduction: str = "max"
    tokens: TokenLayout = field(default_factory=TokenLayout)
    #: ``logit`` or ``probability`` (softmax over the output) for class-logit units.
    logits_as: str = "logit"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise bad_option("reduction", " or ".join(REDUCTIONS), self.reduction)
        if self.logits_as not in ("logit", "probability"):
            raise bad_option("logits_as", "logit or probability", self.logits_as)
        specs = [u.spec if isinstance(u, Unit) else u for u in self.units]
        self.selections: list[UnitSelection] = resolve_units(self.model, specs, self.class_names)

    @property
    def device(self) -> torch.device:
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            if not tensor.is_meta:  # a background snapshot keeps only the probed layers' weights
                return tensor.device
        return torch.device("cpu")

    def call_units(self, images: Tensor) -> UnitResponse:
        """Activations and maps of every unit on display images (N, 3, H, W) in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise bad_option("images", "a float (N, 3, H, W) batch in [0, 1]", tuple(images.shape))
        recorded = [
            # Probabilities need every logit: record the whole output, select after softmax.
            UnitSelection(s.layer, None) if self._as_probability(s) else s
            for s in self.selections
        ]
        recorder = ActivationRecorder(self.model, recorded, tokens=self.tokens)
        layer_maps: dict[str, list[Tensor]] = {s.layer: [] for s in self.selections}
        was_training = self.model.training
        self.model.eval()
        try:
            with recorder, torch.inference_mode():
                for batch in images.split(self.batch_size):
                    batch = batch.to(self.device)
                    self.model(self.preprocess(batch) if self.preprocess is not None else batch)
                    for selection in self.selections:
                        layer_maps[selection.layer].append(self._maps(recorder, selection))
        finally:
            self.model.train(was_training)
        units = [unit for s in self.selections for unit in s.units(recorder.records[s.layer].width)]
        maps = {layer: torch.cat(parts) for layer, parts in layer_maps.items()}
        activations = torch.cat([reduce_maps(m, self.reduction) for m in maps.values()], dim=1)
        return UnitResponse(units, activations, maps)

    def _as_probability(self, selection: UnitSelection) -> bool:
        return selection.layer == OUTPUT_LAYER and self.logits_as == "probability"

    def _maps(self, recorder: ActivationRecorder, selection: UnitSelection) -> Tensor:
        maps = recorder.records[selection.layer].maps
        assert maps is not None
        maps = maps.float()
        if self._as_probability(selection):
            maps = maps.softmax(dim=1)
            if selection.indices is not None:
                maps = maps[:, list(selection.indices)]
        return maps.cpu()
