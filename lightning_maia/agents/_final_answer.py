"""The final answer every agent ends with: one schema for tool calls, code mode and parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.errors import ToolError

LOGICS = ("single", "or", "and")


@dataclass
class FinalAnswer:
    """What the agent concluded."""

    label: str
    description: str
    concepts: tuple[str, ...] = ()
    logic: str = "single"
    verdict: str | None = None
    subgroups: list[dict[str, Any]] = field(default_factory=list)


def final_answer_schema(task: TaskSpec) -> dict[str, Any]:
    """The ``final_answer`` function offered to a tool-calling model for ``task``."""
    properties: dict[str, Any] = {
        "label": {"type": "string", "description": "a short label, a few words"},
        "description": {"type": "string", "description": "one sentence on what the unit detects"},
        "concepts": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the concepts the description rests on",
        },
        "logic": {
            "type": "string",
            "enum": list(LOGICS),
            "description": "single concept, either of two (or), or both together (and)",
        },
    }
    required = ["label", "description"]
    if task.verdicts:
        properties["verdict"] = {"type": "string", "enum": list(task.verdicts)}
        required.append("verdict")
    if task.name == "class_bias":
        properties["subgroups"] = {
            "type": "array",
            "description": "the low-scoring subgroups with their measured mean score",
            "items": {
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "mean_score": {"type": "number"},
                },
                "required": ["description"],
            },
        }
    return {
        "type": "function",
        "function": {
            "name": "final_answer",
            "description": "Give the final answer and end the study.",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def parse_final_answer(arguments: Mapping[str, Any], task: TaskSpec) -> FinalAnswer:
    """Check a final answer; a mistake raises ToolError (shown to the model to fix)."""
    if not isinstance(arguments, Mapping):
        raise ToolError(f"final_answer: arguments must be an object, got {arguments!r}")
    label, description = arguments.get("label"), arguments.get("description")
    if not isinstance(label, str) or not label.strip():
        raise ToolError("final_answer: `label` must be a non-empty string")
    if not isinstance(description, str):
        raise ToolError("final_answer: `description` must be a string")
    concepts = arguments.get("concepts", [])
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise ToolError("final_answer: `concepts` must be a list of strings")
    logic = arguments.get("logic", "single")
    if logic not in LOGICS:
        raise ToolError(f"final_answer: `logic` must be one of {', '.join(LOGICS)}, got {logic!r}")
    verdict = arguments.get("verdict")
    if task.verdicts and verdict not in task.verdicts:
        raise ToolError(
            f"final_answer: `verdict` must be one of {', '.join(task.verdicts)}, got {verdict!r}"
        )
    subgroups = arguments.get("subgroups", [])
    if not isinstance(subgroups, list) or not all(isinstance(s, Mapping) for s in subgroups):
        raise ToolError("final_answer: `subgroups` must be a list of objects")
    return FinalAnswer(
        label=label.strip(),
        description=description.strip(),
        concepts=tuple(concepts),
        logic=logic,
        verdict=verdict if task.verdicts else None,
        subgroups=[dict(s) for s in subgroups],
    )
