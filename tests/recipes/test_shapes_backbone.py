"""The shapes backbone recipe: pretraining, its disk cache, the frozen classifier, features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_maia.analysis._masked_head import MaskedHead, install_masked_head
from lightning_maia.errors import ConfigurationError
from lightning_maia.recipes import shapes_backbone
from lightning_maia.recipes.shapes_backbone import (
    CACHE_ENV,
    CLASSIFIER_FEATURE_LAYER,
    BackboneConfig,
    ShapesBackbone,
    ShapesBackboneClassifier,
    backbone_cache_path,
    default_cache_dir,
    extract_features,
    load_backbone,
    pretrain_backbone,
    pretraining_images,
    spurious_splits,
    train_erm_classifier,
)
from lightning_maia.units import resolve_units

TINY = BackboneConfig(widths=(4, 4, 8, 8), images=64, epochs=1, batch_size=32)


def test_pretraining_images_are_group_balanced_and_deterministic() -> None:
    images, shapes, backgrounds = pretraining_images(360, seed=0, image_size=16)
    assert images.shape == (360, 3, 16, 16) and images.dtype == torch.uint8
    assert set(shapes.tolist()) == set(range(9)) and set(backgrounds.tolist()) == set(range(9))
    again = pretraining_images(4, seed=0, image_size=16, start=2)
    assert torch.equal(again[0][:2], images[2:4]) and torch.equal(again[1][:2], shapes[2:4])
    assert not torch.equal(pretraining_images(4, seed=1, image_size=16)[0], images[:4])


def test_pretraining_is_pinned_by_the_seed() -> None:
    first, metrics = pretrain_backbone(TINY, seed=3, progress=False)
    second, _ = pretrain_backbone(TINY, seed=3, progress=False)
    other, _ = pretrain_backbone(TINY, seed=4, progress=False)
    state = first.state_dict()
    assert all(torch.equal(state[k], v) for k, v in second.state_dict().items())
    assert not torch.equal(state["stem.0.weight"], other.state_dict()["stem.0.weight"])
    assert set(metrics) == {"shape_accuracy", "background_accuracy"}
    assert not any(p.requires_grad for p in first.parameters()) and not first.training
    # A caller's thread setting does not reach pretraining (float sums depend on it).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, _ = pretrain_backbone(TINY, seed=3, progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(state[k], v) for k, v in single.state_dict().items())


def test_cache_is_written_once_atomically_and_keyed_by_config_and_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = backbone_cache_path(TINY, 0, tmp_path)
    assert not path.exists()
    first = load_backbone(0, TINY, cache_dir=tmp_path, progress=False)
    assert path.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached backbone was not used")

    monkeypatch.setattr(shapes_backbone, "pretrain_backbone", no_pretraining)
    cached = load_backbone(0, TINY, cache_dir=tmp_path, progress=False)
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), cached.parameters(), strict=True)
    )
    assert cached.pretraining_metrics == first.pretraining_metrics
    assert backbone_cache_path(TINY, 1, tmp_path) != path
    wider = BackboneConfig(widths=(4, 4, 8, 16), images=64, epochs=1)
    assert backbone_cache_path(wider, 0, tmp_path) != path


def test_default_cache_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "lightning_maia" / "backbones"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": (4, 4, 8)}, "`widths`"),
        ({"epochs": 0}, "`epochs` can be a positive integer, got 0"),
        ({"shapes": ("circle", "blob")}, "`shapes`"),
    ],
)
def test_bad_config_is_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BackboneConfig(**kwargs)


def test_classifier_units_and_frozen_backbone() -> None:
    backbone = ShapesBackbone(TINY.widths)
    model = ShapesBackboneClassifier(4, backbone=backbone)
    (selection,) = resolve_units(model, [f"{CLASSIFIER_FEATURE_LAYER}:*"])
    assert selection.layer == "backbone.pool"
    model.train()
    assert model.training and not model.backbone.training  # batch-norm statistics stay put
    images = torch.rand(3, 3, 64, 64)
    assert torch.allclose(model(images), model.head(backbone(images)))
    # Cached (N, F) features train the head exactly as images do.
    features = backbone(images)
    assert torch.allclose(model.head(features), model(images))


@pytest.mark.slow
def test_erm_head_trains_with_lightning_and_the_checkpoint_keeps_a_masked_head(
    tmp_path: Path,
) -> None:
    backbone = load_backbone(0, TINY, cache_dir=tmp_path, progress=False)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    splits = spurious_splits(0, train=64, val=16, test=32, holdout=16)
    features = extract_features(backbone, splits["train"], progress=False)
    assert features.features.shape == (64, 8)
    assert features.groups is not None
    assert features.groups.tolist() == splits["train"].metadata["group"].tolist()
    model = train_erm_classifier(
        backbone, splits["train"], features=features, epochs=2, root_dir=tmp_path
    )
    assert model.class_names == ["circle", "square", "triangle", "star"]
    assert all(torch.equal(frozen[k], v) for k, v in model.backbone.state_dict().items())

    install_masked_head(
        model,
        "head",
        model.head.weight.detach() * torch.tensor([1.0, 0.0] * 4),
        model.head.bias.detach(),
        mask=torch.tensor([1.0, 0.0] * 4),
    )
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "masked.ckpt")
    loaded = ShapesBackboneClassifier.load_from_checkpoint(tmp_path / "masked.ckpt")
    assert isinstance(loaded.head, MaskedHead)
    assert loaded.head.kept_units == [0, 2, 4, 6]
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded.eval()(images), model.eval()(images))
    assert loaded.class_names == model.class_names


def test_packaged_weights_match_their_manifest_and_the_current_recipe() -> None:
    """The shipped weights are the current recipe's (else rebuild them with the command in the
    manifest) and every file has the digest the manifest records."""
    directory = shapes_backbone.packaged_weights_dir()
    manifest = json.loads((directory / shapes_backbone.PACKAGED_MANIFEST).read_text())
    expected = {
        f"shapes-backbone-{shapes_backbone.cache_key(BackboneConfig(), seed)}.pt": seed
        for seed in shapes_backbone.PACKAGED_SEEDS
    }
    assert manifest["recipe"] == shapes_backbone.recipe_digest(), manifest["command"]
    assert {name: row["seed"] for name, row in manifest["files"].items()} == expected
    assert sorted(p.name for p in directory.glob("*.pt")) == sorted(expected)
    for name, row in manifest["files"].items():
        data = (directory / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) < 4_000_000
        assert row["metrics"]["shape_accuracy"] > 0.9


def test_recipe_digest_ignores_docs_but_not_code() -> None:
    base = "def f(x):\n    '''Doc.'''\n    return x + 1  # one\n"
    reworded = "def f(x):\n    '''Other words.'''\n\n    return x + 1\n"
    changed = "def f(x):\n    '''Doc.'''\n    return x + 2\n"
    digest = shapes_backbone._code_without_docs
    assert digest(base) == digest(reworded) != digest(changed)
    assert digest(base + "def g():\n    pass\n", ["f"]) == digest(base)
    with pytest.raises(RuntimeError, match="not found"):
        digest(base, ["f", "h"])


def test_recipe_digest_reads_private_module_paths_as_public_ones() -> None:
    # The modules behind the packages became private (`_scene`); the shipped weights' key
    # must not move with that, but a different module or name still moves it.
    public = "from __future__ import annotations\nfrom a.scene import B\nfrom a import render\n"
    private = "from __future__ import annotations\nfrom a._scene import B\n"
    private += "from a import _render as render\n"
    other = "from __future__ import annotations\nfrom a._scenes import B\nfrom a import render\n"
    digest = shapes_backbone._code_without_docs
    assert digest(public) == digest(private) != digest(other)
    assert digest("from a import _render\n") != digest("from a import render\n")


def test_recipe_digest_reads_source_files_not_patched_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = shapes_backbone.recipe_digest()
    shapes_backbone.recipe_digest.cache_clear()
    monkeypatch.setattr(shapes_backbone, "pretrain_backbone", lambda *a, **k: None)
    try:
        assert shapes_backbone.recipe_digest() == before
    finally:
        shapes_backbone.recipe_digest.cache_clear()


def test_packaged_weights_load_without_pretraining_and_a_bad_digest_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "weights"
    manifest = shapes_backbone.build_packaged_weights([5], shipped, config=TINY, progress=False)
    (name,) = manifest["files"]
    assert name == f"shapes-backbone-{shapes_backbone.cache_key(TINY, 5)}.pt"
    reference = torch.load(shipped / name, weights_only=True)["state_dict"]
    monkeypatch.setattr(shapes_backbone, "packaged_weights_dir", lambda: shipped)
    real_pretrain = shapes_backbone.pretrain_backbone

    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("the packaged backbone was not used")

    monkeypatch.setattr(shapes_backbone, "pretrain_backbone", no_pretraining)
    cache = tmp_path / "cache"
    loaded = load_backbone(5, TINY, cache_dir=cache, progress=False)
    assert all(torch.equal(reference[k], v) for k, v in loaded.state_dict().items())
    assert loaded.pretraining_metrics == manifest["files"][name]["metrics"]
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert not cache.exists()  # read in place, not copied

    # A damaged file is not trusted: a warning, then the usual pretraining and cache.
    (shipped / name).write_bytes(b"damaged")
    monkeypatch.setattr(shapes_backbone, "pretrain_backbone", real_pretrain)
    with pytest.warns(UserWarning, match="do not match their manifest"):
        again = load_backbone(5, TINY, cache_dir=cache, progress=False)
    assert all(torch.equal(reference[k], v) for k, v in again.state_dict().items())
    assert backbone_cache_path(TINY, 5, cache).exists()
