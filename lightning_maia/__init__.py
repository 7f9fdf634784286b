"""lightning_maia: MAIA interpretability agents inside PyTorch Lightning.

>>> import lightning_maia
>>> lightning_maia.__all__ == sorted(lightning_maia.__all__)
True
"""

from lightning_maia.errors import (
    CacheError,
    ConfigurationError,
    GrammarError,
    MaiaError,
    MissingDependencyError,
    UnitIndexError,
    UnitSpecError,
)
from lightning_maia.exemplars import (
    ExemplarResult,
    LayerExemplars,
    UnitExemplars,
    compute_exemplars,
    mask_images,
)
from lightning_maia.recording import ActivationRecorder, TokenLayout, record_units
from lightning_maia.sketch import QuantileSketch
from lightning_maia.units import Unit, UnitSelection, parse_unit_spec, resolve_units

__version__ = "0.1.0"

__all__ = [
    "ActivationRecorder",
    "CacheError",
    "ConfigurationError",
    "ExemplarResult",
    "GrammarError",
    "LayerExemplars",
    "MaiaError",
    "MissingDependencyError",
    "QuantileSketch",
    "TokenLayout",
    "Unit",
    "UnitExemplars",
    "UnitIndexError",
    "UnitSelection",
    "UnitSpecError",
    "compute_exemplars",
    "mask_images",
    "parse_unit_spec",
    "record_units",
    "resolve_units",
]
