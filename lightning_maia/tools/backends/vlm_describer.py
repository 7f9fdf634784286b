"""Describe and summarize highlighted image regions with a vision-language model, as MAIA does.

A region is shown the way MAIA shows it: the whole picture with everything outside the mask
darkened (and, with ``show_crop``, a close-up crop of the region after it), and the model is asked
to describe ONLY the highlighted region in a short phrase. Summarizing sends all the regions in
one request and asks what they have in common (MAIA's ``summarize_images``). The prompts are the
package files ``lightning_maia/tools/prompts/describe_region.md`` and ``summarize_regions.md``.
Dimming, cropping and concept matching are :mod:`~lightning_maia.tools.backends._regions`'s; this
module only picks the describer's defaults (``dim=0.3``, a close-up margin of 0.15).

>>> import torch
>>> image, mask = torch.ones(3, 4, 4), torch.zeros(4, 4, dtype=torch.bool)
>>> mask[:2] = True
>>> highlight_region(image, mask, dim=0.25)[0, :, 0].tolist()
[1.0, 1.0, 0.25, 0.25]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import resources

import torch.nn.functional as F
from torch import Tensor

from lightning_maia.errors import ConfigurationError, MalformedResponseError, bad_option
from lightning_maia.tools.backends._base import Description, ImageItem, Usage
from lightning_maia.tools.backends._regions import (
    EMPTY_REGION_TEXT,
    crop_to_region,
    dim_outside,
    is_empty_region,
    match_concepts,
)
from lightning_maia.tools.backends.vlm import ChatMessage, VLMClient, user_message

DESCRIBE_PROMPT = "describe_region"
SUMMARIZE_PROMPT = "summarize_regions"

# A leading "[label]:" as the prompts ask for ("[highlighted region]:", "[COMMON]:").
_ANSWER_LABEL = re.compile(r"\[[^\]\n]{1,40}\]\s*:")
_STRIP_CHARS = " \t\"'*`.<>"


def load_prompt(name: str) -> str:
    """The text of the package prompt ``lightning_maia/tools/prompts/{name}.md``, stripped."""
    return _load_prompt(name)


@cache
def _load_prompt(name: str) -> str:
    path = resources.files("lightning_maia.tools") / "prompts" / f"{name}.md"
    return path.read_text(encoding="utf-8").strip()


def highlight_region(image: Tensor, mask: Tensor | None, dim: float = 0.3) -> Tensor:
    """MAIA's view of a region: ``image`` with every pixel outside ``mask`` scaled by ``dim``
    (None: the image as is). The describer's default dimming; see :func:`.regions.dim_outside`.
    """
    return dim_outside(image, mask, dim)


def crop_region(image: Tensor, mask: Tensor, margin: float = 0.15) -> Tensor:
    """A close-up of ``mask``'s region: ``image`` cut to the mask's box grown by ``margin``
    times its longer side on every side (:func:`.regions.crop_to_region`), scaled up so that
    its longer side is the image's longer side. An empty mask gives the whole image.
    """
    crop = crop_to_region(image, mask, margin)
    if crop is None:
        return image
    height, width = image.shape[-2:]
    crop_height, crop_width = crop.shape[-2:]
    scale = max(height, width) / max(crop_height, crop_width)
    if scale <= 1:
        return crop
    size = (round(crop_height * scale), round(crop_width * scale))
    return F.interpolate(crop[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def parse_answer(reply: str, *, first_line: bool = True) -> str:
    """The answer in a reply written as ``[label]: answer``; without a label, the whole reply.

    >>> parse_answer("Sure.\\n[highlighted region]: a red striped circle.")
    'a red striped circle'
    """
    labels = list(_ANSWER_LABEL.finditer(reply))
    answer = reply[labels[-1].end() :] if labels else reply
    lines = [line.strip(_STRIP_CHARS) for line in answer.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = lines[0] if first_line else " ".join(lines)
    return " ".join(text.split())


class VLMDescriber:
    """Describe (one request per region) and summarize (one request for all) with a VLM.

    ``client`` carries the endpoint, model, timeout and retries (None: a :class:`VLMClient`
    configured from the environment). ``vocabulary`` terms found in a description become its
    ``concepts`` (:func:`~lightning_maia.tools.backends._regions.match_concepts`). Outside the
    mask, pixels are scaled by ``dim``; ``show_crop`` also sends a close-up of the region
    (:func:`crop_region`, its box grown by ``crop_margin`` of its longer side); ``detail`` is
    OpenAI's image resolution hint. Up to ``max_concurrency`` describe requests run at once. An
    empty mask gets :data:`EMPTY_REGION_TEXT` without a request.
    """

    name = "vlm"

    def __init__(
        self,
        client: VLMClient | None = None,
        *,
        vocabulary: Sequence[str] = (),
        dim: float = 0.3,
        show_crop: bool = False,
        crop_margin: float = 0.15,
        detail: str | None = None,
        max_concurrency: int = 1,
    ) -> None:
        if not 0.0 <= dim < 1.0:
            raise bad_option("dim", "a number in [0, 1)", dim)
        if not crop_margin >= 0.0:
            raise bad_option("crop_margin", "a number >= 0", crop_margin)
        if detail not in (None, "low", "high", "auto"):
            raise bad_option("detail", "low, high, auto or None", detail)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise bad_option("max_concurrency", "an integer >= 1", max_concurrency)
        if max_concurrency < 1:
            raise bad_option("max_concurrency", "an integer >= 1", max_concurrency)
        self.client = client if client is not None else VLMClient()
        self.vocabulary = tuple(vocabulary)
        self.dim = dim
        self.show_crop = show_crop
        self.crop_margin = crop_margin
        self.detail = detail
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        terms = len(self.vocabulary)
        return f"{type(self).__name__}(client={self.client!r}, vocabulary={terms} terms)"

    @property
    def usage(self) -> Usage:
        """The summed usage of every request made through this describer's client."""
        return self.client.usage

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        """One description per image of what its mask highlights (the whole image for None)."""
        _check_lengths(images, masks)
        pairs = list(zip(images, masks, strict=True))
        if self.max_concurrency == 1 or len(pairs) <= 1:
            return [self._describe_one(item, mask) for item, mask in pairs]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(pairs))) as pool:
            return list(pool.map(lambda pair: self._describe_one(*pair), pairs))

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        """What the highlighted regions share, from one request with every region."""
        _check_lengths(images, masks)
        shown = [
            highlight_region(item.image, mask, self.dim)
            for item, mask in zip(images, masks, strict=True)
            if not is_empty_region(mask)
        ]
        if not shown:
            return Description(EMPTY_REGION_TEXT)
        message = user_message(load_prompt(SUMMARIZE_PROMPT), shown, self.detail)
        return self._ask([message], first_line=False)

    def describe_messages(self, image: Tensor, mask: Tensor | None) -> list[ChatMessage]:
        """The messages that :meth:`describe` sends for one region."""
        shown = [highlight_region(image, mask, self.dim)]
        if self.show_crop and mask is not None:
            shown.append(crop_region(shown[0], mask, self.crop_margin))
        return [user_message(load_prompt(DESCRIBE_PROMPT), shown, self.detail)]

    def _describe_one(self, item: ImageItem, mask: Tensor | None) -> Description:
        if is_empty_region(mask):
            return Description(EMPTY_REGION_TEXT)
        return self._ask(self.describe_messages(item.image, mask), first_line=True)

    def _ask(self, messages: list[ChatMessage], *, first_line: bool) -> Description:
        result = self.client.chat(messages)
        text = parse_answer(result.text or "", first_line=first_line)
        if not text:
            raise MalformedResponseError(
                f"{self.client.endpoint} answered without a description: {result.text!r}"
            )
        return Description(text, match_concepts(text, self.vocabulary), result.usage)


def _check_lengths(images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> None:
    if len(images) != len(masks):
        raise ConfigurationError(
            f"`masks` must have one entry per image, got {len(masks)} for {len(images)} images"
        )
