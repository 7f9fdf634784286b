"""Dataset exemplars: per unit, the top-k inputs by activation, found in one streaming pass.

For any number of units across several layers, one pass over the data keeps, per unit, the k
highest reduced activations with their dataset indices and activation maps, and a quantile
sketch of all the unit's map values (its threshold: the 0.99 quantile, as MAIA/MILAN). Memory is
O(units x k x map size) plus O(units x sketch buckets), never O(dataset). Exemplar images are
fetched again from the (map-style) dataset by index when asked for, and their masks (map
upsampled to the image, thresholded) and masked images (outside of the mask dimmed) computed
then.

Input convention: the data yield display images in [0, 1] and the model sees
``preprocess(images)`` (pass a :class:`~lightning_maia.subject.Subject` or ``preprocess=``), so an
exemplar's activation is what ``Subject.call_units`` gives on the same picture. Data that yield
normalised model inputs instead declare ``denormalize`` (an attribute of the dataset or loader,
or the argument): the model then sees the items as they are, and :meth:`ExemplarResult.images`
returns ``denormalize(item)`` so that every picture is right.

Procedural data read by DataLoader workers (``num_workers > 0``) keep their provenance: the pass
admits each batch into the dataset's provenance store by the items' sample ids (dataset and
index, see :mod:`lightning_maia.world.provenance`) before the model sees it, so synthetic
neurons find the scenes that the workers rendered.

Under DDP each rank reads a strided shard; the partial results merge into what one process
gives (ties in activation go to the lower dataset index, so the merge is order-independent).

**Why one file.** The exemplar pass is one streaming loop: its per-layer state, DDP merge,
loader settings and transform checks exist only for it (the cache is in
:mod:`lightning_maia._exemplar_cache`).

>>> import torch
>>> from torch import nn
>>> from torch.utils.data import TensorDataset
>>> images = torch.zeros(6, 1, 2, 2)
>>> images[:, 0, 0, 0] = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.7])
>>> model = nn.Sequential(nn.Identity())
>>> result = compute_exemplars(model, TensorDataset(images), ["0:0"], k=3, progress=False)
>>> result.for_unit(Unit("0", 0)).dataset_indices.tolist()
[3, 5, 1]
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from lightning_maia._exemplar_cache import ExemplarCache, exemplar_cache_key
from lightning_maia._sketch import QuantileSketch
from lightning_maia.errors import ConfigurationError, bad_option, closest_names
from lightning_maia.evaluation_constants import EXEMPLAR_MASK_QUANTILE, EXEMPLAR_PASS_K
from lightning_maia.recording import REDUCTIONS, ActivationRecorder, TokenLayout
from lightning_maia.subject import Preprocess, Subject
from lightning_maia.units import Unit, UnitSelection, resolve_units
from lightning_maia.world.provenance import (
    ProvenanceSource,
    ProvenanceStore,
    is_provenance_source,
)

log = logging.getLogger(__name__)

BatchToImages = Callable[[Any], Tensor]
_IMAGE_KEYS = ("image", "images", "pixel_values", "x", "input", "inputs")


def default_batch_to_images(batch: Any) -> Tensor:
    """The model input in a batch: a tensor, the first item of a tuple, or a known dict key."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in _IMAGE_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
        raise ConfigurationError(
            f"cannot find images in a batch dict with keys {sorted(batch)}: expected one of "
            f"{', '.join(_IMAGE_KEYS)}, or pass `batch_to_images`"
        )
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ConfigurationError(
        f"cannot find images in a batch of type {type(batch).__name__}; pass `batch_to_images`"
    )


@dataclass
class UnitExemplars:
    """The exemplars of one unit, best first."""

    unit: Unit
    activations: Tensor  # (k,)
    dataset_indices: Tensor  # (k,) long; -1 where the dataset had fewer than k items
    maps: Tensor  # (k, h, w)
    threshold: float


