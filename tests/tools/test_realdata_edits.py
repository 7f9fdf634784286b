"""Weight-free edits on real photographs (scikit-learn's sample images): each changes exactly
what it says and nothing else."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_sample_images

from lightning_maia.errors import ConfigurationError, GrammarError
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.tools.realdata import RealDataEditor
from lightning_maia.tools.realdata._colours import rgb_to_hsv
from lightning_maia.tools.realdata._pixel_edits import (
    bounding_box,
    crop,
    flip,
    grayscale,
    keep_only,
    occlude,
    recolour,
    swap_background,
)
from lightning_maia.world.provenance import PROVENANCE


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Two 48x48 crops of the real photos (a temple roof, a flower), display images."""
    china, flower = load_sample_images().images
    crops = [china[100:148, 200:248], flower[150:198, 250:298]]
    return [torch.tensor(c.copy()).permute(2, 0, 1).float() / 255.0 for c in crops]


def _centre_mask(size: int = 48) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[12:36, 8:30] = True
    return mask


def test_a_recolour_changes_only_the_hue_inside_the_mask(photos: list[torch.Tensor]) -> None:
    for photo in photos:
        mask = _centre_mask()
        edited = recolour(photo, "blue", mask)
        before, after = rgb_to_hsv(photo), rgb_to_hsv(edited)
        assert torch.equal(edited[:, ~mask], photo[:, ~mask])  # outside: bit for bit
        coloured = mask & (before[1] > 0.05) & (before[2] > 0.05)
        assert coloured.sum() > 100
        assert torch.allclose(
            after[0][coloured], torch.full_like(after[0][coloured], 230.0), atol=0.5
        )
        assert torch.allclose(after[1][mask], before[1][mask], atol=1e-4)  # saturation kept
        assert torch.allclose(after[2][mask], before[2][mask], atol=1e-5)  # brightness kept


def test_grayscale_keeps_brightness_and_drops_saturation(photos: list[torch.Tensor]) -> None:
    mask = _centre_mask()
    edited = grayscale(photos[1], mask)
    hsv = rgb_to_hsv(edited)
    assert float(hsv[1][mask].max()) == 0.0
    assert torch.allclose(hsv[2], rgb_to_hsv(photos[1])[2], atol=1e-6)
    assert torch.equal(edited[:, ~mask], photos[1][:, ~mask])


def test_occlude_keep_only_flip_crop_and_background_swap(photos: list[torch.Tensor]) -> None:
    photo, other = photos
    mask = _centre_mask()
    assert torch.equal(occlude(photo, mask)[:, mask], torch.full((3, int(mask.sum())), 0.5))
    assert torch.equal(occlude(photo, mask)[:, ~mask], photo[:, ~mask])
    assert torch.equal(keep_only(photo, mask)[:, mask], photo[:, mask])
    assert torch.equal(keep_only(photo, mask)[:, ~mask], torch.full((3, int((~mask).sum())), 0.5))
    assert torch.equal(flip(flip(photo)), photo) and torch.equal(
        flip(photo)[:, :, 0], photo[:, :, -1]
    )
    assert bounding_box(mask) == (12, 8, 36, 30)
    assert torch.allclose(crop(photo, (0, 0, 48, 48)), photo, atol=1e-6)
    swapped = swap_background(photo, mask, other)
    assert torch.equal(swapped[:, mask], photo[:, mask]) and torch.equal(
        swapped[:, ~mask], other[:, ~mask]
    )
    with pytest.raises(ConfigurationError, match="mask"):
        occlude(photo, torch.zeros(4, 4, dtype=torch.bool))


def test_the_editor_records_exactly_what_each_edit_changed(photos: list[torch.Tensor]) -> None:
    editor = RealDataEditor()
    mask = _centre_mask()
    items = [ImageItem(photos[0], mask=mask)] * 4
    instructions = [
        "change colour from red to blue",
        "grayscale",
        "occlude the highlighted region",
        "flip",
    ]
    edited = editor.edit(items, instructions, [0, 1, 2, 3])
    records = [PROVENANCE.facts(item.image).edit for item in edited]  # type: ignore[union-attr]
    assert [(r.operation, r.attribute, r.from_value, r.to_value) for r in records] == [
        ("recolour", "colour", "red", "blue"),
        ("grayscale", "colour", "", "gray"),
        ("occlude", "region", "visible", "occluded"),
        ("flip", "orientation", "original", "flipped"),
    ]
    assert all(torch.equal(r.before, photos[0]) for r in records)
    assert torch.equal(records[0].after, recolour(photos[0], "blue", mask))
    assert PROVENANCE.facts(edited[0].image).attributes == {"colour": "blue"}  # type: ignore[union-attr]


def test_the_editor_explains_instructions_it_cannot_follow(photos: list[torch.Tensor]) -> None:
    editor = RealDataEditor()
    with pytest.raises(GrammarError, match="highlighted image"):
        editor.edit([ImageItem(photos[0])], ["occlude the highlighted region"], [0])
    with pytest.raises(GrammarError, match="cannot read the edit"):
        editor.edit([ImageItem(photos[0])], ["make it pretty"], [0])
    with pytest.raises(GrammarError, match="attribute table"):
        editor.edit([ImageItem(photos[0])], ["change digit from 3 to 4"], [0])
