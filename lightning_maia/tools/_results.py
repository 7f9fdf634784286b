"""What the tools return: small records whose text is the observation an agent reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


class _Observed:
    """A record whose text (what an agent reads) is its ``template`` filled with its fields."""

    template: ClassVar[str]

    def __str__(self) -> str:
        return self.template.format_map(vars(self))


@dataclass
class ExemplarImage(_Observed):
    """A dataset exemplar of the unit, with its highlighted region attached."""

    template: ClassVar[str] = "{id}: activation {activation:.3f} (dataset item {dataset_index})"
    id: str
    activation: float
    dataset_index: int


@dataclass
class GeneratedImage(_Observed):
    """An image made from text."""

    template: ClassVar[str] = "{id}: {prompt!r} (seed {seed})"
    id: str
    prompt: str
    seed: int


@dataclass
class EditPair(_Observed):
    """An original image and its edited version."""

    template: ClassVar[str] = "{original} -> {edited}: {instruction!r}"
    original: str
    edited: str
    instruction: str


@dataclass
class UnitCall(_Observed):
    """The unit's activation on an image, and the image with the unit's region highlighted."""

    template: ClassVar[str] = (
        "{id}: activation {activation:.3f} (highlighted region: {highlighted})"
    )
    id: str
    activation: float
    highlighted: str


@dataclass
class ImageDescription(_Observed):
    """Words for the highlighted region of an image (the whole image when it has none)."""

    template: ClassVar[str] = "{id}: {description}"
    id: str
    description: str
    concepts: tuple[str, ...] = ()


@dataclass
class Summary:
    """What the highlighted regions of several images share."""

    ids: list[str]
    summary: str
    concepts: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"summary of {len(self.ids)} images: {self.summary}"


@dataclass
class Experiment:
    """One entry of the experiment log: what was tried, on which images, what it showed."""

    title: str
    image_ids: list[str]
    activations: dict[str, float] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    conclusion: str = ""
    hypothesis: str = ""

    def __str__(self) -> str:
        lines = [f"experiment: {self.title}"]
        if self.hypothesis:
            lines.append(f"  hypothesis: {self.hypothesis}")
        for image_id in self.image_ids:
            parts = [image_id]
            if image_id in self.activations:
                parts.append(f"activation {self.activations[image_id]:.3f}")
            if image_id in self.descriptions:
                parts.append(self.descriptions[image_id])
            lines.append("  " + " | ".join(parts))
        if self.conclusion:
            lines.append(f"  conclusion: {self.conclusion}")
        return "\n".join(lines)


def observation(result: object) -> str:
    """The text an agent reads for a tool's result."""
    if isinstance(result, list):
        return "\n".join(str(item) for item in result) if result else "(nothing)"
    return str(result)