@dataclass
class LayerExemplars:
    """Top-k state of the selected units of one layer (units along dim 0)."""

    units: list[Unit]
    activations: Tensor  # (C, k), descending
    dataset_indices: Tensor  # (C, k) long
    maps: Tensor  # (C, k, h, w)
    thresholds: Tensor  # (C,)
    #: Mean reduced activation over the whole dataset (activation statistics, ``top_active``).
    mean_activations: Tensor | None = None


@dataclass
class ExemplarResult:
    """Exemplars of every unit, convertible to a DataFrame (one row per unit and rank)."""

    layers: dict[str, LayerExemplars]
    k: int
    quantile: float
    reduction: str
    dataset: Dataset[Any] | None = field(default=None, repr=False)
    batch_to_images: BatchToImages = field(default=default_batch_to_images, repr=False)
    #: Maps dataset items to display images in [0, 1] when the data yield normalised tensors.
    denormalize: Preprocess | None = field(default=None, repr=False)
    _image_cache: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def units(self) -> list[Unit]:
        return [unit for layer in self.layers.values() for unit in layer.units]

    def for_unit(self, unit: Unit) -> UnitExemplars:
        layer = self.layers.get(unit.layer)
        if layer is None or unit not in layer.units:
            known = [u.spec for u in self.units]
            raise bad_option(
                "unit", f"a unit of these exemplars: {closest_names(unit.spec, known)}", unit.spec
            )
        row = layer.units.index(unit)
        valid = layer.dataset_indices[row] >= 0
        return UnitExemplars(
            unit=unit,
            activations=layer.activations[row][valid],
            dataset_indices=layer.dataset_indices[row][valid],
            maps=layer.maps[row][valid],
            threshold=float(layer.thresholds[row]),
        )

    def mean_activation(self, unit: Unit) -> float | None:
        """The unit's mean activation over the dataset, where it was recorded."""
        layer = self.layers[unit.layer]
        if layer.mean_activations is None:
            return None
        return float(layer.mean_activations[layer.units.index(unit)])

    def images(self, unit: Unit) -> Tensor:
        """(k, C, H, W) display images of the unit's exemplars, fetched from the dataset (and
        passed through ``denormalize`` where the data declare one)."""
        if self.dataset is None:
            raise ConfigurationError(
                "this result has no dataset to fetch images from; pass it as `dataset=`"
            )
        indices = self.for_unit(unit).dataset_indices.tolist()
        for index in indices:
            if index not in self._image_cache:
                item = self.batch_to_images(default_collate_one(self.dataset[index]))
                if self.denormalize is not None:
                    item = self.denormalize(item)
                self._image_cache[index] = item[0]
        return torch.stack([self._image_cache[i] for i in indices])

    def masks(self, unit: Unit) -> Tensor:
        """(k, H, W) bool: the unit's maps upsampled to the image size, above its threshold."""
        exemplars = self.for_unit(unit)
        size = self.images(unit).shape[-2:]
        return upsample_maps(exemplars.maps, tuple(size)) > exemplars.threshold

    def masked_images(self, unit: Unit, dim: float = 0.25) -> Tensor:
        """Exemplar images with everything outside the unit's mask dimmed (MAIA's display)."""
        return mask_images(self.images(unit), self.masks(unit), dim)

    def to_dataframe(self) -> pd.DataFrame:
        rows = []
        for layer in self.layers.values():
            for row, unit in enumerate(layer.units):
                for rank in range(layer.activations.shape[1]):
                    index = int(layer.dataset_indices[row, rank])
                    if index < 0:
                        continue
                    rows.append(
                        {
                            "unit": unit.spec,
                            "layer": unit.layer,
                            "index": unit.index,
                            "rank": rank + 1,
                            "dataset_index": index,
                            "activation": float(layer.activations[row, rank]),
                            "threshold": float(layer.thresholds[row]),
                        }
                    )
        return pd.DataFrame(
            rows,
            columns=[
                "unit",
                "layer",
                "index",
                "rank",
                "dataset_index",
                "activation",
                "threshold",
            ],
        )

    def state(self) -> dict[str, Any]:
        """Plain tensors and strings (for the disk cache and for DDP broadcast)."""
        return {
            "k": self.k,
            "quantile": self.quantile,
            "reduction": self.reduction,
            "layers": {
                name: {
                    "units": [u.index for u in layer.units],
                    "activations": layer.activations,
                    "dataset_indices": layer.dataset_indices,
                    "maps": layer.maps,
                    "thresholds": layer.thresholds,
                    "mean_activations": layer.mean_activations,
                }
                for name, layer in self.layers.items()
            },
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        dataset: Dataset[Any] | None = None,
        batch_to_images: BatchToImages = default_batch_to_images,
        denormalize: Preprocess | None = None,
    ) -> ExemplarResult:
        layers = {
            name: LayerExemplars(
                units=[Unit(name, int(i)) for i in layer["units"]],
                activations=layer["activations"],
                dataset_indices=layer["dataset_indices"],
                maps=layer["maps"],
                thresholds=layer["thresholds"],
                mean_activations=layer.get("mean_activations"),
            )
            for name, layer in state["layers"].items()
        }
        return cls(
            layers=layers,
            k=int(state["k"]),
            quantile=float(state["quantile"]),
            reduction=str(state["reduction"]),
            dataset=dataset,
            batch_to_images=batch_to_images,
            denormalize=denormalize,
        )


