"""The tasks an agent answers, each with its prompt kept as package data (``prompts/*.md``).

- ``describe_unit``: MAIA's neuron description — a label, a description, and the concepts,
  joined by OR where the unit is polysemantic (or AND where it needs both).
- ``spurious_check``: is the unit selective for one class, and robust to the named candidate
  spurious attributes? Verdict ``core``, ``spurious`` or ``unclear``.
- ``class_bias``: for a class-logit unit, which subgroups of the class get low scores?

>>> task = TaskSpec("spurious_check", class_names=("circle", "star"),
...                 candidate_attributes=("background",))
>>> "background" in task.prompt()
True
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from lightning_maia.agents._records import UnitReport
from lightning_maia.errors import bad_option
from lightning_maia.tools.toolbox import Toolbox

TASKS: tuple[str, ...] = ("describe_unit", "spurious_check", "class_bias")
VERDICTS: dict[str, tuple[str, ...]] = {
    "spurious_check": ("core", "spurious", "unclear"),
    "class_bias": ("biased", "unbiased", "unclear"),
}


def load_prompt(name: str) -> str:
    """The text of ``prompts/NAME.md`` shipped with the package."""
    return resources.files("lightning_maia.agents").joinpath("prompts", f"{name}.md").read_text()


@dataclass(frozen=True)
class TaskSpec:
    """A task and its context."""

    name: str = "describe_unit"
    class_names: tuple[str, ...] = ()
    #: For ``class_bias``: the class whose logit is the unit.
    target_class: str | None = None
    #: For ``spurious_check``: attributes that may be spurious, e.g. ("background",).
    candidate_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise bad_option("task", ", ".join(TASKS), self.name)
        if self.name == "class_bias" and self.target_class is None:
            raise bad_option("target_class", "the class whose logit is audited", None)

    @property
    def verdicts(self) -> tuple[str, ...]:
        return VERDICTS.get(self.name, ())

    def prompt(self) -> str:
        """The task prompt with its context filled in."""
        return load_prompt(self.name).format(
            class_names=", ".join(self.class_names) or "(not given)",
            target_class=self.target_class or "(not given)",
            candidate_attributes=", ".join(self.candidate_attributes) or "(find them yourself)",
            verdicts=", ".join(self.verdicts),
        )


class Agent(Protocol):
    """Anything that runs a task on a toolbox's unit and returns a report."""

    name: str

    def run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport:
        """Run ``task`` on the toolbox's unit; never raises for model-caused failures."""
        ...
