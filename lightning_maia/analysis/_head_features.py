"""What a classifier head reads: its input features on a dataset, and the layer that makes them.

The spurious-feature search (:mod:`lightning_maia.analysis.spurious_search`) works on the raw
input of the head (before any mask) and asks the agent about the units of the layer whose
output that input is.

>>> import torch
>>> from torch import nn
>>> from torch.utils.data import TensorDataset
>>> model = nn.Sequential(
...     nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
... )
>>> data = TensorDataset(torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1]))
>>> feeding_layer(model, model[3], data)
('1', 'mean')
>>> head_inputs(model, model[3], data).features.shape
torch.Size([6, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lightning_maia.analysis._spurious import dataset_groups
from lightning_maia.exemplars import preprocess_for
from lightning_maia.subject import Preprocess

#: Leaf modules that only reshape: the feature layer is the module around them.
_PASS_THROUGH = (nn.Flatten, nn.Identity, nn.Dropout)


@dataclass
class HeadInputs:
    """The raw features a head reads on a dataset, with labels and group labels."""

    #: (N, F) the head's input on every item, in dataset order.
    features: Tensor
    #: (N,) class labels.
    labels: Tensor
    #: (N,) group labels where the dataset has them (a ``group`` column or ``group(i)``).
    groups: Tensor | None


@torch.inference_mode()
def head_inputs(
    model: nn.Module,
    head: nn.Module,
    dataset: Dataset[Any],
    batch_size: int = 256,
    progress: bool = False,
    preprocess: Preprocess | None = None,
) -> HeadInputs:
    """What ``head`` reads (its raw input, before any mask) on every item of ``dataset``
    (display images, through ``preprocess`` where given)."""
    preprocess = preprocess_for(dataset, preprocess)  # declared model inputs go in as they are
    captured: list[Tensor] = []

    def hook(_: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].detach().float().cpu())

    handle = head.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    labels: list[Tensor] = []
    device = next(model.parameters()).device
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        for batch in tqdm(loader, desc="head inputs", leave=False, disable=not progress):
            images = batch[0].to(device)
            model(preprocess(images) if preprocess is not None else images)
            labels.append(torch.as_tensor(batch[1]).long())
    finally:
        handle.remove()
        model.train(was_training)
    return HeadInputs(torch.cat(captured), torch.cat(labels), dataset_groups(dataset))


@torch.inference_mode()
def feeding_layer(
    model: nn.Module, head: nn.Module, dataset: Dataset[Any], preprocess: Preprocess | None = None
) -> tuple[str, str] | None:
    """The module whose output ``head`` reads and how to reduce it: ``(path, "mean")``.

    One forward on two items: the innermost module whose output *is* the head's input (pure
    reshapes such as ``Flatten`` skipped), else a conv-like module whose spatial mean equals it.
    """
    images = torch.stack([dataset[i][0] for i in range(min(2, len(dataset)))])  # type: ignore[arg-type]
    preprocess = preprocess_for(dataset, preprocess)
    outputs: list[tuple[str, Any]] = []
    handles = []
    names = {module: name for name, module in model.named_modules() if name}
    for module, name in names.items():
        if module is head:
            continue
        handles.append(
            module.register_forward_hook(lambda m, _, out, name=name: outputs.append((name, out)))
        )
    seen: list[Tensor] = []
    handles.append(head.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0])))
    was_training = model.training
    model.eval()
    try:
        images = images.to(next(model.parameters()).device)
        model(preprocess(images) if preprocess is not None else images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not seen:
        return None
    target = seen[0]
    modules = dict(model.named_modules())
    for name, output in outputs:
        if output is target and not isinstance(modules[name], _PASS_THROUGH):
            return name, "mean"
    for name, output in reversed(outputs):
        if (
            isinstance(output, Tensor)
            and output.ndim == 4
            and output.shape[:2] == target.shape
            and torch.allclose(output.float().mean(dim=(2, 3)), target.float(), atol=1e-5)
        ):
            return name, "mean"
    return None


__all__ = ["HeadInputs", "feeding_layer", "head_inputs"]
