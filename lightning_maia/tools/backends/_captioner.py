"""Describe highlighted regions with any transformers image-to-text captioner (BLIP and friends).

A caption is matched against a concept vocabulary so an agent can rank hypotheses over the
concepts (:func:`~lightning_maia.tools.backends._regions.match_concepts`, the matcher every backend
uses); :func:`summarize_captions` is the pure part of summarizing.

>>> summarize_captions(["a dog on grass", "a dog", "a cat"], ["dog", "cat", "grass"]).text
'common to 2 of 3: dog (67%)'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from lightning_maia.errors import bad_option
from lightning_maia.tools.backends._base import Description, ImageItem
from lightning_maia.tools.backends._regions import (
    EMPTY_REGION_TEXT,
    match_concepts,
    same_word,
    text_words,
)
from lightning_maia.tools.backends._transformers_backend import (
    ModelSource,
    PretrainedBackend,
    check_positive_int,
    check_vocabulary,
    model_device_and_dtype,
    run_model,
)

#: Words too common in captions to say what regions share.
STOPWORDS = frozenset(
    (  # noqa: SIM905 (a word list reads best as one string)
        "a an the of on in with and or is are at to there it its this that for by from some "
        "next near front top close up view picture photo image background"
    ).split()
)


def _percent(count: int, total: int) -> int:
    return (200 * count + total) // (2 * total)  # round half up, in integers


def summarize_captions(
    captions: Sequence[str],
    vocabulary: Sequence[str],
    min_share: float = 0.5,
    top_words: int = 5,
) -> Description:
    """What captions of several regions share: the vocabulary terms in ``>= min_share`` of them.

    The text reads ``common to K of N: dog (88%), grass (63%)``: K captions mention at least one
    of the listed terms, and each term comes with the share of captions that mention it (most
    common first). When no term is that common, the text names the ``top_words`` words (outside
    :data:`STOPWORDS`) found in the most captions instead, and ``concepts`` is empty.

    >>> captions = ["a dog on grass", "dogs running", "a dog and a ball", "a cat on grass"]
    >>> summary = summarize_captions(captions, ["cat", "grass", "dog"])
    >>> summary.text, summary.concepts
    ('common to 4 of 4: dog (75%), grass (50%)', ('dog', 'grass'))
    >>> summarize_captions(captions, ["car"], top_words=2).text
    'no vocabulary term in at least 50% of 4 captions; frequent words: dog (3 of 4), grass (2 of 4)'
    """
    total = len(captions)
    if total == 0:
        return Description(EMPTY_REGION_TEXT)
    matches = [match_concepts(caption, vocabulary) for caption in captions]
    counts = Counter(term for found in matches for term in found)
    common = sorted(
        (term for term in vocabulary if counts[term] >= min_share * total),
        key=lambda term: -counts[term],
    )
    if common:
        covered = sum(1 for found in matches if set(found) & set(common))
        shares = ", ".join(f"{term} ({_percent(counts[term], total)}%)" for term in common)
        return Description(f"common to {covered} of {total}: {shares}", tuple(common))
    spellings: dict[str, str] = {}
    words = Counter(word for caption in captions for word in _caption_keywords(caption, spellings))
    frequent = ", ".join(
        f"{word} ({count} of {total})" for word, count in words.most_common(top_words)
    )
    return Description(
        f"no vocabulary term in at least {min_share:.0%} of {total} captions; "
        f"frequent words: {frequent or 'none'}"
    )


def _caption_keywords(caption: str, spellings: dict[str, str]) -> list[str]:
    # Each word once, outside the stopwords, in the first spelling seen ("dogs" counts as "dog").
    keywords: dict[str, None] = {}
    for word in text_words(caption):
        if word in STOPWORDS:
            continue
        if word not in spellings:
            same = (seen for seen in spellings.values() if same_word(seen, word))
            spellings[word] = next(same, word)
        keywords[spellings[word]] = None
    return list(keywords)


class CaptionDescriber(PretrainedBackend):
    """Captions of highlighted regions from a transformers image-to-text model.

    Implements :class:`~lightning_maia.tools.backends._base.ImageDescriber` and
    :class:`~lightning_maia.tools.backends._base.ImageSummarizer`. The model loads on first use
    from ``model`` — a local directory (``local_files_only=True``: nothing is downloaded) or a
    built model, then with its ``processor`` — through ``AutoProcessor`` and
    ``AutoModelForImageTextToText`` (``AutoModelForVision2Seq`` on older transformers).

    Each region is cropped to its mask's bounding box (plus ``region_margin``) with the outside
    of the mask dimmed to ``outside_brightness``; decoding is greedy, so captions repeat.

    Args:
        model: a local model directory (a hub id with ``local_files_only=False``) or a built
            captioning model (e.g. ``BlipForConditionalGeneration``).
        processor: its processor, or a directory holding it; defaults to ``model``'s directory.
        vocabulary: concept terms looked for in captions (whole words, any case, plurals).
        prompt: text the caption should start from (BLIP's conditional captioning), or None.
        max_new_tokens: the longest caption, in tokens.
        batch_size: regions captioned per ``generate`` call.
        device: where the model runs; None is CPU for a loaded model, as-is for a built one.
        dtype: a torch dtype or its name; None keeps the checkpoint's.
        local_files_only: False lets ``from_pretrained`` download a hub id.
        region_margin: margin around the mask's bounding box, as a fraction of its longer side.
        outside_brightness: factor applied to pixels outside the mask.
        min_share: share of captions a term needs to be common in :meth:`summarize`.
    """

    name = "caption"
    what = "captioning model"

    def __init__(
        self,
        model: ModelSource | torch.nn.Module,
        *,
        processor: ModelSource | Any | None = None,
        vocabulary: Sequence[str] = (),
        prompt: str | None = None,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        local_files_only: bool = True,
        region_margin: float = 0.1,
        outside_brightness: float = 0.25,
        min_share: float = 0.5,
    ) -> None:
        super().__init__(
            model, processor, device, dtype, local_files_only, region_margin, outside_brightness
        )
        check_positive_int("max_new_tokens", max_new_tokens)
        check_positive_int("batch_size", batch_size)
        if not 0.0 < min_share <= 1.0:
            raise bad_option("min_share", "a number in (0, 1]", min_share)
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise bad_option("prompt", "a non-empty string or None", prompt)
        self.vocabulary = check_vocabulary(vocabulary)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.min_share = min_share

    def auto_model_class(self, transformers: ModuleType) -> Any:
        auto_class = getattr(transformers, "AutoModelForImageTextToText", None)
        return auto_class or transformers.AutoModelForVision2Seq

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Greedy captions of PIL images, in order, ``batch_size`` at a time."""
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            captions.extend(self._caption_batch(list(images[start : start + self.batch_size])))
        return captions

    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        model, processor = self.loaded()
        device, dtype = model_device_and_dtype(model)

        def generate() -> list[str]:
            if self.prompt is None:
                inputs = processor(images=images, return_tensors="pt")
            else:
                prompts = [self.prompt] * len(images)
                inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
            tensors = {
                key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
                for key, value in inputs.items()
                if isinstance(value, Tensor)
            }
            output = model.generate(  # type: ignore[operator]
                **tensors, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1
            )
            decode = getattr(processor, "batch_decode", None) or processor.tokenizer.batch_decode
            return [str(text) for text in decode(output, skip_special_tokens=True)]

        return [self._without_prompt(text) for text in run_model(self.what, generate)]

    def _without_prompt(self, caption: str) -> str:
        caption = " ".join(caption.split())
        prompt = " ".join((self.prompt or "").split())
        if prompt and caption.lower().startswith(prompt.lower()):
            caption = caption[len(prompt) :].strip()
        return caption

    def region_captions(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[str | None]:
        """One caption per highlighted region; None where a mask selects nothing."""
        views = self.region_views(images, masks)
        shown = [view for view in views if view is not None]
        captions = iter(self.caption(shown))
        return [None if view is None else next(captions) for view in views]

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        """The caption of each highlighted region and the vocabulary terms it mentions."""
        return [
            Description(EMPTY_REGION_TEXT)
            if caption is None
            else Description(caption, match_concepts(caption, self.vocabulary))
            for caption in self.region_captions(images, masks)
        ]

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        """The vocabulary terms common to the regions' captions (:func:`summarize_captions`)."""
        if len(images) == 0:
            raise bad_option("images", "one or more images", images)
        captions = [text for text in self.region_captions(images, masks) if text is not None]
        return summarize_captions(captions, self.vocabulary, self.min_share)
