"""Describers for real images that need no API: each yields ``attribute=value`` concepts.

- :class:`TableDescriber` — the image's attribute columns (its metadata row, or the values an
  edit or retrieval registered for it);
- :class:`PixelDescriber` — attributes measured from the pixels of the highlighted region:
  ``colour`` (the dominant named hue), ``brightness`` and ``texture``;
- :class:`ClassifierDescriber` — a pretrained classifier the user has names the region's content
  (``object=<class name>``);
- :class:`AttributeConcepts` — turns the plain vocabulary terms of the CLIP scorer or the
  captioner (``dog``) into concepts of one attribute (``object=dog``);
- :class:`CombinedDescriber` — the union of several, skipping one that cannot read an image.

>>> import torch
>>> image = torch.zeros(3, 8, 8); image[0, :4] = 1.0   # a red top half on black
>>> top = torch.zeros(8, 8, dtype=torch.bool); top[:4] = True
>>> PixelDescriber().describe([ImageItem(image)], [top])[0].concepts
('brightness=bright', 'colour=red', 'texture=smooth')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_maia.errors import ToolError, bad_option
from lightning_maia.tools.backends._base import Description, ImageDescriber, ImageItem
from lightning_maia.tools.realdata._colours import pixel_colour_names
from lightning_maia.tools.realdata._editor import known_attributes
from lightning_maia.tools.realdata._pixel_edits import bounding_box
from lightning_maia.tools.realdata._table import AttributeTable
from lightning_maia.world.provenance import ProvenanceStore, resolve_store


def _region(item: ImageItem, mask: Tensor | None) -> Tensor:
    if mask is None or not bool(mask.any()):
        return torch.ones(item.image.shape[-2:], dtype=torch.bool)
    return mask.bool().cpu()


def _summary(descriptions: Sequence[Description], min_share: float) -> Description:
    counts = Counter(c for d in descriptions for c in d.concepts)
    shared = [c for c, n in counts.most_common() if n >= min_share * max(len(descriptions), 1)]
    text = ", ".join(shared) if shared else "nothing the images share"
    return Description(text, tuple(shared))


class TableDescriber:
    """The attribute columns of each image (its row, or what an edit registered in ``store``,
    default: the default provenance store)."""

    name = "table"

    def __init__(
        self,
        table: AttributeTable | None = None,
        min_share: float = 0.5,
        store: ProvenanceStore | None = None,
    ) -> None:
        self.table = table
        self.min_share = min_share
        self.store = resolve_store(store)

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        found = []
        for item in images:
            attributes = known_attributes(item, self.table, self.store)
            if not attributes:
                raise ToolError(
                    "this image has no attribute row (it is not a dataset item and no "
                    "real-data edit made it); describe it with the pixel or classifier describer"
                )
            # Register the row by content, so the highlighted copies of the image find it.
            known = self.store.facts(item.image)
            if item.dataset_index is not None and (known is None or known.attributes is None):
                self.store.register_attributes(
                    item.image, attributes, dataset_index=item.dataset_index
                )
            concepts = tuple(sorted(f"{a}={v}" for a, v in attributes.items()))
            found.append(Description("; ".join(concepts), concepts))
        return found

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        return _summary(self.describe(images, masks), self.min_share)


class PixelDescriber:
    """Colour, brightness and texture measured inside the highlighted region.

    Args:
        min_colour_share: a hue names the region's colour when at least this share of its
            coloured pixels has it and coloured pixels are at least this share of the region;
            otherwise the colour is ``gray``.
        texture_threshold: mean absolute brightness step between neighbours above which the
            region is ``textured`` (else ``smooth``).
    """

    name = "pixels"

    def __init__(self, min_colour_share: float = 0.1, texture_threshold: float = 0.08) -> None:
        if not 0.0 < min_colour_share <= 1.0:
            raise bad_option("min_colour_share", "a share in (0, 1]", min_colour_share)
        self.min_colour_share = min_colour_share
        self.texture_threshold = texture_threshold

    def measure(self, image: Tensor, region: Tensor) -> dict[str, str]:
        """The attributes of ``image`` inside the bool ``region``."""
        image = image.float().cpu()
        names = [
            n
            for n, inside in zip(pixel_colour_names(image), region.flatten().tolist(), strict=True)
            if inside
        ]
        hued = Counter(n for n in names if n not in ("white", "gray", "black"))
        colour = "gray"
        if hued and sum(hued.values()) >= self.min_colour_share * len(names):
            colour = hued.most_common(1)[0][0]
        elif names:
            colour = Counter(names).most_common(1)[0][0]
        value = image.max(0).values
        brightness = float(value[region].mean())
        steps = torch.cat([(value[:, 1:] - value[:, :-1]).abs()[region[:, 1:] & region[:, :-1]],
                           (value[1:] - value[:-1]).abs()[region[1:] & region[:-1]]])  # fmt: skip
        roughness = float(steps.mean()) if len(steps) else 0.0
        return {
            "colour": colour,
            "brightness": "dark"
            if brightness < 0.33
            else ("bright" if brightness > 0.66 else "medium"),
            "texture": "textured" if roughness > self.texture_threshold else "smooth",
        }

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        found = []
        for item, mask in zip(images, masks, strict=True):
            region = _region(item, mask)
            # Judge colour on the pixels that have one: dark or unsaturated ones carry no hue.
            measured = self.measure(item.image, region)
            concepts = tuple(sorted(f"{a}={v}" for a, v in measured.items()))
            text = f"a {measured['brightness']}, {measured['texture']} {measured['colour']} region"
            found.append(Description(text, concepts))
        return found

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        return _summary(self.describe(images, masks), 0.5)


class ClassifierDescriber:
    """A classifier the user already has names the content of the highlighted region.

    The region's bounding box is cropped and resized to ``input_size`` (the image's size by
    default), ``preprocess`` maps it to the model's input, and the top class becomes the
    concept ``<attribute>=<class name>``.

    Args:
        model: maps a (N, 3, H, W) batch to (N, classes) logits.
        class_names: the classes in logit order.
        attribute: the attribute the class names are values of.
        preprocess: display images in [0, 1] -> model inputs (e.g. a normalisation).
        input_size: the side the model expects.
    """

    name = "classifier"

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        *,
        attribute: str = "object",
        preprocess: Callable[[Tensor], Tensor] | None = None,
        input_size: int | None = None,
    ) -> None:
        if not class_names:
            raise bad_option(
                "class_names", "the classifier's class names in logit order", class_names
            )
        self.model, self.class_names, self.attribute = model, list(class_names), attribute
        self.preprocess, self.input_size = preprocess, input_size

    @torch.no_grad()
    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        crops = []
        for item, mask in zip(images, masks, strict=True):
            region = _region(item, mask)
            top, left, bottom, right = bounding_box(region)
            size = self.input_size or int(item.image.shape[-1])
            part = item.image.float().cpu()[:, top:bottom, left:right][None]
            crops.append(
                F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False)[0]
            )
        batch = torch.stack(crops)
        if self.preprocess is not None:
            batch = self.preprocess(batch)
        parameter = next(self.model.parameters(), None)
        if parameter is not None:
            batch = batch.to(parameter.device, parameter.dtype)
        was_training = self.model.training
        self.model.eval()
        try:
            probabilities = self.model(batch).float().softmax(dim=1).cpu()
        finally:
            self.model.train(was_training)
        if probabilities.shape[1] != len(self.class_names):
            raise bad_option(
                "class_names",
                f"{probabilities.shape[1]} names (one per logit)",
                len(self.class_names),
            )
        found = []
        for row in probabilities:
            best = int(row.argmax())
            name = self.class_names[best]
            found.append(
                Description(f"{name} ({float(row[best]):.2f})", (f"{self.attribute}={name}",))
            )
        return found

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        return _summary(self.describe(images, masks), 0.5)


class AttributeConcepts:
    """A describer whose plain concepts (``dog``) become concepts of ``attribute`` (``object=dog``);
    concepts that already hold an ``=`` pass through."""

    def __init__(self, describer: ImageDescriber, attribute: str = "object") -> None:
        self.describer, self.attribute = describer, attribute
        self.name = f"{describer.name}_as_{attribute}"

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        found = []
        for d in self.describer.describe(images, masks):
            concepts = tuple(c if "=" in c else f"{self.attribute}={c}" for c in d.concepts)
            found.append(Description(d.text, concepts, d.usage))
        return found

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        return _summary(self.describe(images, masks), 0.5)


class CombinedDescriber:
    """The union of several describers' concepts; a describer that cannot read an image (a
    ``ToolError``) is skipped for it. The first describer's value wins where two name one
    attribute differently (list the most trusted first: a table before pixel measurements)."""

    def __init__(self, describers: Sequence[ImageDescriber]) -> None:
        if not describers:
            raise bad_option("describers", "at least one describer", list(describers))
        self.describers = list(describers)
        self.name = "+".join(d.name for d in self.describers)

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        parts: list[list[Description | None]] = []
        errors = []
        for describer in self.describers:
            try:
                parts.append(list(describer.describe(images, masks)))
            except ToolError as error:
                errors.append(f"{describer.name}: {error}")
                parts.append(
                    [
                        self._each(describer, item, mask)
                        for item, mask in zip(images, masks, strict=True)
                    ]
                )
        found = []
        for position in range(len(images)):
            values: dict[str, str] = {}
            plain: list[str] = []
            texts = []
            for described in (p[position] for p in parts):
                if described is None:
                    continue
                texts.append(described.text)
                for concept in described.concepts:
                    attribute, sep, value = concept.partition("=")
                    if sep:
                        values.setdefault(attribute, value)
                    elif concept not in plain:
                        plain.append(concept)
            if not texts:
                raise ToolError("no describer could read this image: " + "; ".join(errors))
            concepts = tuple(sorted(f"{a}={v}" for a, v in values.items())) + tuple(plain)
            found.append(Description("; ".join(texts), concepts))
        return found

    @staticmethod
    def _each(
        describer: ImageDescriber, item: ImageItem, mask: Tensor | None
    ) -> Description | None:
        try:
            return describer.describe([item], [mask])[0]
        except ToolError:
            return None

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        return _summary(self.describe(images, masks), 0.5)


def default_describer(
    table: AttributeTable | None, store: ProvenanceStore | None = None
) -> ImageDescriber:
    """The table's columns (and what ``store`` knows) first, then what the region's pixels show."""
    pixels = PixelDescriber()
    if table is None:
        return pixels
    return CombinedDescriber([TableDescriber(table, store=store), pixels])
