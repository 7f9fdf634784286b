"""Transformers backends: BLIP-style captioning and CLIP concept scoring of highlighted regions.

Models are tiny random-weight BLIP and CLIP built from configs, saved to a temporary directory
and loaded back the way a user's local model is; exact behaviour is checked on pure functions and
on a hand-weighted CLIP stand-in whose embeddings are colours.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from helpers.tiny_transformers import (
    ColourClip,
    save_tiny_blip,
    save_tiny_clip,
    tiny_clip_processor,
)
from PIL import Image
from torch import Tensor, nn

from lightning_maia.errors import BackendError, ConfigurationError, MissingDependencyError
from lightning_maia.tools.backends._base import ImageDescriber, ImageItem, ImageSummarizer
from lightning_maia.tools.backends._captioner import CaptionDescriber, summarize_captions
from lightning_maia.tools.backends._clip_concepts import (
    ClipConceptScorer,
    format_ranking,
    rank_concepts,
)
from lightning_maia.tools.backends._regions import EMPTY_REGION_TEXT, match_concepts, to_pil
from lightning_maia.tools.backends._transformers_backend import highlight_region, pooled_features

VOCABULARY = ["dog", "cat", "grass", "sky", "red", "ball"]
RANKING = re.compile(r"^\w+ \(\d\.\d\d\)(, \w+ \(\d\.\d\d\))*$")


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _images(count: int, size: tuple[int, int] = (40, 48), seed: int = 1) -> list[ImageItem]:
    generator = torch.Generator().manual_seed(seed)
    return [ImageItem(torch.rand(3, *size, generator=generator)) for _ in range(count)]


def _box_mask(size: tuple[int, int], rows: slice, columns: slice) -> Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[rows, columns] = True
    return mask


def _pixels(image: Image.Image) -> Tensor:
    """A PIL RGB image as (3, H, W) byte values."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).long()