def default_collate_one(item: Any) -> Any:
    """Collate one dataset item into a batch of one."""
    return torch.utils.data.default_collate([item])


def upsample_maps(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """(k, h, w) maps -> (k, H, W), bilinear (nearest for a 1x1 map)."""
    mode = "nearest" if maps.shape[-2:] == (1, 1) else "bilinear"
    extra = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, **extra)[:, 0]


def mask_images(images: Tensor, masks: Tensor, dim: float = 0.25) -> Tensor:
    """Dim every pixel outside its mask to ``dim`` of its value (images in [0, 1])."""
    if not 0.0 <= dim <= 1.0:
        raise bad_option("dim", "a number in [0, 1]", dim)
    weight = masks.float().unsqueeze(1)
    return images * (weight + (1 - weight) * dim)


def merge_top_k(values: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the k largest values; ties go to the lower index. Returns values, indices and
    the positions taken (to gather anything that travels with them).

    >>> v, i, p = merge_top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), torch.tensor([[9, 8, 4, 7]]), 2)
    >>> i.tolist(), p.tolist()
    ([[4, 8]], [[2, 1]])
    """
    # Empty slots carry index -1 and value -inf; place them after every real index.
    sort_index = torch.where(indices < 0, torch.iinfo(torch.int64).max, indices)
    by_index = torch.sort(sort_index, dim=1, stable=True).indices
    ordered_values = values.gather(1, by_index)
    by_value = torch.sort(ordered_values, dim=1, descending=True, stable=True).indices[:, :k]
    positions = by_index.gather(1, by_value)
    return values.gather(1, positions), indices.gather(1, positions), positions


class _LayerState:
    """Streaming top-k and quantile sketch for the selected units of one layer, kept on the
    device the activations come from: an update queues a fixed set of operations and never
    reads a value back to the host."""

    def __init__(
        self,
        selection: UnitSelection,
        width: int,
        k: int,
        map_shape: tuple[int, int],
        device: torch.device,
    ):
        self.units = selection.units(width)
        count = len(self.units)
        self.k = k
        self.values = torch.full((count, k), float("-inf"), device=device)
        self.indices = torch.full((count, k), -1, dtype=torch.int64, device=device)
        self.maps = torch.zeros((count, k, *map_shape), device=device)
        self.sketch = QuantileSketch(count, device=device)
        self.activation_sum = torch.zeros(count, dtype=torch.float64, device=device)
        self.seen = torch.zeros((), dtype=torch.int64, device=device)
        self._streamed = 0  # items seen, counted on the host (no sync)

    def update(self, activations: Tensor, maps: Tensor, dataset_indices: Tensor) -> None:
        """Add one batch: (N, C) activations, (N, C, h, w) maps and the (N,) dataset indices,
        which are larger than any seen before (the pass streams the shard in order)."""
        activations, maps = activations.float(), maps.float()
        self.activation_sum += activations.sum(dim=0, dtype=torch.float64)
        self.seen += activations.shape[0]
        count, batch = activations.shape[1], activations.shape[0]
        self.sketch.update(maps, unit_dim=1)
        values = torch.cat([self.values, activations.T], dim=1)
        indices = torch.cat([self.indices, dataset_indices.expand(count, batch)], dim=1)
        if self._streamed >= self.k:
            # Every slot holds a real item with a lower index than the batch's, and slots of
            # equal value are in index order: one stable sort keeps ties on the lower index.
            positions = torch.sort(values, dim=1, descending=True, stable=True).indices
            positions = positions[:, : self.k]
            self.values, self.indices = values.gather(1, positions), indices.gather(1, positions)
        else:  # empty slots (index -1) left: the general merge places them last
            self.values, self.indices, positions = merge_top_k(values, indices, self.k)
        self.maps = _gather_maps(self.maps, maps, positions, self.k)
        self._streamed += batch

    def to(self, device: torch.device) -> None:
        for name in ("values", "indices", "maps", "activation_sum", "seen"):
            setattr(self, name, getattr(self, name).to(device))
        self.sketch.counts = self.sketch.counts.to(device)


def _gather_maps(old: Tensor, batch: Tensor, positions: Tensor, k: int) -> Tensor:
    """Maps for the merged top-k: kept ones from ``old`` (C,k,h,w), new ones from ``batch``
    (N,C,h,w), chosen by ``positions`` (C,k) into their concatenation; no host sync."""
    rows = torch.arange(old.shape[0], device=old.device).unsqueeze(1)
    kept = old[rows, positions.clamp(max=k - 1)]
    new = batch[(positions - k).clamp(min=0), rows]
    return torch.where((positions < k)[:, :, None, None], kept, new)


def _shard_indices(length: int) -> list[int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return list(range(rank, length, world))
    return list(range(length))


def _ordered_batches(
    dataset: Dataset[Any], batch_size: int, num_workers: int, collate_fn: Any
) -> Iterator[tuple[Tensor, Any]]:
    """This rank's shard of the dataset, in order, with the dataset index of every item."""
    shard = _shard_indices(len(dataset))  # type: ignore[arg-type]
    loader = DataLoader(
        torch.utils.data.Subset(dataset, shard),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
    )
    start = 0
    for batch in loader:
        count = _batch_len(batch)
        yield torch.tensor(shard[start : start + count], dtype=torch.int64), batch
        start += count


