"""The VLM agent: an OpenAI-compatible vision-language model runs MAIA's experiments.

Two modes over the same toolbox:

- ``tools`` (default): the tools are offered as JSON-schema functions, images come back as data
  URLs, and the model ends with a ``final_answer`` call of a fixed schema.
- ``code``: the model writes MAIA-style programs, run by the restricted interpreter of
  :mod:`lightning_maia.agents._sandbox` (never ``exec``).

Every run is bounded: at most ``max_rounds`` rounds, a token and a cost budget, the client's
per-call timeout and retries. Mistakes the model makes (unparseable replies, unknown tools, bad
arguments, refused programs) go back to it as observations; running out of rounds or budget
forces a final answer; a backend failure gives a failed report with the reason, never a hang.

**A misbehaving model cannot crash, hang or flood the run.**

- Every tool argument is checked against its definition, ranges included (a negative seed is an
  observation, not a ``ValueError`` in numpy), and *any* exception raised while a tool serves the
  model's request goes back to the model as an observation. Anything else that goes wrong inside
  the episode gives a failed report with the traceback in the log, never an exception out of
  :meth:`VLMAgent.run`.
- Per-episode budgets: ``max_images`` images, ``max_tool_calls`` tool calls (and
  ``max_tool_calls_per_reply`` in one reply), ``max_text_chars`` characters of model text and
  observations kept. Past one, the model is told why and the next round forces its final answer;
  the report's ``details["forced"]`` says which budget forced it.
- A reply longer than ``max_reply_chars`` (its text, or one call's arguments) is cut, with a
  note, before it is cached, stored in a step, sent back to the model or rendered.
- Code mode runs each program in a worker process (:mod:`~lightning_maia.agents._sandbox_worker`)
  under a wall-clock deadline that ends it even inside C code, with its memory capped
  (``program_max_memory_mb``); the interpreter also refuses membership tests, comparisons,
  counts, sorts and hashes whose operands are too large or too deep before they run.
- ``SIGTERM`` during :meth:`VLMAgent.run` or :meth:`VLMAgent.run_many` called from the main
  thread stops the running episodes at once (a program's process is killed; the reports fail
  with the reason) and the signal goes on to the handler set before (Lightning's, which ends
  the fit). Episodes started from another thread (UnitInterpreter's ``background=True``) end
  within their limits (rounds, timeouts), as the main thread cannot be asked to wait for them.
- What the model writes passes through the client's redactor: the API key, or any
  ``Authorization`` value, becomes ``[redacted]`` before anything is stored, logged, cached or
  rendered; code-mode output, tool arguments and final answers are redacted again, as a program
  can assemble the key from pieces.

**Why one file.** The agent and its episode loop share the per-episode budgets and the forced
final answer; the messages, the sandbox worker and the prompts already live in their own
modules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lightning_maia.agents._final_answer import (
    FinalAnswer,
    final_answer_schema,
    parse_final_answer,
)
from lightning_maia.agents._records import Step, ToolCallRecord, UnitReport
from lightning_maia.agents._response_cache import CachedChat
from lightning_maia.agents._sandbox import ProgramResult
from lightning_maia.agents._sandbox_worker import ProgramWorker
from lightning_maia.agents.tasks import TaskSpec, load_prompt
from lightning_maia.errors import BackendError, MaiaError, ToolError, bad_option
from lightning_maia.exemplars import mask_images
from lightning_maia.tools._results import (
    EditPair,
    ExemplarImage,
    Experiment,
    GeneratedImage,
    ImageDescription,
    Summary,
    UnitCall,
    observation,
)
from lightning_maia.tools.backends._base import Usage
from lightning_maia.tools.backends.vlm import (
    ChatMessage,
    ChatResult,
    VLMClient,
    image_part,
    system_message,
    tool_message,
)
from lightning_maia.tools.toolbox import TOOL_NAMES, Toolbox

log = logging.getLogger(__name__)

MODES = ("tools", "code")
#: The longest error message of a tool shown to the model and kept in a step.
_MAX_ERROR_CHARS = 2_000
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
        program_max_steps, program_timeout_s: limits of each program in code mode; the
            timeout is a wall-clock deadline that ends the program's worker process.
        program_max_memory_mb: the address-space cap of that process (None: no cap).
        max_images: images one episode may make (beyond those its toolbox already held).
        max_tool_calls: tool calls one episode may make; ``max_tool_calls_per_reply``: in one
            reply (tools mode) or one program (code mode).
        max_reply_chars: a reply's text, or one call's arguments, is cut past this many
            characters, with a note.
        max_text_chars: characters of model text and observations one episode may keep.
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
        program_max_memory_mb: int | None = 1024,
        max_images: int = 64,
        max_tool_calls: int = 64,
        max_tool_calls_per_reply: int = 8,
        max_reply_chars: int = 8_000,
        max_text_chars: int = 120_000,
    ) -> None:
        if mode not in MODES:
            raise bad_option("mode", " or ".join(MODES), mode)
        if max_rounds < 1:
            raise bad_option("max_rounds", "a positive integer", max_rounds)
        if images_per_message < 0:
            raise bad_option("images_per_message", "an integer >= 0", images_per_message)
        for name, value in (
            ("max_images", max_images),
            ("max_tool_calls", max_tool_calls),
            ("max_tool_calls_per_reply", max_tool_calls_per_reply),
            ("max_reply_chars", max_reply_chars),
            ("max_text_chars", max_text_chars),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if not program_timeout_s > 0:
            raise bad_option("program_timeout_s", "a positive number of seconds", program_timeout_s)
        if program_max_memory_mb is not None and program_max_memory_mb < 64:
            raise bad_option(
                "program_max_memory_mb", "an integer >= 64 or None", program_max_memory_mb
            )
        self.client = client
        self.mode = mode
        self.name = f"vlm-{mode}"
        self.max_rounds = max_rounds
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.images_per_message = images_per_message
        self.image_detail = image_detail
        self.max_images = max_images
        self.max_tool_calls = max_tool_calls
        self.max_tool_calls_per_reply = max_tool_calls_per_reply
        self.max_reply_chars = max_reply_chars
        self.max_text_chars = max_text_chars
        # One call past the per-reply limit is kept, so that the agent can tell the model.
        self.chat = CachedChat(
            client,
            cache_dir,
            max_reply_chars=max_reply_chars,
            max_tool_calls=max_tool_calls_per_reply + 1,
        )
        self.program_max_steps = program_max_steps
        self.program_timeout_s = program_timeout_s
        self.program_max_memory_mb = program_max_memory_mb

    def run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport:
        """Study the toolbox's unit; a backend failure, or anything unexpected, gives a failed
        report (the unexpected with its traceback in the log), never an exception."""
        episode = _Episode(self, toolbox, task)
        try:
            with _stop_on_sigterm(), _running(episode):
                return episode.run()
        except BackendError as error:
            return episode.report(failure=f"VLM backend failed: {error}")
        except Exception as error:
            reason = self.client.redactor.text(f"{type(error).__name__}: {error}")
            log.error(
                "the VLM agent failed unexpectedly on %s: %s",
                toolbox.unit.spec,
                reason,
                exc_info=True,
            )
            return episode.report(failure=f"unexpected error: {reason[:_MAX_ERROR_CHARS]}")
        finally:
            episode.close()

    async def arun_many(
        self, toolboxes: Sequence[Toolbox], task: TaskSpec, concurrency: int = 4
    ) -> list[UnitReport]:
        """Study many units, at most ``concurrency`` at a time; reports in input order.

        The episodes block on HTTP, so each runs in a thread of a pool of its own sized to
        ``concurrency`` (asyncio's default pool holds ``cpu_count + 4`` threads: on a small
        machine it would cap the requests in flight below the limit asked for). The client's
        retries (429 with ``Retry-After``, 5xx, timeouts) happen inside each episode, so a rate
        limit slows the units it hits without exceeding ``concurrency``.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise bad_option("concurrency", "a positive integer", concurrency)
        loop = asyncio.get_running_loop()
        workers = min(concurrency, max(len(toolboxes), 1))
        with concurrent.futures.ThreadPoolExecutor(workers, "maia-vlm-episode") as pool:
            return list(
                await asyncio.gather(
                    *(loop.run_in_executor(pool, self.run, toolbox, task) for toolbox in toolboxes)
                )
            )

    def run_many(
        self, toolboxes: Sequence[Toolbox], task: TaskSpec, concurrency: int = 4
    ) -> list[UnitReport]:
        """Blocking form of :meth:`arun_many`."""
        with _stop_on_sigterm():  # the episodes run in threads: the handler must be set here
            return asyncio.run(self.arun_many(toolboxes, task, concurrency))


