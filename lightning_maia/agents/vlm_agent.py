"""The VLM agent: an OpenAI-compatible vision-language model runs MAIA's experiments.

Two modes over the same toolbox:

- ``tools`` (default): the tools are offered as JSON-schema functions, images come back as data
  URLs, and the model ends with a ``final_answer`` call of a fixed schema.
- ``code``: the model writes MAIA-style programs, run by the restricted interpreter of
  :mod:`lightning_maia.agents.sandbox` (never ``exec``).

Every run is bounded: at most ``max_rounds`` rounds, a token and a cost budget, the client's
per-call timeout and retries. Mistakes the model makes (unparseable replies, unknown tools, bad
arguments, refused programs) go back to it as observations; running out of rounds or budget
forces a final answer; a backend failure gives a failed report with the reason, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_maia.agents.final_answer import (
    FinalAnswer,
    final_answer_schema,
    parse_final_answer,
)
from lightning_maia.agents.records import Step, ToolCallRecord, UnitReport
from lightning_maia.agents.response_cache import CachedChat
from lightning_maia.agents.sandbox import run_program
from lightning_maia.agents.tasks import TaskSpec, load_prompt
from lightning_maia.errors import BackendError, MaiaError, ToolError, bad_option
from lightning_maia.exemplars import mask_images
from lightning_maia.tools.backends.base import Usage
from lightning_maia.tools.backends.vlm import (
    ChatMessage,
    ChatResult,
    VLMClient,
    image_part,
    system_message,
    tool_message,
)
from lightning_maia.tools.results import (
    EditPair,
    ExemplarImage,
    Experiment,
    GeneratedImage,
    ImageDescription,
    Summary,
    UnitCall,
    observation,
)
from lightning_maia.tools.toolbox import TOOL_NAMES, Toolbox

MODES = ("tools", "code")
_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
_RESULT_TYPES = (
    ExemplarImage,
    GeneratedImage,
    EditPair,
    UnitCall,
    ImageDescription,
    Summary,
    Experiment,
)


class VLMAgent:
    """MAIA with a vision-language model behind an OpenAI-compatible endpoint.

    Args:
        client: the chat client (model, endpoint, key, timeout, retries, prices).
        mode: ``tools`` (function calling) or ``code`` (programs in a restricted interpreter).
        max_rounds: model requests per unit before a final answer is forced.
        max_total_tokens, max_cost_usd: budgets per unit; reaching one forces a final answer.
        images_per_message: the most images shown to the model after one round.
        image_detail: OpenAI's resolution hint for images (``low`` keeps requests cheap).
        cache_dir: an on-disk reply cache keyed by the full request (reruns cost nothing).
        program_max_steps, program_timeout_s: limits of each program in code mode.
    """

    def __init__(
        self,
        client: VLMClient,
        *,
        mode: str = "tools",
        max_rounds: int = 12,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
        images_per_message: int = 8,
        image_detail: str | None = "low",
        cache_dir: str | Path | None = None,
        program_max_steps: int = 20_000,
        program_timeout_s: float = 60.0,
    ) -> None:
        if mode not in MODES:
            raise bad_option("mode", " or ".join(MODES), mode)
        if max_rounds < 1:
            raise bad_option("max_rounds", "a positive integer", max_rounds)
        if images_per_message < 0:
            raise bad_option("images_per_message", "an integer >= 0", images_per_message)
        self.client = client
        self.mode = mode
        self.name = f"vlm-{mode}"
        self.max_rounds = max_rounds
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.images_per_message = images_per_message
        self.image_detail = image_detail
        self.chat = CachedChat(client, cache_dir)
        self.program_max_steps = program_max_steps
        self.program_timeout_s = program_timeout_s

    def run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport:
        """Study the toolbox's unit; a backend failure gives a failed report."""
        episode = _Episode(self, toolbox, task)
        try:
            return episode.run()
        except BackendError as error:
            return episode.report(failure=f"VLM backend failed: {error}")

    async def arun_many(
        self, toolboxes: Sequence[Toolbox], task: TaskSpec, concurrency: int = 4
    ) -> list[UnitReport]:
        """Study many units, at most ``concurrency`` at a time; reports in input order."""
        if concurrency < 1:
            raise bad_option("concurrency", "a positive integer", concurrency)
        limit = asyncio.Semaphore(concurrency)

        async def one(toolbox: Toolbox) -> UnitReport:
            async with limit:
                return await asyncio.to_thread(self.run, toolbox, task)

        return list(await asyncio.gather(*(one(t) for t in toolboxes)))

    def run_many(
        self, toolboxes: Sequence[Toolbox], task: TaskSpec, concurrency: int = 4
    ) -> list[UnitReport]:
        """Blocking form of :meth:`arun_many`."""
        return asyncio.run(self.arun_many(toolboxes, task, concurrency))