def _provenance_source(
    dataset: Dataset[Any],
) -> tuple[ProvenanceSource, ProvenanceStore, Callable[[int], int]] | None:
    """The procedural dataset under ``dataset`` (through any ``Subset``), its store and the map
    from ``dataset``'s indices to its own; None for data without procedural provenance."""
    maps: list[Sequence[int]] = []
    while isinstance(dataset, torch.utils.data.Subset):
        maps.append(dataset.indices)
        dataset = dataset.dataset
    store = getattr(dataset, "store", None)
    if not is_provenance_source(dataset) or not isinstance(store, ProvenanceStore):
        return None

    def base_index(index: int) -> int:
        for indices in maps:
            index = int(indices[index])
        return index

    return dataset, store, base_index


def _admit(
    provenance: tuple[ProvenanceSource, ProvenanceStore, Callable[[int], int]],
    images: Tensor,
    dataset_indices: Tensor,
) -> None:
    """Register images a DataLoader worker rendered, as the items their indices name."""
    source, store, base_index = provenance
    if images.dim() != 4 or images.shape[1] != 3:
        return
    for image, index in zip(images, dataset_indices.tolist(), strict=True):
        store.admit_item(image, source, base_index(int(index)))


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return len(batch)
    if isinstance(batch, Mapping):
        return len(next(v for v in batch.values() if isinstance(v, Tensor)))
    return len(batch[0])


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _is_global_zero() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def _merge_across_ranks(state: _LayerState) -> None:
    """Merge every rank's top-k and sketch into the same result on all ranks."""
    distributed = torch.distributed
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if distributed.get_backend() == "nccl"
        else torch.device("cpu")
    )
    counts = state.sketch.counts.to(device)
    distributed.all_reduce(counts)
    state.sketch.counts = counts.cpu()
    for name in ("activation_sum", "seen"):
        total = getattr(state, name).to(device)
        distributed.all_reduce(total)
        setattr(state, name, total.cpu())
    gathered = []
    for tensor in (state.values, state.indices, state.maps):
        parts = [torch.empty_like(tensor, device=device) for _ in range(_world_size())]
        distributed.all_gather(parts, tensor.to(device))
        gathered.append(torch.cat([p.cpu() for p in parts], dim=1))
    values, indices, maps = gathered
    state.values, state.indices, positions = merge_top_k(values, indices, state.k)
    rows = torch.arange(maps.shape[0]).unsqueeze(1).expand_as(positions)
    state.maps = maps[rows, positions]


