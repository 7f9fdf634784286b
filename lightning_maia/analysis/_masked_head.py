"""A linear head that sees its input features through a unit mask and a projection.

``MaskedHead(x) = weight @ (projection @ (mask * x)) + bias``. The mask (1 keeps a unit, 0
drops it) and the projection (identity, or ``I - U U^T`` to erase a subspace) are registered
buffers, and the head the model had before is kept beside them (``original_weight``,
``original_bias``) for comparison.

Checkpoints load into the user's own class, with no code of theirs: the
:class:`~lightning_maia.callbacks.spurious_feature_remover.SpuriousFeatureRemover` saves a
checkpoint's ``state_dict`` with every masked head *folded* (:func:`fold_masked_heads`) into the
plain ``nn.Linear`` it replaced: ``weight`` becomes ``(weight @ projection) * mask``, which gives
exactly the masked head's logits, and there are no extra keys, so ``Model.load_from_checkpoint``
(strict) and ``trainer.validate(ckpt_path=...)`` work on a fresh model as on any checkpoint. The
mask, projection and original head travel beside it, under ``checkpoint["maia_masked_heads"]``:
``fit(ckpt_path=...)`` with the remover attached turns the head back into a :class:`MaskedHead`
(training goes on under the mask), and a model whose ``on_load_checkpoint`` calls
:func:`restore_masked_heads` gets the :class:`MaskedHead` itself from ``load_from_checkpoint``.

It subclasses ``nn.Linear``: code that finds "the last ``nn.Linear``" still finds it, and
:func:`install_masked_head` turns a model's ``nn.Linear`` into one *in place*, keeping its
parameter objects, so an optimizer built before (and a DDP wrapper) keeps training it.

>>> head = MaskedHead(3, 2, mask=torch.tensor([1.0, 0.0, 1.0]))
>>> with torch.no_grad():
...     _ = head.weight.fill_(1.0), head.bias.zero_()
>>> head(torch.tensor([[1.0, 10.0, 2.0]])).tolist()
[[3.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_maia.errors import bad_option

#: Buffers that mark a masked head in a state dict.
BUFFERS: tuple[str, ...] = ("mask", "projection", "original_weight", "original_bias")
#: How a masked head was made.
REMEDIES: tuple[str, ...] = ("select", "erase", "none")
#: The checkpoint key under which folded masked heads keep mask, projection and original head.
CHECKPOINT_KEY = "maia_masked_heads"


class MaskedHead(nn.Linear):
    """``nn.Linear`` over ``projection @ (mask * x)``, with the original head kept.

    Args:
        in_features, out_features: as for ``nn.Linear``.
        mask: (in,) 0/1 per input unit (default: all ones).
        projection: (in, in) applied after the mask (default: identity).
        original: the head this one replaces (default: a copy of this head's weights).
        remedy: ``select``, ``erase`` or ``none`` (how the head was made; kept in checkpoints).
    """

    mask: Tensor
    projection: Tensor
    original_weight: Tensor
    original_bias: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        mask: Tensor | None = None,
        projection: Tensor | None = None,
        original: nn.Linear | None = None,
        remedy: str = "none",
    ) -> None:
        super().__init__(in_features, out_features)
        self._register(mask, projection, original, remedy)

    def _register(
        self,
        mask: Tensor | None,
        projection: Tensor | None,
        original: nn.Linear | None,
        remedy: str,
    ) -> None:
        if remedy not in REMEDIES:
            raise bad_option("remedy", ", ".join(REMEDIES), remedy)
        n, device = self.in_features, self.weight.device
        mask = torch.ones(n) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        projection = torch.eye(n) if projection is None else torch.as_tensor(projection).float()
        if tuple(mask.shape) != (n,):
            raise bad_option("mask", f"a ({n},) tensor", tuple(mask.shape))
        if tuple(projection.shape) != (n, n):
            raise bad_option("projection", f"an ({n}, {n}) tensor", tuple(projection.shape))
        source = original if original is not None else self
        bias = source.bias if source.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("mask", mask.detach().clone().to(device))
        self.register_buffer("projection", projection.detach().clone().to(device))
        self.register_buffer("original_weight", source.weight.detach().clone().to(device))
        self.register_buffer("original_bias", bias.detach().clone().to(device))
        self.remedy = remedy

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.transform(x), self.weight, self.bias)

    def transform(self, x: Tensor) -> Tensor:
        """What the head sees: the masked, projected features."""
        return (x * self.mask) @ self.projection.T

    def original_forward(self, x: Tensor) -> Tensor:
        """The logits the original head gives on the raw features."""
        return F.linear(x, self.original_weight, self.original_bias)

    @property
    def kept_units(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.mask > 0).flatten()]

    def get_extra_state(self) -> dict[str, Any]:
        return {"remedy": self.remedy}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.remedy = str(state.get("remedy", "none"))

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"{super().extra_repr()}, remedy={self.remedy}, kept={kept}/{self.in_features}"


def install_masked_head(
    model: nn.Module,
    path: str,
    weight: Tensor,
    bias: Tensor,
    *,
    mask: Tensor | None = None,
    projection: Tensor | None = None,
    remedy: str = "select",
) -> MaskedHead:
    """Make the ``nn.Linear`` at ``path`` of ``model`` a :class:`MaskedHead` with new weights.

    The module is converted in place (same object, same parameters), so optimizers and DDP
    keep their references; the first original head is kept (installing twice keeps it).
    """
    head = _module_at(model, path)
    if not isinstance(head, nn.Linear):
        raise bad_option("head", "an nn.Linear module path", f"{path} ({type(head).__name__})")
    if tuple(weight.shape) != tuple(head.weight.shape):
        raise bad_option("weight", f"shape {tuple(head.weight.shape)}", tuple(weight.shape))
    if isinstance(head, MaskedHead):
        original = nn.Linear(head.in_features, head.out_features)
        with torch.no_grad():
            original.weight.copy_(head.original_weight)
            original.bias.copy_(head.original_bias)
    else:
        original = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
        original.load_state_dict(head.state_dict())
        if head.bias is None:
            head.bias = nn.Parameter(torch.zeros(head.out_features, device=head.weight.device))
        head.__class__ = MaskedHead  # in place: parameters, optimizer state and DDP stay valid
    masked = head
    assert isinstance(masked, MaskedHead)
    masked._register(mask, projection, original, remedy)
    with torch.no_grad():
        masked.weight.copy_(weight.to(masked.weight))
        assert masked.bias is not None
        masked.bias.copy_(bias.to(masked.bias))
    return masked


def fold_masked_heads(model: nn.Module, checkpoint: dict[str, Any]) -> list[str]:
    """Save every :class:`MaskedHead` of ``model`` in ``checkpoint`` as the plain ``nn.Linear``
    that computes the same logits; keep its mask, projection and original head under
    :data:`CHECKPOINT_KEY`. Returns the paths folded."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        return []
    folded: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        if not isinstance(module, MaskedHead) or f"{path}.mask" not in state:
            continue
        weight, bias = effective_linear(module)
        state[f"{path}.weight"], state[f"{path}.bias"] = weight, bias
        record: dict[str, Any] = {"remedy": module.remedy}
        for name in BUFFERS:
            record[name] = state.pop(f"{path}.{name}")
        state.pop(f"{path}._extra_state", None)
        folded[path] = record
    if folded:
        checkpoint[CHECKPOINT_KEY] = folded
    return list(folded)


def reinstall_masked_heads(model: nn.Module, checkpoint: Mapping[str, Any]) -> list[str]:
    """After a folded checkpoint was loaded: make each folded (now plain) head a
    :class:`MaskedHead` again, with its loaded weights, mask, projection and original head.
    Returns the paths."""
    restored = []
    for path, record in dict(checkpoint.get(CHECKPOINT_KEY) or {}).items():
        try:
            module = _module_at(model, path)
        except AttributeError:
            continue
        if not isinstance(module, nn.Linear) or isinstance(module, MaskedHead):
            continue
        masked = install_masked_head(
            model, path, module.weight.detach(), _bias(module), mask=record["mask"],
            projection=record["projection"], remedy=str(record.get("remedy", "none")),
        )  # fmt: skip
        with torch.no_grad():
            masked.original_weight.copy_(record["original_weight"])
            masked.original_bias.copy_(record["original_bias"])
        restored.append(path)
    return restored


def restore_masked_heads(model: nn.Module, state_dict: Mapping[str, Any]) -> list[str]:
    """Before ``load_state_dict``: turn every ``nn.Linear`` that was saved as a
    :class:`MaskedHead` into one, so the load keeps masks and projections. Returns the paths.

    Call it from ``LightningModule.on_load_checkpoint(checkpoint)`` with the ``checkpoint``
    (folded heads, as the remover saves them, come back from it) or, for checkpoints saved
    without the remover attached, with ``checkpoint["state_dict"]``.
    """
    if isinstance(state_dict.get("state_dict"), dict):  # a whole checkpoint
        if CHECKPOINT_KEY in state_dict:
            return _unfold(model, state_dict)  # type: ignore[arg-type]
        state_dict = state_dict["state_dict"]
    restored = []
    for key in state_dict:
        if not key.endswith(".mask"):
            continue
        path = key[: -len(".mask")]
        if not all(f"{path}.{name}" in state_dict for name in BUFFERS):
            continue
        try:
            module = _module_at(model, path)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear) and not isinstance(module, MaskedHead):
            install_masked_head(model, path, module.weight.detach(), _bias(module), remedy="none")
            restored.append(path)
    return restored