@dataclass(eq=False)  # episodes are told apart by identity (the SIGTERM registry)
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
    #: Why the episode was forced to its final answer (a budget it spent), once it was.
    exhausted: str | None = None
    forced: str | None = None
    tool_calls: int = 0
    text_chars: int = 0
    worker: ProgramWorker | None = None
    #: Set by SIGTERM: the episode ends at the next check.
    stopping: bool = False
    _shown: int = 0

    def run(self) -> UnitReport:
        limit = self.agent.max_images
        if self.toolbox.max_images is None or self.toolbox.max_images > limit:
            self.toolbox.max_images = len(self.toolbox.images) + limit
        self.messages = [system_message(self._system_prompt()), self._opening()]
        for _ in range(self.agent.max_rounds):
            if self._over_budget() or self.exhausted is not None or self.stopping:
                break
            self._round(force=False)
            if self.answer is not None:
                return self.report()
        if self.stopping:
            return self.report(failure=_STOPPED)
        self.forced = self.exhausted or (
            "token or cost budget" if self._over_budget() else f"{self.agent.max_rounds} rounds"
        )
        self._round(force=True)
        if self.answer is not None:
            return self.report()
        spent = "" if self.exhausted is None else f" (forced by {self.exhausted})"
        return self.report(failure=f"no final answer after {len(self.steps)} rounds{spent}")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def _exhaust(self, reason: str) -> None:
        """Note the first budget spent; the next round forces the final answer."""
        if self.exhausted is None:
            self.exhausted = reason

    # -- prompts ---------------------------------------------------------------------------

    def _system_prompt(self) -> str:
        rounds = self.agent.max_rounds
        budgets = {
            "max_images": self.agent.max_images,
            "max_tool_calls": self.agent.max_tool_calls,
            "max_tool_calls_per_reply": self.agent.max_tool_calls_per_reply,
        }
        if self.agent.mode == "tools":
            mode = load_prompt("tool_mode").format(max_rounds=rounds, **budgets)
        else:
            signatures = "\n\n".join(d.python_signature() for d in self.toolbox.definitions())
            verdict_note = (
                f" verdict is one of {', '.join(self.task.verdicts)}." if self.task.verdicts else ""
            )
            mode = load_prompt("code_mode").format(
                signatures=signatures, max_rounds=rounds, verdict_note=verdict_note, **budgets
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
                    "content": (
                        "You are out of rounds or budget"
                        if self.exhausted is None
                        else f"You have spent {self.exhausted}"
                    )
                    + ": give your final answer now"
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
        limit = self.agent.max_tool_calls_per_reply
        dropped = len(result.tool_calls) > limit
        if dropped:
            # The calls past the limit never run, and are not sent back as if they had.
            result = replace(result, tool_calls=result.tool_calls[:limit])
        step = Step(index=len(self.steps), request=_request_text(result), usage=step_usage)
        self.steps.append(step)
        self.messages.append(result.to_message())
        shown_before = len(self.toolbox.images)
        if self.agent.mode == "tools":
            self._tool_round(result, step)
        else:
            self._code_round(result, step)
        if dropped:
            note = (
                f"Your reply made more than {limit} tool calls; only the first {limit} ran. "
                f"A reply may make at most {limit}."
            )
            step.error = note if step.error is None else f"{step.error}; {note}"
            self.messages.append({"role": "user", "content": note})
            self._exhaust(f"the limit of {limit} tool calls per reply")
        self._show_new_images(shown_before)
        self._count_text(step)
        step.seconds = time.perf_counter() - tic

    def _count_text(self, step: Step) -> None:
        kept = len(step.request) + len(step.error or "")
        for call in step.tool_calls:
            kept += len(call.observation) + len(call.error or "") + len(str(call.arguments))
        self.text_chars += kept
        if self.text_chars > self.agent.max_text_chars:
            self.messages.append(
                {
                    "role": "user",
                    "content": f"This study has kept more than {self.agent.max_text_chars:,} "
                    "characters of replies and observations; the next reply must be the "
                    "final answer.",
                }
            )
            self._exhaust(f"the text budget of {self.agent.max_text_chars:,} characters")

    def _budget_refusal(self) -> str | None:
        """Why another tool call may not run, or None while the budgets allow it."""
        if self.tool_calls >= self.agent.max_tool_calls:
            reason = f"the budget of {self.agent.max_tool_calls} tool calls for this unit"
            self._exhaust(reason)
            return f"not run: {reason} is spent; give your final answer"
        return None

    def _after_call(self) -> None:
        self.tool_calls += 1
        limit = self.toolbox.max_images
        if limit is not None and len(self.toolbox.images) >= limit:
            self._exhaust(f"the budget of {self.agent.max_images} images for this unit")

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
            refusal = None if call.name == "final_answer" else self._budget_refusal()
            try:
                if refusal is not None:
                    raise ToolError(refusal)
                arguments = json.loads(call.arguments or "{}")
                record.arguments = arguments if isinstance(arguments, dict) else {}
                if call.name == "final_answer":
                    self.answer = parse_final_answer(arguments, self.task)
                    record.observation = "final answer recorded"
                else:
                    before = len(self.toolbox.images)
                    try:
                        outcome = self.toolbox.call(call.name, arguments)
                    finally:
                        record.image_ids = [s.id for s in list(self.toolbox.images)[before:]]
                        self._after_call()
                    record.observation = observation(outcome)
            except (json.JSONDecodeError, RecursionError) as error:
                detail = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deep"
                record.error = f"arguments are not valid JSON ({detail}); send a JSON object"
            except (ToolError, BackendError) as error:
                record.error = _short(self.agent.client.redactor.text(str(error)))
            except Exception as error:  # whatever the model's request made a tool raise
                log.warning(
                    "tool %s raised %s on %s",
                    call.name,
                    type(error).__name__,
                    self.toolbox.unit.spec,
                )
                message = f"{call.name} failed: {type(error).__name__}: {error}"
                record.error = _short(self.agent.client.redactor.text(message))
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
        outcome = self._run_program(match.group(1), functions)
        redact = self.agent.client.redactor.text
        output = redact(outcome.output)
        step.error = None if outcome.error is None else redact(outcome.error)
        text = f"Program output:\n{output or '(no output)'}"
        if step.error:
            text += f"\nError: {step.error}"
        self.messages.append({"role": "user", "content": text})

    def _run_program(self, source: str, functions: dict[str, Callable[..., Any]]) -> ProgramResult:
        if self.worker is None:
            self.worker = ProgramWorker(
                _RESULT_TYPES, max_memory_mb=self.agent.program_max_memory_mb
            )
        return self.worker.run(
            source,
            functions,
            max_steps=self.agent.program_max_steps,
            timeout_s=self.agent.program_timeout_s,
            should_stop=lambda: self.stopping,
        )

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
        """The tool ``name`` as a program calls it: redacted, validated by its definition,
        counted against the budgets and recorded in ``step``."""
        definition = next(d for d in self.toolbox.definitions() if d.name == name)
        signature = inspect.signature(definition.function)
        per_program = self.agent.max_tool_calls_per_reply

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
            try:
                refusal = self._budget_refusal()
                if refusal is None and len(step.tool_calls) >= per_program:
                    refusal = f"not run: a program may make at most {per_program} tool calls"
                    self._exhaust(f"the limit of {per_program} tool calls per program")
                if refusal is not None:
                    record.error = refusal
                    raise ToolError(refusal)
                step.tool_calls.append(record)
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError as error:
                    raise ToolError(f"{name}: {error}") from None
                arguments = definition.validate(bound.arguments)
                try:
                    outcome = definition.function(**arguments)
                finally:
                    self._after_call()
            except MaiaError as error:
                record.error = _short(redactor.text(str(error)))
                raise
            except Exception as error:
                record.error = _short(redactor.text(f"{type(error).__name__}: {error}"))
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
        details: dict[str, Any] = {"subgroups": answer.subgroups} if answer.subgroups else {}
        if self.forced is not None:
            details["forced"] = self.forced
        return UnitReport(
            unit=unit,
            task=task,
            agent=agent,
            label=answer.label,
            description=answer.description,
            concepts=answer.concepts,
            logic=answer.logic,
            verdict=answer.verdict,
            details=details,
            **fields,
        )


_STOPPED = "stopped: the process received SIGTERM"


_ACTIVE: set[_Episode] = set()
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _running(episode: _Episode) -> Iterator[None]:
    with _ACTIVE_LOCK:
        _ACTIVE.add(episode)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(episode)


def _stop_all(signum: int, frame: Any) -> None:
    with _ACTIVE_LOCK:
        for episode in _ACTIVE:
            episode.stopping = True


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """In the main thread, let SIGTERM stop the running episodes, then reach the handler that
    was set before (in other threads nothing changes: only the main thread sets handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or getattr(previous, "_maia", False):
        yield  # set outside Python (cannot be restored), or by an enclosing run_many
        return

    def handler(signum: int, frame: Any) -> None:
        _stop_all(signum, frame)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # what SIGTERM would have done: end the process
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    handler._maia = True  # type: ignore[attr-defined]
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _short(text: str) -> str:
    if len(text) <= _MAX_ERROR_CHARS:
        return text
    return f"{text[:_MAX_ERROR_CHARS]} [... {len(text) - _MAX_ERROR_CHARS:,} characters cut]"


def _request_text(result: ChatResult) -> str:
    calls = "; ".join(f"{c.name}({c.arguments})" for c in result.tool_calls)
    return "\n".join(part for part in (result.text or "", calls) if part)
