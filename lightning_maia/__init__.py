"""lightning_maia: MAIA interpretability agents inside PyTorch Lightning.

**Public and private modules.** Users import from this ``__init__`` and from each subpackage's
``__init__`` (each with an exact, sorted ``__all__``, tested in ``tests/test_public_api.py``).
A module is *public*, and keeps a plain name, when users reach it by its own path:

- README.md or benchmarks/README.md names its dotted path (an example's import, a ``python -m``
  run, or the text), e.g. ``lightning_maia.subject``, ``lightning_maia.agents.scientist``;
- a shipped config (``recipes/configs/*.yaml``) names a class in it as ``class_path``, e.g.
  ``lightning_maia.callbacks.unit_interpreter``, ``lightning_maia.recipes.lightning_modules``;
- a ``pyproject.toml`` entry point runs it (``lightning_maia.cli``);
- DESIGN.md names it: ``units``, ``recording``, ``exemplars``, ``subject``, ``cli`` and the
  callbacks ``unit_interpreter``, ``spurious_feature_remover``, ``misclassification_flagger``;
- it is the exception tree, ``errors`` (users catch its classes, not all of which a package
  ``__init__`` re-exports);
- it is a package's own surface: an ``__init__.py`` or a ``__main__.py``.

Every other module is implementation behind its package's ``__init__`` and its name starts with
``_`` (``world/_datasets.py``, ``agents/_sandbox_worker.py``): its names are imported from the
package (``from lightning_maia.world import SpuriousShapes``), and it may change without notice.
``tests/test_module_layout.py`` lists the public modules and fails on a new plain-named one.

>>> import lightning_maia
>>> lightning_maia.__all__ == sorted(lightning_maia.__all__)
True
"""

from lightning_maia._sketch import QuantileSketch
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
