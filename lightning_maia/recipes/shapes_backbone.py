"""The SpuriousShapes setting: a small pretrained backbone, frozen, under a linear head.

MAIA's spurious-feature experiment used an ImageNet-pretrained ResNet whose last layer was
retrained on Spawrious. This recipe is its procedural-world counterpart, shared by the
``spurious`` and flagging benchmarks, the demo and the tests:

1. :class:`ShapesBackbone` — a ResNet-style network for 64 px images (three residual stages)
   whose penultimate features, the output of its ``pool`` module (``backbone.pool:i`` inside a
   classifier), are the units under study.
2. :func:`load_backbone` — pretrains it on group-balanced procedural images (shape and
   background independent, every value uniform) with a shape head and a background head, so
   its features carry both; pinned seeds. The weights of the default config for seeds 0-2 ship
   with the package (``recipes/weights``, built by ``python -m
   lightning_maia.recipes.shapes_backbone build 0 1 2``); others are pretrained once and cached
   on disk. Both are keyed by the config, the seed and a digest of the pretraining code
   (:func:`recipe_digest`), so weights of an older recipe are never read as new ones.
3. :class:`ShapesBackboneClassifier` — the frozen backbone and a fresh ``head``
   (``nn.Linear``), trained with Lightning by :func:`train_erm_classifier` on
   ``SpuriousShapes`` training data where the background matches the shape with p=0.95: the
   ERM model, which leans on the background.
4. :func:`extract_features` — the penultimate features, labels and group labels of a split.

**Why one file.** :func:`recipe_digest` reads the pretraining definitions
(``_RECIPE_DEFINITIONS``) from this module's own source, so the network, its pretraining and the
weight cache keyed by them stay in one file: moving them would have to move that key with them.

>>> config = BackboneConfig(widths=(4, 4, 4, 8), images=8, epochs=1)
>>> backbone = ShapesBackbone(config.widths)
>>> tuple(backbone(torch.rand(2, 3, 64, 64)).shape), backbone.feature_layer
((2, 8), 'pool')
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from lightning_maia._atomic import write_bytes_atomically
from lightning_maia.analysis._spurious import dataset_groups
from lightning_maia.errors import CacheError, bad_option
from lightning_maia.world import _render as render
from lightning_maia.world import _scene as scene
from lightning_maia.world import _vocabulary as vocabulary
from lightning_maia.world._datasets import SpuriousShapes, sample_scene
from lightning_maia.world._render import render_batch
from lightning_maia.world._vocabulary import BACKGROUND_TEXTURES, SHAPES

#: The cache directory when neither ``cache_dir`` nor this environment variable names one.
CACHE_ENV = "LIGHTNING_MAIA_BACKBONE_CACHE"
#: Seeds whose default-config weights ship with the package (the demo and the benchmarks use 0-2).
PACKAGED_SEEDS = (0, 1, 2)
#: The packaged weights' SHA-256 digests, by file name (checked when they are read).
PACKAGED_MANIFEST = "manifest.json"
#: Pretraining always runs on this many threads: float sums depend on how work is split, so
#: a caller's thread setting would otherwise change the weights cached under one key.
PRETRAIN_THREADS = 2
#: The penultimate feature layer (module path inside :class:`ShapesBackbone`).
FEATURE_LAYER = "pool"
#: Its path inside :class:`ShapesBackboneClassifier`: unit specs read ``backbone.pool:17``.
CLASSIFIER_FEATURE_LAYER = f"backbone.{FEATURE_LAYER}"
#: Second entry of every pretraining image's seed sequence (apart from every dataset split).
_PRETRAIN_STREAM = 7


@dataclass(frozen=True)
class BackboneConfig:
    """How the backbone is built and pretrained; every field enters the cache key."""

    #: Channels of the four stages; the last is the feature count.
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    #: Shapes the shape head tells apart (backgrounds: all of the world's nine).
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    #: Side of the (square) input images in pixels.
    image_size: int = 64
    #: Group-balanced pretraining images per epoch (each epoch draws new ones).
    images: int = 4000
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    #: L1 penalty on the two pretraining heads' weights: each head reads few units, so units
    #: specialise (shape or background), as units of large pretrained networks tend to.
    head_l1: float = 0.0

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or any(int(w) < 1 for w in self.widths):
            raise bad_option("widths", "four positive channel counts", self.widths)
        for name in ("image_size", "images", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if len(self.shapes) < 2 or any(shape not in SHAPES for shape in self.shapes):
            raise bad_option("shapes", "at least two of " + ", ".join(SHAPES), self.shapes)

    @property
    def features(self) -> int:
        return int(self.widths[-1])


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a (projected) shortcut, as in ResNet-18."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def _stage(inputs: int, outputs: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, then 2x2 max pooling (half the resolution)."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class ShapesBackbone(nn.Module):
    """Display images (N, 3, H, W) in [0, 1] -> (N, features) non-negative features.

    Three convolution stages at 64, 32 and 16 px (each halving the resolution by max pooling),
    a residual block at 8 px, and global max pooling (``pool``): small objects on large
    textured backgrounds survive max pooling where averaging would wash them out. The input is
    normalised inside, so tools can feed it what they render.
    """

    feature_layer = FEATURE_LAYER

    def __init__(self, widths: Sequence[int] = BackboneConfig.widths) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) != 4 or min(w) < 1:
            raise bad_option("widths", "four positive channel counts", tuple(widths))
        self.stem = _stage(3, w[0])
        self.layer1 = _stage(w[0], w[1])
        self.layer2 = _stage(w[1], w[2])
        self.layer3 = _ResidualBlock(w[2], w[3], 1)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.features = w[3]
        self.widths = tuple(w)
        #: Held-out shape and background accuracy of pretraining (set by :func:`load_backbone`).
        self.pretraining_metrics: dict[str, float] = {}

    def forward(self, images: Tensor) -> Tensor:
        x = (images - 0.5) / 0.25
        return self.pool(self.layer3(self.layer2(self.layer1(self.stem(x)))))


# -- pretraining and its cache ----------------------------------------------------------------


def pretraining_images(
    count: int,
    seed: int,
    image_size: int = 64,
    shapes: Sequence[str] = SHAPES,
    *,
    start: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Images ``start .. start + count`` of the pretraining stream (uint8), with their shape
    and background labels.

    Shape (from ``shapes``) and background (all nine) are uniform and independent -- every
    group equally likely; other attributes as in ``SpuriousShapes`` (the object never takes
    its background's colour).
    """
    scenes, shape_labels, backgrounds = [], [], []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, _PRETRAIN_STREAM, index])
        shape = int(rng.integers(len(shapes)))
        background = int(rng.integers(len(BACKGROUND_TEXTURES)))
        scenes.append(sample_scene(rng, shapes[shape], BACKGROUND_TEXTURES[background]))
        shape_labels.append(shape)
        backgrounds.append(background)
    images = (render_batch(scenes, image_size) * 255).round().to(torch.uint8)
    return images, torch.tensor(shape_labels), torch.tensor(backgrounds)


