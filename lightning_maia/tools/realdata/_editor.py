"""RealDataEditor: edit instructions answered with weight-free edits or retrieval, as data.

Instructions it reads (a designer writes the first; a VLM agent may write any):

- ``change ATTRIBUTE [from OLD] to NEW``: a recolour when the attribute is pixel-editable
  (``colour``), else the dataset item that holds every other attribute of the image fixed and
  has ``ATTRIBUTE=NEW`` (retrieval needs an attribute table);
- ``grayscale``; ``occlude the highlighted region``; ``keep only the highlighted region``;
  ``crop to the highlighted region``; ``crop the centre``; ``flip`` (``flip vertically``);
- ``change background to NAME`` with ``backgrounds=`` images and a ``foreground=`` mask function.

Every edit registers an :class:`~lightning_maia.world.provenance.EditRecord` (before, after,
operation, attribute, from-value, to-value) and the edited image's attributes in the editor's
provenance store (``store=``), so a describer reads the new values and the remover's erasure
reads exactly what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

from lightning_maia.errors import GrammarError
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.tools.realdata import _pixel_edits as pixel_edits
from lightning_maia.tools.realdata._queries import parse_change
from lightning_maia.tools.realdata._retrieval import _resized, pixel_attributes
from lightning_maia.tools.realdata._table import AttributeTable
from lightning_maia.world.provenance import EditRecord, ProvenanceStore, resolve_store

#: The instructions besides ``change ...``, for error messages.
OPERATIONS = (
    "change ATTRIBUTE from OLD to NEW",
    "grayscale",
    "occlude the highlighted region",
    "keep only the highlighted region",
    "crop to the highlighted region",
    "crop the centre",
    "flip",
    "flip vertically",
)


def known_attributes(
    item: ImageItem, table: AttributeTable | None, store: ProvenanceStore | None = None
) -> dict[str, str]:
    """What is known of an image's attributes: those registered in ``store`` (default: the
    default store), else its table row."""
    facts = resolve_store(store).facts(item.image)
    if facts is not None and facts.attributes is not None:
        return dict(facts.attributes)
    if table is not None and item.dataset_index is not None:
        return table.row(item.dataset_index)
    return {}


class RealDataEditor:
    """Weight-free and retrieval edits (see the module docstring).

    Args:
        table: the attribute table retrieval edits draw from (None: pixel edits only).
        editable: attributes set by recolouring (default: the table's colour columns, else
            ``colour``).
        backgrounds: name -> image, for ``change background to NAME``.
        foreground: image -> bool (H, W) mask of what stays in front of a swapped background.
        store: where edits are registered and attributes read (default: the default store).
    """

    name = "realdata"

    def __init__(
        self,
        table: AttributeTable | None = None,
        editable: Sequence[str] | None = None,
        *,
        backgrounds: Mapping[str, Tensor] | None = None,
        foreground: Callable[[Tensor], Tensor] | None = None,
        store: ProvenanceStore | None = None,
    ) -> None:
        self.table = table
        self.store = resolve_store(store)
        if editable is None:
            editable = pixel_attributes(table) if table is not None else ("colour",)
        self.editable = tuple(editable)
        self.backgrounds = dict(backgrounds or {})
        self.foreground = foreground

    def edit(
        self, images: Sequence[ImageItem], instructions: Sequence[str], seeds: Sequence[int]
    ) -> list[ImageItem]:
        edited = []
        for item, instruction, seed in zip(images, instructions, seeds, strict=True):
            attributes = known_attributes(item, self.table, self.store)
            image, operation, attribute, old, new, index = self._apply(
                item, instruction.strip().lower(), attributes, seed
            )
            record = EditRecord(item.image, image, operation, attribute, old, new)
            self.store.register_attributes(
                image, {**attributes, attribute: new}, dataset_index=index, edit=record
            )
            edited.append(ImageItem(image, mask=item.mask, dataset_index=index))
        return edited

    def _apply(
        self, item: ImageItem, instruction: str, attributes: dict[str, str], seed: int
    ) -> tuple[Tensor, str, str, str, str, int | None]:
        image, mask, index = item.image, item.mask, item.dataset_index
        change = parse_change(instruction)
        if change is not None:
            attribute, old, new = change
            old = old or attributes.get(attribute, "")
            if attribute == "background" and self.backgrounds:
                return (
                    self._swap_background(image, new),
                    "swap_background",
                    attribute,
                    old,
                    new,
                    index,
                )
            if attribute in self.editable:
                return (
                    pixel_edits.recolour(image, new, mask),
                    "recolour",
                    attribute,
                    old,
                    new,
                    index,
                )
            found, counterpart = self._counterpart(attributes, attribute, new, seed)
            return _resized(counterpart, image.shape[-1]), "retrieve", attribute, old, new, found
        colour = next(iter(self.editable), "colour")
        if instruction in ("grayscale", "make it gray", "make it grayscale"):
            return (
                pixel_edits.grayscale(image, mask),
                "grayscale",
                colour,
                attributes.get(colour, ""),
                "gray",
                index,
            )
        if instruction.startswith("flip"):
            vertical = "vertical" in instruction
            return (
                pixel_edits.flip(image, not vertical),
                "flip",
                "orientation",
                "original",
                "flipped vertically" if vertical else "flipped",
                index,
            )
        if instruction in ("crop the centre", "crop the center"):
            return (
                pixel_edits.crop(image, pixel_edits.centre_box(image, 0.5)),
                "crop",
                "framing",
                "full",
                "centre",
                index,
            )
        if instruction.endswith("highlighted region"):
            if mask is None or not bool(mask.any()):
                raise GrammarError(
                    f"{instruction!r} needs an image with a highlighted region: edit the "
                    "highlighted image that call_units returns",
                    [instruction],
                )
            if instruction.startswith("occlude"):
                return (
                    pixel_edits.occlude(image, mask),
                    "occlude",
                    "region",
                    "visible",
                    "occluded",
                    index,
                )
            if instruction.startswith("keep only"):
                return (
                    pixel_edits.keep_only(image, mask),
                    "keep_only",
                    "context",
                    "present",
                    "removed",
                    index,
                )
            if instruction.startswith("crop"):
                return (
                    pixel_edits.crop(image, pixel_edits.bounding_box(mask)),
                    "crop",
                    "framing",
                    "full",
                    "region",
                    index,
                )
        raise GrammarError(
            f"cannot read the edit {instruction!r}; instructions: " + "; ".join(OPERATIONS),
            [instruction],
        )

    def _counterpart(
        self, attributes: dict[str, str], attribute: str, value: str, seed: int
    ) -> tuple[int, Tensor]:
        """The dataset item equal to ``attributes`` except ``attribute=value``."""
        if self.table is None:
            raise GrammarError(
                f"changing {attribute} needs a dataset item to retrieve: give the editor an "
                f"attribute table, or change a pixel-editable attribute ({list(self.editable)})",
                [attribute],
            )
        others = {
            a: v for a, v in attributes.items() if a in self.table.attributes and a != attribute
        }
        found = self.table.match({**others, attribute: value})
        if len(found) == 0:
            held = ", ".join(f"{a}={v}" for a, v in others.items()) or "nothing else"
            raise GrammarError(
                f"no dataset item has {attribute}={value} with {held} held fixed", [value]
            )
        index = int(found[int(np.random.default_rng(seed).integers(len(found)))])
        return index, self.table.image(index)

    def _swap_background(self, image: Tensor, name: str) -> Tensor:
        if name not in self.backgrounds or self.foreground is None:
            raise GrammarError(
                f"swapping the background to {name!r} needs `backgrounds=` holding it "
                f"(have: {sorted(self.backgrounds)}) and a `foreground=` mask function",
                [name],
            )
        return pixel_edits.swap_background(image, self.foreground(image), self.backgrounds[name])
