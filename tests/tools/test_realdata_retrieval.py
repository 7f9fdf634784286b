"""Retrieval designs and describers on real handwriting (scikit-learn's digits, tinted)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lightning_maia.bench._tinted_digits import TintedDigits
from lightning_maia.errors import GrammarError, ToolError
from lightning_maia.tools.backends._base import Description, ImageItem
from lightning_maia.tools.realdata import (
    AttributeConcepts,
    AttributeTable,
    ClassifierDescriber,
    CombinedDescriber,
    PixelDescriber,
    RealDataEditor,
    RetrievalDesigner,
    RetrievalGenerator,
    TableDescriber,
    tint,
)
from lightning_maia.world.provenance import PROVENANCE, ProvenanceStore


@pytest.fixture(scope="module")
def digits() -> TintedDigits:
    return TintedDigits.split("train", classes=4, shortcut=0.95, seed=0)


@pytest.fixture(scope="module")
def table(digits: TintedDigits) -> AttributeTable:
    return AttributeTable.from_dataset(digits)


def _facts(item: ImageItem) -> dict[str, str]:
    facts = PROVENANCE.facts(item.image)
    assert facts is not None and facts.attributes is not None
    return dict(facts.attributes)


def test_the_table_reads_the_datasets_metadata(digits: TintedDigits, table: AttributeTable) -> None:
    assert table.attributes == ("digit", "colour")
    assert table.values("digit") == ["0", "1", "2", "3"]
    assert table.row(5) == {"digit": str(int(digits.labels[5])), "colour": digits.colours[5]}
    assert torch.equal(table.image(5), digits[5][0])


def test_a_concept_alone_comes_with_every_other_value_in_turn(table: AttributeTable) -> None:
    """Red is digit 0's shortcut in the data; the experiment shows red with every digit."""
    designer = RetrievalDesigner(table, class_attribute="digit")
    prompts = designer.prompts(["colour=red"], [], 8, np.random.default_rng(0))
    assert prompts is not None
    items = RetrievalGenerator(table).generate(prompts, list(range(8)), 24)
    facts = [_facts(item) for item in items]
    assert {f["colour"] for f in facts} == {"red"}
    assert Counter(f["digit"] for f in facts) == {"0": 2, "1": 2, "2": 2, "3": 2}
    # Red 0s are real items; where the data hold too few red 3s, a recolour makes them.
    for item, fact in zip(items, facts, strict=True):
        assert PixelDescriber().describe([item], [None])[0].concepts[1] == "colour=red"
        assert item.dataset_index is not None
        assert table.row(item.dataset_index)["digit"] == fact["digit"]


def test_a_retrieved_counterpart_holds_the_other_attributes_fixed(table: AttributeTable) -> None:
    designer = RetrievalDesigner(table, class_attribute="digit")
    source = RetrievalGenerator(table).generate(["retrieve digit=1, colour=yellow"], [3], 24)[0]
    context = [f"{a}={v}" for a, v in _facts(source).items()]
    rng = np.random.default_rng(0)
    instruction = designer.removal_edit("digit=1", [], context, rng)
    assert instruction is not None and instruction.startswith("change digit from 1 to ")
    new_digit = instruction.rsplit(" ", 1)[1]
    edited = RealDataEditor(table).edit([source], [instruction], [0])[0]
    assert _facts(edited) == {"digit": new_digit, "colour": "yellow"}
    assert edited.dataset_index is not None
    assert torch.equal(edited.image, table.image(edited.dataset_index))  # a real item, unedited
    record = PROVENANCE.facts(edited.image).edit  # type: ignore[union-attr]
    assert (record.operation, record.attribute, record.from_value) == ("retrieve", "digit", "1")


def test_backends_given_a_store_register_there_alone(table: AttributeTable) -> None:
    """A private store holds what its backends made; the default store never sees it."""
    private = ProvenanceStore()
    designer = RetrievalDesigner(table, class_attribute="digit")
    generator, editor, describer = designer.backends(private)
    source = generator.generate(["retrieve digit=2, colour=green"], [5], 24)[0]  # type: ignore[attr-defined]
    edited = editor.edit([source], ["change colour from green to red"], [0])[0]  # type: ignore[attr-defined]
    record = private.facts(edited.image).edit  # type: ignore[union-attr]
    assert (record.attribute, record.from_value, record.to_value) == ("colour", "green", "red")
    assert private.facts(edited.image).attributes == {"digit": "2", "colour": "red"}  # type: ignore[union-attr]
    concepts = describer.describe([edited], [None])[0].concepts  # type: ignore[attr-defined]
    assert {"colour=red", "digit=2"} <= set(concepts)
    assert PROVENANCE.facts(edited.image) is None or PROVENANCE.facts(edited.image).edit is None  # type: ignore[union-attr]


