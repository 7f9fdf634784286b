"""The procedural backends: generate, edit, describe and summarize in the procedural world.

They read scenes, never pixels: a generated image is the rendering of the scene its prompt
parses to; an edit renders the edited scene with everything else fixed; a description names the
concepts whose masks the highlighted region covers. The generator and the editor register what
they render in the provenance store they are given (default: the default store).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lightning_maia.errors import ToolError
from lightning_maia.tools.backends._base import Description, ImageItem
from lightning_maia.world._grammar import apply_edit, parse_prompt
from lightning_maia.world._render import Rendering, render_scene
from lightning_maia.world._scene import Scene
from lightning_maia.world._text import (
    common_concepts,
    describe_region,
    describe_scene,
    region_concepts,
    summarize_concepts,
)
from lightning_maia.world.provenance import ProvenanceStore, render_and_register, resolve_store

NO_SCENE = (
    "this image has no procedural scene, so the procedural {role} cannot read it; configure a "
    "{alternative} for images from outside the procedural world"
)


def _require_scene(item: ImageItem, role: str, alternative: str) -> Scene:
    if item.scene is None:
        raise ToolError(NO_SCENE.format(role=role, alternative=alternative))
    return item.scene


class ProceduralGenerator:
    """Text to image through the world's grammar (``a red striped circle on grass``)."""

    name = "procedural"

    def __init__(self, store: ProvenanceStore | None = None) -> None:
        self.store = resolve_store(store)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int) -> list[ImageItem]:
        items = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            scene = parse_prompt(prompt, seed=seed)
            origin = f"text2image:{prompt}#{seed}"
            rendering = render_and_register(scene, size, origin=origin, store=self.store)
            items.append(ImageItem(rendering.float_image(), scene))
        return items


class ProceduralEditor:
    """Edits through the world's edit grammar (``make the circle blue``)."""

    name = "procedural"

    def __init__(self, store: ProvenanceStore | None = None) -> None:
        self.store = resolve_store(store)

    def edit(
        self, images: Sequence[ImageItem], instructions: Sequence[str], seeds: Sequence[int]
    ) -> list[ImageItem]:
        items = []
        for item, instruction, seed in zip(images, instructions, seeds, strict=True):
            scene = _require_scene(item, "editor", "diffusers editor (DiffusersEditor)")
            edited = apply_edit(scene, instruction, seed=seed)
            origin = f"edit:{instruction}#{seed}"
            rendering = render_and_register(edited, _size_of(item), origin=origin, store=self.store)
            items.append(ImageItem(rendering.float_image(), edited))
        return items


def _rendering(item: ImageItem) -> Rendering:
    scene = _require_scene(item, "describer", "captioner, CLIP vocabulary or VLM describer")
    return render_scene(scene, _size_of(item))


def _size_of(item: ImageItem) -> tuple[int, int]:
    return int(item.image.shape[-2]), int(item.image.shape[-1])


class ProceduralDescriber:
    """Exact words for the highlighted region of procedural images."""

    name = "procedural"

    def __init__(self, min_fraction: float = 0.1, min_share: float = 0.5) -> None:
        self.min_fraction = min_fraction
        self.min_share = min_share

    def can_describe(self, item: ImageItem) -> bool:
        return item.scene is not None

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        descriptions = []
        for item, mask in zip(images, masks, strict=True):
            rendering = _rendering(item)
            if mask is None:
                concepts = rendering.scene.concepts()
                text = describe_scene(rendering.scene)
            else:
                concepts = region_concepts(rendering, mask, self.min_fraction)
                text = describe_region(rendering, mask, self.min_fraction)
            descriptions.append(Description(text, tuple(sorted(str(c) for c in concepts))))
        return descriptions

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        concept_sets = []
        for item, mask in zip(images, masks, strict=True):
            rendering = _rendering(item)
            concept_sets.append(
                rendering.scene.concepts()
                if mask is None
                else region_concepts(rendering, mask, self.min_fraction)
            )
        common = common_concepts(concept_sets, self.min_share)
        return Description(
            summarize_concepts(concept_sets, self.min_share),
            tuple(str(concept) for concept, _ in common),
        )
