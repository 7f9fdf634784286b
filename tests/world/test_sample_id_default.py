"""Sample ids stay opt-in: a procedural item is ``(image, label)`` unless ``sample_ids=True``, so
``for x, y in loader`` keeps working, with or without DataLoader workers; a worker-rendered
image that reaches the synthetic neurons without its id is refused naming ``sample_ids=True``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._datasets import ShapesWorld, SpuriousShapes
from lightning_maia.world._neuron_suite import sample_neuron_specs
from lightning_maia.world._neurons import SyntheticNeuronModel
from lightning_maia.world._subgroups import BiasedShapes
from lightning_maia.world.provenance import ProvenanceStore


@pytest.mark.parametrize(
    "build",
    [
        lambda **o: ShapesWorld(size=8, seed=1, **o),
        lambda **o: SpuriousShapes("train", size=8, **o),
        lambda **o: BiasedShapes("train", size=8, **o),
    ],
)
def test_items_are_image_label_pairs_unless_ids_are_asked_for(build) -> None:
    data = build()
    assert data.sample_ids is False
    image, label = data[3]
    assert tuple(image.shape) == (3, 64, 64) and isinstance(label, int)
    with_ids = build(sample_ids=True)
    assert len(with_ids[3]) == 3 and with_ids[3][2] == data.sample_id(3)
    assert torch.equal(with_ids[3][0], image)


def test_a_two_worker_loop_unpacks_pairs_and_the_neurons_name_the_fix() -> None:
    store = ProvenanceStore()
    model = SyntheticNeuronModel(sample_neuron_specs(0, n_mono=2, n_or=0, n_and=0), store=store)
    data = ShapesWorld(size=8, seed=1, store=store)
    batches = [(x, y) for x, y in DataLoader(data, batch_size=4, num_workers=2)]
    assert [len(y) for _, y in batches] == [4, 4]
    # The workers' renderings never reached this process's store: refused, with the fix.
    with pytest.raises(ConfigurationError, match=r"sample_ids=True.*neurons\(images, sample_ids\)"):
        model(batches[0][0])
    # The fix named there works on the very same batch.
    ids = [data.sample_id(i) for i in range(4)]
    assert model(batches[0][0], ids).shape[:2] == (4, 2)
