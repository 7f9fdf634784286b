"""What the transformers backends share: regions to PIL images, loading, devices, errors.

The backends themselves live beside this module: :class:`~.captioner.CaptionDescriber` (any
image-to-text captioner, e.g. BLIP) and :class:`~.clip_concepts.ClipConceptScorer` (CLIP concept
scoring). Both show a model "only the highlighted region" the same way (:func:`highlight_region`):
the image is cropped to the mask's bounding box plus a margin, and what lies outside the mask is
dimmed.

Nothing here downloads weights unless asked: models load from a local directory (or the Hugging
Face cache) with ``local_files_only=True`` unless the user passes ``local_files_only=False``.

>>> import torch
>>> image = torch.zeros(3, 8, 8)
>>> mask = torch.zeros(8, 8, dtype=torch.bool)
>>> mask[2:4, 2:6] = True
>>> tuple(highlight_region(image, mask, margin=0.25).shape)
(3, 4, 6)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch
from PIL import Image
from torch import Tensor

from lightning_maia._optional import require
from lightning_maia.errors import BackendError, ConfigurationError, MaiaError, bad_option
from lightning_maia.tools.backends._base import ImageItem
from lightning_maia.tools.backends._regions import crop_to_region, dim_outside, to_pil

#: A model source: a local directory (or, with ``local_files_only=False``, a hub id).
ModelSource = str | os.PathLike[str]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_T = TypeVar("_T")


def highlight_region(
    image: Tensor, mask: Tensor | None, margin: float = 0.1, outside_brightness: float = 0.25
) -> Tensor | None:
    """The view of ``image`` a model gets for "only the highlighted region".

    The image is cropped to the bounding box of ``mask`` grown by ``margin`` times its longer
    side (rounded up, clipped to the image), and pixels outside the mask are multiplied by
    ``outside_brightness``. ``None`` selects the whole image; an empty mask gives ``None``.
    A mask of another size is resized to the image (nearest); non-bool masks select ``> 0.5``.
    The pieces are :mod:`~lightning_maia.tools.backends._regions`'s; the defaults are these
    backends' own.

    >>> image = torch.ones(3, 4, 4)
    >>> mask = torch.zeros(4, 4, dtype=torch.bool)
    >>> mask[1, 1:3] = True
    >>> highlight_region(image, mask, margin=0.0, outside_brightness=0.5)[0].tolist()
    [[1.0, 1.0]]
    >>> highlight_region(image, mask, margin=0.5, outside_brightness=0.5)[0].tolist()
    [[0.5, 0.5, 0.5, 0.5], [0.5, 1.0, 1.0, 0.5], [0.5, 0.5, 0.5, 0.5]]
    """
    if mask is None:
        return image
    return crop_to_region(dim_outside(image, mask, outside_brightness), mask, margin)


def region_views(
    images: Sequence[ImageItem],
    masks: Sequence[Tensor | None],
    margin: float,
    outside_brightness: float,
) -> list[Image.Image | None]:
    """One PIL view per image of its highlighted region; ``None`` where the mask is empty."""
    if len(images) != len(masks):
        raise ConfigurationError(
            f"`masks` needs one entry per image: got {len(masks)} for {len(images)} images"
        )
    views: list[Image.Image | None] = []
    for item, mask in zip(images, masks, strict=True):
        view = highlight_region(item.image, mask, margin, outside_brightness)
        views.append(None if view is None else to_pil(view))
    return views


def check_region_options(margin: float, outside_brightness: float) -> None:
    """Fail at construction on a margin or brightness outside its range."""
    if not margin >= 0.0:
        raise bad_option("region_margin", "a number >= 0", margin)
    if not 0.0 <= outside_brightness <= 1.0:
        raise bad_option("outside_brightness", "a number in [0, 1]", outside_brightness)


def check_positive_int(name: str, value: int) -> None:
    """Fail at construction on a count that is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_option(name, "a positive integer", value)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"float16"`` and friends as torch dtypes; ``None`` keeps the checkpoint's dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise bad_option("dtype", "a torch dtype, 'float32', 'float16', 'bfloat16' or None", dtype)


def check_local_source(source: ModelSource, local_files_only: bool, what: str) -> None:
    """Fail at construction when ``source`` is plainly a local path that does not exist.

    A name such as ``"Salesforce/blip-image-captioning-base"`` may still be in the Hugging Face
    cache; whether it is shows at load time (:func:`load_pretrained`).
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir() or not local_files_only:
        return
    looks_local = path.is_absolute() or text.startswith((".", "~")) or len(path.parts) > 2
    if looks_local or path.exists():
        raise _missing_source(source, what)


def _missing_source(source: ModelSource, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"no {what} at {os.fspath(source)!r}: it is not a model directory nor in the Hugging Face "
        "cache; nothing is downloaded while local_files_only=True (pass local_files_only=False "
        "to fetch a hub id)"
    )


def load_pretrained(
    loader: Callable[..., _T],
    source: ModelSource,
    local_files_only: bool,
    what: str,
    **options: Any,
) -> _T:
    """``loader(source, local_files_only=..., **options)`` with the library's errors.

    A source that is not found locally, or a directory that holds no such thing, is a
    :class:`ConfigurationError` naming it; any other failure is a :class:`BackendError`.
    """
    check_local_source(source, local_files_only, what)
    text = os.fspath(source)
    try:
        return loader(text, local_files_only=local_files_only, **options)
    except (OSError, ValueError) as error:
        if Path(text).expanduser().is_dir():
            raise ConfigurationError(
                f"{text!r} holds no loadable {what}: {type(error).__name__}: {error}"
            ) from error
        if local_files_only:
            raise _missing_source(source, what) from error
        raise BackendError(f"could not load the {what} from {text!r}: {error}") from error
    except Exception as error:
        raise BackendError(f"could not load the {what} from {text!r}: {error}") from error


def dtype_options(dtype: torch.dtype | None) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype (``dtype`` since transformers 5)."""
    if dtype is None:
        return {}
    transformers = require("transformers", extra="transformers")
    major = int(str(transformers.__version__).split(".")[0])
    return {"dtype" if major >= 5 else "torch_dtype": dtype}


