"""The shared region logic and concept matcher, with values checkable by hand.

Every backend shows regions through :mod:`lightning_maia.tools.backends._regions` and matches
concepts with its one matcher; the last tests pin that the backends use them rather than copies,
each with its own defaults.
"""

from __future__ import annotations

import pytest
import torch

from lightning_maia.errors import ConfigurationError
from lightning_maia.exemplars import mask_images
from lightning_maia.tools.backends import (
    _captioner as captioner,
)
from lightning_maia.tools.backends import (
    _clip_concepts as clip_concepts,
)
from lightning_maia.tools.backends import (
    _regions as regions,
)
from lightning_maia.tools.backends import (
    _transformers_backend as transformers_backend,
)
from lightning_maia.tools.backends import (
    vlm_describer,
)
from lightning_maia.tools.backends._regions import (
    EMPTY_REGION_TEXT,
    RegionBox,
    concept_phrase,
    crop_to_region,
    dim_outside,
    is_empty_region,
    match_concepts,
    region_box,
    region_mask,
    same_word,
    text_words,
    to_pil,
)


def _box_mask(size: tuple[int, int], rows: slice, columns: slice) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[rows, columns] = True
    return mask


# --- masks -------------------------------------------------------------------------------------


def test_region_mask_resizes_nearest_and_cuts_float_masks_at_one_half() -> None:
    low_res = torch.tensor([[1.0, 0.0], [0.5, 0.6]])  # 0.5 itself is not selected
    resized = region_mask(low_res, 4, 4)
    assert resized.dtype == torch.bool
    assert resized.int().tolist() == [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 1],
        [0, 0, 1, 1],
    ]
    wide = region_mask(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), 4, 6)
    assert wide.int().tolist() == [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 1],
    ]
    # Downsampling keeps the nearest source pixel: rows 0, 2 and columns 0, 2, 4.
    fine = _box_mask((4, 6), slice(1, 3), slice(2, 4))
    assert region_mask(fine, 2, 3).int().tolist() == [[0, 0, 0], [0, 1, 0]]


def test_region_mask_keeps_a_bool_mask_of_the_right_size() -> None:
    mask = _box_mask((3, 3), slice(0, 1), slice(0, 3))
    assert region_mask(mask, 3, 3) is mask


@pytest.mark.parametrize("shape", [(1, 4, 4), (4,), (1, 1, 4, 4)])
def test_region_mask_rejects_masks_that_are_not_two_dimensional(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigurationError, match=r"`mask` can be a \(H, W\) tensor or None"):
        region_mask(torch.ones(shape, dtype=torch.bool), 4, 4)


def test_is_empty_region() -> None:
    assert is_empty_region(None) is False  # None selects the whole image
    assert is_empty_region(torch.zeros(3, 3, dtype=torch.bool)) is True
    assert is_empty_region(torch.full((3, 3), 0.5)) is True
    assert is_empty_region(_box_mask((3, 3), slice(2, 3), slice(2, 3))) is False
    assert is_empty_region(torch.tensor([[0.0, 0.51]])) is False


# --- dimming -----------------------------------------------------------------------------------


def test_dim_outside_scales_only_the_pixels_outside_the_mask() -> None:
    image = torch.full((3, 2, 3), 0.5)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    dimmed = dim_outside(image, mask, dim=0.25)
    for channel in range(3):  # 0.5 * 0.25 is exact in binary
        assert dimmed[channel].tolist() == [[0.5, 0.125, 0.125], [0.125, 0.125, 0.5]]
    assert dim_outside(image, mask, dim=0.3)[0, 0, 1].item() == pytest.approx(0.15)
    assert dimmed[:, mask].eq(image[:, mask]).all()  # inside: exactly the original
    assert dim_outside(image, mask, dim=0.0)[:, ~mask].eq(0).all()
    assert dim_outside(image, mask, dim=1.0).eq(image).all()


def test_dim_outside_is_the_exemplars_arithmetic() -> None:
    image = torch.rand(3, 5, 7)
    mask = torch.rand(5, 7) > 0.5
    expected = mask_images(image[None], mask[None], 0.3)[0]
    assert torch.equal(dim_outside(image, mask, 0.3), expected)


def test_dim_outside_resizes_the_mask_and_passes_none_through() -> None:
    image = torch.ones(3, 4, 4)
    dimmed = dim_outside(image, torch.tensor([[0.0, 0.9], [0.0, 0.0]]), dim=0.5)
    assert dimmed[0].tolist() == [
        [0.5, 0.5, 1.0, 1.0],
        [0.5, 0.5, 1.0, 1.0],
        [0.5, 0.5, 0.5, 0.5],
        [0.5, 0.5, 0.5, 0.5],
    ]
    assert dim_outside(image, None, dim=0.5) is image


def test_dim_outside_keeps_the_image_dtype_and_checks_dim() -> None:
    image = torch.ones(3, 2, 2, dtype=torch.float16)
    mask = _box_mask((2, 2), slice(0, 1), slice(0, 2))
    dimmed = dim_outside(image, mask, dim=0.5)
    assert dimmed.dtype == torch.float16
    assert dimmed[0].tolist() == [[1.0, 1.0], [0.5, 0.5]]
    with pytest.raises(ConfigurationError, match="`dim` can be a number in"):
        dim_outside(torch.ones(3, 2, 2), mask, dim=1.5)