def pretrain_backbone(
    config: BackboneConfig | None = None, seed: int = 0, *, progress: bool = True
) -> tuple[ShapesBackbone, dict[str, float]]:
    """Pretrain a backbone with a shape head and a background head; return it (frozen, eval)
    and its shape and background accuracy on held-out images.

    Every epoch draws ``config.images`` new images (rendering is cheaper than overfitting).
    Runs on :data:`PRETRAIN_THREADS` threads, so the same seed gives the same weights.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(config or BackboneConfig(), seed, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(
    config: BackboneConfig, seed: int, progress: bool
) -> tuple[ShapesBackbone, dict[str, float]]:
    n_shapes = len(config.shapes)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = ShapesBackbone(config.widths)
        heads = nn.Linear(config.features, n_shapes + len(BACKGROUND_TEXTURES))
    parameters = [*backbone.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-config.images // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    backbone.train()
    bar = tqdm(
        total=steps, desc=f"pretraining the shapes backbone (seed {seed})", disable=not progress
    )
    for epoch in range(config.epochs):
        images, shapes, backgrounds = pretraining_images(
            config.images, seed, config.image_size, config.shapes, start=epoch * config.images
        )
        for batch in torch.randperm(config.images, generator=generator).split(config.batch_size):
            logits = heads(backbone(images[batch].float() / 255))
            loss = F.cross_entropy(logits[:, :n_shapes], shapes[batch]) + F.cross_entropy(
                logits[:, n_shapes:], backgrounds[batch]
            )
            if config.head_l1 > 0:
                loss = loss + config.head_l1 * heads.weight.abs().sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    backbone.eval()
    held = max(100, config.images // 8)
    images, shapes, backgrounds = pretraining_images(
        held, seed, config.image_size, config.shapes, start=config.epochs * config.images
    )
    with torch.inference_mode():
        logits = heads(backbone(images.float() / 255))
    metrics = {
        "shape_accuracy": float((logits[:, :n_shapes].argmax(1) == shapes).float().mean()),
        "background_accuracy": float(
            (logits[:, n_shapes:].argmax(1) == backgrounds).float().mean()
        ),
    }
    return _frozen(backbone), metrics


def default_cache_dir() -> Path:
    """``$LIGHTNING_MAIA_BACKBONE_CACHE``, else ``~/.cache/lightning_maia/backbones``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "lightning_maia" / "backbones"


