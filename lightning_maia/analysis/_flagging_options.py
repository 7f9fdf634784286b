"""The option groups of :func:`~lightning_maia.analysis.flagging.flag` and the
:class:`~lightning_maia.callbacks.misclassification_flagger.MisclassificationFlagger`.

Each group is a small frozen dataclass of the arguments that belong together, checked when it
is built (the error names the argument, what is allowed and what came). LightningCLI configures
them as nested mappings::

    init_args:
      spurious: {feature_layer: backbone.pool, max_checked_units: 8}
      subgroups: {concepts: describer, images_per_value: 8}
      thresholds: {max_flagged_rate: 0.5, max_subgroups: 4}

>>> SpuriousEvidence(spurious_units=[3, 1, 3]).spurious_units
(1, 3)
>>> Thresholds(flag_threshold=1.5)
Traceback (most recent call last):
...
lightning_maia.errors.ConfigurationError: `flag_threshold` can be a probability in [0, 1], got 1.5
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    FLAG_IMAGES_PER_VALUE,
    FLAG_MAX_CHECKED_UNITS,
    FLAG_THRESHOLD,
    FLAG_TOP_N,
)

#: How inputs are matched to the subgroups the class-bias audit found.
CONCEPTS = ("auto", "metadata", "describer", "none")
Concepts = Literal["auto", "metadata", "describer", "none"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise bad_option(name, "a positive integer", value)
    return int(value)


def _rate(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_option(name, what, value)
    if not 0.0 <= float(value) <= 1.0:
        raise bad_option(name, what, value)
    return float(value)


@dataclass(frozen=True)
class SpuriousEvidence:
    """Which penultimate units count as spurious: the reliance evidence of each input.

    The first that applies wins: ``spurious_units``; the verdicts of a
    :class:`~lightning_maia.callbacks.spurious_feature_remover.SpuriousFeatureRemover` among
    the trainer's callbacks (or ``remover_units`` of :func:`flag`); the flagger's own
    ``spurious_check`` of the head's most influential units.
    """

    #: Unit indices judged spurious (overrides the remover and the own check); None: not given.
    spurious_units: Sequence[int] | None = None
    #: Run the own ``spurious_check`` when nothing else gives verdicts.
    spurious_check: bool = True
    #: The module whose output is the head's input, for the own check (e.g.
    #: ``backbone.pool``); None skips that check.
    feature_layer: str | None = None
    #: Units (most influential first) the own check examines.
    max_checked_units: int = FLAG_MAX_CHECKED_UNITS

    def __post_init__(self) -> None:
        units = self.spurious_units
        if units is not None:
            if isinstance(units, (str, bytes, numbers.Number)) or not all(
                isinstance(u, numbers.Integral) and not isinstance(u, bool) for u in units
            ):
                raise bad_option("spurious_units", "a list of unit indices or None", units)
            object.__setattr__(self, "spurious_units", tuple(sorted({int(u) for u in units})))
        if not isinstance(self.spurious_check, bool):
            raise bad_option("spurious_check", "True or False", self.spurious_check)
        if self.feature_layer is not None and not isinstance(self.feature_layer, str):
            raise bad_option("feature_layer", "a module path or None", self.feature_layer)
        object.__setattr__(
            self, "max_checked_units", _positive_int("max_checked_units", self.max_checked_units)
        )

    @property
    def runs_own_check(self) -> bool:
        """Whether the own ``spurious_check`` can run (when nothing else gives verdicts)."""
        return self.spurious_units is None and self.spurious_check and bool(self.feature_layer)


@dataclass(frozen=True)
class SubgroupAudit:
    """The class-bias audit of the class logits, and how inputs are matched to its subgroups.

    An input belongs to a subgroup the audit found when the model *predicts* the subgroup's
    class and the input shows the subgroup's attribute value (``background=water``): the true
    class never enters, and concepts of the class's own attribute (``shape=...``) are ignored,
    so the evidence is what an audit can observe at test time.
    """

    #: Run the class-bias audit (False: no subgroup evidence).
    class_bias: bool = True
    #: The classes audited (default: all).
    audit_classes: Sequence[str] | None = None
    #: Images the offline scientist scores per attribute value.
    images_per_value: int = FLAG_IMAGES_PER_VALUE
    #: Where the attribute values of each input come from: ``describer`` (the describer's
    #: concepts of each image), ``metadata`` (the procedural scene or attribute columns behind
    #: each item, as a perfect describer would read them), ``auto`` (metadata where the data
    #: has it, else the describer) or ``none``.
    concepts: Concepts = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.class_bias, bool):
            raise bad_option("class_bias", "True or False", self.class_bias)
        if self.audit_classes is not None:
            if isinstance(self.audit_classes, str):
                raise bad_option(
                    "audit_classes", "a list of class names or None", self.audit_classes
                )
            object.__setattr__(self, "audit_classes", tuple(str(c) for c in self.audit_classes))
        object.__setattr__(
            self, "images_per_value", _positive_int("images_per_value", self.images_per_value)
        )
        if self.concepts not in CONCEPTS:
            raise bad_option("concepts", ", ".join(CONCEPTS), self.concepts)


@dataclass(frozen=True)
class Thresholds:
    """What is flagged, what is shown, and the CI gate's limits."""

    #: An input is flagged when its MAIA risk (a probability of error) is at least this.
    flag_threshold: float = FLAG_THRESHOLD
    #: Flagged inputs logged in the table, as thumbnails and in the report.
    top_n: int = FLAG_TOP_N
    #: The gate fails when more than this share of inputs is flagged (None: not checked).
    max_flagged_rate: float | None = None
    #: The gate fails when the audit finds more subgroups than this (None: not checked).
    max_subgroups: int | None = None

    def __post_init__(self) -> None:
        threshold = _rate("flag_threshold", self.flag_threshold, "a probability in [0, 1]")
        object.__setattr__(self, "flag_threshold", threshold)
        object.__setattr__(self, "top_n", _positive_int("top_n", self.top_n))
        if self.max_flagged_rate is not None:
            rate = _rate("max_flagged_rate", self.max_flagged_rate, "a rate in [0, 1] or None")
            object.__setattr__(self, "max_flagged_rate", rate)
        count = self.max_subgroups
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
                raise bad_option("max_subgroups", "a non-negative integer or None", count)
            object.__setattr__(self, "max_subgroups", int(count))


__all__ = ["CONCEPTS", "SpuriousEvidence", "SubgroupAudit", "Thresholds"]