# --- boxes and crops ---------------------------------------------------------------------------


def test_region_box_grows_by_the_margin_of_the_longer_side_rounded_up() -> None:
    mask = _box_mask((10, 10), slice(4, 6), slice(3, 7))  # rows 4..5, columns 3..6: 2 x 4
    assert region_box(mask) == RegionBox(top=4, bottom=6, left=3, right=7)
    # ceil(0.2 * 4) = 1 pixel on every side, the short side too.
    assert region_box(mask, margin=0.2) == RegionBox(3, 7, 2, 8)
    # 0.25 * 4 is exactly 1: no extra pixel from rounding up.
    assert region_box(mask, margin=0.25) == RegionBox(3, 7, 2, 8)
    # ceil(0.3 * 4) = 2.
    assert region_box(mask, margin=0.3) == RegionBox(2, 8, 1, 9)
    # 0.14 * 50 is 7.000000000000001 in floats: still 7 pixels, not 8.
    wide = _box_mask((60, 100), slice(30, 31), slice(20, 70))
    assert region_box(wide, margin=0.14) == RegionBox(23, 38, 13, 77)


def test_region_box_is_clipped_to_the_mask_and_none_when_empty() -> None:
    corner = _box_mask((6, 8), slice(0, 2), slice(6, 8))
    assert region_box(corner, margin=1.0) == RegionBox(top=0, bottom=4, left=4, right=8)
    assert region_box(torch.zeros(6, 8, dtype=torch.bool), margin=0.5) is None
    assert region_box(torch.tensor([[0.2, 0.7], [0.0, 0.1]])) == RegionBox(0, 1, 1, 2)


def test_crop_to_region_cuts_the_image_to_the_grown_box() -> None:
    image = torch.arange(36.0).reshape(1, 6, 6)
    mask = _box_mask((6, 6), slice(2, 3), slice(2, 4))  # one row, two columns
    assert crop_to_region(image, mask, margin=0.0).tolist() == [[[14.0, 15.0]]]
    # ceil(0.5 * 2) = 1 pixel each side: rows 1..3, columns 1..4.
    assert crop_to_region(image, mask, margin=0.5).tolist() == [
        [[7.0, 8.0, 9.0, 10.0], [13.0, 14.0, 15.0, 16.0], [19.0, 20.0, 21.0, 22.0]]
    ]


def test_crop_to_region_resizes_the_mask_and_is_none_for_an_empty_one() -> None:
    image = torch.arange(48.0).reshape(3, 4, 4)
    crop = crop_to_region(image, torch.tensor([[0.0, 0.0], [0.0, 1.0]]), margin=0.0)
    assert crop is not None
    assert crop.shape == (3, 2, 2)
    assert crop[0].tolist() == [[10.0, 11.0], [14.0, 15.0]]
    assert crop[2].tolist() == [[42.0, 43.0], [46.0, 47.0]]
    assert crop_to_region(image, torch.zeros(2, 2), margin=0.5) is None


# --- PIL ---------------------------------------------------------------------------------------


def test_to_pil_converts_float_grey_and_byte_images() -> None:
    pil = to_pil(torch.tensor([[[0.0, 1.0]], [[0.5, 2.0]], [[1.0, -1.0]]]))  # (3, 1, 2)
    assert pil.mode == "RGB"
    assert pil.size == (2, 1)
    assert pil.getpixel((0, 0)) == (0, 128, 255)
    assert pil.getpixel((1, 0)) == (255, 255, 0)  # clamped to [0, 1]
    assert to_pil(torch.full((1, 1, 1), 0.2)).getpixel((0, 0)) == (51, 51, 51)
    bytes_image = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)  # (1, 1, 3), 0..255
    assert [to_pil(bytes_image).getpixel((x, 0)) for x in range(3)] == [
        (0, 0, 0),
        (128, 128, 128),
        (255, 255, 255),
    ]
    with pytest.raises(ConfigurationError, match="`image` can be"):
        to_pil(torch.zeros(2, 2, 2))


