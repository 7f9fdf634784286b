"""Diffusers backends: text to image and image edits with real diffusion pipelines.

:class:`DiffusersGenerator` runs any text-to-image pipeline (SD 1.5, SDXL-Turbo, FLUX, ...);
:class:`DiffusersEditor` runs InstructPix2Pix or image-to-image pipelines. Both take a local
folder, a hub id already in the Hugging Face cache, or a pipeline you built yourself. Nothing is
downloaded unless you pass ``local_files_only=False``. Constructing a backend only checks its
arguments; diffusers is imported and the weights loaded on first use (or by :meth:`load`).

Every image comes from a ``torch.Generator`` seeded by its own seed, so an image depends on its
(prompt, seed) alone, whatever batch it ran in. Images come back as float (3, H, W) tensors in
[0, 1] with no scene: they have no procedural provenance.

>>> generator = DiffusersGenerator("stabilityai/sd-turbo", num_inference_steps=1, batch_size=8)
>>> generator.loaded
False
>>> items = generator.generate(["a red cat"], seeds=[0], size=512)  # doctest: +SKIP
>>> items[0].image.shape  # doctest: +SKIP
torch.Size([3, 512, 512])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_maia._optional import is_available, require
from lightning_maia.errors import BackendError, ConfigurationError, bad_option
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.tools.backends._diffusers_support import (
    check_device,
    check_dtype,
    check_model_source,
    check_positive,
    check_same_length,
    dtype_keyword,
    is_instruct_pix2pix,
    resize_images,
    resolve_device,
    resolve_dtype,
    round_up,
    runs_of_same_size,
    takes_image,
    to_display_batch,
)

_EDIT_KINDS = ("auto", "instruct-pix2pix", "image-to-image")
# The arguments each call sets itself; pipeline_kwargs may not override them.
_MANAGED_CALL_ARGUMENTS = frozenset(
    {"prompt", "image", "generator", "height", "width", "output_type", "return_dict"}
)
# Pipelines want one negative prompt (or second prompt) per prompt of a batch.
_PROMPT_ARGUMENT = re.compile(r"(negative_)?prompt(_\d)?")
# Stable Diffusion pipelines reject sides that are not multiples of 8, whatever their VAE.
_MIN_SIZE_MULTIPLE = 8


class _DiffusersBackend:
    """Lazy loading, device and dtype, batching and error wrapping shared by both backends."""

    _task = "diffusion"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        pipeline: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        batch_size: int = 4,
        local_files_only: bool = True,
        pipeline_kwargs: Mapping[str, Any] | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if (model is None) == (pipeline is None):
            raise ConfigurationError(
                "pass either `model` (a local folder or a cached hub id) or `pipeline`, "
                f"got model={model!r} and pipeline="
                f"{'None' if pipeline is None else type(pipeline).__name__}"
            )
        if model is not None:
            check_model_source(model, local_files_only)
            if not is_available("diffusers"):
                require("diffusers", extra="diffusers")
        self.model = None if model is None else os.fspath(model)
        self.device = check_device(device)
        self.dtype = check_dtype(dtype)
        self.num_inference_steps = check_positive("num_inference_steps", num_inference_steps)
        if guidance_scale is not None and guidance_scale < 0:
            raise bad_option("guidance_scale", "a number >= 0 or None", guidance_scale)
        self.guidance_scale = guidance_scale
        self.batch_size = check_positive("batch_size", batch_size, optional=False)
        self.local_files_only = local_files_only
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        managed = sorted(_MANAGED_CALL_ARGUMENTS & self.pipeline_kwargs.keys())
        if managed:
            raise bad_option("pipeline_kwargs", "keys the backend does not set itself", managed)
        self.load_kwargs = dict(load_kwargs or {})
        self._pipeline = pipeline
        self._prepared = False

    @property
    def loaded(self) -> bool:
        """Whether the pipeline is loaded and placed on its device."""
        return self._prepared

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline, loaded from ``model`` on first access."""
        return self.load()

    def load(self) -> Any:
        """Load the pipeline now (e.g. at setup) instead of on first use; returns it."""
        if not self._prepared:
            if self._pipeline is None:
                diffusers = require("diffusers", extra="diffusers")
                self._pipeline = self._load_from_model(diffusers, str(self.model))
            self._pipeline = self._prepare(self._pipeline)
            self._prepared = True
        return self._pipeline

    def _load_from_model(self, diffusers: Any, model: str) -> Any:
        raise NotImplementedError

    def _prepare(self, pipeline: Any) -> Any:
        """Place a pipeline on the device, in the dtype, quiet; subclasses adapt it further."""
        explicit = self.model is None
        device = None if explicit and self.device is None else resolve_device(self.device)
        dtype = None if explicit and self.dtype is None else resolve_dtype(self.dtype, device)
        targets = [target for target in (device, dtype) if target is not None]
        if targets and hasattr(pipeline, "to"):
            pipeline = pipeline.to(*targets)
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _from_pretrained(self, loader: Any, model: str) -> Any:
        """``loader.from_pretrained`` with the backend's options; load failures explained."""
        diffusers = require("diffusers", extra="diffusers")
        options: dict[str, Any] = {"local_files_only": self.local_files_only, **self.load_kwargs}
        options[dtype_keyword(diffusers)] = resolve_dtype(self.dtype, resolve_device(self.device))
        try:
            return loader.from_pretrained(model, **options)
        except OSError as error:
            if self.local_files_only:
                where = "the Hugging Face cache (nothing is downloaded: local_files_only=True)"
            else:
                where = "the hub"
            raise ConfigurationError(
                f"cannot load a {self._task} pipeline from {model!r}: it is neither a local "
                f"folder with a model_index.json nor a model in {where}: {error}"
            ) from error
        except (ValueError, KeyError) as error:
            raise ConfigurationError(
                f"cannot load a {self._task} pipeline from {model!r} "
                f"with {loader.__name__}: {error}"
            ) from error

    def _size_multiple(self, pipeline: Any) -> int:
        factor = int(getattr(pipeline, "vae_scale_factor", _MIN_SIZE_MULTIPLE))
        return max(factor, _MIN_SIZE_MULTIPLE)

    def _run(self, pipeline: Any, seeds: Sequence[int], **call_arguments: Any) -> Tensor:
        """One pipeline call on a batch: float (B, 3, H, W) in [0, 1] on the CPU."""
        arguments: dict[str, Any] = {
            key: [value] * len(seeds)
            if _PROMPT_ARGUMENT.fullmatch(key) and isinstance(value, str)
            else value
            for key, value in self.pipeline_kwargs.items()
        }
        arguments.update(call_arguments)
        if self.num_inference_steps is not None:
            arguments["num_inference_steps"] = self.num_inference_steps
        if self.guidance_scale is not None:
            arguments["guidance_scale"] = self.guidance_scale
        # CPU generators give the same noise on every device, so a seed means one image.
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        try:
            output = pipeline(**arguments, generator=generators, output_type="pt")
            return to_display_batch(output.images if hasattr(output, "images") else output[0])
        except Exception as error:
            raise BackendError(
                f"{type(pipeline).__name__} failed on a batch of {len(seeds)}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _batches(self, count: int) -> Iterator[slice]:
        for start in range(0, count, self.batch_size):
            yield slice(start, min(start + self.batch_size, count))

    def __repr__(self) -> str:
        source = self.model if self.model is not None else type(self._pipeline).__name__
        return f"{type(self).__name__}({source!r}, loaded={self.loaded})"


class DiffusersGenerator(_DiffusersBackend):
    """Text to images with a diffusers text-to-image pipeline.

    Args:
        model: a local folder saved by ``save_pretrained`` or a hub id in the HF cache.
        pipeline: an already-built pipeline instead of ``model`` (left on its device and in its
            dtype unless ``device``/``dtype`` are given).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``; None: auto for ``model``, unchanged for ``pipeline``.
        dtype: ``"auto"`` (float16 on CUDA, float32 elsewhere), ``"float32"``, ``"float16"``,
            ``"bfloat16"`` or a torch dtype; None as for ``device``.
        num_inference_steps: denoising steps; None: the pipeline's default.
        guidance_scale: classifier-free guidance; None: the pipeline's default.
        batch_size: images per pipeline call.
        local_files_only: never download (the default); False lets a hub id download.
        pipeline_kwargs: more arguments for every call, e.g. ``{"negative_prompt": "blurry"}``.
        load_kwargs: more arguments for ``from_pretrained``, e.g. ``{"variant": "fp16"}``.

    >>> generator = DiffusersGenerator("/models/sd-turbo")  # doctest: +SKIP
    >>> [item.image.shape for item in generator.generate(["a cat"], [0], 512)]  # doctest: +SKIP
    [torch.Size([3, 512, 512])]
    """

    name = "diffusers"
    _task = "text-to-image"
    # The constructor is the shared one (its arguments are the ones documented above).

    def _load_from_model(self, diffusers: Any, model: str) -> Any:
        return self._from_pretrained(diffusers.AutoPipelineForText2Image, model)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int) -> list[ImageItem]:
        """One (3, size, size) image per (prompt, seed), in order."""
        check_same_length(prompts=prompts, seeds=seeds)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise bad_option("size", "a positive integer", size)
        pipeline = self.pipeline
        side = round_up(size, self._size_multiple(pipeline))
        items: list[ImageItem] = []
        for batch in self._batches(len(prompts)):
            images = self._run(
                pipeline, seeds[batch], prompt=list(prompts[batch]), height=side, width=side
            )
            items.extend(ImageItem(image) for image in resize_images(images, (size, size)))
        return items


