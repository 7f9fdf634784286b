"""The small protocols every image backend implements, and the values they exchange.

Backends see display images: float (3, H, W) tensors in [0, 1]. An image from the procedural
world also carries its ``scene``, so procedural backends read the scene instead of guessing from
pixels; other backends ignore it. Highlighted regions are bool (H, W) masks (None: the whole
image), as MAIA's "describe only the highlighted region".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from lightning_maia.world._scene import Scene


@dataclass
class ImageItem:
    """One display image and, when it came from the procedural world, its scene."""

    image: Tensor
    scene: Scene | None = None
    #: Bool (H, W): the region a unit highlighted on this image, where known (edits that act on
    #: "the highlighted region" read it).
    mask: Tensor | None = None
    #: The dataset item the image shows, for exemplars (a metadata table's row).
    dataset_index: int | None = None


@dataclass
class Usage:
    """What calls to an external model cost."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Description:
    """Words for an image region, and the vocabulary concepts found in them.

    ``concepts`` are strings: ``attribute=value`` for the procedural world, vocabulary terms
    (e.g. ``"dog"``) for captioners and VLMs. An agent ranks hypotheses over them.
    """

    text: str
    concepts: tuple[str, ...] = ()
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class ImageGenerator(Protocol):
    """Text to images: one image per (prompt, seed)."""

    name: str

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int) -> list[ImageItem]:
        """Images of side ``size`` for each prompt, in order; a seed makes each reproducible."""
        ...


@runtime_checkable
class ImageEditor(Protocol):
    """Edits of given images: one edited image per (image, instruction, seed)."""

    name: str

    def edit(
        self, images: Sequence[ImageItem], instructions: Sequence[str], seeds: Sequence[int]
    ) -> list[ImageItem]:
        """The edited images, in order, the same size as their originals."""
        ...


@runtime_checkable
class ImageDescriber(Protocol):
    """Words for the highlighted region of each image."""

    name: str

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        """One description per image of what lies in its mask (the whole image for None)."""
        ...


@runtime_checkable
class ImageSummarizer(Protocol):
    """What the highlighted regions of several images have in common."""

    name: str

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        """One description of what the regions share."""
        ...