def _as_selections(
    model: nn.Module,
    units: str | Sequence[str] | Sequence[UnitSelection] | Sequence[Unit],
    class_names: Sequence[str] | None,
) -> list[UnitSelection]:
    if isinstance(units, str):
        return resolve_units(model, units, class_names)
    items = list(units)
    if items and all(isinstance(u, UnitSelection) for u in items):
        return [u for u in items if isinstance(u, UnitSelection)]
    if items and all(isinstance(u, Unit) for u in items):
        return resolve_units(model, [u.spec for u in items if isinstance(u, Unit)])
    return resolve_units(model, [str(u) for u in items], class_names)


def declared_denormalize(data: Any) -> Preprocess | None:
    """The ``denormalize`` a loader or its dataset declares (None: items are display images)."""
    for source in (data, getattr(data, "dataset", None)):
        found = getattr(source, "denormalize", None)
        if found is not None:
            if not callable(found):
                raise bad_option("denormalize", "a callable (model inputs -> [0, 1])", found)
            return found
    return None


def preprocess_for(data: Any, preprocess: Preprocess | None) -> Preprocess | None:
    """What turns the items of ``data`` into model inputs: ``preprocess`` for display images,
    nothing for data that declare ``denormalize`` (their items already are model inputs)."""
    return None if declared_denormalize(data) is not None else preprocess