class DiffusersEditor(_DiffusersBackend):
    """Image edits with an InstructPix2Pix or image-to-image diffusers pipeline.

    Args:
        kind: ``"instruct-pix2pix"`` (instructions such as "make it snowy", loaded with
            ``StableDiffusionInstructPix2PixPipeline``), ``"image-to-image"`` (instructions are
            prompts for the new image, loaded with ``AutoPipelineForImage2Image``; a
            text-to-image pipeline is converted without reloading weights) or ``"auto"``
            (InstructPix2Pix when the pipeline's class says so, else image-to-image).
        image_guidance_scale: InstructPix2Pix's pull towards the original; None: its default.
        strength: image-to-image noise strength in (0, 1]; None: the pipeline's default.

    The other arguments are :class:`DiffusersGenerator`'s.

    >>> editor = DiffusersEditor("timbrooks/instruct-pix2pix", kind="instruct-pix2pix")
    >>> editor.loaded
    False
    >>> edited = editor.edit(items, ["make it snowy"], seeds=[0])  # doctest: +SKIP
    """

    name = "diffusers-edit"
    _task = "image-editing"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        pipeline: Any = None,
        kind: str = "auto",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        strength: float | None = None,
        batch_size: int = 4,
        local_files_only: bool = True,
        pipeline_kwargs: Mapping[str, Any] | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if kind not in _EDIT_KINDS:
            raise bad_option("kind", "'auto', 'instruct-pix2pix' or 'image-to-image'", kind)
        if strength is not None and not 0 < strength <= 1:
            raise bad_option("strength", "a number in (0, 1] or None", strength)
        if image_guidance_scale is not None and image_guidance_scale < 0:
            raise bad_option("image_guidance_scale", "a number >= 0 or None", image_guidance_scale)
        if kind == "instruct-pix2pix" and strength is not None:
            raise ConfigurationError("`strength` is for kind='image-to-image', not InstructPix2Pix")
        if kind == "image-to-image" and image_guidance_scale is not None:
            raise ConfigurationError("`image_guidance_scale` is for kind='instruct-pix2pix'")
        super().__init__(
            model,
            pipeline=pipeline,
            device=device,
            dtype=dtype,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            batch_size=batch_size,
            local_files_only=local_files_only,
            pipeline_kwargs=pipeline_kwargs,
            load_kwargs=load_kwargs,
        )
        self.kind = kind
        self.image_guidance_scale = image_guidance_scale
        self.strength = strength

    @property
    def resolved_kind(self) -> str:
        """``"instruct-pix2pix"`` or ``"image-to-image"``: what ``kind`` means for the pipeline."""
        if self.kind != "auto":
            return self.kind
        return "instruct-pix2pix" if is_instruct_pix2pix(self.pipeline) else "image-to-image"

    def _load_from_model(self, diffusers: Any, model: str) -> Any:
        if self.kind == "instruct-pix2pix":
            return self._from_pretrained(diffusers.StableDiffusionInstructPix2PixPipeline, model)
        if self.kind == "image-to-image":
            return self._from_pretrained(diffusers.AutoPipelineForImage2Image, model)
        return self._from_pretrained(diffusers.DiffusionPipeline, model)

    def _prepare(self, pipeline: Any) -> Any:
        if not (is_instruct_pix2pix(pipeline) or takes_image(pipeline)):
            pipeline = self._as_image_to_image(pipeline)
        return super()._prepare(pipeline)

    def _as_image_to_image(self, pipeline: Any) -> Any:
        """A text-to-image pipeline's weights reused in the matching image-to-image pipeline."""
        if self.kind == "instruct-pix2pix":
            raise ConfigurationError(
                f"kind='instruct-pix2pix' needs a pipeline that takes an image, "
                f"got {type(pipeline).__name__}"
            )
        diffusers = require("diffusers", extra="diffusers")
        try:
            return diffusers.AutoPipelineForImage2Image.from_pipe(pipeline)
        except ValueError as error:
            raise ConfigurationError(
                f"{type(pipeline).__name__} takes no image and has no image-to-image "
                f"counterpart: {error}"
            ) from error

    def edit(
        self, images: Sequence[ImageItem], instructions: Sequence[str], seeds: Sequence[int]
    ) -> list[ImageItem]:
        """One edited image per (image, instruction, seed), in order, at the original's size."""
        check_same_length(images=images, instructions=instructions, seeds=seeds)
        for item in images:
            if item.image.ndim != 3 or item.image.shape[0] != 3:
                raise ConfigurationError(
                    f"images must be (3, H, W) tensors, got shape {tuple(item.image.shape)}"
                )
        pipeline = self.pipeline
        multiple = self._size_multiple(pipeline)
        extra: dict[str, Any] = {}
        if self.resolved_kind == "instruct-pix2pix" and self.image_guidance_scale is not None:
            extra["image_guidance_scale"] = self.image_guidance_scale
        if self.resolved_kind == "image-to-image" and self.strength is not None:
            extra["strength"] = self.strength
        edited: list[ImageItem] = []
        for indices in runs_of_same_size(images, self.batch_size):
            height, width = images[indices[0]].image.shape[-2:]
            working = (round_up(height, multiple), round_up(width, multiple))
            originals = torch.stack([images[index].image for index in indices]).float().cpu()
            batch = self._run(
                pipeline,
                [seeds[index] for index in indices],
                prompt=[instructions[index] for index in indices],
                image=resize_images(originals.clamp(0, 1), working),
                **extra,
            )
            edited.extend(ImageItem(image) for image in resize_images(batch, (height, width)))
        return edited