@dataclass
class _Episode:
    """One unit, one task: the conversation and its record."""

    agent: VLMAgent
    toolbox: Toolbox
    task: TaskSpec
    messages: list[ChatMessage] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    answer: FinalAnswer | None = None
    started: float = field(default_factory=time.perf_counter)
    variables: dict[str, Any] = field(default_factory=dict)
    _shown: int = 0

    def run(self) -> UnitReport:
        self.messages = [system_message(self._system_prompt()), self._opening()]
        for _ in range(self.agent.max_rounds):
            if self._over_budget():
                break
            self._round(force=False)
            if self.answer is not None:
                return self.report()
        self._round(force=True)
        if self.answer is not None:
            return self.report()
        return self.report(failure=f"no final answer after {len(self.steps)} rounds")

    # -- prompts ---------------------------------------------------------------------------

    def _system_prompt(self) -> str:
        rounds = self.agent.max_rounds
        if self.agent.mode == "tools":
            mode = load_prompt("tool_mode").format(max_rounds=rounds)
        else:
            signatures = "\n\n".join(d.python_signature() for d in self.toolbox.definitions())
            verdict_note = (
                f" verdict is one of {', '.join(self.task.verdicts)}." if self.task.verdicts else ""
            )
            mode = load_prompt("code_mode").format(
                signatures=signatures, max_rounds=rounds, verdict_note=verdict_note
            )
        return f"{self.task.prompt()}\n\n{mode}"

    def _opening(self) -> ChatMessage:
        return {
            "role": "user",
            "content": f"The unit under study is {self.toolbox.unit.spec}. "
            "Begin with its dataset exemplars.",
        }

    def _over_budget(self) -> bool:
        limit_tokens, limit_cost = self.agent.max_total_tokens, self.agent.max_cost_usd
        return (limit_tokens is not None and self.usage.total_tokens >= limit_tokens) or (
            limit_cost is not None and self.usage.cost_usd >= limit_cost
        )

    # -- one round -------------------------------------------------------------------------

    def _round(self, force: bool) -> None:
        tic = time.perf_counter()
        tools: list[dict[str, Any]] | None = None
        choice: dict[str, Any] | None = None
        if self.agent.mode == "tools":
            tools = [d.json_schema() for d in self.toolbox.definitions()]
            tools.append(final_answer_schema(self.task))
            if force:
                tools = [final_answer_schema(self.task)]
                choice = {"type": "function", "function": {"name": "final_answer"}}
        if force:
            self.messages.append(
                {
                    "role": "user",
                    "content": "You are out of rounds or budget: give your final "
                    "answer now"
                    + (
                        " with final_answer."
                        if self.agent.mode == "tools"
                        else " by calling final_answer(...) in one program."
                    ),
                }
            )
        result, cached = self.agent.chat.chat(self.messages, tools, choice)
        step_usage = Usage() if cached else result.usage
        self.usage.add(step_usage)
        step = Step(index=len(self.steps), request=_request_text(result), usage=step_usage)
        self.steps.append(step)
        self.messages.append(result.to_message())
        shown_before = len(self.toolbox.images)
        if self.agent.mode == "tools":
            self._tool_round(result, step)
        else:
            self._code_round(result, step)
        self._show_new_images(shown_before)
        step.seconds = time.perf_counter() - tic

    def _tool_round(self, result: ChatResult, step: Step) -> None:
        if not result.tool_calls:
            step.error = "the reply called no tool"
            self.messages.append(
                {"role": "user", "content": "Reply with tool calls; to finish, call final_answer."}
            )
            return
        for call in result.tool_calls:
            tic = time.perf_counter()
            record = ToolCallRecord(tool=call.name, arguments={}, observation="")
            try:
                arguments = json.loads(call.arguments or "{}")
                record.arguments = arguments if isinstance(arguments, dict) else {}
                if call.name == "final_answer":
                    self.answer = parse_final_answer(arguments, self.task)
                    record.observation = "final answer recorded"
                else:
                    before = len(self.toolbox.images)
                    outcome = self.toolbox.call(call.name, arguments)
                    record.observation = observation(outcome)
                    record.image_ids = [s.id for s in list(self.toolbox.images)[before:]]
            except json.JSONDecodeError as error:
                record.error = f"arguments are not valid JSON ({error.msg}); send a JSON object"
            except (ToolError, BackendError) as error:
                record.error = str(error)
            record.seconds = time.perf_counter() - tic
            step.tool_calls.append(record)
            content = record.observation if record.error is None else f"error: {record.error}"
            self.messages.append(tool_message(call.id, content))

    def _code_round(self, result: ChatResult, step: Step) -> None:
        match = _CODE_BLOCK.search(result.text or "")
        if match is None:
            step.error = "the reply held no ```python code block"
            self.messages.append(
                {"role": "user", "content": "Reply with one program in a ```python code block."}
            )
            return
        functions = {name: self._recorded(name, step) for name in TOOL_NAMES}
        functions["final_answer"] = self._code_final_answer
        outcome = run_program(
            match.group(1),
            functions,
            allowed_types=_RESULT_TYPES,
            max_steps=self.agent.program_max_steps,
            timeout_s=self.agent.program_timeout_s,
            variables=self.variables,
        )
        self.variables = outcome.variables
        redact = self.agent.client.redactor.text
        output = redact(outcome.output)
        step.error = None if outcome.error is None else redact(outcome.error)
        text = f"Program output:\n{output or '(no output)'}"
        if step.error:
            text += f"\nError: {step.error}"
        self.messages.append({"role": "user", "content": text})

    def _code_final_answer(
        self,
        label: str,
        description: str,
        concepts: list[str] | None = None,
        logic: str = "single",
        verdict: str | None = None,
        subgroups: list[dict[str, Any]] | None = None,
    ) -> None:
        arguments: dict[str, Any] = {
            "label": label,
            "description": description,
            "concepts": list(concepts or []),
            "logic": logic,
            "subgroups": list(subgroups or []),
        }
        if verdict is not None:
            arguments["verdict"] = verdict
        # A program can assemble the key from pieces: redact what it computed.
        self.answer = parse_final_answer(self.agent.client.redactor.value(arguments), self.task)

    def _recorded(self, name: str, step: Step) -> Callable[..., Any]:
        method = getattr(self.toolbox, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            redactor = self.agent.client.redactor
            args, kwargs = redactor.value(args), redactor.value(kwargs)
            tic = time.perf_counter()
            before = len(self.toolbox.images)
            record = ToolCallRecord(
                tool=name,
                arguments={**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs},
                observation="",
            )
            step.tool_calls.append(record)
            try:
                outcome = method(*args, **kwargs)
            except MaiaError as error:
                record.error = redactor.text(str(error))
                raise
            finally:
                record.seconds = time.perf_counter() - tic
                record.image_ids = [s.id for s in list(self.toolbox.images)[before:]]
            record.observation = observation(outcome)
            return outcome

        return call

    def _show_new_images(self, before: int) -> None:
        new = list(self.toolbox.images)[before:]
        shown = new[: self.agent.images_per_message]
        if not shown:
            return
        parts: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": "Images from the last round, in order: "
                + ", ".join(s.id for s in shown)
                + (
                    f" (and {len(new) - len(shown)} more not shown)"
                    if len(new) > len(shown)
                    else ""
                ),
            }
        ]
        for stored in shown:
            image = stored.image
            if stored.mask is not None:
                image = mask_images(image[None], stored.mask[None])[0]
            parts.append({"type": "text", "text": f"{stored.id}:"})
            parts.append(image_part(image, self.agent.image_detail))
        self.messages.append({"role": "user", "content": parts})

    # -- the report ------------------------------------------------------------------------

    def report(self, failure: str | None = None) -> UnitReport:
        fields: dict[str, Any] = {
            "evidence": list(self.toolbox.experiments),
            "steps": self.steps,
            "usage": self.usage,
            "seconds": time.perf_counter() - self.started,
            "images": len(self.toolbox.images),
        }
        unit, task, agent = self.toolbox.unit.spec, self.task.name, self.agent.name
        if failure is not None or self.answer is None:
            return UnitReport.failed(unit, task, agent, failure or "no final answer", **fields)
        answer = self.answer
        return UnitReport(
            unit=unit,
            task=task,
            agent=agent,
            label=answer.label,
            description=answer.description,
            concepts=answer.concepts,
            logic=answer.logic,
            verdict=answer.verdict,
            details={"subgroups": answer.subgroups} if answer.subgroups else {},
            **fields,
        )


def _request_text(result: ChatResult) -> str:
    calls = "; ".join(f"{c.name}({c.arguments})" for c in result.tool_calls)
    return "\n".join(part for part in (result.text or "", calls) if part)
