"""Counterfactual edits as data: the feature changes of edits that changed one attribute alone.

The erasure remedy projects out the directions along which features move when an edit changes
only the spurious attribute. An edit counts when its images say so: procedural images by their
scenes (every other attribute equal), real images by the
:class:`~lightning_maia.world.provenance.EditRecord` their edit registered in the toolbox's
provenance store (before, after, attribute, from-value, to-value), whatever made it — a
recolour, a retrieved counterpart, a background swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_maia.errors import MaiaError, ToolError
from lightning_maia.subject import Preprocess, Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world.provenance import EditRecord


def counterfactual_deltas(
    model: nn.Module,
    layer: str,
    toolboxes: Sequence[Toolbox],
    attribute: str = "background",
    *,
    preprocess: Preprocess | None = None,
    edits: Sequence[EditRecord] = (),
) -> Tensor:
    """(M, F) feature changes of the edits that changed only ``attribute``.

    Every (original, edited) pair in the toolboxes' image stores counts once when it changed
    ``attribute`` alone: procedural images by their scenes, real images by the
    :class:`~lightning_maia.world.provenance.EditRecord` their edit registered (a recolour,
    a retrieved counterpart, ...). ``edits`` adds pairs made outside the agent's runs. The
    features are the whole ``layer``.
    """
    originals, edited = [], []
    for before, after in edit_pairs(toolboxes, attribute):
        originals.append(before)
        edited.append(after)
    for record in edits:
        if record.attribute == attribute and record.from_value != record.to_value:
            originals.append(record.before)
            edited.append(record.after)
    if not originals:
        raise ToolError(f"no edit among the agent's experiments changed only the {attribute}")
    subject = Subject(model, [f"{layer}:*"], preprocess=preprocess, reduction="mean")
    before = subject.call_units(torch.stack(originals)).activations
    after = subject.call_units(torch.stack(edited)).activations
    return (after - before).float()


def edit_pairs(toolboxes: Sequence[Toolbox], attribute: str) -> list[tuple[Tensor, Tensor]]:
    """(before, after) images of the toolboxes' edits that changed ``attribute`` alone."""
    pairs, seen = [], set()
    for toolbox in toolboxes:
        for stored in toolbox.images:
            if stored.source != "edit" or stored.parent is None:
                continue
            key = (id(toolbox), stored.parent, stored.id)
            if key in seen:
                continue
            parent = toolbox.images.get(stored.parent)
            if parent.scene is not None and stored.scene is not None:
                changed_alone = _only_changed(parent.scene, stored.scene, attribute)
            else:
                facts = toolbox.store.facts(stored.image)
                record = facts.edit if facts is not None else None
                changed_alone = (
                    record is not None
                    and record.attribute == attribute
                    and record.from_value != record.to_value
                )
            if changed_alone:
                seen.add(key)
                pairs.append((parent.image, stored.image))
    return pairs


def _only_changed(before: Any, after: Any, attribute: str) -> bool:
    from lightning_maia.world._datasets import attribute_value
    from lightning_maia.world._scene import ATTRIBUTES

    try:
        values = [(attribute_value(before, a), attribute_value(after, a)) for a in ATTRIBUTES]
    except (MaiaError, ValueError):
        return False
    changed = {a for a, (x, y) in zip(ATTRIBUTES, values, strict=True) if x != y}
    if attribute == "background":
        changed.discard("background_colour")  # a named background brings its own colour
    return changed == {attribute}


__all__ = ["counterfactual_deltas", "edit_pairs"]