def compute_exemplars(
    model: nn.Module | Subject,
    data: DataLoader[Any] | Dataset[Any],
    units: str | Sequence[str] | Sequence[UnitSelection] | Sequence[Unit],
    k: int = EXEMPLAR_PASS_K,
    *,
    class_names: Sequence[str] | None = None,
    reduction: str = "max",
    quantile: float = EXEMPLAR_MASK_QUANTILE,
    batch_size: int | None = None,
    num_workers: int | None = None,
    batch_to_images: BatchToImages = default_batch_to_images,
    tokens: TokenLayout = TokenLayout(),
    amp: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    preprocess: Preprocess | None = None,
    denormalize: Preprocess | None = None,
) -> ExemplarResult:
    """Top-k dataset exemplars and activation thresholds of ``units``, in one pass over ``data``.

    Args:
        model: any ``nn.Module``, or a :class:`Subject` (its model, preprocess and class
            names); run in eval mode (restored after) on the device of its parameters, under
            ``torch.inference_mode``.
        data: a map-style dataset, or a DataLoader over one (its batch size, workers and
            collate function are kept; its sampler is not: the pass reads the data in order,
            sharded by rank under DDP, so each dataset index is known).
        units: unit specs (``"layer4:0-9"``) or resolved selections.
        k: exemplars per unit.
        reduction: ``max`` (spatial max, as MAIA) or ``mean`` of each map.
        quantile: the map-value quantile that thresholds masks (0.99 as MAIA/MILAN).
        amp: run the forward under ``torch.autocast`` on the model's device.
        cache_dir: where to keep results, keyed by the weights, the dataset, units and options.
        progress: show a progress bar (global rank zero only).
        preprocess: maps display images (the data's items) to model inputs, as
            ``Subject.preprocess`` (default: the Subject's, else none).
        denormalize: for data that yield normalised model inputs: maps them to display images
            in [0, 1] (default: the loader's or dataset's ``denormalize`` attribute). The items
            then go to the model as they are, and ``preprocess`` must undo ``denormalize``.
    """
    if isinstance(model, Subject):
        if preprocess is not None and model.preprocess not in (None, preprocess):
            raise ConfigurationError(
                "compute_exemplars got a Subject with a preprocess and another `preprocess`; "
                "give one"
            )
        preprocess = preprocess or model.preprocess
        class_names = class_names if class_names is not None else model.class_names
        model = model.model
    if denormalize is None:
        denormalize = declared_denormalize(data)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise bad_option("k", "a positive integer", k)
    if not 0.0 < quantile < 1.0:
        raise bad_option("quantile", "a number in (0, 1)", quantile)
    if reduction not in REDUCTIONS:
        raise bad_option("reduction", " or ".join(REDUCTIONS), reduction)
    dataset, batch_size, num_workers, collate_fn = _loader_settings(data, batch_size, num_workers)
    selections = _as_selections(model, units, class_names)

    cache = ExemplarCache(cache_dir) if cache_dir is not None else None
    key = ""
    if cache is not None:
        key = exemplar_cache_key(model, dataset, selections, k, reduction, quantile, tokens)
        key = _with_transforms(key, preprocess, denormalize)
        cached = cache.load(key)
        if cached is not None:
            return ExemplarResult.from_state(cached, dataset, batch_to_images, denormalize)

    # Items that are display images go through preprocess; declared model inputs do not.
    to_model = preprocess if denormalize is None else None
    if denormalize is not None and preprocess is not None:
        _check_inverse(dataset, collate_fn, batch_to_images, preprocess, denormalize)

    states = _stream(
        model,
        dataset,
        selections,
        k,
        reduction,
        tokens,
        amp,
        progress,
        batch_size,
        num_workers,
        collate_fn,
        batch_to_images,
        to_model,
    )
    if _world_size() > 1:
        for state in states.values():
            _merge_across_ranks(state)
    layers = {
        name: LayerExemplars(
            units=state.units,
            activations=state.values,
            dataset_indices=state.indices,
            maps=state.maps,
            thresholds=state.sketch.quantile(quantile),
            mean_activations=(state.activation_sum / max(int(state.seen), 1)).float(),
        )
        for name, state in states.items()
    }
    result = ExemplarResult(layers, k, quantile, reduction, dataset, batch_to_images, denormalize)
    if cache is not None and _is_global_zero():
        cache.save(key, result.state())
    return result


def _transform_fingerprint(transform: Preprocess) -> str:
    """Identity of a preprocess: its name and what it makes of a fixed probe image (so that a
    resize or another normalisation gives another cache key)."""
    digest = hashlib.blake2b(digest_size=16)
    name = getattr(transform, "__qualname__", type(transform).__qualname__)
    digest.update(f"{getattr(transform, '__module__', '')}.{name}".encode())
    probe = torch.linspace(0.0, 1.0, 3 * 17 * 23).reshape(1, 3, 17, 23)  # no common size
    try:
        with torch.no_grad():
            output = transform(probe)
        flat = output.detach().float().cpu().contiguous().reshape(-1)
        digest.update(f"{tuple(output.shape)}".encode())
        digest.update(flat.numpy().round(6).tobytes())
    except Exception:  # a transform that takes other shapes is known by its name only
        digest.update(repr(transform).encode())
    return digest.hexdigest()


