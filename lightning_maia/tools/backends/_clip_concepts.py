"""Label highlighted regions against a concept vocabulary with CLIP, without any API.

Each concept becomes a prompt ("a photo of a dog"); a region's CLIP image embedding is compared
with every prompt's text embedding (cosine similarity) and a softmax over the vocabulary turns
the similarities into probabilities. :func:`rank_concepts` is the pure selection step.

>>> rank_concepts([0.62, 0.05, 0.21, 0.12], ["dog", "cat", "grass", "sky"], threshold=0.15)
[('dog', 0.62), ('grass', 0.21)]
>>> format_ranking([('dog', 0.62), ('grass', 0.21)])
'dog (0.62), grass (0.21)'
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.tools.backends._base import Description, ImageItem
from lightning_maia.tools.backends._regions import EMPTY_REGION_TEXT, concept_phrase
from lightning_maia.tools.backends._transformers_backend import (
    ModelSource,
    PretrainedBackend,
    check_positive_int,
    check_vocabulary,
    model_device_and_dtype,
    pooled_features,
    run_model,
)

_TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")


def rank_concepts(
    probabilities: Sequence[float] | Tensor,
    vocabulary: Sequence[str],
    threshold: float = 0.1,
    top_k: int = 3,
) -> list[tuple[str, float]]:
    """The ``top_k`` most probable concepts with probability ``>= threshold``, best first.

    The best concept is always kept, so a flat distribution still names its argmax; ties keep
    vocabulary order.

    >>> rank_concepts([0.3, 0.3, 0.4], ["a", "b", "c"], threshold=0.5)
    [('c', 0.4)]
    """
    values = [float(value) for value in probabilities]
    if len(values) != len(vocabulary):
        raise ConfigurationError(
            f"got {len(values)} probabilities for a vocabulary of {len(vocabulary)} concepts"
        )
    order = sorted(range(len(values)), key=lambda index: -values[index])[:top_k]
    return [
        (vocabulary[index], values[index])
        for rank, index in enumerate(order)
        if rank == 0 or values[index] >= threshold
    ]


def format_ranking(ranking: Sequence[tuple[str, float]]) -> str:
    """Concepts with their probabilities to two decimals, as an agent reads them."""
    return ", ".join(f"{concept} ({probability:.2f})" for concept, probability in ranking)


class ClipConceptScorer(PretrainedBackend):
    """Concept probabilities of highlighted regions from a CLIP-style dual encoder.

    Implements :class:`~lightning_maia.tools.backends._base.ImageDescriber` and
    :class:`~lightning_maia.tools.backends._base.ImageSummarizer`. The model loads on first use
    from ``model`` — a local directory (``local_files_only=True``: nothing is downloaded) or a
    built ``CLIPModel``-like object with ``get_image_features``/``get_text_features``, then with
    its ``processor`` — through ``AutoProcessor`` and ``AutoModel``.

    :meth:`describe` ranks the vocabulary for each region (``"dog (0.62), grass (0.21)"``);
    :meth:`summarize` ranks it for the mean embedding of all regions. Regions are cropped to
    their mask's bounding box (plus ``region_margin``), the outside of the mask dimmed to
    ``outside_brightness``.

    Args:
        model: a local model directory (a hub id with ``local_files_only=False``) or a built model.
        processor: its processor, or a directory holding it; defaults to ``model``'s directory.
        vocabulary: the concepts to score (at least one).
        template: the text prompt for a concept; must contain ``{concept}`` (a procedural
            ``attribute=value`` term fills it with its value).
        temperature: softmax temperature over cosine similarities; None uses the model's own
            ``logit_scale`` (1/100 for a model without one).
        threshold: the lowest probability a concept needs to be named (the best always is).
        top_k: the most concepts named per region.
        batch_size: regions embedded per forward pass.
        device: where the model runs; None is CPU for a loaded model, as-is for a built one.
        dtype: a torch dtype or its name; None keeps the checkpoint's.
        local_files_only: False lets ``from_pretrained`` download a hub id.
        region_margin: margin around the mask's bounding box, as a fraction of its longer side.
        outside_brightness: factor applied to pixels outside the mask.
    """

    name = "clip"
    what = "CLIP model"

    def __init__(
        self,
        model: ModelSource | torch.nn.Module,
        *,
        vocabulary: Sequence[str],
        processor: ModelSource | Any | None = None,
        template: str = "a photo of a {concept}",
        temperature: float | None = None,
        threshold: float = 0.1,
        top_k: int = 3,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        local_files_only: bool = True,
        region_margin: float = 0.1,
        outside_brightness: float = 0.25,
    ) -> None:
        super().__init__(
            model, processor, device, dtype, local_files_only, region_margin, outside_brightness
        )
        self.vocabulary = check_vocabulary(vocabulary, required=True)
        if not isinstance(template, str) or "{concept}" not in template:
            raise bad_option("template", "a string containing {concept}", template)
        try:
            self.prompts = tuple(
                template.format(concept=concept_phrase(concept)) for concept in self.vocabulary
            )
        except (KeyError, IndexError, ValueError) as error:
            raise bad_option(
                "template", "a string whose only field is {concept}", template
            ) from error
        if temperature is not None and not temperature > 0.0:
            raise bad_option("temperature", "a number > 0 or None", temperature)
        if not 0.0 <= threshold <= 1.0:
            raise bad_option("threshold", "a number in [0, 1]", threshold)
        check_positive_int("top_k", top_k)
        check_positive_int("batch_size", batch_size)
        self.template = template
        self.temperature = temperature
        self.threshold = threshold
        self.top_k = top_k
        self.batch_size = batch_size
        self._text_embeddings: Tensor | None = None

    def text_embeddings(self) -> Tensor:
        """Unit-norm embeddings of the vocabulary prompts, (V, D), computed once."""
        if self._text_embeddings is None:
            model, processor = self.loaded()
            device, _ = model_device_and_dtype(model)

            def embed() -> Tensor:
                inputs = processor(
                    text=list(self.prompts), padding=True, truncation=True, return_tensors="pt"
                )
                tensors = {key: inputs[key].to(device) for key in _TEXT_INPUTS if key in inputs}
                return pooled_features(model.get_text_features(**tensors))  # type: ignore[operator]

            features = run_model(f"{self.what} text encoder", embed)
            self._text_embeddings = F.normalize(features.float(), dim=-1)
        return self._text_embeddings

    def image_embeddings(self, images: Sequence[Image.Image]) -> Tensor:
        """Unit-norm embeddings of PIL images, (N, D), ``batch_size`` at a time."""
        model, processor = self.loaded()
        device, dtype = model_device_and_dtype(model)

        def embed(batch: list[Image.Image]) -> Tensor:
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            output = model.get_image_features(pixel_values=pixels.to(device, dtype))  # type: ignore[operator]
            return pooled_features(output)

        chunks: list[Tensor] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            chunks.append(run_model(f"{self.what} image encoder", partial(embed, batch)))
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def probabilities(self, embeddings: Tensor) -> Tensor:
        """Softmax over the vocabulary of each unit-norm image embedding, (N, V)."""
        text = self.text_embeddings()
        similarities = embeddings.to(text.device) @ text.T
        return torch.softmax(similarities * self._logit_scale(), dim=-1).cpu()

    def _logit_scale(self) -> float:
        if self.temperature is not None:
            return 1.0 / self.temperature
        scale = getattr(self._model, "logit_scale", None)
        return float(scale.detach().exp()) if isinstance(scale, Tensor) else 100.0

    def _region_embeddings(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Tensor | None]:
        views = self.region_views(images, masks)
        shown = [view for view in views if view is not None]
        embeddings = iter(self.image_embeddings(shown) if shown else ())
        return [None if view is None else next(embeddings) for view in views]

    def _describe_embedding(self, embedding: Tensor, prefix: str = "") -> Description:
        probabilities = self.probabilities(embedding[None])[0]
        ranking = rank_concepts(probabilities, self.vocabulary, self.threshold, self.top_k)
        return Description(
            prefix + format_ranking(ranking), tuple(concept for concept, _ in ranking)
        )

    def describe(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Description]:
        """The most probable vocabulary concepts of each highlighted region."""
        return [
            Description(EMPTY_REGION_TEXT)
            if embedding is None
            else self._describe_embedding(embedding)
            for embedding in self._region_embeddings(images, masks)
        ]

    def summarize(self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]) -> Description:
        """The most probable concepts for the mean embedding of the highlighted regions."""
        if len(images) == 0:
            raise bad_option("images", "one or more images", images)
        embeddings = [
            embedding
            for embedding in self._region_embeddings(images, masks)
            if embedding is not None
        ]
        if not embeddings:
            return Description(EMPTY_REGION_TEXT)
        mean = F.normalize(torch.stack(embeddings).mean(dim=0), dim=-1)
        return self._describe_embedding(mean, prefix=f"across {len(embeddings)} regions: ")