def test_colour_removal_is_a_recolour_of_the_same_scan(table: AttributeTable) -> None:
    designer = RetrievalDesigner(table, class_attribute="digit")
    assert designer.editable == ("colour",)
    source = RetrievalGenerator(table).generate(["retrieve digit=2, colour=green"], [0], 24)[0]
    instruction = designer.removal_edit(
        "colour=green", ["colour=red"], ["digit=2", "colour=green"], np.random.default_rng(1)
    )
    assert instruction is not None
    new = instruction.rsplit(" ", 1)[1]
    assert new not in ("green", "red")
    edited = RealDataEditor(table).edit([source], [instruction], [0])[0]
    assert _facts(edited) == {"digit": "2", "colour": new}
    ink = source.image.max(0).values
    assert torch.allclose(edited.image, tint(ink, new), atol=1e-5)


def test_the_designer_refuses_what_the_data_cannot_show(table: AttributeTable) -> None:
    designer = RetrievalDesigner(table, class_attribute="digit")
    rng = np.random.default_rng(0)
    assert designer.prompts(["digit=7"], [], 2, rng) is None
    assert designer.prompts(["digit=1", "digit=2"], [], 2, rng) is None
    assert designer.class_concept("3") == "digit=3" and designer.class_concept("9") is None
    assert designer.values("colour") == [f"colour={c}" for c in ("cyan", "green", "red", "yellow")]
    assert designer.attributes() == ("colour",)
    with pytest.raises(GrammarError, match="no dataset item shows"):
        RetrievalGenerator(table, editable=()).generate(["retrieve digit=9"], [0], 24)
    with pytest.raises(GrammarError, match="retrieve"):
        RetrievalGenerator(table).generate(["a red three"], [0], 24)


def test_describers_name_the_region_from_table_pixels_and_classifier(
    digits: TintedDigits, table: AttributeTable
) -> None:
    image = digits[0][0]
    item = ImageItem(image, dataset_index=0)
    row = table.row(0)
    assert TableDescriber(table).describe([item], [None])[0].concepts == (
        f"colour={row['colour']}",
        f"digit={row['digit']}",
    )
    half = torch.zeros(3, 24, 24)
    half[0, :, :12] = 1.0  # red left half
    half[2, :, 12:] = 1.0  # blue right half
    right = torch.zeros(24, 24, dtype=torch.bool)
    right[:, 12:] = True
    assert "colour=blue" in PixelDescriber().describe([ImageItem(half)], [right])[0].concepts
    assert "colour=red" in PixelDescriber().describe([ImageItem(half)], [~right])[0].concepts

    class MeanColour(nn.Module):  # hand-weighted: the logit of a channel is its mean
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) * 10.0

    classifier = ClassifierDescriber(MeanColour(), ["reddish", "greenish", "bluish"])
    found = classifier.describe([ImageItem(half), ImageItem(half)], [right, ~right])
    assert [d.concepts for d in found] == [("object=bluish",), ("object=reddish",)]
    with pytest.raises(ToolError, match="no attribute row"):
        TableDescriber(table).describe([ImageItem(half)], [None])
    combined = CombinedDescriber([TableDescriber(table), PixelDescriber()])
    assert combined.describe([ImageItem(half)], [right])[0].concepts[1] == "colour=blue"


def test_plain_vocabulary_terms_become_concepts_of_an_attribute() -> None:
    class Words:
        name = "words"

        def describe(self, images: list[ImageItem], masks: list[object]) -> list[Description]:
            return [Description("a dog on grass", ("dog", "place=grass")) for _ in images]

    described = AttributeConcepts(Words(), "object").describe(
        [ImageItem(torch.zeros(3, 2, 2))], [None]
    )
    assert described[0].concepts == ("object=dog", "place=grass")


def test_a_table_must_have_one_row_per_item() -> None:
    with pytest.raises(Exception, match="one row per dataset item"):
        AttributeTable(pd.DataFrame({"colour": ["red"]}), torch.zeros(2, 3, 2, 2))