def _with_transforms(
    key: str, preprocess: Preprocess | None, denormalize: Preprocess | None
) -> str:
    if preprocess is None and denormalize is None:
        return key  # the same key as before the transforms existed: old caches stay valid
    parts = [key] + [_transform_fingerprint(t) if t else "-" for t in (preprocess, denormalize)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def _check_inverse(
    dataset: Dataset[Any],
    collate_fn: Any,
    batch_to_images: BatchToImages,
    preprocess: Preprocess,
    denormalize: Preprocess,
) -> None:
    """A dataset of model inputs with ``denormalize`` and a ``preprocess``: the two must be
    inverse, or exemplar activations and ``call_units`` on their pictures disagree."""
    item = (collate_fn or torch.utils.data.default_collate)([dataset[0]])
    inputs = batch_to_images(item).float()
    with torch.no_grad():
        again = preprocess(denormalize(inputs).clamp(0.0, 1.0)).float()
    if again.shape != inputs.shape:
        return  # preprocess resizes: the round trip cannot be compared pixel by pixel
    error = float((again - inputs).abs().max())
    if error > 1e-3 * max(1.0, float(inputs.abs().max())):
        raise ConfigurationError(
            "the data declare `denormalize`, so their items are model inputs, but `preprocess` "
            f"does not undo it (preprocess(denormalize(x)) differs from x by up to {error:.3g}); "
            "give the preprocess that maps display images in [0, 1] to these inputs"
        )


def _loader_settings(
    data: DataLoader[Any] | Dataset[Any], batch_size: int | None, num_workers: int | None
) -> tuple[Dataset[Any], int, int, Any]:
    if isinstance(data, DataLoader):
        dataset: Dataset[Any] = data.dataset
        batch_size = batch_size or data.batch_size or 64
        num_workers = data.num_workers if num_workers is None else num_workers
        collate_fn = data.collate_fn
    elif isinstance(data, Dataset):
        dataset, collate_fn = data, None
        batch_size, num_workers = batch_size or 64, num_workers or 0
    else:
        raise bad_option("data", "a map-style Dataset or a DataLoader over one", type(data))
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise ConfigurationError(
            "compute_exemplars needs a map-style dataset (with __len__ and __getitem__) so that "
            f"exemplar images can be fetched again by index; got {type(dataset).__name__}"
        )
    if len(dataset) < _world_size():
        raise ConfigurationError(
            f"the dataset has {len(dataset)} items, fewer than the {_world_size()} ranks"
        )
    return dataset, batch_size, num_workers, collate_fn


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        if not tensor.is_meta:  # a background snapshot keeps only the probed layers' weights
            return tensor.device
    return torch.device("cpu")


def _stream(
    model: nn.Module,
    dataset: Dataset[Any],
    selections: list[UnitSelection],
    k: int,
    reduction: str,
    tokens: TokenLayout,
    amp: bool,
    progress: bool,
    batch_size: int,
    num_workers: int,
    collate_fn: Any,
    batch_to_images: BatchToImages,
    preprocess: Preprocess | None = None,
) -> dict[str, _LayerState]:
    device = _model_device(model)
    states: dict[str, _LayerState] = {}
    shard_size = len(_shard_indices(len(dataset)))  # type: ignore[arg-type]
    was_training = model.training
    model.eval()
    recorder = ActivationRecorder(model, selections, reduction=reduction, tokens=tokens)
    autocast = torch.autocast(device_type=device.type) if amp else contextlib.nullcontext()
    bar = tqdm(
        total=shard_size,
        desc="exemplars",
        unit="img",
        disable=not progress or not _is_global_zero(),
        leave=False,
    )
    # Workers register what they render in their own memory: admit their items here.
    provenance = _provenance_source(dataset) if num_workers > 0 else None
    try:
        with recorder, torch.inference_mode(), autocast, bar:
            for dataset_indices, batch in _ordered_batches(
                dataset, batch_size, num_workers, collate_fn
            ):
                inputs = batch_to_images(batch)
                if provenance is not None:
                    _admit(provenance, inputs, dataset_indices)
                inputs = inputs.to(device)
                model(preprocess(inputs) if preprocess is not None else inputs)
                for selection in selections:
                    record = recorder.records[selection.layer]
                    assert record.maps is not None
                    if selection.layer not in states:
                        states[selection.layer] = _LayerState(
                            selection,
                            record.width,
                            k,
                            (record.maps.shape[2], record.maps.shape[3]),
                            record.maps.device,
                        )
                    states[selection.layer].update(
                        record.activations,
                        record.maps,
                        dataset_indices.to(record.maps.device, non_blocking=True),
                    )
                bar.update(len(dataset_indices))
    finally:
        model.train(was_training)
    for state in states.values():
        state.to(torch.device("cpu"))  # the one read-back of the pass
    return states