#: Top-level definitions of this module that decide the pretrained weights.
_RECIPE_DEFINITIONS = (
    "PRETRAIN_THREADS",
    "_PRETRAIN_STREAM",
    "_ResidualBlock",
    "_stage",
    "ShapesBackbone",
    "pretraining_images",
    "pretrain_backbone",
    "_pretrain",
    "_frozen",
)


def _without_docs(tree: ast.AST) -> ast.AST:
    """``tree`` without docstrings (comments and formatting are not in a syntax tree)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)
    return tree


def _public_module_paths(tree: ast.Module) -> ast.Module:
    """``tree`` with every imported module path read without the leading underscore of a
    private module (``world._scene`` as ``world.scene``): where a module lives does not change
    weights, and the key stays what it was before the modules behind the packages were made
    private."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            node.module = _PRIVATE_PART.sub(r"\1", node.module)
        if isinstance(node, ast.Import):
            for alias in node.names:
                alias.name = _PRIVATE_PART.sub(r"\1", alias.name)
        if isinstance(node, ast.ImportFrom):
            for (
                alias
            ) in node.names:  # ``from pkg import _mod as mod`` reads ``from pkg import mod``
                if alias.asname is not None and alias.name == f"_{alias.asname}":
                    alias.name, alias.asname = alias.asname, None
    return tree


#: The leading underscore of a private module's name in a dotted path (not of ``__future__``).
_PRIVATE_PART = re.compile(r"(^|\.)_(?=[a-z])")


def _code_without_docs(source: str, names: Sequence[str] | None = None) -> str:
    """The syntax tree of ``source`` (only its top-level definitions of ``names``, if given)
    without docstrings and with public module paths: comments, docstrings, formatting and the
    privacy of a module do not change weights, so they do not change the key."""
    tree = _public_module_paths(ast.parse(source))
    if names is not None:
        tree.body = [node for node in tree.body if _defined_name(node) in names]
        missing = set(names) - {_defined_name(node) for node in tree.body}
        if missing:
            raise RuntimeError(f"recipe definitions not found: {sorted(missing)}")
    return ast.dump(_without_docs(tree))


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return target.id if isinstance(target, ast.Name) else None
    return None


@cache
def recipe_digest() -> str:
    """A digest of the code that decides the pretrained weights: the network, the pretraining
    loop, the image stream and the procedural world that renders it, read from the source
    files (so a patched function in a running process does not move it). Any change to them
    gives new cache keys, so stale weights are never read; the torch version is left out (it
    moves weights only by float rounding)."""
    from lightning_maia.world import _datasets as datasets

    digest = hashlib.sha256()
    for module, names in (
        (sys.modules[__name__], _RECIPE_DEFINITIONS),
        (datasets, ("sample_scene",)),
        (render, None),
        (scene, None),
        (vocabulary, None),
    ):
        source = Path(inspect.getfile(module)).read_text(encoding="utf-8")
        digest.update(_code_without_docs(source, names).encode())
    return digest.hexdigest()[:20]


