"""Options of the spurious-feature search and its remedy, and the backends it resolves to.

Small frozen dataclasses that :func:`~lightning_maia.analysis.spurious_search.find_spurious_units`,
:func:`~lightning_maia.analysis.spurious_search.remove_spurious_units` and the
``SpuriousFeatureRemover`` callback take as one value each; LightningCLI configures them as
nested mappings (``budget: {k: 12}``, ``refit: {remedy: select, protocol: cv}``). A bad value
fails at construction with an error that names the field, what is allowed and what came.

>>> Refit(remedy="erase", keep=["core", "unclear"]).keep
('core', 'unclear')
>>> Refit(copies=[3, 0, 1]).copies
(0, 1, 3)
>>> SearchBudget(k=0)
Traceback (most recent call last):
...
lightning_maia.errors.ConfigurationError: `k` can be a positive integer, got 0
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

from lightning_maia.analysis._spurious import REFIT, RefitProtocol
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    REMOVER_ERASE_ENERGY,
    REMOVER_EXEMPLARS_K,
    REMOVER_TOP_UNITS,
)

REMEDIES = ("select", "erase")
#: Verdicts whose units ``select`` may keep.
KEEPABLE = ("core", "unclear")


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchBudget:
    """How much of the model the search looks at."""

    #: Units the L1 regression ranks highest and the agent judges.
    k: int = REMOVER_TOP_UNITS
    #: Dataset exemplars per unit shown to the agent.
    exemplars_k: int = REMOVER_EXEMPLARS_K
    #: Batch size of the passes that read the head's input features.
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("k", "exemplars_k", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)


@dataclass(frozen=True)
class Refit:
    """How the head is refit once its units are judged: on the unbalanced training data, with
    class labels only (no group labels)."""

    #: ``select``: a head on the kept units only (MAIA's remedy); ``erase``: every unit kept,
    #: the subspace of the agent's attribute-only edits projected out.
    remedy: Literal["select", "erase"] = "select"
    #: Verdicts whose units ``select`` keeps: by default the units the agent saw follow the
    #: class with the attribute held fixed, as MAIA kept; ``("core", "unclear")`` keeps every
    #: unit it did not judge spurious.
    keep: tuple[Literal["core", "unclear"], ...] = ("core",)
    #: The refit protocol (standardised features, one strong L2), or ``"cv"``: the L2 penalty
    #: picked by cross-validation on the training features
    #: (:func:`~lightning_maia.analysis._spurious.choose_refit`). Use ``"cv"`` on real data,
    #: where a backbone spreads a shortcut over many units and a strong fixed penalty leans on it.
    protocol: RefitProtocol | Literal["cv"] = REFIT
    #: Share of the edits' feature variance the erased subspace explains (``erase``).
    erase_energy: float = REMOVER_ERASE_ENERGY
    #: Fine-tune the refit head this many epochs on the training features with cross-entropy
    #: (mask and projection fixed); the callback does it after a ``fit_end`` refit only.
    finetune_epochs: int = 0
    #: Counterfactual copies of every training feature row for ``select``: each copy is the
    #: row shifted by the feature change of one edit, drawn at random, that changed only the
    #: candidate attribute in the agent's runs on the judged units
    #: (:func:`~lightning_maia.analysis._spurious.counterfactual_augment`), so the refit head
    #: learns to ignore what is left of the attribute in the kept units. An int: that many
    #: (0: MAIA's plain select); a list, e.g. ``[0, 1, 3]``: the count whose head has the best
    #: balanced accuracy over classes on the validation data (class labels only, never group
    #: labels; ties: fewer), so the validation data must be given.
    copies: int | tuple[int, ...] = 0

    @property
    def copies_grid(self) -> tuple[int, ...]:
        """The counts of copies to try, ascending (one for a fixed count)."""
        return self.copies if isinstance(self.copies, tuple) else (self.copies,)

    def __post_init__(self) -> None:
        if self.remedy not in REMEDIES:
            raise bad_option("remedy", " or ".join(REMEDIES), self.remedy)
        keep = self.keep
        if isinstance(keep, str) or not keep or any(v not in KEEPABLE for v in keep):
            raise bad_option("keep", "verdicts among core and unclear, e.g. ('core',)", keep)
        object.__setattr__(self, "keep", tuple(keep))  # a list from YAML or a user reads the same
        if not isinstance(self.protocol, RefitProtocol) and self.protocol != "cv":
            raise bad_option("protocol", "a RefitProtocol or 'cv'", self.protocol)
        energy = self.erase_energy
        if (
            isinstance(energy, bool)
            or not isinstance(energy, numbers.Real)
            or not 0.0 < float(energy) <= 1.0
        ):
            raise bad_option("erase_energy", "a share in (0, 1]", energy)
        epochs = self.finetune_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise bad_option("finetune_epochs", "a non-negative integer", epochs)
        self._check_copies()

    def _check_copies(self) -> None:
        copies = self.copies
        allowed = "a non-negative integer or a list of them, e.g. [0, 1, 3]"
        counts = [copies] if not isinstance(copies, (list, tuple)) else list(copies)
        if not counts or any(
            isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 for c in counts
        ):
            raise bad_option("copies", allowed, copies)
        if isinstance(copies, (list, tuple)):
            # A list from YAML or a user reads the same; tried in ascending order.
            object.__setattr__(self, "copies", tuple(sorted({int(c) for c in counts})))
        if self.remedy != "select" and any(self.copies_grid):
            raise bad_option("copies", "0 unless remedy is select", copies)


__all__ = ["KEEPABLE", "REMEDIES", "Refit", "SearchBudget"]
