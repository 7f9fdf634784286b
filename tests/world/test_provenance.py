import threading

import pytest
import torch

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import Background, Scene, SceneObject
from lightning_maia.world.provenance import (
    PROVENANCE,
    ProvenanceStore,
    image_key,
    render_and_register,
)


def scene(seed: int, colour: str = "red") -> Scene:
    return Scene((SceneObject("star", colour),), Background("noise", "blue"), seed=seed)


def test_uint8_and_float_copies_of_an_image_find_the_same_scene():
    registry = ProvenanceStore()
    rendering = render_scene(scene(1), 32)
    key = registry.register(rendering.image, rendering.scene, origin="item 3")
    assert len(key) == 32  # 16-byte blake2b digest, in hex
    assert registry.lookup(rendering.image) == rendering.scene
    assert registry.lookup(rendering.float_image()) == rendering.scene
    # Float noise below half a grey level still rounds to the same pixels.
    assert registry.lookup(rendering.float_image() + 1e-3) == rendering.scene
    assert registry.origin(rendering.image.clone()) == "item 3"
    assert image_key(rendering.float_image()) == key


def test_an_unknown_image_has_no_provenance():
    registry = ProvenanceStore()
    registry.register(render_scene(scene(1), 32).image, scene(1))
    other = render_scene(scene(1, "green"), 32).image
    assert registry.lookup(other) is None
    assert registry.origin(other) is None
    assert registry.facts(other) is None
    assert other not in registry


def test_same_bytes_at_another_shape_is_another_image():
    flat = torch.zeros(3, 4, 6, dtype=torch.uint8)
    assert image_key(flat) != image_key(flat.reshape(3, 6, 4))


def test_least_recently_used_entries_are_evicted():
    registry = ProvenanceStore(max_entries=2)
    images = [render_scene(scene(seed), 16).image for seed in range(3)]
    registry.register(images[0], scene(0))
    registry.register(images[1], scene(1))
    assert registry.lookup(images[0]) == scene(0)  # touches 0, so 1 is now the oldest
    registry.register(images[2], scene(2))
    assert len(registry) == 2
    assert registry.lookup(images[1]) is None
    assert registry.lookup(images[0]) == scene(0)
    assert registry.lookup(images[2]) == scene(2)
    registry.clear()
    assert len(registry) == 0


def test_registering_from_many_threads_keeps_every_entry():
    registry = ProvenanceStore()
    images = {seed: render_scene(scene(seed), 16).image for seed in range(200)}

    def register(seeds: range) -> None:
        for seed in seeds:
            registry.register(images[seed], scene(seed))

    threads = [threading.Thread(target=register, args=(range(k, 200, 4),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry) == len({image_key(image) for image in images.values()})
    assert all(registry.lookup(images[seed]) == scene(seed) for seed in (0, 57, 199))


def test_render_and_register_uses_the_default_store_by_default():
    rendering = render_and_register(scene(12345), 24, origin="test")
    assert PROVENANCE.lookup(rendering.image) == rendering.scene
    assert PROVENANCE.origin(rendering.image) == "test"


@pytest.mark.parametrize("shape", [(3, 8), (1, 8, 8), (2, 3, 8, 8)])
def test_images_must_be_three_channel(shape):
    with pytest.raises(ConfigurationError, match="image"):
        image_key(torch.zeros(shape))


def test_max_entries_must_be_positive():
    with pytest.raises(ConfigurationError, match="max_entries"):
        ProvenanceStore(max_entries=0)