def cache_key(config: BackboneConfig, seed: int) -> str:
    """A digest of everything that decides the pretrained weights: config, seed, recipe code."""
    payload = json.dumps(
        {"config": asdict(config), "seed": seed, "recipe": recipe_digest()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def packaged_weights_dir() -> Path:
    """Where the shipped weights live (``lightning_maia/recipes/weights``)."""
    return Path(str(resources.files("lightning_maia.recipes").joinpath("weights")))


def _packaged_file(config: BackboneConfig, seed: int) -> Path | None:
    """The shipped weights of ``(config, seed)`` under the current recipe, if they ship and
    their digest matches the manifest."""
    directory = packaged_weights_dir()
    name = f"shapes-backbone-{cache_key(config, seed)}.pt"
    path = directory / name
    try:
        manifest = json.loads((directory / PACKAGED_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    if expected is None or not path.is_file():
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        warnings.warn(
            f"the packaged backbone weights {path} do not match their manifest digest; "
            "pretraining instead (reinstall the package to restore them)",
            stacklevel=3,
        )
        return None
    return path


def build_packaged_weights(
    seeds: Sequence[int] = PACKAGED_SEEDS,
    directory: str | Path | None = None,
    *,
    config: BackboneConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain ``config`` (the default) for ``seeds`` and write the package's weights and
    manifest (``python -m lightning_maia.recipes.shapes_backbone build 0 1 2``). Old files of
    other keys are removed, so the folder holds exactly the current recipe's weights."""
    target = Path(directory) if directory is not None else packaged_weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    config = config or BackboneConfig()
    files: dict[str, Any] = {}
    for seed in seeds:
        backbone, metrics = pretrain_backbone(config, seed, progress=progress)
        path = target / f"shapes-backbone-{cache_key(config, seed)}.pt"
        payload = {"state_dict": backbone.state_dict(), "metrics": metrics}
        _save_atomically(path, {**payload, "config": asdict(config)})
        files[path.name] = {
            "seed": seed,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "metrics": metrics,
        }
    for stale in target.glob("shapes-backbone-*.pt"):
        if stale.name not in files:
            stale.unlink()
    manifest = {
        "recipe": recipe_digest(),
        "config": asdict(config),
        "torch": torch.__version__,
        "threads": PRETRAIN_THREADS,
        "command": "python -m lightning_maia.recipes.shapes_backbone build "
        + " ".join(str(s) for s in seeds),
        "files": files,
    }
    (target / PACKAGED_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def backbone_cache_path(
    config: BackboneConfig | None = None, seed: int = 0, cache_dir: str | Path | None = None
) -> Path:
    """Where :func:`load_backbone` keeps the weights of ``(config, seed)``."""
    config = config or BackboneConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"shapes-backbone-{cache_key(config, seed)}.pt"


def load_backbone(
    seed: int = 0,
    config: BackboneConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ShapesBackbone:
    """The pretrained backbone of ``(config, seed)``: from the cache, else from the weights the
    package ships, else pretrained and cached.

    The result is frozen (no gradients) and in eval mode. Its pretraining accuracies are in
    ``backbone.pretraining_metrics``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad_option("seed", "a non-negative int", seed)
    config = config or BackboneConfig()
    path = backbone_cache_path(config, seed, cache_dir)
    if not path.exists():
        path = _packaged_file(config, seed) or path
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            backbone = ShapesBackbone(config.widths)
            backbone.load_state_dict(saved["state_dict"])
        except (OSError, RuntimeError, KeyError, EOFError) as error:
            raise CacheError(
                f"cannot read the cached backbone {path}: {error}; delete it"
            ) from error
        backbone.pretraining_metrics = dict(saved.get("metrics", {}))
        return _frozen(backbone)
    backbone, metrics = pretrain_backbone(config, seed, progress=progress)
    _save_atomically(
        path, {"state_dict": backbone.state_dict(), "metrics": metrics, "config": asdict(config)}
    )
    backbone.pretraining_metrics = metrics
    return backbone


def _save_atomically(path: Path, payload: dict[str, Any]) -> None:
    # Saved through a buffer: torch names the archive's folder after a file it writes to, and
    # the partial file's random name would make equal weights give different bytes (and digests).
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomically(path, buffer.getvalue(), mode=0o644)  # the cache is a plain file


def _frozen(backbone: ShapesBackbone) -> ShapesBackbone:
    backbone.requires_grad_(False)
    return backbone.eval()


# -- the classifier -------------------------------------------------------------------------


class ShapesBackboneClassifier(pl.LightningModule):
    """A frozen :class:`ShapesBackbone` and a fresh linear ``head``; only the head trains.

    Units of the penultimate layer are ``backbone.pool:i``. A checkpoint rebuilds the backbone
    from ``widths`` and its weights from the state dict; a masked head installed by the
    SpuriousFeatureRemover comes back with it (:meth:`on_load_checkpoint`).

    Args:
        num_classes: outputs of the head.
        widths: the backbone's widths (ignored when ``backbone`` is given).
        lr: the head's learning rate (Adam).
        class_names: names of the classes, kept with the hyperparameters.
        backbone: a pretrained backbone (e.g. from :func:`load_backbone`).
    """

    def __init__(
        self,
        num_classes: int = 4,
        widths: Sequence[int] = BackboneConfig.widths,
        lr: float = 0.01,
        class_names: Sequence[str] | None = None,
        backbone: ShapesBackbone | None = None,
    ) -> None:
        super().__init__()
        if backbone is not None:
            widths = backbone.widths
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "widths": list(widths),
                "lr": lr,
                "class_names": list(class_names) if class_names is not None else None,
            }
        )
        self.backbone = _frozen(backbone if backbone is not None else ShapesBackbone(widths))
        self.head = nn.Linear(self.backbone.features, num_classes)
        self.lr = lr
        self.class_names = list(class_names) if class_names is not None else None

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def train(self, mode: bool = True) -> ShapesBackboneClassifier:
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics never move
        return self

    def _step(self, batch: Any, stage: str) -> Tensor:
        inputs, labels = batch[0], batch[1]
        # (N, F) batches are cached backbone features: the backbone is frozen, so the head
        # trains on them exactly as on images, without recomputing the backbone every epoch.
        logits = self.head(inputs) if inputs.ndim == 2 else self(inputs)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}_acc", accuracy, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.head.parameters() if p.requires_grad], lr=self.lr)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A masked head saved by SpuriousFeatureRemover replaces the plain one before loading.
        from lightning_maia.analysis._masked_head import restore_masked_heads

        restore_masked_heads(self, checkpoint)


# -- data ----------------------------------------------------------------------------------


@dataclass
class SplitFeatures:
    """Penultimate features of one split, with what each item is."""

    features: Tensor  # (N, F) float32
    labels: Tensor  # (N,) int64
    #: (N,) int64 group labels where the dataset has them (``group(i)``), else None.
    groups: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> SplitFeatures:
    """Features of every item of ``dataset`` (``(image, label)`` items) from ``model``: a
    :class:`ShapesBackbone`, or anything with a ``backbone`` attribute that is one."""
    backbone = getattr(model, "backbone", model)
    was_training = backbone.training
    backbone.eval()
    parts, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    device = next(backbone.parameters()).device
    try:
        for images, targets in tqdm(
            loader, desc="extracting features", leave=False, disable=not progress
        ):
            parts.append(backbone(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(targets))
    finally:
        backbone.train(was_training)
    return SplitFeatures(torch.cat(parts), torch.cat(labels).long(), dataset_groups(dataset))


class RenderedDataset(Dataset[tuple[Tensor, int]]):
    """A dataset rendered once into memory (uint8), for epochs that should not re-render."""

    def __init__(self, dataset: Dataset[Any], *, progress: bool = False) -> None:
        images, labels = [], []
        for index in tqdm(range(len(dataset)), desc="rendering", leave=False, disable=not progress):  # type: ignore[arg-type]
            image, label = dataset[index]
            images.append((image * 255).round().to(torch.uint8))
            labels.append(int(label))
        self.images = torch.stack(images)
        self.labels = torch.tensor(labels)
        self.source = dataset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].float() / 255, int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        return (self[i] for i in range(len(self)))


def spurious_splits(
    seed: int = 0,
    *,
    train: int = 3000,
    val: int = 800,
    test: int = 1600,
    holdout: int = 1600,
    p: float = 0.95,
) -> dict[str, SpuriousShapes]:
    """The benchmark's ``SpuriousShapes`` splits: train with the background matching the shape
    with probability ``p``; val and holdout independent; test exactly group-balanced."""
    sizes = {"train": train, "val": val, "test": test, "holdout": holdout}
    return {
        split: SpuriousShapes(split, size=size, p=p, seed=seed) for split, size in sizes.items()
    }


def train_erm_classifier(
    backbone: ShapesBackbone,
    train_data: Dataset[Any],
    *,
    val_data: Dataset[Any] | None = None,
    class_names: Sequence[str] | None = None,
    features: SplitFeatures | None = None,
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 0.01,
    seed: int = 0,
    root_dir: str | Path | None = None,
    progress: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    **trainer_options: Any,
) -> ShapesBackboneClassifier:
    """Train a fresh linear head on the frozen ``backbone`` with Lightning: the ERM model.

    With ``features`` (:func:`extract_features` of ``train_data``) the head trains on them
    instead of re-running the frozen backbone every epoch; the result is the same model.
    Extra keyword arguments go to ``pl.Trainer`` (e.g. ``logger=CSVLogger(...)``).
    """
    names = list(class_names or getattr(train_data, "class_names", []) or [])
    num_classes = len(names) or int(max(int(y) for _, y in train_data)) + 1  # type: ignore[attr-defined]
    pl.seed_everything(seed, verbose=False)
    model = ShapesBackboneClassifier(
        num_classes, lr=lr, class_names=names or None, backbone=backbone
    )
    generator = torch.Generator().manual_seed(seed)
    source: Dataset[Any] = train_data
    if features is not None:
        source = TensorDataset(features.features, features.labels)
    train_loader = DataLoader(source, batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val_data, batch_size=256) if val_data is not None else None
    options: dict[str, Any] = {
        "max_epochs": epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": root_dir,
        "callbacks": list(callbacks),
        **trainer_options,
    }
    if val_loader is None:
        options.setdefault("limit_val_batches", 0)
    with warnings.catch_warnings():
        # The frozen backbone stays in eval mode on purpose.
        warnings.filterwarnings("ignore", "Found .* module\\(s\\) in eval mode", UserWarning)
        warnings.filterwarnings("ignore", "You defined a `validation_step` but", UserWarning)
        pl.Trainer(**options).fit(model, train_loader, val_loader)
    model.eval()
    return model


__all__ = [
    "CACHE_ENV",
    "CLASSIFIER_FEATURE_LAYER",
    "FEATURE_LAYER",
    "PACKAGED_SEEDS",
    "PRETRAIN_THREADS",
    "BackboneConfig",
    "RenderedDataset",
    "ShapesBackbone",
    "ShapesBackboneClassifier",
    "SplitFeatures",
    "backbone_cache_path",
    "build_packaged_weights",
    "cache_key",
    "dataset_groups",
    "default_cache_dir",
    "extract_features",
    "load_backbone",
    "packaged_weights_dir",
    "pretrain_backbone",
    "pretraining_images",
    "recipe_digest",
    "spurious_splits",
    "train_erm_classifier",
]


def _main(argv: Sequence[str]) -> int:
    if len(argv) < 1 or argv[0] != "build" or not all(a.isdigit() for a in argv[1:]):
        print("usage: python -m lightning_maia.recipes.shapes_backbone build [SEED ...]")
        return 2
    seeds = [int(a) for a in argv[1:]] or list(PACKAGED_SEEDS)
    manifest = build_packaged_weights(seeds)
    print(json.dumps(manifest["files"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