def place_model(
    model: torch.nn.Module, device: torch.device | None, dtype: torch.dtype | None
) -> torch.nn.Module:
    """The model in eval mode on ``device`` (None: where it is) with ``dtype`` (None: as is)."""
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model.eval()


def model_device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's first floating parameter lives, and its dtype (CPU float32 if none)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.device, parameter.dtype
    return torch.device("cpu"), torch.float32


def run_model(what: str, call: Callable[[], _T]) -> _T:
    """``call()`` under inference mode; a failure of the model is a :class:`BackendError`."""
    try:
        with torch.inference_mode():
            return call()
    except MaiaError:
        raise
    except Exception as error:
        raise BackendError(f"the {what} failed: {type(error).__name__}: {error}") from error


def pooled_features(output: object) -> Tensor:
    """Embeddings from ``get_image_features``/``get_text_features``: a tensor in transformers 4,
    an output object whose ``pooler_output`` holds them in transformers 5."""
    if isinstance(output, Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise BackendError(f"the model returned {type(output).__name__}, not embeddings")


def check_vocabulary(vocabulary: Sequence[str], required: bool = False) -> tuple[str, ...]:
    """The vocabulary as a tuple without repeats (first spelling wins, case-insensitive)."""
    if isinstance(vocabulary, str) or not all(isinstance(term, str) for term in vocabulary):
        raise bad_option("vocabulary", "a sequence of concept strings", vocabulary)
    terms: dict[str, str] = {}
    for term in vocabulary:
        if not term.strip():
            raise bad_option("vocabulary", "a sequence of non-empty concept strings", vocabulary)
        terms.setdefault(term.strip().lower(), term.strip())
    if required and not terms:
        raise bad_option("vocabulary", "a non-empty sequence of concept strings", vocabulary)
    return tuple(terms.values())


class PretrainedBackend:
    """What both transformers backends do alike: check sources, load lazily, place the model.

    Subclasses name what they load (``what``) and pick the auto class (:meth:`auto_model_class`).
    """

    what = "model"

    def __init__(
        self,
        model: ModelSource | torch.nn.Module,
        processor: ModelSource | Any | None,
        device: str | torch.device | None,
        dtype: torch.dtype | str | None,
        local_files_only: bool,
        region_margin: float,
        outside_brightness: float,
    ) -> None:
        require("transformers", extra="transformers")
        if not isinstance(model, str | os.PathLike | torch.nn.Module):
            raise bad_option("model", "a model directory or a built model", model)
        if isinstance(model, torch.nn.Module) and processor is None:
            raise ConfigurationError("`processor` is needed with a built `model`")
        check_region_options(region_margin, outside_brightness)
        self.device = None if device is None else torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.local_files_only = local_files_only
        self.region_margin = region_margin
        self.outside_brightness = outside_brightness
        self._model_source = model
        self._processor_source = model if processor is None else processor
        self._model: torch.nn.Module | None = None
        self._processor: Any = None
        for source in (model, processor):
            if isinstance(source, str | os.PathLike):
                check_local_source(source, local_files_only, self.what)

    def auto_model_class(self, transformers: ModuleType) -> Any:
        """The transformers class whose ``from_pretrained`` loads a model directory."""
        return transformers.AutoModel

    def load(self) -> None:
        """Load the model and processor now rather than at first use."""
        if self._model is not None:
            return
        transformers = require("transformers", extra="transformers")
        processor = self._processor_source
        if isinstance(processor, str | os.PathLike):
            processor = load_pretrained(
                transformers.AutoProcessor.from_pretrained,
                processor,
                self.local_files_only,
                f"processor for the {self.what}",
            )
        model, device = self._model_source, self.device
        if not isinstance(model, torch.nn.Module):
            model = load_pretrained(
                self.auto_model_class(transformers).from_pretrained,
                model,
                self.local_files_only,
                self.what,
                **dtype_options(self.dtype),
            )
            device = device or torch.device("cpu")
        self._model = place_model(model, device, self.dtype)
        self._processor = processor

    def loaded(self) -> tuple[torch.nn.Module, Any]:
        """The model and processor, loading them on first use."""
        self.load()
        assert self._model is not None  # load() sets it or raises
        return self._model, self._processor

    def region_views(
        self, images: Sequence[ImageItem], masks: Sequence[Tensor | None]
    ) -> list[Image.Image | None]:
        """One PIL view per highlighted region; None where a mask selects nothing."""
        return region_views(images, masks, self.region_margin, self.outside_brightness)
