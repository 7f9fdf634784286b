"""Retrieval: experiments answered by selecting real dataset images through an attribute table.

:class:`RetrievalDesigner` implements the scientist's ``ExperimentDesigner`` protocol for a
user's own data: "concept present, everything else varied evenly" becomes a retrieval prompt
per image that fixes the concept and asks for the other attributes in turn, so a set of images
breaks the correlations of the data (a colour that goes with one class in training is shown
with every class); "concept removed, all else fixed" becomes an edit instruction that the
:class:`~lightning_maia.tools.realdata._editor.RealDataEditor` answers with a weight-free edit
(recolour) or with the dataset item that differs from the image in that attribute alone.
:class:`RetrievalGenerator` answers the prompts; where the data hold no item of a combination
and only pixel-editable attributes (colour) are missing, it edits the nearest item into it.

>>> import pandas as pd, torch, numpy as np
>>> frame = pd.DataFrame({"digit": ["0", "0", "1", "1"], "colour": ["red", "blue"] * 2})
>>> table = AttributeTable(frame, torch.zeros(4, 3, 4, 4))
>>> designer = RetrievalDesigner(table, class_attribute="digit")
>>> designer.prompts(["colour=red"], [], 2, np.random.default_rng(0))
['retrieve colour=red; prefer digit=1', 'retrieve colour=red; prefer digit=0']
>>> designer.removal_edit("digit=0", [], ["digit=0", "colour=red"], np.random.default_rng(0))
'change digit from 0 to 1'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from lightning_maia._cycle import Cycle
from lightning_maia.errors import GrammarError, ToolError, bad_option
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.tools.realdata._colours import COLOUR_HUES
from lightning_maia.tools.realdata._pixel_edits import recolour
from lightning_maia.tools.realdata._queries import (
    Query,
    fixed_attributes,
    format_change,
    format_query,
    parse_query,
)
from lightning_maia.tools.realdata._queries import split_concept as _split
from lightning_maia.tools.realdata._table import AttributeTable
from lightning_maia.world.provenance import EditRecord, ProvenanceStore, resolve_store


def pixel_attributes(table: AttributeTable) -> tuple[str, ...]:
    """The table's attributes that a weight-free edit can set: ``colour``-like columns whose
    values are all named hues."""
    return tuple(
        a
        for a in table.attributes
        if "colour" in a or "color" in a
        if table.values(a) and all(v in COLOUR_HUES for v in table.values(a))
    )


class RetrievalDesigner:
    """Designs experiments over a user's attribute table (see the module docstring).

    Args:
        table: the attributes (and images) of the dataset the experiments draw from.
        class_attribute: the column holding the class (``digit``), so class names map to
            concepts; None when the classes are not a column.
        editable: attributes a weight-free edit sets (default: :func:`pixel_attributes`).
    """

    name = "retrieval"

    def __init__(
        self,
        table: AttributeTable,
        class_attribute: str | None = None,
        editable: Sequence[str] | None = None,
    ) -> None:
        if class_attribute is not None and class_attribute not in table.attributes:
            raise bad_option(
                "class_attribute", f"a column of {list(table.attributes)}", class_attribute
            )
        self.table = table
        self.class_attribute = class_attribute
        self.editable = tuple(editable) if editable is not None else pixel_attributes(table)

    def backends(
        self, store: ProvenanceStore | None = None
    ) -> tuple[RetrievalGenerator, object, object]:
        """The generator, editor and describer that read this designer's prompts, sharing
        ``store`` (default: the default provenance store)."""
        from lightning_maia.tools.realdata._describers import default_describer
        from lightning_maia.tools.realdata._editor import RealDataEditor

        generator = RetrievalGenerator(self.table, self.editable, store)
        editor = RealDataEditor(self.table, self.editable, store=store)
        return generator, editor, default_describer(self.table, store)

    def can_design(self, concept: str) -> bool:
        pair = _split(concept)
        return pair is not None and pair[1] in self.table.values(pair[0])

    def attribute_of(self, concept: str) -> str:
        pair = _split(concept)
        return pair[0] if pair is not None else concept

    def values(self, attribute: str) -> list[str]:
        return [f"{attribute}={v}" for v in self.table.values(attribute)]

    def attributes(self) -> tuple[str, ...]:
        return tuple(a for a in self.table.attributes if a != self.class_attribute)

    def class_concept(self, class_name: str) -> str | None:
        if self.class_attribute is None:
            return None
        name = str(class_name).strip()
        return (
            f"{self.class_attribute}={name}"
            if name in self.table.values(self.class_attribute)
            else None
        )

    def neutral_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
        return self.prompts([], [], count, rng) or []

    def _possible(self, present: dict[str, str]) -> bool:
        fixed = {a: v for a, v in present.items() if a not in self.editable}
        return len(self.table.match(fixed)) > 0 and all(
            v in self.table.values(a) or a in self.editable for a, v in present.items()
        )

    def prompts(
        self,
        present: Sequence[str],
        absent: Sequence[str],
        count: int,
        rng: np.random.Generator,
    ) -> list[str] | None:
        fixed = fixed_attributes(present)
        if fixed is None or not self._possible(fixed):
            return None
        banned: dict[str, set[str]] = {}
        for concept in absent:
            pair = _split(concept)
            if pair is not None and pair[0] not in fixed:
                banned.setdefault(pair[0], set()).add(pair[1])
        free = {
            a: [v for v in self.table.values(a) if v not in banned.get(a, set())]
            for a in self.table.attributes
            if a not in fixed
        }
        cycles = {a: Cycle(values, rng) for a, values in free.items() if values}
        prompts = []
        for _ in range(count):
            prefer = {a: cycle.next() for a, cycle in cycles.items()}
            prompts.append(format_query(Query(dict(fixed), prefer, banned)))
        return prompts

    def removal_edit(
        self,
        concept: str,
        avoid: Sequence[str],
        context: Sequence[str],
        rng: np.random.Generator,
    ) -> str | None:
        target = _split(concept)
        if target is None:
            return None
        attribute, value = target
        banned = {value} | {
            pair[1] for pair in map(_split, avoid) if pair is not None and pair[0] == attribute
        }
        choices = [v for v in self.table.values(attribute) if v not in banned]
        if attribute not in self.editable:
            # Retrieval holds every other attribute of the image fixed: keep values it can find.
            others = {
                a: v
                for a, v in (p for p in map(_split, context) if p is not None)
                if a in self.table.attributes and a != attribute
            }
            choices = [c for c in choices if len(self.table.match({**others, attribute: c}))]
        if not choices:
            return None
        return format_change(attribute, value, choices[int(rng.integers(len(choices)))])

    def label(self, concepts: Sequence[str], logic: str) -> str:
        words = []
        for concept in concepts:
            pair = _split(concept)
            words.append(f"{pair[0]} {pair[1]}" if pair is not None else concept)
        return {"or": " OR ", "and": " AND "}.get(logic, ", ").join(words)


class RetrievalGenerator:
    """Answers retrieval prompts (:func:`~lightning_maia.tools.realdata._queries.parse_query`)
    with dataset images; a seed picks among the items that fit, so a replay is exact. What each
    image shows is registered in ``store`` (default: the default provenance store)."""

    name = "retrieval"

    def __init__(
        self,
        table: AttributeTable,
        editable: Sequence[str] | None = None,
        store: ProvenanceStore | None = None,
    ) -> None:
        self.table = table
        self.store = resolve_store(store)
        self.editable = tuple(editable) if editable is not None else pixel_attributes(table)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int) -> list[ImageItem]:
        return [self._one(parse_query(p), s, size) for p, s in zip(prompts, seeds, strict=True)]

    def _one(self, query: Query, seed: int, size: int) -> ImageItem:
        rng = np.random.default_rng(seed)
        found, edits = self._candidates(query)
        if len(found) == 0:
            raise GrammarError(
                f"no dataset item shows {format_query(query)[len('retrieve ') :]}, and no "
                f"weight-free edit of {list(self.editable) or 'any attribute'} can make one",
                list(query.present),
            )
        index = int(found[int(rng.integers(len(found)))])
        image = _resized(self.table.image(index), size)
        attributes = self.table.row(index)
        record = None
        for attribute, value in edits.items():
            if attributes.get(attribute) == value:
                continue
            before, image = image, recolour(image, value)
            record = EditRecord(before, image, "recolour", attribute, attributes[attribute], value)
            attributes[attribute] = value
        self.store.register_attributes(image, attributes, dataset_index=index, edit=record)
        return ImageItem(image, dataset_index=index)

    def _candidates(self, query: Query) -> tuple[np.ndarray, dict[str, str]]:
        """Items that show the query, and the pixel edits that complete them: real items with
        every asked and preferred value first; else items with the values no edit can set,
        recoloured to the rest; else real items with the asked values and some preferred ones."""
        target = {**query.prefer, **query.present}
        found = self.table.match(target, query.absent)
        if len(found):
            return found, {}
        edits = {a: v for a, v in target.items() if a in self.editable}
        if edits:
            rest = {a: v for a, v in target.items() if a not in edits}
            absent = {a: v for a, v in query.absent.items() if a not in edits}
            found = self.table.match(rest, absent)
            if len(found):
                return found, edits
        found = self.table.best_matches(query.present, query.absent, query.prefer)
        if len(found) or not edits:
            return found, {}
        must = {a: v for a, v in edits.items() if a in query.present}
        rest = {a: v for a, v in query.present.items() if a not in must}
        absent = {a: v for a, v in query.absent.items() if a not in must}
        return self.table.best_matches(rest, absent, query.prefer), must


def _resized(image: Tensor, size: int) -> Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    if size < 1:
        raise ToolError(f"image size must be positive, got {size}")
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[
        0
    ].clamp(0.0, 1.0)


__all__ = ["RetrievalDesigner", "RetrievalGenerator", "pixel_attributes"]