def _unfold(model: nn.Module, checkpoint: dict[str, Any]) -> list[str]:
    """Put the folded buffers back into the checkpoint's state dict and make the heads
    :class:`MaskedHead` modules, so that a strict ``load_state_dict`` then fills them."""
    state = checkpoint["state_dict"]
    restored = []
    for path, record in dict(checkpoint[CHECKPOINT_KEY]).items():
        try:
            module = _module_at(model, path)
        except AttributeError:
            continue
        if not isinstance(module, nn.Linear):
            continue
        if not isinstance(module, MaskedHead):
            install_masked_head(model, path, module.weight.detach(), _bias(module), remedy="none")
        for name in BUFFERS:
            state[f"{path}.{name}"] = record[name]
        state[f"{path}._extra_state"] = {"remedy": str(record.get("remedy", "none"))}
        restored.append(path)
    return restored


def find_head(model: nn.Module, name: str | None = None) -> tuple[str, nn.Linear]:
    """The head: the module named ``name``, else the last ``nn.Linear`` of ``model``."""
    if name is not None:
        try:
            module = _module_at(model, name)
        except AttributeError:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise bad_option("head", "an nn.Linear module: " + ", ".join(names), name) from None
        if not isinstance(module, nn.Linear):
            raise bad_option("head", "an nn.Linear module", f"{name} ({type(module).__name__})")
        return name, module
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise bad_option(
            "head", "a model with an nn.Linear head (or name one)", type(model).__name__
        )
    return linears[-1]


def effective_linear(head: nn.Linear) -> tuple[Tensor, Tensor]:
    """(weight, bias) of one plain linear map on the raw features that equals ``head``."""
    bias = _bias(head)
    with torch.no_grad():
        if isinstance(head, MaskedHead):
            return (head.weight @ head.projection) * head.mask, bias
        return head.weight.detach().clone(), bias


def _bias(head: nn.Linear) -> Tensor:
    if head.bias is None:
        return torch.zeros(head.out_features, device=head.weight.device)
    return head.bias.detach().clone()


def _module_at(model: nn.Module, path: str) -> nn.Module:
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    if not isinstance(module, nn.Module):
        raise AttributeError(path)
    return module
