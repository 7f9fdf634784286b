"""Describe and summarize highlighted image regions with a vision-language model, as MAIA does.

A region is shown the way MAIA shows it: the whole picture with everything outside the mask
darkened (and, with ``show_crop``, a close-up crop of the region after it), and the model is asked
to describe ONLY the highlighted region in a short phrase. Summarizing sends all the regions in
one request and asks what they have in common (MAIA's ``summarize_images``). The prompts are the
package files ``lightning_maia/tools/prompts/describe_region.md`` and ``summarize_regions.md``.

>>> import torch
>>> image, mask = torch.ones(3, 4, 4), torch.zeros(4, 4, dtype=torch.bool)
>>> mask[:2] = True
>>> highlight_region(image, mask, dim=0.25)[0, :, 0].tolist()
[1.0, 1.0, 0.25, 0.25]
>>> find_concepts("Two striped dogs on grass", ["dog", "cat", "texture=striped"])
('dog', 'texture=striped')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_maia.errors import ConfigurationError, MalformedResponseError, bad_option
from lightning_maia.tools.backends.base import Description, ImageItem, Usage
from lightning_maia.tools.backends.vlm import ChatMessage, VLMClient, user_message

#: The description of a region whose mask is empty; no request is made for it.
EMPTY_REGION_TEXT = "nothing highlighted"

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


def region_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """``mask`` as a bool (height, width) tensor: nearest resize, float masks cut at 0.5."""
    if mask.ndim != 2:
        raise bad_option("mask", "a (H, W) tensor or None", tuple(mask.shape))
    binary = mask if mask.dtype == torch.bool else mask > 0.5
    if tuple(binary.shape) != (height, width):
        resized = F.interpolate(binary[None, None].float(), size=(height, width), mode="nearest")
        binary = resized[0, 0] > 0.5
    return binary.to(device="cpu")


def highlight_region(image: Tensor, mask: Tensor | None, dim: float = 0.3) -> Tensor:
    """``image`` with every pixel outside ``mask`` scaled by ``dim`` (None: the image as is)."""
    if mask is None:
        return image
    inside = region_mask(mask, image.shape[-2], image.shape[-1]).to(image.device)
    return torch.where(inside, image, image * dim)


def crop_region(image: Tensor, mask: Tensor, margin: float = 0.15) -> Tensor:
    """The box around ``mask``, widened by ``margin`` of its size per side, scaled up so that
    its longer side is the image's longer side."""
    height, width = image.shape[-2:]
    inside = region_mask(mask, height, width)
    rows, cols = inside.any(dim=1).nonzero(), inside.any(dim=0).nonzero()
    if rows.numel() == 0:
        return image
    top, bottom = int(rows.min()), int(rows.max()) + 1
    left, right = int(cols.min()), int(cols.max()) + 1
    pad_y, pad_x = round((bottom - top) * margin), round((right - left) * margin)
    top, bottom = max(0, top - pad_y), min(height, bottom + pad_y)
    left, right = max(0, left - pad_x), min(width, right + pad_x)
    crop = image[..., top:bottom, left:right]
    scale = max(height, width) / max(bottom - top, right - left)
    if scale <= 1:
        return crop
    size = (round((bottom - top) * scale), round((right - left) * scale))
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


def find_concepts(text: str, vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The vocabulary terms that ``text`` names: whole words, any case, a plural -s/-es allowed.

    A term ``attribute=value`` (the procedural world's concepts) is found by its value.
    """
    found: list[str] = []
    for term in dict.fromkeys(vocabulary):
        if _term_pattern(term).search(text):
            found.append(term)
    return tuple(found)


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str]:
    words = term.split("=", 1)[-1].replace("_", " ").split()
    body = r"\s+".join(re.escape(word) for word in words) or re.escape(term)
    return re.compile(rf"(?<!\w){body}(?:s|es)?(?!\w)", re.IGNORECASE)


class VLMDescriber:
    """Describe (one request per region) and summarize (one request for all) with a VLM.

    ``client`` carries the endpoint, model, timeout and retries (None: a :class:`VLMClient`
    configured from the environment). ``vocabulary`` terms found in a description become its
    ``concepts``. Outside the mask, pixels are scaled by ``dim``; ``show_crop`` also sends a
    close-up of the region; ``detail`` is OpenAI's image resolution hint. Up to
    ``max_concurrency`` describe requests run at once. An empty mask gets
    :data:`EMPTY_REGION_TEXT` without a request.
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
            if not _is_empty(mask)
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
        if _is_empty(mask):
            return Description(EMPTY_REGION_TEXT)
        return self._ask(self.describe_messages(item.image, mask), first_line=True)

    def _ask(self, messages: list[ChatMessage], *, first_line: bool) -> Description:
        result = self.client.chat(messages)
        text = parse_answer(result.text or "", first_line=first_line)
        if not text:
            raise MalformedResponseError(
                f"{self.client.endpoint} answered without a description: {result.text!r}"
            )
        return Description(text, find_concepts(text, self.vocabulary), result.usage)


def _is_empty(mask: Tensor | None) -> bool:
    if mask is None:
        return False
    return not bool((mask if mask.dtype == torch.bool else mask > 0.5).any())


def _check_lengths(images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> None:
    if len(images) != len(masks):
        raise ConfigurationError(
            f"`masks` must have one entry per image, got {len(masks)} for {len(images)} images"
        )
