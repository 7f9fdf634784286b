"""UnitInterpreter's own option groups: when it runs, and the exemplar data it reads.

LightningCLI configures them as nested mappings::

    init_args:
      units: ["layer4:*"]
      schedule: {when: validation, every_n_epochs: 2}
      exemplars: {k: 10, class_names: [cat, dog]}

>>> Schedule(when="fit_end").every_n_epochs, Exemplars(k=5).k
(1, 5)
>>> Schedule(every_n_epochs=0)
Traceback (most recent call last):
...
lightning_maia.errors.ConfigurationError: `every_n_epochs` can be a positive integer, got 0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor
from torch.utils.data import Dataset

from lightning_maia.errors import bad_option

WHEN = ("validation", "fit_end")


def check_positive(name: str, value: Any) -> None:
    """A positive integer (never a bool), or a ConfigurationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_option(name, "a positive integer", value)


@dataclass(frozen=True)
class Schedule:
    """When the interpreter runs during a fit (never during sanity checks or ``fast_dev_run``)."""

    #: ``validation``: at the end of validation, every ``every_n_epochs`` epochs;
    #: ``fit_end``: once, when fitting ends.
    when: Literal["validation", "fit_end"] = "validation"
    #: Run on every n-th validation (with ``when="validation"``).
    every_n_epochs: int = 1

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise bad_option("when", " or ".join(WHEN), self.when)
        check_positive("every_n_epochs", self.every_n_epochs)


@dataclass(frozen=True)
class Exemplars:
    """The data the units' exemplars come from, and how the model reads it."""

    #: A map-style dataset of display images (or model inputs that declare ``denormalize``);
    #: None: the validation dataloader's dataset.
    dataset: Dataset[Any] | None = None
    #: Exemplars kept per unit (the top-k activating images).
    k: int = 15
    #: Names of the output classes (for ``output:NAME`` specs and the agent's task).
    class_names: list[str] | None = None
    #: Maps display images in [0, 1] to model inputs (e.g. normalisation); None: as they are.
    preprocess: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        check_positive("k", self.k)
        if self.class_names is not None and (
            isinstance(self.class_names, str)
            or not all(isinstance(name, str) for name in self.class_names)
        ):
            raise bad_option("class_names", "a list of class names", self.class_names)


__all__ = ["Exemplars", "Schedule"]
