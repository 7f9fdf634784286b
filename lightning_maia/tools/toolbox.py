"""The Toolbox: MAIA's tools bound to one unit of a subject.

Every agent — the offline scientist, the tool-calling VLM agent and the code-mode VLM agent —
works through the same methods. Each tool is defined once: its typed, documented signature gives
the JSON schema for function calling and the Python signature for code mode
(:meth:`Toolbox.definitions`). Mistakes an agent can make (an unknown id, a prompt the
generator cannot parse, a bad argument) raise :class:`ToolError` with a message fit to show it.

**Why one file.** The Toolbox is one class whose every public method is a tool the agents see,
so the tool API reads in one place; the definitions, the image store and the result records it
uses are in their own modules.

>>> from lightning_maia.world import build_neuron_suite
>>> model = build_neuron_suite(seed=0, n_mono=1, n_or=0, n_and=0)
>>> toolbox = Toolbox(Subject(model, ["neurons:0"]), "neurons:0")
>>> model.specs[0].description
'triangles'
>>> [round(call.activation, 2) > 0.3 for call in toolbox.call_units(
...     [g.id for g in toolbox.text2image(["a red triangle", "a blue square"])])]
[True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_maia.errors import GrammarError, ToolError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools._definitions import Annotated, Limits, ToolDefinition
from lightning_maia.tools._images import ImageStore, StoredImage
from lightning_maia.tools._results import (
    EditPair,
    ExemplarImage,
    Experiment,
    GeneratedImage,
    ImageDescription,
    Summary,
    UnitCall,
)
from lightning_maia.tools.backends._base import (
    ImageDescriber,
    ImageEditor,
    ImageGenerator,
    ImageSummarizer,
    Usage,
)
from lightning_maia.tools.backends._procedural import (
    ProceduralDescriber,
    ProceduralEditor,
    ProceduralGenerator,
)
from lightning_maia.units import Unit, parse_unit_spec
from lightning_maia.world.provenance import ProvenanceStore, resolve_store

#: The tools an agent may call, in the order they are offered.
TOOL_NAMES: tuple[str, ...] = (
    "dataset_exemplars",
    "text2image",
    "edit_images",
    "call_units",
    "describe_images",
    "summarize_images",
    "log_experiment",
)


#: The largest seed a call may give (numpy's and torch's generators take any of these).
MAX_SEED = 2**32 - 1
#: Bounds of the arguments every tool checks before it runs (ranges as well as types).
Seed = Annotated[int, Limits(minimum=0, maximum=MAX_SEED)]
ImageId = Annotated[str, Limits(max_length=64)]
ImageIds = Annotated[list[ImageId], Limits(max_items=256)]
Prompt = Annotated[str, Limits(max_length=500)]
Prompts = Annotated[list[Prompt], Limits(min_items=1, max_items=256)]
Count = Annotated[int, Limits(minimum=1, maximum=256)]
Note = Annotated[str, Limits(max_length=4_000)]


def _as_unit(unit: Unit | str) -> Unit:
    if isinstance(unit, Unit):
        return unit
    selection = parse_unit_spec(unit)
    if selection.indices is None or len(selection.indices) != 1:
        raise bad_option("unit", "one unit, e.g. 'layer4:17'", unit)
    return Unit(selection.layer, selection.indices[0])


class Toolbox:
    """MAIA's tools for one unit of ``subject``.

    Args:
        subject: the model, its preprocessing and units (``unit`` must be among them).
        unit: the unit under study.
        exemplars: precomputed exemplars (``compute_exemplars``) holding this unit; or
        exemplar_data: a dataset or loader to compute them from on first use.
        k: exemplars per unit when computed here.
        generator, editor, describer, summarizer: backends; procedural by default.
        image_size: side of generated images (default: the exemplars' size, else 64).
        seed: first seed of the seeds drawn when a call gives none (replays are exact).
        display_transform: maps dataset tensors to display images in [0, 1] (e.g. undoing a
            normalisation); the default clamps to [0, 1].
        max_images_per_call: a bound on the images one call may make or read.
        max_images: a bound on the images the toolbox may hold, exemplars included (None: no
            bound); a call that would pass it is a ToolError. Agents lower it to their
            per-episode image budget.
        store: the provenance store the toolbox reads scenes and edit records from, and its
            default procedural backends write to (default: the default store). Backends given
            here that hold a store (``.store``) must hold this one.
    """

    def __init__(
        self,
        subject: Subject,
        unit: Unit | str,
        *,
        exemplars: ExemplarResult | None = None,
        exemplar_data: Dataset[Any] | DataLoader[Any] | None = None,
        k: int = 15,
        generator: ImageGenerator | None = None,
        editor: ImageEditor | None = None,
        describer: ImageDescriber | None = None,
        summarizer: ImageSummarizer | None = None,
        image_size: int | None = None,
        seed: int = 0,
        display_transform: Callable[[Tensor], Tensor] | None = None,
        max_images_per_call: int = 32,
        max_images: int | None = None,
        store: ProvenanceStore | None = None,
    ) -> None:
        self.subject = subject
        self.unit = _as_unit(unit)
        if self.unit.layer not in {s.layer for s in subject.selections}:
            raise bad_option(
                "unit",
                "a unit of the subject: " + ", ".join(s.layer for s in subject.selections),
                self.unit.spec,
            )
        if max_images_per_call < 1:
            raise bad_option("max_images_per_call", "a positive integer", max_images_per_call)
        if max_images is not None and max_images < 1:
            raise bad_option("max_images", "a positive integer or None", max_images)
        self._exemplar_result = exemplars
        self._exemplar_data = exemplar_data
        self.k = k
        self.store = resolve_store(store)
        for role, backend in (
            ("generator", generator),
            ("editor", editor),
            ("describer", describer),
            ("summarizer", summarizer),
        ):
            held = getattr(backend, "store", None)
            if isinstance(held, ProvenanceStore) and held is not self.store:
                raise bad_option(
                    role,
                    "a backend bound to the toolbox's provenance store (give both the same "
                    "`store=`)",
                    f"{type(backend).__name__} bound to another store",
                )
        self.generator: ImageGenerator = generator or ProceduralGenerator(self.store)
        self.editor: ImageEditor = editor or ProceduralEditor(self.store)
        self.describer: ImageDescriber = describer or ProceduralDescriber()
        self.summarizer: ImageSummarizer = summarizer or (
            describer if isinstance(describer, ImageSummarizer) else ProceduralDescriber()
        )
        self._image_size = image_size
        self._next_seed = seed
        self.display_transform = display_transform or (lambda images: images.clamp(0.0, 1.0))
        self.max_images_per_call = max_images_per_call
        self.max_images = max_images
        self.images = ImageStore(self.store)
        self.experiments: list[Experiment] = []
        self.usage = Usage()
        self._exemplars: list[ExemplarImage] | None = None
        self._descriptions: dict[str, str] = {}

    # -- plumbing -------------------------------------------------------------------------

    def definitions(self) -> list[ToolDefinition]:
        """Every tool's definition (JSON schema and Python signature), in offer order."""
        return [ToolDefinition.from_function(getattr(self, name), name) for name in TOOL_NAMES]

    def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """Run a tool by name with JSON-like arguments (how a function-calling agent calls)."""
        if name not in TOOL_NAMES:
            raise ToolError(f"unknown tool {name!r}; tools: {', '.join(TOOL_NAMES)}")
        definition = ToolDefinition.from_function(getattr(self, name), name)
        return definition.function(**definition.validate(arguments))

    @property
    def exemplar_result(self) -> ExemplarResult | None:
        if self._exemplar_result is None and self._exemplar_data is not None:
            self._exemplar_result = compute_exemplars(
                self.subject, self._exemplar_data, [self.unit], k=self.k, progress=False
            )
        return self._exemplar_result

    @property
    def image_size(self) -> int:
        if self._image_size is None:
            result = self.exemplar_result
            if result is not None and result.dataset is not None:
                self._image_size = int(result.images(self.unit).shape[-1])
            else:
                self._image_size = 64
        return self._image_size

    def _seeds(self, count: int, seed: int | None) -> list[int]:
        if seed is not None:
            return [seed + i for i in range(count)]
        start, self._next_seed = self._next_seed, self._next_seed + count
        return list(range(start, start + count))

    def _check_count(self, count: int, what: str) -> None:
        if count > self.max_images_per_call:
            raise ToolError(
                f"{what}: {count} images in one call is more than the limit of "
                f"{self.max_images_per_call}; split the call"
            )
        if count == 0:
            raise ToolError(f"{what}: no images asked for")
        held = len(self.images)
        if self.max_images is not None and held + count > self.max_images:
            raise ToolError(
                f"{what}: {count} more images would pass the budget of {self.max_images} images "
                f"for this unit ({held} made so far); give your final answer"
            )

    def _stored(self, image_ids: Sequence[str], what: str) -> list[StoredImage]:
        self._check_count(len(image_ids), what)
        return [self.images.get(image_id) for image_id in image_ids]

    def _threshold(self) -> float | None:
        result = self.exemplar_result
        return result.for_unit(self.unit).threshold if result is not None else None

    # -- the tools --------------------------------------------------------------------------

    def dataset_exemplars(self) -> list[ExemplarImage]:
        """The dataset images that activate the unit most, highest first, each with the
        region the unit responds to highlighted (describe them to read that region).
        """
        if self._exemplars is not None:
            return self._exemplars
        result = self.exemplar_result
        if result is None:
            raise ToolError("no dataset exemplars: this toolbox was given no dataset")
        exemplars = result.for_unit(self.unit)
        images = self.display_transform(result.images(self.unit).float())
        masks = result.masks(self.unit)
        found = []
        for rank in range(len(exemplars.dataset_indices)):
            stored = self.images.add(
                images[rank],
                "exemplar",
                mask=masks[rank],
                dataset_index=int(exemplars.dataset_indices[rank]),
                activation=float(exemplars.activations[rank]),
            )
            found.append(
                ExemplarImage(
                    stored.id,
                    float(exemplars.activations[rank]),
                    int(exemplars.dataset_indices[rank]),
                )
            )
        self._exemplars = found
        return found

    def text2image(
        self, prompts: Prompts, n_per_prompt: Count = 1, seed: Seed | None = None
    ) -> list[GeneratedImage]:
        """Make images from text descriptions.

        Args:
            prompts: one description per image set, e.g. "a red striped circle on grass".
            n_per_prompt: images per prompt (different seeds).
            seed: first seed (0 to 4294967295), for a reproducible call; omitted, fresh seeds
                are drawn.
        """
        if n_per_prompt < 1:
            raise ToolError(f"text2image: n_per_prompt must be at least 1, got {n_per_prompt}")
        self._check_count(len(prompts) * n_per_prompt, "text2image")
        expanded = [prompt for prompt in prompts for _ in range(n_per_prompt)]
        seeds = self._seeds(len(expanded), seed)
        try:
            items = self.generator.generate(expanded, seeds, self.image_size)
        except GrammarError as error:
            raise ToolError(f"text2image: {error}") from error
        results = []
        for prompt, item_seed, item in zip(expanded, seeds, items, strict=True):
            stored = self.images.add(
                item.image, "text2image", scene=item.scene, prompt=prompt, seed=item_seed
            )
            results.append(GeneratedImage(stored.id, prompt, item_seed))
        return results

    def edit_images(self, image_ids: ImageIds, instructions: Prompts) -> list[EditPair]:
        """Edit images and return (original, edited) pairs, to test what a change does.

        Args:
            image_ids: images to edit (exemplars or generated ones).
            instructions: one instruction for all images, one per image, or (with a single
                image) several instructions for it, e.g. "make the circle blue".
        """
        if not instructions:
            raise ToolError("edit_images: no instructions given")
        if len(instructions) == 1:
            pairs = [(image_id, instructions[0]) for image_id in image_ids]
        elif len(image_ids) == 1:
            pairs = [(image_ids[0], instruction) for instruction in instructions]
        elif len(image_ids) == len(instructions):
            pairs = list(zip(image_ids, instructions, strict=True))
        else:
            raise ToolError(
                f"edit_images: got {len(image_ids)} images and {len(instructions)} instructions; "
                "give one instruction, one image, or as many of each"
            )
        originals = self._stored([image_id for image_id, _ in pairs], "edit_images")
        seeds = self._seeds(len(pairs), None)
        try:
            edited = self.editor.edit(
                [o.item() for o in originals], [text for _, text in pairs], seeds
            )
        except GrammarError as error:
            raise ToolError(f"edit_images: {error}") from error
        results = []
        for original, (_, instruction), item_seed, item in zip(
            originals, pairs, seeds, edited, strict=True
        ):
            stored = self.images.add(
                item.image,
                "edit",
                scene=item.scene,
                instruction=instruction,
                seed=item_seed,
                parent=original.id,
            )
            results.append(EditPair(original.id, stored.id, instruction))
        return results

    def call_units(self, image_ids: ImageIds) -> list[UnitCall]:
        """Measure the unit on images: its activation on each, and an image with the region
        it responds to highlighted.

        Args:
            image_ids: images to measure.
        """
        stored = self._stored(image_ids, "call_units")
        threshold = self._threshold()
        results = []
        for size, group in _by_size(stored).items():
            batch = torch.stack([s.image for s in group])
            response = self.subject.call_units(batch)
            activations = response.unit_activations(self.unit)
            maps = response.unit_maps(self.unit).float()
            upsampled = F.interpolate(
                maps[:, None], size=size, mode="bilinear", align_corners=False
            )[:, 0]
            for position, image in enumerate(group):
                activation = float(activations[position])
                image.activation = activation
                mask = _highlight(upsampled[position], threshold)
                highlighted = self.images.add(
                    image.image,
                    "mask",
                    scene=image.scene,
                    mask=mask,
                    parent=image.id,
                    activation=activation,
                )
                results.append(UnitCall(image.id, activation, highlighted.id))
        order = {image_id: i for i, image_id in enumerate(image_ids)}
        return sorted(results, key=lambda call: order[call.id])

    def describe_images(self, image_ids: ImageIds) -> list[ImageDescription]:
        """Describe the highlighted region of each image (the whole image if it has none).

        Args:
            image_ids: images to describe; highlighted images come from call_units and
                dataset_exemplars.
        """
        stored = self._stored(image_ids, "describe_images")
        descriptions = self.describer.describe([s.item() for s in stored], [s.mask for s in stored])
        results = []
        for image, description in zip(stored, descriptions, strict=True):
            self.usage.add(description.usage)
            self._descriptions[image.id] = description.text
            results.append(ImageDescription(image.id, description.text, description.concepts))
        return results

    def summarize_images(self, image_ids: ImageIds) -> Summary:
        """Say what the highlighted regions of several images have in common.

        Args:
            image_ids: images to compare, e.g. the dataset exemplars.
        """
        stored = self._stored(image_ids, "summarize_images")
        summary = self.summarizer.summarize([s.item() for s in stored], [s.mask for s in stored])
        self.usage.add(summary.usage)
        return Summary(list(image_ids), summary.text, summary.concepts)

    def log_experiment(
        self, title: Note, image_ids: ImageIds, conclusion: Note = "", hypothesis: Note = ""
    ) -> Experiment:
        """Record an experiment in the log that the final report shows.

        Args:
            title: what was tested.
            image_ids: the images it used (their activations and descriptions are attached).
            conclusion: what it showed.
            hypothesis: the hypothesis it tested.
        """
        stored = [self.images.get(image_id) for image_id in image_ids]
        experiment = Experiment(
            title=title,
            image_ids=list(image_ids),
            activations={s.id: s.activation for s in stored if s.activation is not None},
            descriptions={
                s.id: self._descriptions[s.id] for s in stored if s.id in self._descriptions
            },
            conclusion=conclusion,
            hypothesis=hypothesis,
        )
        self.experiments.append(experiment)
        return experiment


def _by_size(images: Sequence[StoredImage]) -> dict[tuple[int, int], list[StoredImage]]:
    groups: dict[tuple[int, int], list[StoredImage]] = {}
    for image in images:
        size = (int(image.image.shape[-2]), int(image.image.shape[-1]))
        groups.setdefault(size, []).append(image)
    return groups


def _highlight(upsampled_map: Tensor, threshold: float | None) -> Tensor:
    """The region a unit responds to: above its exemplar threshold, or (with no exemplars)
    above half of the map's peak."""
    if threshold is None:
        peak = float(upsampled_map.max())
        return upsampled_map > 0.5 * peak if peak > 0 else torch.zeros_like(upsampled_map).bool()
    return upsampled_map > threshold
