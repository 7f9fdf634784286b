"""End-to-end recipes: importable settings that benchmarks, demos and users build on.

The pretrained shapes backbone and its classifier (:mod:`.shapes_backbone`), LightningCLI-ready
modules for the YAML configs (:mod:`.lightning_modules`, :mod:`.tinted_digits`), the audit
(:func:`run_audit`) and the demo (:func:`run_demo`), the backend registry the configs name
backends through, and loading a user's model (:func:`load_model`)."""

from lightning_maia.recipes._audit import (
    AuditOptions,
    AuditOutcome,
    run_audit,
)
from lightning_maia.recipes._backend_registry import (
    backend_names,
    build_backend,
    describe_backends,
    register_backend,
)
from lightning_maia.recipes._demo import run_demo
from lightning_maia.recipes._loading import (
    PlainModule,
    load_from_config,
    load_model,
    load_preprocess,
    load_weights,
)
from lightning_maia.recipes.lightning_modules import (
    ImageFolderDataModule,
    SpuriousShapesClassifier,
    SpuriousShapesDataModule,
)
from lightning_maia.recipes.shapes_backbone import (
    BackboneConfig,
    RenderedDataset,
    ShapesBackbone,
    ShapesBackboneClassifier,
    SplitFeatures,
    extract_features,
    load_backbone,
    pretrain_backbone,
    spurious_splits,
    train_erm_classifier,
)
from lightning_maia.recipes.tinted_digits import (
    DigitsBackbone,
    TintedDigitsClassifier,
    TintedDigitsDataModule,
)

__all__ = [
    "AuditOptions",
    "AuditOutcome",
    "BackboneConfig",
    "DigitsBackbone",
    "ImageFolderDataModule",
    "PlainModule",
    "RenderedDataset",
    "ShapesBackbone",
    "ShapesBackboneClassifier",
    "SplitFeatures",
    "SpuriousShapesClassifier",
    "SpuriousShapesDataModule",
    "TintedDigitsClassifier",
    "TintedDigitsDataModule",
    "backend_names",
    "build_backend",
    "describe_backends",
    "extract_features",
    "load_backbone",
    "load_from_config",
    "load_model",
    "load_preprocess",
    "load_weights",
    "pretrain_backbone",
    "register_backend",
    "run_audit",
    "run_demo",
    "spurious_splits",
    "train_erm_classifier",
]
