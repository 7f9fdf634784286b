"""Lightning callbacks that run the interpretability agent where people train.

:class:`UnitInterpreter` describes units, :class:`SpuriousFeatureRemover` finds spurious units
and retrains the head without them, :class:`MisclassificationFlagger` flags inputs likely to be
misclassified. :class:`Backends` and :class:`Output` group the options all three share; the
other groups belong to one callback each (:class:`Schedule`, :class:`Exemplars` for the
interpreter; :class:`SearchBudget`, :class:`Refit` for the remover; :class:`SpuriousEvidence`,
:class:`SubgroupAudit`, :class:`Thresholds` for the flagger). The work itself lives in
:mod:`lightning_maia.analysis`, callable without a Trainer.
"""

from lightning_maia._options import Backends, Output
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit, Thresholds
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.analysis.flagging import FlaggingResult, GateResult
from lightning_maia.callbacks._interpreter_options import Exemplars, Schedule
from lightning_maia.callbacks.misclassification_flagger import MisclassificationFlagger
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import UnitInterpreter

__all__ = [
    "Backends",
    "Exemplars",
    "FlaggingResult",
    "GateResult",
    "MisclassificationFlagger",
    "Output",
    "Refit",
    "Schedule",
    "SearchBudget",
    "SpuriousEvidence",
    "SpuriousFeatureRemover",
    "SubgroupAudit",
    "Thresholds",
    "UnitInterpreter",
]
