"""Agents that study units through the tools: the offline scientist and the VLM agent.

:class:`ScientistAgent` needs no model: it ranks concepts in the exemplars, tests hypotheses by
generating and editing images through an :class:`ExperimentDesigner`, and reports a
:class:`UnitReport`. :class:`VLMAgent` lets a vision-language model call the same tools, in JSON
tool calls or in code run by the restricted interpreter (:func:`run_program`).
"""

from lightning_maia.agents._final_answer import FinalAnswer, final_answer_schema, parse_final_answer
from lightning_maia.agents._records import Step, ToolCallRecord, UnitReport, reports_to_dataframe
from lightning_maia.agents._response_cache import CachedChat
from lightning_maia.agents._sandbox import (
    ProgramResult,
    SandboxLimitExceeded,
    SandboxViolation,
    run_program,
)
from lightning_maia.agents._scientist_design import ExperimentDesigner, ProceduralDesigner
from lightning_maia.agents._scientist_hypotheses import Hypothesis, HypothesisFit, Observation
from lightning_maia.agents._scientist_session import PolicyError, Session
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import (
    DESCRIBERS,
    DESIGNERS,
    ExperimentSetup,
    build_describer,
    check_experiment_setup,
    experiment_setup,
)
from lightning_maia.agents.tasks import TASKS, VERDICTS, Agent, TaskSpec
from lightning_maia.agents.vlm_agent import VLMAgent

__all__ = [
    "DESCRIBERS",
    "DESIGNERS",
    "TASKS",
    "VERDICTS",
    "Agent",
    "CachedChat",
    "ExperimentDesigner",
    "ExperimentSetup",
    "FinalAnswer",
    "Hypothesis",
    "HypothesisFit",
    "Observation",
    "PolicyError",
    "ProceduralDesigner",
    "ProgramResult",
    "SandboxLimitExceeded",
    "SandboxViolation",
    "ScientistAgent",
    "Session",
    "Step",
    "TaskSpec",
    "ToolCallRecord",
    "UnitReport",
    "VLMAgent",
    "build_describer",
    "check_experiment_setup",
    "experiment_setup",
    "final_answer_schema",
    "parse_final_answer",
    "reports_to_dataframe",
    "run_program",
]
