"""Lightning callbacks that run the interpretability agent where people train.

:class:`UnitInterpreter` describes units, :class:`SpuriousFeatureRemover` finds spurious units
and retrains the head without them, :class:`MisclassificationFlagger` flags inputs likely to be
misclassified; :class:`Backends` and :class:`Output` group the options they share.
"""

from lightning_maia.callbacks.misclassification_flagger import (
    FlaggingResult,
    GateResult,
    MisclassificationFlagger,
)
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import UnitInterpreter
from lightning_maia.options import Backends, Output

__all__ = [
    "Backends",
    "FlaggingResult",
    "GateResult",
    "MisclassificationFlagger",
    "Output",
    "SpuriousFeatureRemover",
    "UnitInterpreter",
]
