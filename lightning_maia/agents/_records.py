"""What an agent run leaves behind: every step, and one UnitReport per unit and task.

A report is one row of a DataFrame (:meth:`UnitReport.to_row`); its images stay in the toolbox
and are written as files beside the logs by the reporting layer, never into the row. Reports
round-trip through JSON so that a report can be re-rendered from saved results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from lightning_maia.tools._results import Experiment
from lightning_maia.tools.backends._base import Usage

#: ``ok``: the run finished (a description, a verdict); ``undescribed``: no run was possible
#: (e.g. no describer can read the images), only exemplars were logged; ``failed``: the run broke.
STATUSES = ("ok", "undescribed", "failed")
#: How the concepts of a description combine.
LOGIC = ("single", "or", "and", "unknown")


@dataclass
class ToolCallRecord:
    """One tool call of a step."""

    tool: str
    arguments: dict[str, Any]
    #: The text the agent read back.
    observation: str
    #: Images the call made or referred to.
    image_ids: list[str] = field(default_factory=list)
    #: Set when the call failed; the agent read this message instead.
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Step:
    """One round of the agent: what it asked for, the calls it made, what came back."""

    index: int
    #: The agent's request: its reasoning, a program (code mode) or the policy's next move.
    request: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    #: A model-caused error of the round (unparseable reply, refused program), shown to it.
    error: str | None = None
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)


@dataclass
class UnitReport:
    """The outcome of one agent run on one unit and task."""

    unit: str
    task: str
    agent: str
    #: A short label, e.g. "red stars".
    label: str = ""
    #: The description in a sentence or two.
    description: str = ""
    #: Concepts of the description (``attribute=value`` or vocabulary terms).
    concepts: tuple[str, ...] = ()
    #: How the concepts combine: single, or, and, unknown.
    logic: str = "unknown"
    #: The task's verdict where it asks for one (``core`` / ``spurious`` / ``unclear``, ...).
    verdict: str | None = None
    #: A score where one was computed (e.g. the predictive AUROC of the description).
    score: float | None = None
    #: Task-specific findings (e.g. the low-scoring subgroups of a class-bias audit).
    details: dict[str, Any] = field(default_factory=dict)
    evidence: list[Experiment] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0
    status: str = "ok"
    failure_reason: str | None = None
    #: How many images the run made or measured.
    images: int = 0

    @property
    def rounds(self) -> int:
        return len(self.steps)

    @property
    def ok(self) -> bool:
        """The run finished with a real description or verdict."""
        return self.status == "ok"

    @property
    def failed_run(self) -> bool:
        return self.status == "failed"

    @classmethod
    def undescribed(
        cls, unit: str, task: str, agent: str, reason: str, **fields: Any
    ) -> UnitReport:
        """A placeholder for a unit no run described; ``reason`` says why (never counted as a
        description, never compared for drift)."""
        return cls(
            unit=unit, task=task, agent=agent, status="undescribed", failure_reason=reason, **fields
        )

    @classmethod
    def failed(cls, unit: str, task: str, agent: str, reason: str, **fields: Any) -> UnitReport:
        """A failed report: the run could not finish; ``reason`` says why."""
        return cls(
            unit=unit, task=task, agent=agent, status="failed", failure_reason=reason, **fields
        )

    def to_row(self) -> dict[str, Any]:
        """One flat row: the report without its steps and images."""
        return {
            "unit": self.unit,
            "task": self.task,
            "agent": self.agent,
            "label": self.label,
            "description": self.description,
            "concepts": "; ".join(self.concepts),
            "logic": self.logic,
            "verdict": self.verdict,
            "score": self.score,
            "rounds": self.rounds,
            "experiments": len(self.evidence),
            "images": self.images,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cost_usd": self.usage.cost_usd,
            "seconds": self.seconds,
            "status": self.status,
            "failure_reason": self.failure_reason,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitReport:
        data = dict(data)
        data["concepts"] = tuple(data.get("concepts", ()))
        data["usage"] = Usage(**data.get("usage", {}))
        data["evidence"] = [Experiment(**e) for e in data.get("evidence", [])]
        data["steps"] = [
            Step(
                **{
                    **s,
                    "usage": Usage(**s.get("usage", {})),
                    "tool_calls": [ToolCallRecord(**c) for c in s.get("tool_calls", [])],
                }
            )
            for s in data.get("steps", [])
        ]
        return cls(**data)


def reports_to_dataframe(reports: Sequence[UnitReport]) -> pd.DataFrame:
    """One row per report (see :meth:`UnitReport.to_row`).

    >>> reports_to_dataframe([UnitReport("layer4:1", "describe_unit", "scientist", label="stars")])[
    ...     ["unit", "label", "status"]].values.tolist()
    [['layer4:1', 'stars', 'ok']]
    """
    columns = list(UnitReport("", "", "").to_row())
    return pd.DataFrame([report.to_row() for report in reports], columns=columns)
