"""Worker-safe provenance: procedural data read by DataLoader workers keep their scenes.

Every test gives its datasets and neurons a fresh store, so nothing the main process rendered
earlier can stand in for what the workers rendered.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_maia.errors import ConfigurationError
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._procedural import ProceduralGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world._datasets import ShapesWorld, SpuriousShapes
from lightning_maia.world._neuron_suite import sample_neuron_specs
from lightning_maia.world._neurons import SyntheticNeuronModel
from lightning_maia.world.provenance import PROVENANCE, ProvenanceStore

SPECS = sample_neuron_specs(0, n_mono=4, n_or=2, n_and=2)


def neurons_and_data(store: ProvenanceStore, **options: object):
    model = SyntheticNeuronModel(SPECS, seed=0, store=store)
    return model, ShapesWorld(size=40, seed=5, store=store, **options)  # type: ignore[arg-type]


def exemplars(num_workers: int):
    store = ProvenanceStore()
    model, data = neurons_and_data(store)
    loader = DataLoader(data, batch_size=8, num_workers=num_workers)
    result = compute_exemplars(
        Subject(model, ["neurons:*"]), loader, "neurons:*", k=5, progress=False
    )
    return result, store, data


def test_exemplars_over_two_workers_equal_those_in_process() -> None:
    in_process, _, _ = exemplars(0)
    workers, store, data = exemplars(2)
    layer, again = in_process.layers["neurons"], workers.layers["neurons"]
    assert torch.equal(layer.dataset_indices, again.dataset_indices)
    assert torch.equal(layer.activations, again.activations)
    assert torch.equal(layer.maps, again.maps)
    assert torch.equal(layer.thresholds, again.thresholds)
    assert torch.equal(layer.mean_activations, again.mean_activations)  # type: ignore[arg-type]
    # Every item the workers rendered was admitted with its scene and origin.
    assert len(store) == len(data)
    image = data[17][0]
    assert store.lookup(image) == data.scene(17)
    assert store.origin(image) == "ShapesWorld[seed=5,split=train][17]"


def test_a_toolbox_computes_its_exemplars_over_workers() -> None:
    store = ProvenanceStore()
    model, data = neurons_and_data(store)
    toolbox = Toolbox(
        Subject(model, ["neurons:*"]),
        "neurons:0",
        exemplar_data=DataLoader(data, batch_size=8, num_workers=2),
        k=4,
        store=store,
    )
    found = toolbox.dataset_exemplars()
    stored = [toolbox.images.get(e.id) for e in found]
    assert [s.scene for s in stored] == [data.scene(e.dataset_index) for e in found]
    assert toolbox.describe_images([found[0].id])[0].concepts  # the procedural describer reads it


def test_sample_ids_carried_in_the_batch_let_the_neurons_read_worker_images() -> None:
    def activations(num_workers: int) -> tuple[torch.Tensor, list[str]]:
        store = ProvenanceStore()
        model, data = neurons_and_data(store, sample_ids=True)
        maps, ids = [], []
        for images, labels, sample_ids in DataLoader(data, batch_size=8, num_workers=num_workers):
            assert labels.dtype == torch.int64
            maps.append(model(images, sample_ids))
            ids += sample_ids
        return torch.cat(maps), ids

    in_process, ids = activations(0)
    workers, worker_ids = activations(2)
    assert torch.equal(in_process, workers)
    assert ids == worker_ids
    assert ids[3] == ShapesWorld(size=40, seed=5).sample_id(3)
    assert ids[3].endswith("#3") and ids[3].startswith("ShapesWorld[seed=5,split=train]@")


def test_worker_images_without_their_ids_are_refused_with_the_fix() -> None:
    store = ProvenanceStore()
    model, data = neurons_and_data(store)
    images, _ = next(iter(DataLoader(data, batch_size=4, num_workers=2)))
    with pytest.raises(ConfigurationError, match="sample_ids=True"):
        model(images)


def test_a_transformed_item_is_known_by_origin_and_refused_by_the_neurons() -> None:
    store = ProvenanceStore()
    model = SyntheticNeuronModel(SPECS, seed=0, store=store)
    data = ShapesWorld(size=16, seed=5, store=store, transform=lambda x: 1.0 - x)
    for num_workers in (0, 2):
        with pytest.raises(ConfigurationError, match="without `transform`"):
            compute_exemplars(
                model, DataLoader(data, batch_size=8, num_workers=num_workers), "neurons:*",
                k=2, progress=False,
            )  # fmt: skip
    assert (
        store.facts(data[3][0]).origin == "ShapesWorld[seed=5,split=train][3] after its transform"
    )  # type: ignore[union-attr]
    assert store.lookup(data[3][0]) is None


def test_the_source_id_is_the_same_in_every_process_and_names_the_settings() -> None:
    # A fixed value: the id must not depend on object addresses or the process.
    assert ShapesWorld(size=4, seed=1).source_id == "ShapesWorld[seed=1,split=train]@f98818bbf8c6"
    assert ShapesWorld(size=4, seed=1, label="colour").source_id != (
        ShapesWorld(size=4, seed=1).source_id
    )
    assert SpuriousShapes("train", size=8, p=0.9).source_id != (
        SpuriousShapes("train", size=8, p=0.5).source_id
    )
    data = ShapesWorld(size=4, seed=1, transform=torch.flipud, sample_ids=True)
    assert data.source_id == ShapesWorld(size=4, seed=1).source_id  # a transform draws no scene


def test_pickled_datasets_keep_their_store_and_ids() -> None:
    shared = pickle.loads(pickle.dumps(ShapesWorld(size=4, seed=1)))
    assert shared.store is PROVENANCE
    private = ProvenanceStore()
    data = ShapesWorld(size=4, seed=1, store=private)
    image = data[2][0]
    copy = pickle.loads(pickle.dumps(data))
    assert copy.store is not private and copy.store.lookup(image) == data.scene(2)
    assert copy.sample_id(2) == data.sample_id(2)


def test_admitting_ids_of_an_unknown_dataset_names_the_fix() -> None:
    store = ProvenanceStore()
    image = ShapesWorld(size=4, seed=1)[0][0]
    with pytest.raises(ConfigurationError, match="`store=`"):
        store.admit(image[None], [ShapesWorld(size=4, seed=1).sample_id(0)])
    with pytest.raises(ConfigurationError, match="sample_ids"):
        store.admit(image[None], ["no index here"])
    with pytest.raises(ConfigurationError, match="one id per image"):
        store.admit(image[None], [])


def test_a_toolbox_refuses_backends_bound_to_another_store() -> None:
    store = ProvenanceStore()
    model, _ = neurons_and_data(store)
    with pytest.raises(ConfigurationError, match="`generator`"):
        Toolbox(
            Subject(model, ["neurons:*"]), "neurons:0", generator=ProceduralGenerator(), store=store
        )
    toolbox = Toolbox(Subject(model, ["neurons:*"]), "neurons:0", store=store)
    made = toolbox.text2image(["a red star on grass"], seed=0)[0]
    assert store.lookup(toolbox.images.get(made.id).image) is not None
    assert toolbox.call_units([made.id])[0].activation is not None