# --- concepts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "vocabulary", "expected"),
    [
        # whole words, any case
        ("A DOG on grass", ["dog", "Grass", "cat"], ("dog", "Grass")),
        ("a cathedral and a hotdog", ["cat", "dog"], ()),
        ("a category of caterpillars", ["cat"], ()),
        ("the dog's ball", ["dog", "ball"], ("dog", "ball")),
        # plurals -s, -es, -ies, either way round
        ("two dogs", ["dog"], ("dog",)),
        ("a dog", ["dogs"], ("dogs",)),
        ("buses and boxes", ["bus", "box"], ("bus", "box")),
        ("cloudy skies", ["sky"], ("sky",)),
        ("a sky", ["skies"], ("skies",)),
        ("red glasses", ["glass"], ("glass",)),
        ("a glass", ["gla"], ()),
        # phrases as consecutive words, any spacing and plural on each word
        ("a red fire hydrant", ["fire hydrant"], ("fire hydrant",)),
        ("traffic   lights at night", ["traffic light"], ("traffic light",)),
        ("a fire near a hydrant", ["fire hydrant"], ()),
        ("hydrant fire", ["fire hydrant"], ()),
        # attribute=value terms by their value, underscores as spaces
        (
            "a red striped circle",
            ["color=red", "shape=square", "texture=striped"],
            ("color=red", "texture=striped"),
        ),
        (
            "polka dots on stars",
            ["texture=polka_dots", "shape=star"],
            ("texture=polka_dots", "shape=star"),
        ),
        ("redder", ["color=red"], ()),
        ("a fire_hydrant", ["fire hydrant"], ("fire hydrant",)),
        # vocabulary order, each term once, nothing from nothing
        ("grass and a dog", ["dog", "grass", "dog"], ("dog", "grass")),
        ("", ["dog"], ()),
        ("a dog", [], ()),
        ("a dog", ["=", "  "], ()),
        ("un café au lait", ["café", "lait"], ("café", "lait")),
    ],
)
def test_match_concepts(text: str, vocabulary: list[str], expected: tuple[str, ...]) -> None:
    assert match_concepts(text, vocabulary) == expected


def test_words_phrases_and_singulars() -> None:
    assert text_words("The Dog's ball, 2 fire_hydrants!") == [
        "the",
        "dog",
        "s",
        "ball",
        "2",
        "fire",
        "hydrants",
    ]
    assert concept_phrase("texture=polka_dots") == "polka dots"
    assert concept_phrase("  fire   hydrant ") == "fire hydrant"
    assert concept_phrase("a=b=c") == "b=c"
    assert same_word("dogs", "dog")
    assert same_word("box", "boxes")
    assert same_word("skies", "sky")
    assert not same_word("glass", "glas")  # "-ss" is not a plural
    assert not same_word("bus", "bu")  # three letters are too short to lose an "s"
    assert not same_word("cat", "category")


# --- one owner, each backend's defaults --------------------------------------------------------


def test_every_backend_uses_the_shared_pieces() -> None:
    assert vlm_describer.EMPTY_REGION_TEXT is EMPTY_REGION_TEXT == "nothing highlighted"
    assert captioner.EMPTY_REGION_TEXT is EMPTY_REGION_TEXT
    assert clip_concepts.EMPTY_REGION_TEXT is EMPTY_REGION_TEXT
    assert vlm_describer.match_concepts is match_concepts
    assert captioner.match_concepts is match_concepts
    assert clip_concepts.concept_phrase is concept_phrase
    assert transformers_backend.to_pil is to_pil
    for module in (vlm_describer, transformers_backend, captioner, clip_concepts):
        for copy in ("find_concepts", "region_mask", "_region_mask", "_is_empty", "_forms"):
            assert not hasattr(module, copy), f"{module.__name__}.{copy}"
    assert regions.mask_images is mask_images


def test_the_vlm_describer_dims_the_whole_image_by_its_default() -> None:
    image = torch.ones(3, 4, 4)
    mask = _box_mask((4, 4), slice(0, 2), slice(0, 4))
    shown = vlm_describer.highlight_region(image, mask)  # dim=0.3, no crop
    assert shown.shape == (3, 4, 4)
    assert shown[0, :, 0].tolist() == pytest.approx([1.0, 1.0, 0.3, 0.3])
    assert vlm_describer.VLMDescriber.__init__.__kwdefaults__["dim"] == 0.3


def test_the_vlm_close_up_crops_with_a_margin_then_scales_up() -> None:
    image = torch.rand(3, 20, 30)
    mask = _box_mask((20, 30), slice(5, 10), slice(10, 20))  # a 5 x 10 box
    # ceil(0.2 * 10) = 2 pixels each side: rows 3..11, columns 8..21 (9 x 14), scaled by 30/14.
    assert vlm_describer.crop_region(image, mask, margin=0.2).shape == (3, 19, 30)
    assert vlm_describer.crop_region(image, torch.zeros(20, 30), margin=0.2) is image
    full = _box_mask((20, 30), slice(0, 20), slice(0, 30))
    assert torch.equal(vlm_describer.crop_region(image, full, margin=0.0), image)


def test_the_transformers_view_crops_and_dims_by_its_defaults() -> None:
    image = torch.ones(3, 10, 10)
    mask = _box_mask((10, 10), slice(4, 6), slice(3, 7))
    view = transformers_backend.highlight_region(image, mask)  # margin 0.1, brightness 0.25
    assert view is not None
    # ceil(0.1 * 4) = 1 pixel each side: rows 3..6, columns 2..7.
    assert view.shape == (3, 4, 6)
    assert view[0].tolist() == [
        [0.25] * 6,
        [0.25, 1.0, 1.0, 1.0, 1.0, 0.25],
        [0.25, 1.0, 1.0, 1.0, 1.0, 0.25],
        [0.25] * 6,
    ]
    assert transformers_backend.highlight_region(image, torch.zeros(10, 10)) is None
