"""compute_exemplars: equals brute force, thresholds within the sketch's bound, cache, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers.models import RandomImages, TinyConvNet
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_maia import exemplars as exemplars_module
from lightning_maia.errors import ConfigurationError, UnitIndexError, UnitSpecError
from lightning_maia.exemplars import compute_exemplars, mask_images, upsample_maps
from lightning_maia.recording import ActivationRecorder
from lightning_maia.units import Unit, resolve_units


def brute_force(model: nn.Module, dataset: RandomImages, specs: list[str], reduction: str):
    """Activations and maps of every image at once, sorted by (activation desc, index asc)."""
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    selections = resolve_units(model, specs)
    model.eval()
    with ActivationRecorder(model, selections, reduction=reduction) as recorder, torch.no_grad():
        model(images)
    return recorder, recorder.units()


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_exemplars_equal_brute_force(reduction: str) -> None:
    model, dataset = TinyConvNet(), RandomImages(length=53)
    specs = ["conv1:*", "conv2:0-3"]
    result = compute_exemplars(
        model, dataset, specs, k=5, batch_size=7, reduction=reduction, progress=False
    )
    recorder, units = brute_force(model, dataset, specs, reduction)
    assert result.units == units
    for unit in units:
        activations = recorder.unit_activations(unit)
        maps = recorder.unit_maps(unit)
        order = sorted(range(len(dataset)), key=lambda i: (-float(activations[i]), i))[:5]
        found = result.for_unit(unit)
        assert found.dataset_indices.tolist() == order
        torch.testing.assert_close(found.activations, activations[order])
        torch.testing.assert_close(found.maps, maps[order])
        values = maps.reshape(-1).double().sort().values
        rank = int(0.99 * (len(values) - 1))
        exact = float(values[rank])
        assert abs(found.threshold - exact) <= 0.01 * abs(exact) + 1e-6


def test_dataloader_sampler_is_ignored_for_an_ordered_pass() -> None:
    model, dataset = TinyConvNet(), RandomImages(length=30)
    shuffled = DataLoader(dataset, batch_size=4, shuffle=True)
    from_loader = compute_exemplars(model, shuffled, ["conv2:*"], k=3, progress=False)
    from_dataset = compute_exemplars(model, dataset, ["conv2:*"], k=3, progress=False)
    for unit in from_dataset.units:
        assert (
            from_loader.for_unit(unit).dataset_indices.tolist()
            == from_dataset.for_unit(unit).dataset_indices.tolist()
        )


def test_model_mode_is_restored_and_eval_used() -> None:
    model = nn.Sequential(nn.Dropout(0.9), nn.Conv2d(3, 2, 1))
    model.train()
    dataset = RandomImages(length=10)
    first = compute_exemplars(model, dataset, ["1:*"], k=2, progress=False)
    second = compute_exemplars(model, dataset, ["1:*"], k=2, progress=False)
    assert model.training
    torch.testing.assert_close(first.layers["1"].activations, second.layers["1"].activations)


def test_fewer_items_than_k_leave_empty_slots_out() -> None:
    result = compute_exemplars(
        TinyConvNet(), RandomImages(length=3), ["conv1:0"], k=5, progress=False
    )
    exemplars = result.for_unit(Unit("conv1", 0))
    assert len(exemplars.dataset_indices) == 3
    assert sorted(exemplars.dataset_indices.tolist()) == [0, 1, 2]
    assert len(result.to_dataframe()) == 3


def test_masks_and_masked_images_from_known_maps() -> None:
    # Identity model: the map of channel 0 is the image's first channel itself.
    images = torch.zeros(4, 3, 4, 4)
    for i in range(4):
        images[i, 0, i % 4, :] = 1.0 + i  # one bright row per image
    result = compute_exemplars(
        nn.Sequential(nn.Identity()), TensorDataset(images), ["0:0"], k=2, progress=False
    )
    unit = Unit("0", 0)
    exemplars = result.for_unit(unit)
    assert exemplars.dataset_indices.tolist() == [3, 2]
    # 64 map values, 60 zeros, 4 rows of 1..4: the 0.99 quantile (rank 62) is a value of 4.
    assert exemplars.threshold == pytest.approx(4.0, rel=0.01)
    masks = result.masks(unit)
    assert masks.shape == (2, 4, 4)
    assert masks[1].sum() == 0  # image 2's row is 3.0, under the threshold
    masked = result.masked_images(unit, dim=0.5)
    torch.testing.assert_close(masked[1], images[2] * 0.5)
    frame = result.to_dataframe()
    assert frame[["unit", "rank", "dataset_index"]].values.tolist() == [
        ["0:0", 1, 3],
        ["0:0", 2, 2],
    ]


def test_upsample_and_mask_helpers() -> None:
    maps = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    assert upsample_maps(maps, (4, 4)).shape == (1, 4, 4)
    assert upsample_maps(torch.ones(1, 1, 1) * 2, (3, 3)).eq(2).all()
    images = torch.ones(1, 3, 2, 2)
    masks = torch.tensor([[[True, False], [False, False]]])
    out = mask_images(images, masks, dim=0.25)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert out[0, :, 1, 1].tolist() == [0.25, 0.25, 0.25]
    with pytest.raises(ConfigurationError, match="`dim`"):
        mask_images(images, masks, dim=2.0)


def test_cache_hit_and_invalidation_on_weight_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, dataset = TinyConvNet(), RandomImages(length=20)
    first = compute_exemplars(model, dataset, ["conv2:*"], k=3, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("exemplars-*.pt"))) == 1

    calls = []
    original = exemplars_module._stream

    def counting_stream(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(exemplars_module, "_stream", counting_stream)
    again = compute_exemplars(model, dataset, ["conv2:*"], k=3, cache_dir=tmp_path, progress=False)
    assert calls == []
    torch.testing.assert_close(again.layers["conv2"].maps, first.layers["conv2"].maps)
    assert again.images(Unit("conv2", 0)).shape == (3, 3, 8, 8)

    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] += 1.0  # one weight changes: the cache must not answer
    changed = compute_exemplars(
        model, dataset, ["conv2:*"], k=3, cache_dir=tmp_path, progress=False
    )
    assert calls == [1]
    assert not torch.equal(changed.layers["conv2"].maps, first.layers["conv2"].maps)
    compute_exemplars(model, dataset, ["conv2:*"], k=4, cache_dir=tmp_path, progress=False)
    compute_exemplars(
        model, RandomImages(20, seed=1), ["conv2:*"], k=4, cache_dir=tmp_path, progress=False
    )
    assert calls == [1, 1, 1]
    assert len(list(tmp_path.glob("exemplars-*.pt"))) == 4


def test_unreadable_cache_is_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, dataset = TinyConvNet(), RandomImages(length=10)
    compute_exemplars(model, dataset, ["conv1:0"], k=2, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("exemplars-*.pt")
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        result = compute_exemplars(
            model, dataset, ["conv1:0"], k=2, cache_dir=tmp_path, progress=False
        )
    assert "unreadable exemplar cache" in caplog.text
    assert len(result.for_unit(Unit("conv1", 0)).dataset_indices) == 2


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ConfigurationError, "`k` can be a positive integer, got 0"),
        ({"k": 2.5}, ConfigurationError, "`k`"),
        ({"quantile": 1.5}, ConfigurationError, "`quantile` can be a number in"),
        (
            {"reduction": "median"},
            ConfigurationError,
            "`reduction` can be max or mean, got 'median'",
        ),
        (
            {"units": ["conv9:0"]},
            UnitSpecError,
            "no layer .conv9. in TinyConvNet; closest: conv2, conv1",
        ),
        ({"data": _Stream()}, ConfigurationError, "needs a map-style dataset"),
        ({"data": [1, 2]}, ConfigurationError, "`data` can be a map-style Dataset"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    arguments = {
        "model": TinyConvNet(),
        "data": RandomImages(5),
        "units": ["conv1:0"],
        "progress": False,
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        compute_exemplars(**arguments)


def test_index_past_width_fails_at_first_forward_with_real_width() -> None:
    with pytest.raises(UnitIndexError, match="has 6 channels"):
        compute_exemplars(TinyConvNet(), RandomImages(5), ["conv1:6"], progress=False)


def test_batches_without_images_need_batch_to_images() -> None:
    class Weird(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            return {"pic": torch.zeros(3, 4, 4)}

    with pytest.raises(ConfigurationError, match="keys \\['pic'\\]"):
        compute_exemplars(TinyConvNet(), Weird(), ["conv1:0"], progress=False)
    result = compute_exemplars(
        TinyConvNet(),
        Weird(),
        ["conv1:0"],
        k=1,
        progress=False,
        batch_to_images=lambda batch: batch["pic"],
    )
    assert result.images(Unit("conv1", 0)).shape == (1, 3, 4, 4)


def test_mean_activations_over_the_whole_dataset() -> None:
    model, dataset = TinyConvNet(), RandomImages(length=23)
    result = compute_exemplars(model, dataset, ["conv2:*"], k=2, batch_size=5, progress=False)
    recorder, units = brute_force(model, dataset, ["conv2:*"], "max")
    for unit in units:
        expected = float(recorder.unit_activations(unit).double().mean())
        assert result.mean_activation(unit) == pytest.approx(expected, rel=1e-5)