class SpyProcessor:
    """Delegates to a real processor and keeps the PIL images it was given."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.images: list[Image.Image] = []

    def __call__(self, images: list[Image.Image] | None = None, **options: Any) -> Any:
        self.images.extend(images or [])
        return self.processor(images=images, **options)

    def batch_decode(self, *args: Any, **options: Any) -> Any:
        return self.processor.batch_decode(*args, **options)


# --- concept matching and summaries (pure) ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "vocabulary", "expected"),
    [
        ("a dog on the grass", ["dog", "grass", "cat"], ("dog", "grass")),
        ("Two DOGS running", ["dog"], ("dog",)),
        ("a dog sitting", ["dogs"], ("dogs",)),
        ("buses, boxes and skies", ["bus", "box", "sky"], ("bus", "box", "sky")),
        ("three horses", ["horse"], ("horse",)),
        ("a category of caterpillars", ["cat"], ()),
        ("a hotdog stand", ["dog"], ()),
        ("the dog's ball", ["dog", "ball"], ("dog", "ball")),
        ("a red fire hydrant", ["fire hydrant", "red"], ("fire hydrant", "red")),
        ("a fire near a hydrant", ["fire hydrant"], ()),
        ("green grass under a blue sky", ["sky", "Grass"], ("sky", "Grass")),
        ("a glass of water", ["grass"], ()),
        ("", ["dog"], ()),
        (
            "a red striped circle",
            ["color=red", "shape=square", "texture=striped"],
            ("color=red", "texture=striped"),
        ),
        (
            "polka dots on a fire hydrant",
            ["texture=polka_dots", "fire_hydrant"],
            ("texture=polka_dots", "fire_hydrant"),
        ),
    ],
)
def test_match_concepts_whole_words_any_case_and_plurals(
    text: str, vocabulary: list[str], expected: tuple[str, ...]
) -> None:
    assert match_concepts(text, vocabulary) == expected


CAPTIONS = [
    "a dog on grass",
    "two dogs on the grass",
    "a dog with a ball",
    "a Dog running on grass",
    "a dog in the sky",
    "dogs and grass",
    "a cat on a sofa",
    "a dog",
]


def test_summarize_captions_reports_common_terms_with_exact_shares() -> None:
    summary = summarize_captions(CAPTIONS, VOCABULARY)
    # dog: 7 of 8 (87.5% -> 88%), grass: 4 of 8; 7 captions mention one of them (not the cat).
    assert summary.text == "common to 7 of 8: dog (88%), grass (50%)"
    assert summary.concepts == ("dog", "grass")
    stricter = summarize_captions(CAPTIONS, VOCABULARY, min_share=0.6)
    assert stricter.text == "common to 7 of 8: dog (88%)"
    assert stricter.concepts == ("dog",)


def test_summarize_captions_rounds_half_up_and_orders_ties_by_vocabulary() -> None:
    captions = ["red sky", "red sky", "red sky", "red sky", "red sky", "dog", "cat", "ball"]
    summary = summarize_captions(captions, ["sky", "red"], min_share=0.5)
    assert summary.text == "common to 5 of 8: sky (63%), red (63%)"


def test_summarize_captions_falls_back_to_frequent_words() -> None:
    summary = summarize_captions(CAPTIONS, ["car", "tree"], top_words=3)
    assert summary.text == (
        "no vocabulary term in at least 50% of 8 captions; "
        "frequent words: dog (7 of 8), grass (4 of 8), two (1 of 8)"
    )
    assert summary.concepts == ()
    assert summarize_captions([], VOCABULARY).text == EMPTY_REGION_TEXT


# --- regions and images ------------------------------------------------------------------


def test_highlight_region_crops_with_margin_and_dims_outside() -> None:
    image = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10).expand(3, 10, 10) / 100
    mask = _box_mask((10, 10), slice(4, 6), slice(3, 7))
    mask[4, 3] = False  # a notch inside the box is dimmed too
    view = highlight_region(image, mask, margin=0.2, outside_brightness=0.5)
    assert view is not None
    # box rows 4..5, columns 3..6 (4 wide); margin ceil(0.2 * 4) = 1 pixel each side.
    assert tuple(view.shape) == (3, 4, 6)
    window = image[:, 3:7, 2:8]
    inside = mask[3:7, 2:8]
    torch.testing.assert_close(view, torch.where(inside, window, window * 0.5))
    assert highlight_region(image, None) is image
    assert highlight_region(image, torch.zeros(10, 10, dtype=torch.bool)) is None


def test_highlight_region_clips_to_the_image_and_resizes_masks() -> None:
    image = torch.ones(3, 8, 8)
    corner = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # float, half resolution
    view = highlight_region(image, corner, margin=1.0, outside_brightness=0.0)
    assert view is not None
    assert tuple(view.shape) == (3, 8, 8)  # 4x4 box grown by 4, clipped to the image
    assert view[0, :4, :4].eq(1).all()
    assert view[0, 4:, :].eq(0).all()
    assert view[0, :, 4:].eq(0).all()
    with pytest.raises(ConfigurationError, match="`mask`"):
        highlight_region(image, torch.ones(1, 8, 8, dtype=torch.bool))


def test_to_pil_converts_display_images() -> None:
    image = torch.tensor([[[0.0, 1.0]], [[0.5, 2.0]], [[1.0, -1.0]]])  # (3, 1, 2)
    pil = to_pil(image)
    assert pil.mode == "RGB"
    assert pil.size == (2, 1)
    assert pil.getpixel((0, 0)) == (0, 128, 255)
    assert pil.getpixel((1, 0)) == (255, 255, 0)  # clamped to [0, 1]
    assert to_pil(torch.full((1, 2, 2), 1.0)).getpixel((1, 1)) == (255, 255, 255)
    with pytest.raises(ConfigurationError, match="`image`"):
        to_pil(torch.zeros(4, 2, 2))


def test_rank_concepts_threshold_top_k_and_best_always_kept() -> None:
    vocabulary = ["dog", "cat", "grass", "sky"]
    assert rank_concepts([0.5, 0.1, 0.3, 0.1], vocabulary, threshold=0.1, top_k=3) == [
        ("dog", 0.5),
        ("grass", 0.3),
        ("cat", 0.1),
    ]
    assert rank_concepts([0.5, 0.1, 0.3, 0.1], vocabulary, threshold=0.2, top_k=3) == [
        ("dog", 0.5),
        ("grass", 0.3),
    ]
    assert rank_concepts([0.25] * 4, vocabulary, threshold=0.9, top_k=2) == [("dog", 0.25)]
    assert format_ranking([("dog", 0.625), ("grass", 0.214)]) == "dog (0.62), grass (0.21)"
    with pytest.raises(ConfigurationError, match="3 probabilities"):
        rank_concepts([0.2, 0.3, 0.5], vocabulary)


def test_pooled_features_accepts_tensors_and_output_objects() -> None:
    embeddings = torch.ones(2, 4)
    output = transformers.modeling_outputs.BaseModelOutputWithPooling(pooler_output=embeddings)
    assert pooled_features(embeddings) is embeddings
    assert pooled_features(output) is embeddings
    assert pooled_features((embeddings,)) is embeddings
    with pytest.raises(BackendError, match="not embeddings"):
        pooled_features("no")


# --- CaptionDescriber on a tiny BLIP -------------------------------------------------------


def test_caption_describer_implements_both_protocols(blip_dir: Path) -> None:
    describer = CaptionDescriber(blip_dir)
    assert isinstance(describer, ImageDescriber)
    assert isinstance(describer, ImageSummarizer)
    assert describer.name == "caption"


def test_captions_follow_the_contract_and_repeat(blip_dir: Path) -> None:
    images = _images(3)
    masks: list[Tensor | None] = [None, _box_mask((40, 48), slice(5, 20), slice(10, 30)), None]
    describer = CaptionDescriber(blip_dir, vocabulary=VOCABULARY, max_new_tokens=6)
    descriptions = describer.describe(images, masks)
    assert len(descriptions) == 3
    for description in descriptions:
        assert isinstance(description.text, str)
        assert description.text
        assert set(description.concepts) <= set(VOCABULARY)
        assert description.concepts == match_concepts(description.text, VOCABULARY)
    one_at_a_time = CaptionDescriber(
        blip_dir, vocabulary=VOCABULARY, max_new_tokens=6, batch_size=1
    )
    assert one_at_a_time.describe(images, masks) == descriptions
    assert describer.describe(images, masks) == descriptions


def test_a_mask_crops_and_dims_the_region_the_processor_sees(blip_dir: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    # Pixel values that are multiples of 4/255, so a quarter of each is a whole byte.
    levels = torch.randint(0, 64, (3, 64, 64), generator=generator) * 4
    image = levels.float() / 255
    mask = _box_mask((64, 64), slice(8, 24), slice(40, 56))
    mask[8:16, 40:48] = False
    spy = SpyProcessor(transformers.AutoProcessor.from_pretrained(blip_dir, local_files_only=True))
    describer = CaptionDescriber(
        blip_dir, processor=spy, max_new_tokens=3, region_margin=0.1, outside_brightness=0.25
    )
    describer.describe([ImageItem(image), ImageItem(image)], [mask, None])
    region, whole = spy.images
    # 16x16 box grown by ceil(0.1 * 16) = 2 pixels: rows 6..25, columns 38..57.
    assert region.size == (20, 20)
    seen = _pixels(region)
    window, inside = levels[:, 6:26, 38:58], mask[6:26, 38:58]
    assert torch.equal(seen, torch.where(inside, window, window // 4))
    assert whole.size == (64, 64)
    assert torch.equal(_pixels(whole), levels)


def test_an_empty_mask_is_reported_without_running_the_model(blip_dir: Path) -> None:
    spy = SpyProcessor(transformers.AutoProcessor.from_pretrained(blip_dir, local_files_only=True))
    describer = CaptionDescriber(blip_dir, processor=spy, max_new_tokens=3)
    empty = torch.zeros(40, 48, dtype=torch.bool)
    (description,) = describer.describe(_images(1), [empty])
    assert description.text == EMPTY_REGION_TEXT
    assert spy.images == []
    assert describer.summarize(_images(1), [empty]).text == EMPTY_REGION_TEXT


def test_summarize_reports_what_the_region_captions_share(blip_dir: Path) -> None:
    images = _images(4)
    masks: list[Tensor | None] = [None] * 4
    describer = CaptionDescriber(blip_dir, vocabulary=VOCABULARY, max_new_tokens=6)
    captions = [text for text in describer.region_captions(images, masks) if text is not None]
    summary = describer.summarize(images, masks)
    assert summary == summarize_captions(captions, VOCABULARY)
    assert set(summary.concepts) <= set(VOCABULARY)


def test_model_loads_lazily_once(blip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    load = transformers.AutoModelForImageTextToText.from_pretrained

    def counting_load(*args: Any, **options: Any) -> Any:
        calls.append(str(args[0]))
        assert options["local_files_only"] is True
        return load(*args, **options)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", counting_load)
    describer = CaptionDescriber(blip_dir, max_new_tokens=3)
    assert calls == []
    describer.describe(_images(1), [None])
    describer.describe(_images(1), [None])
    assert calls == [str(blip_dir)]


def test_a_built_model_and_processor_caption_like_the_directory(blip_dir: Path) -> None:
    model = transformers.BlipForConditionalGeneration.from_pretrained(blip_dir)
    processor = transformers.AutoProcessor.from_pretrained(blip_dir)
    built = CaptionDescriber(model, processor=processor, max_new_tokens=6)
    from_directory = CaptionDescriber(blip_dir, max_new_tokens=6)
    images, masks = _images(2), [None, None]
    assert built.describe(images, masks) == from_directory.describe(images, masks)


def test_prompt_and_dtype_options(blip_dir: Path) -> None:
    describer = CaptionDescriber(
        blip_dir, prompt="a picture of", dtype="bfloat16", max_new_tokens=4
    )
    (description,) = describer.describe(_images(1), [None])
    assert isinstance(description.text, str)
    assert not description.text.lower().startswith("a picture of")
    model, _ = describer.loaded()
    assert next(model.parameters()).dtype == torch.bfloat16


def test_a_failing_model_is_a_backend_error(
    blip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    describer = CaptionDescriber(blip_dir, max_new_tokens=3)
    model, _ = describer.loaded()

    def broken(*args: Any, **options: Any) -> Tensor:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(BackendError, match="out of memory"):
        describer.describe(_images(1), [None])


# --- ClipConceptScorer ---------------------------------------------------------------------


def test_clip_scorer_on_a_tiny_clip_follows_the_contract(clip_dir: Path) -> None:
    images = _images(3)
    masks: list[Tensor | None] = [None, _box_mask((40, 48), slice(0, 20), slice(0, 24)), None]
    scorer = ClipConceptScorer(clip_dir, vocabulary=VOCABULARY, top_k=2, threshold=0.0)
    assert isinstance(scorer, ImageDescriber)
    assert isinstance(scorer, ImageSummarizer)
    assert scorer.name == "clip"
    descriptions = scorer.describe(images, masks)
    assert len(descriptions) == 3
    for description in descriptions:
        assert len(description.concepts) == 2
        assert set(description.concepts) <= set(VOCABULARY)
        assert RANKING.match(description.text), description.text
        named = [part.split(" (")[0] for part in description.text.split(", ")]
        assert named == list(description.concepts)
    assert scorer.describe(images, masks) == descriptions
    summary = scorer.summarize(images, masks)
    assert summary.text.startswith("across 3 regions: ")


def test_clip_embeddings_are_the_models_pooled_projections(clip_dir: Path) -> None:
    scorer = ClipConceptScorer(clip_dir, vocabulary=VOCABULARY)
    model = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    processor = transformers.AutoProcessor.from_pretrained(clip_dir)
    pil = to_pil(_images(1)[0].image)
    with torch.no_grad():
        image_output = model.get_image_features(**processor(images=[pil], return_tensors="pt"))
        prompts = [f"a photo of a {concept}" for concept in VOCABULARY]
        text_inputs = processor(text=prompts, padding=True, return_tensors="pt")
        text_output = model.get_text_features(**text_inputs)
    image = nn.functional.normalize(image_output.pooler_output, dim=-1)
    text = nn.functional.normalize(text_output.pooler_output, dim=-1)
    torch.testing.assert_close(scorer.image_embeddings([pil]), image)
    torch.testing.assert_close(scorer.text_embeddings(), text)
    # temperature=None: the model's own logit scale
    expected = torch.softmax(image @ text.T * model.logit_scale.exp(), dim=-1)
    torch.testing.assert_close(scorer.probabilities(image), expected)


def test_text_embeddings_are_computed_once(clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = ClipConceptScorer(clip_dir, vocabulary=VOCABULARY)
    model, _ = scorer.loaded()
    calls: list[int] = []
    encode: Callable[..., Any] = getattr(model, "get_text_features")  # noqa: B009

    def counting(**inputs: Tensor) -> Any:
        calls.append(1)
        return encode(**inputs)

    monkeypatch.setattr(model, "get_text_features", counting)
    scorer.describe(_images(2), [None, None])
    scorer.describe(_images(2), [None, None])
    assert calls == [1]


def _colour_scorer(**options: Any) -> ClipConceptScorer:
    processor = tiny_clip_processor()
    defaults: dict[str, Any] = {"vocabulary": ["red", "green", "blue"], "temperature": 0.5}
    return ClipConceptScorer(ColourClip(processor), processor=processor, **defaults | options)


def _two_colour_image() -> Tensor:
    image = torch.zeros(3, 32, 32)
    image[0, :, :24] = 1.0  # red on the left three quarters
    image[2, :, 24:] = 1.0  # blue on the right quarter
    return image


def test_clip_prompts_fill_the_template_with_each_concept(clip_dir: Path) -> None:
    scorer = ClipConceptScorer(
        clip_dir, vocabulary=["dog", "color=red", "blue_sky"], template="a {concept} photo"
    )
    assert scorer.prompts == ("a dog photo", "a red photo", "a blue sky photo")


def test_clip_probabilities_are_a_softmax_of_cosines_over_the_temperature() -> None:
    red = torch.zeros(3, 16, 16)
    red[0] = 1.0
    (description,) = _colour_scorer().describe([ImageItem(red)], [None])
    # cosines 1, 0, 0 over temperature 0.5: softmax of (2, 0, 0)
    best = math.exp(2) / (math.exp(2) + 2)
    assert (round(best, 2), round(1 / (math.exp(2) + 2), 2)) == (0.79, 0.11)
    assert description.text == "red (0.79), green (0.11), blue (0.11)"
    assert description.concepts == ("red", "green", "blue")


def test_a_mask_changes_the_clip_answer_to_its_region() -> None:
    scorer = _colour_scorer(temperature=0.05, top_k=1)
    image = ImageItem(_two_colour_image())
    blue_region = _box_mask((32, 32), slice(0, 32), slice(24, 32))
    red_region = _box_mask((32, 32), slice(0, 32), slice(0, 24))
    whole, blue, red = scorer.describe([image] * 3, [None, blue_region, red_region])
    assert whole.concepts == ("red",)
    assert blue.concepts == ("blue",)
    assert red.concepts == ("red",)
    assert blue.text.startswith("blue (")


@pytest.mark.parametrize(("brightness", "expected"), [(0.0, "blue"), (1.0, "red")])
def test_dimming_the_outside_of_the_mask_decides_the_clip_answer(
    brightness: float, expected: str
) -> None:
    # A margin of 10 keeps the whole image: only the dimming can single out the blue quarter.
    scorer = _colour_scorer(
        temperature=0.05, top_k=1, region_margin=10.0, outside_brightness=brightness
    )
    blue_region = _box_mask((32, 32), slice(0, 32), slice(24, 32))
    (description,) = scorer.describe([ImageItem(_two_colour_image())], [blue_region])
    assert description.concepts == (expected,)


def test_clip_summary_scores_the_mean_region_embedding() -> None:
    red, blue = torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)
    red[0], blue[2] = 1.0, 1.0
    empty = torch.zeros(16, 16, dtype=torch.bool)
    images = [ImageItem(red), ImageItem(blue), ImageItem(red)]
    summary = _colour_scorer().summarize(images, [None, None, empty])
    # mean of (1, 0, 0) and (0, 0, 1), normalized: cosines 1/sqrt(2), 0, 1/sqrt(2)
    logit = math.sqrt(2)  # (1 / sqrt(2)) / 0.5
    share = math.exp(logit) / (2 * math.exp(logit) + 1)
    assert (round(share, 2), round(1 / (2 * math.exp(logit) + 1), 2)) == (0.45, 0.11)
    assert summary.text == "across 2 regions: red (0.45), blue (0.45), green (0.11)"
    assert summary.concepts == ("red", "blue", "green")


def test_a_failing_clip_model_is_a_backend_error() -> None:
    class BrokenClip(ColourClip):
        def get_image_features(self, pixel_values: Tensor) -> Any:
            raise RuntimeError("device lost")

    processor = tiny_clip_processor()
    scorer = ClipConceptScorer(BrokenClip(processor), processor=processor, vocabulary=["red"])
    with pytest.raises(BackendError, match="device lost"):
        scorer.describe(_images(1), [None])


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [CaptionDescriber, ClipConceptScorer])
def test_missing_extra_names_the_pip_line(
    backend: Callable[..., object], blip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(
        MissingDependencyError, match=r"pip install 'lightning-maia\[transformers\]'"
    ):
        backend(blip_dir, vocabulary=["dog"])


@pytest.mark.parametrize("backend", [CaptionDescriber, ClipConceptScorer])
def test_a_missing_local_path_fails_at_construction(
    backend: Callable[..., object], tmp_path: Path
) -> None:
    missing = tmp_path / "no-model-here"
    with pytest.raises(ConfigurationError, match="nothing is downloaded") as caught:
        backend(missing, vocabulary=["dog"])
    assert str(missing) in str(caught.value)


def test_an_uncached_hub_id_fails_at_load_without_downloading() -> None:
    describer = CaptionDescriber("nobody/no-such-captioner")
    with pytest.raises(ConfigurationError, match=r"'nobody/no-such-captioner'.*nothing is down"):
        describer.describe(_images(1), [None])


def test_a_directory_without_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    scorer = ClipConceptScorer(tmp_path, vocabulary=["dog"])
    with pytest.raises(ConfigurationError, match="holds no loadable"):
        scorer.describe(_images(1), [None])


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": -1}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"region_margin": -0.1}, "region_margin"),
        ({"outside_brightness": 1.5}, "outside_brightness"),
        ({"dtype": "float8"}, "dtype"),
        ({"vocabulary": "dog"}, "vocabulary"),
        ({"vocabulary": ["dog", " "]}, "vocabulary"),
        ({"min_share": 0.0}, "min_share"),
        ({"prompt": ""}, "prompt"),
        ({"processor": None, "model": nn.Linear(1, 1)}, "processor"),
        ({"model": 42}, "model"),
    ],
)
def test_caption_describer_names_bad_options(
    options: dict[str, Any], name: str, blip_dir: Path
) -> None:
    arguments: dict[str, Any] = {"model": blip_dir, **options}
    with pytest.raises(ConfigurationError, match=f"`{name}`"):
        CaptionDescriber(**arguments)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"vocabulary": []}, "vocabulary"),
        ({"template": "a photo"}, "template"),
        ({"template": "{concept} and {other}"}, "template"),
        ({"temperature": 0.0}, "temperature"),
        ({"threshold": 1.5}, "threshold"),
        ({"top_k": 0}, "top_k"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_clip_scorer_names_bad_options(options: dict[str, Any], name: str, clip_dir: Path) -> None:
    arguments: dict[str, Any] = {"model": clip_dir, "vocabulary": VOCABULARY, **options}
    with pytest.raises(ConfigurationError, match=f"`{name}`"):
        ClipConceptScorer(**arguments)


def test_masks_must_match_images(blip_dir: Path) -> None:
    describer = CaptionDescriber(blip_dir)
    with pytest.raises(ConfigurationError, match="`masks` needs one entry per image"):
        describer.describe(_images(2), [None])
    with pytest.raises(ConfigurationError, match="`images`"):
        describer.summarize([], [])
