"""Procedural datasets: determinism, provenance, metadata, spurious and subgroup biases."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._datasets import UNBOUNDED_SIZE, ShapesWorld, SpuriousShapes
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import SceneSampler
from lightning_maia.world._subgroups import DEFAULT_BIASES, BiasedShapes, PlantedSubgroup
from lightning_maia.world._vocabulary import COLOURS, SHAPES
from lightning_maia.world.provenance import PROVENANCE, ProvenanceStore


def four_sigma(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)


# --- determinism and provenance ----------------------------------------------------------------


def test_items_depend_only_on_seed_split_and_index() -> None:
    first, second = ShapesWorld(size=20, seed=5), ShapesWorld(size=20, seed=5)
    for index in (19, 0, 7):  # out of order on purpose
        image_a, label_a = first[index]
        image_b, label_b = second[index]
        assert torch.equal(image_a, image_b)
        assert label_a == label_b
    assert first.scene(3) == second.scene(3)
    assert first.scene(3) != ShapesWorld(size=20, seed=6).scene(3)
    assert first.scene(3) != ShapesWorld(size=20, seed=5, split="val").scene(3)


def test_item_is_the_rendered_scene_in_float32_and_registered_with_its_origin() -> None:
    data = SpuriousShapes("val", size=10, seed=2)
    image, label = data[4]
    expected = render_scene(data.scene(4), 64).float_image()
    assert image.dtype == torch.float32
    assert image.shape == (3, 64, 64)
    assert torch.equal(image, expected)
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0
    assert label == data.class_names.index(data.scene(4).objects[0].shape)
    assert PROVENANCE.lookup(image) == data.scene(4)
    assert PROVENANCE.origin(image) == "SpuriousShapes[seed=2,split=val][4]"


def test_image_size_and_transform() -> None:
    data = ShapesWorld(size=3, image_size=32, transform=lambda x: x * 0.5)
    image, _ = data[0]
    assert image.shape == (3, 32, 32)
    assert float(image.max()) <= 0.5


def test_dataloader_batches_match_items() -> None:
    data = ShapesWorld(size=6, seed=1)
    images, labels = next(iter(DataLoader(data, batch_size=6)))
    assert images.shape == (6, 3, 64, 64)
    assert labels.tolist() == [data[i][1] for i in range(6)]


def test_indexing_bounds() -> None:
    data = ShapesWorld(size=4)
    assert data.scene(-1) == data.scene(3)
    with pytest.raises(IndexError):
        data[4]
    with pytest.raises(IndexError):
        data.scene(-5)
    assert sum(1 for _ in data) == 4  # the sequence protocol stops at IndexError


# --- metadata ----------------------------------------------------------------------------------


def test_metadata_matches_scenes_and_labels() -> None:
    data = ShapesWorld(size=40, seed=3, label="colour")
    rows = data.metadata
    assert len(rows) == 40
    assert rows["index"].tolist() == list(range(40))
    assert data.class_names == list(COLOURS)
    for row in rows.itertuples():
        scene = data.scene(row.index)
        obj = scene.objects[0]
        assert (row.shape, row.colour, row.texture, row.size) == (
            obj.shape,
            obj.colour,
            obj.texture,
            obj.size,
        )
        assert (row.x, row.y, row.rotation) == (obj.x, obj.y, obj.rotation)
        assert (row.background, row.background_colour) == (
            scene.background.texture,
            scene.background.colour,
        )
        assert row.class_name == obj.colour
        assert row.label == data.class_names.index(obj.colour)
    assert [data[i][1] for i in range(5)] == rows["label"].tolist()[:5]


def test_class_names_follow_the_sampler() -> None:
    sampler = SceneSampler(shapes={"star": 1.0, "circle": 2.0, "ring": 0.0})
    data = ShapesWorld(size=30, sampler=sampler)
    assert data.class_names == ["circle", "star"]
    assert set(data.metadata["class_name"]) == {"circle", "star"}
    background = ShapesWorld(
        size=30, label="background", sampler=SceneSampler(backgrounds=["snow", "dots"])
    )
    assert background.class_names == ["dots", "snow"]


def test_unbounded_shapes_world() -> None:
    data = ShapesWorld(size=None, seed=0)
    assert len(data) == UNBOUNDED_SIZE
    image, label = data[UNBOUNDED_SIZE - 1]
    assert image.shape == (3, 64, 64)
    assert label == SHAPES.index(data.scene(UNBOUNDED_SIZE - 1).objects[0].shape)
    with pytest.raises(ConfigurationError, match="unbounded"):
        _ = data.metadata


# --- spurious shapes ---------------------------------------------------------------------------


def test_train_background_matches_class_at_rate_p() -> None:
    n, p = 4000, 0.95
    rows = SpuriousShapes("train", size=n, p=p, seed=0).metadata
    rate = rows["spurious_match"].mean()
    assert abs(rate - p) < four_sigma(p, n)
    # Off the paired background, the other three are uniform.
    off = rows[~rows["spurious_match"]]
    own = off["label"].map(lambda label: ["snow", "grass", "sand", "water"][label])
    assert (off["background"] != own).all()
    per_background = off.groupby(["label", "background"]).size()
    assert len(per_background) == 12
    # Classes are uniform too.
    for share in rows["label"].value_counts(normalize=True):
        assert abs(share - 0.25) < four_sigma(0.25, n)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_train_extreme_p(p: float) -> None:
    rows = SpuriousShapes("train", size=200, p=p).metadata
    assert rows["spurious_match"].mean() == p


def test_test_split_is_exactly_balanced() -> None:
    data = SpuriousShapes("test", size=160)
    counts = data.metadata.groupby("group").size()
    assert counts.tolist() == [10] * 16
    uneven = SpuriousShapes("test", size=37).metadata.groupby("group").size()
    assert sorted(set(uneven.tolist())) == [2, 3]
    assert int(uneven.sum()) == 37


def test_val_background_is_independent_of_class() -> None:
    n = 4000
    rows = SpuriousShapes("val", size=n, seed=1).metadata
    assert abs(rows["spurious_match"].mean() - 0.25) < four_sigma(0.25, n)
    for share in rows["group"].value_counts(normalize=True):
        assert abs(share - 1 / 16) < four_sigma(1 / 16, n)


def test_groups_and_names() -> None:
    data = SpuriousShapes("holdout", size=50, seed=4)
    rows = data.metadata
    assert data.spurious_attribute == "background"
    assert data.n_groups == 16
    assert data.group_names[0] == "circle on snow"
    assert data.group_names[6] == "square on sand"
    backgrounds = ["snow", "grass", "sand", "water"]
    expected = rows["label"] * 4 + rows["background"].map(backgrounds.index)
    assert rows["group"].tolist() == expected.tolist()
    assert rows["group_name"].tolist() == [data.group_names[g] for g in rows["group"]]
    assert data.group(7) == rows["group"][7]
    # Objects stay visible: never the colour of their named background.
    assert (rows["colour"] != rows["background_colour"]).all()


# --- biased shapes -----------------------------------------------------------------------------


def test_planted_biases_hold_in_train() -> None:
    rows = BiasedShapes("train", size=1200, seed=0).metadata
    assert not rows["in_planted_subgroup"].any()
    assert set(rows["class_name"]) == {"circle", "square", "triangle", "star", "cross", "heart"}
    for bias in DEFAULT_BIASES:
        mine = rows[rows["class_name"] == bias.class_name]
        others = rows[rows["class_name"] != bias.class_name]
        assert set(mine[bias.attribute]) == set(bias.train_values)
        assert not others[bias.attribute].isin(bias.train_values).any()


def test_planted_biases_vanish_at_test() -> None:
    data = BiasedShapes("test", size=3000, seed=0)
    rows = data.metadata
    circles = rows[rows["class_name"] == "circle"]
    # Circle colours are uniform at test: red is one of eleven colours.
    assert abs((circles["colour"] == "red").mean() - 1 / 11) < four_sigma(1 / 11, len(circles))
    assert circles["colour"].nunique() == 11
    assert (rows[rows["class_name"] != "circle"]["colour"] == "red").any()
    stars = rows[rows["class_name"] == "star"]
    assert abs((stars["size"] == "large").mean() - 1 / 3) < four_sigma(1 / 3, len(stars))
    # Membership column agrees with the subgroup definitions.
    for row in rows.head(300).itertuples():
        scene = data.scene(row.index)
        found = [s for s in data.planted_subgroups if s.contains(scene)]
        assert row.in_planted_subgroup == bool(found)
        assert row.planted_subgroup == (found[0].description if found else "")
    # About 4 biased classes of 6, each mostly outside its train values.
    share = rows["in_planted_subgroup"].mean()
    expected = (10 / 11 + 8 / 9 + 3 / 4 + 2 / 3) / 6
    assert abs(share - expected) < four_sigma(expected, len(rows))
    assert set(rows["planted_subgroup"]) - {""} == {s.description for s in DEFAULT_BIASES}


def test_planted_subgroup_contract() -> None:
    bias = PlantedSubgroup("square", "background", "snow")
    assert bias.train_values == ("snow",)
    assert bias.description == "square that is not on a snow background"
    data = BiasedShapes("val", size=200, biases=[bias], classes=["square", "circle"])
    rows = data.metadata
    inside = rows[rows["in_planted_subgroup"]]
    assert set(inside["class_name"]) == {"square"}
    assert "snow" not in set(inside["background"])
    assert len(inside) == int(
        ((rows["class_name"] == "square") & (rows["background"] != "snow")).sum()
    )


# --- bad options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: ShapesWorld(size=0), "`size`"),
        (lambda: ShapesWorld(label="weight"), "`label`"),
        (lambda: ShapesWorld(split="dev"), "`split`"),
        (lambda: ShapesWorld(seed=-1), "`seed`"),
        (lambda: SpuriousShapes(p=1.5), "`p`"),
        (lambda: SpuriousShapes(classes=("circle", "circle")), "`classes`"),
        (lambda: SpuriousShapes(classes=("circle", "blob")), "`classes`"),
        (lambda: SpuriousShapes(classes=SHAPES[:5]), "`backgrounds`"),
        (lambda: BiasedShapes(biases=[PlantedSubgroup("ring", "colour", ("red",))]), "`biases`"),
        (
            lambda: BiasedShapes(
                biases=[
                    PlantedSubgroup("circle", "colour", ("red",)),
                    PlantedSubgroup("star", "colour", ("red",)),
                ]
            ),
            "`biases`",
        ),
        (lambda: PlantedSubgroup("circle", "shape", ("star",)), "`attribute`"),
        (lambda: PlantedSubgroup("circle", "size", ("small", "medium", "large")), "`train_values`"),
    ],
)
def test_bad_options_name_the_option(make: object, option: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("dataset", [ShapesWorld, SpuriousShapes, BiasedShapes])
def test_every_dataset_takes_the_shared_item_options_and_refuses_a_misspelt_one(
    dataset: type[ShapesWorld] | type[SpuriousShapes] | type[BiasedShapes],
) -> None:
    store = ProvenanceStore()
    data = dataset(size=4, seed=2, store=store, sample_ids=True, transform=None)
    image, label, sample_id = data[1]
    assert data.store is store and sample_id == f"{data.source_id}#1"
    assert (store.lookup(image), label) == data.item_scene_and_label(1)
    with pytest.raises(TypeError, match="tranform"):
        dataset(size=4, tranform=None)  # type: ignore[call-arg]
