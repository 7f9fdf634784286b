"""Scripts for :class:`~lightning_maia.testing._chat_server.ChatServer` that play a hostile model.

Each script answers every chat request of a VLM agent episode, in ``tools`` or ``code`` mode,
and misbehaves in one way until the agent forces the final answer:

- ``invalid_arguments``: calls every tool with values that pass the JSON schema's types but not
  its ranges or the toolbox's rules (a negative seed, zero images per prompt, unknown ids,
  mismatched lists, 300 ids, a 5,000-character title, ``logic="xor"``);
- ``c_level``: programs whose single operations would run for minutes in C
  (``"a" in range(10**12)``, ``==`` and ``list.count`` on a list of 1,000 references to one
  list of 1,000, ``sorted`` of it) and ``while True: pass``;
- ``flood``: 100 ``text2image`` calls of 32 prompts in one reply (a loop of them in code mode);
- ``huge_reply``: a 5 MB reply, every round, forced answer included.

When the agent forces the final answer, every script but ``huge_reply`` answers it properly, so
a run that survives ends with a report forced by its budget; ``huge_reply``'s forced answer is
5 MB too, so its report fails.

>>> script = hostile_script("flood", "tools")
>>> reply = script({"messages": [{"role": "system", "content": ""}]})
>>> len(reply.body["choices"][0]["message"]["tool_calls"])
100
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_maia.errors import bad_option
from lightning_maia.testing._chat_server import (
    Handler,
    ScriptedResponse,
    text_reply,
    tool_calls_reply,
)

SCENARIOS = ("invalid_arguments", "c_level", "flood", "huge_reply")
MODES = ("tools", "code")
#: The size of a ``huge_reply`` answer.
HUGE_CHARS = 5_000_000

INVALID_TOOL_CALLS: tuple[tuple[tuple[str, dict[str, Any]], ...], ...] = (
    (
        ("text2image", {"prompts": ["a red circle"], "seed": -5}),
        ("text2image", {"prompts": ["a red circle"], "n_per_prompt": 0}),
        ("edit_images", {"image_ids": ["gen-999"], "instructions": ["make it blue"]}),
        ("call_units", {"image_ids": []}),
        ("describe_images", {"image_ids": ["x" * 100]}),
        ("summarize_images", {"image_ids": ["exemplar-999"]}),
        ("log_experiment", {"title": "t", "image_ids": ["nope"]}),
        ("dataset_exemplars", {"k": 5}),
    ),
    (
        ("text2image", {"prompts": [], "seed": 2**40}),
        ("text2image", {"prompts": ["a red circle"], "n_per_prompt": 10**6}),
        ("edit_images", {"image_ids": ["a", "b"], "instructions": ["x", "y", "z"]}),
        ("call_units", {"image_ids": ["a"] * 300}),
        ("describe_images", {"image_ids": []}),
        ("summarize_images", {"image_ids": []}),
        ("log_experiment", {"title": "t" * 5_000, "image_ids": []}),
        ("final_answer", {"label": "x", "description": "y", "logic": "xor"}),
    ),
)
INVALID_PROGRAM_CALLS = (
    'text2image(["a red circle"], seed=-5)',
    'text2image(["a red circle"], 0)',
    'text2image("a red circle")',
    'edit_images(["gen-999"], ["make it blue"])',
    "call_units([])",
    "describe_images([1, 2])",
    'summarize_images(["x"] * 300)',
    "dataset_exemplars(5)",
    'final_answer("x", "y", logic="xor")',
)
C_LEVEL_PROGRAMS = (
    'print("a" in range(10**12))',
    "a = [0] * 1000\nb = [a] * 1000\nc = [a] * 1000\nprint(b == c)",
    "a = [0] * 1000\nb = [a] * 1000\nprint(b.count([1] * 1000))",
    "a = [0] * 1000\nb = [a] * 1000\nprint(len(sorted(b)))",
    "while True:\n    pass",
)
FORCED_ANSWER = {"label": "forced", "description": "the answer a budget forced"}


def hostile_script(scenario: str, mode: str) -> Handler:
    """The chat-server handler that plays ``scenario`` for an agent in ``mode``."""
    if scenario not in SCENARIOS:
        raise bad_option("scenario", ", ".join(SCENARIOS), scenario)
    if mode not in MODES:
        raise bad_option("mode", " or ".join(MODES), mode)

    def answer(request: dict[str, Any]) -> ScriptedResponse:
        messages = request.get("messages", [])
        round_index = sum(1 for m in messages if m.get("role") == "assistant")
        if _is_forced(request, mode):
            return _forced(scenario, mode)
        if mode == "tools":
            return _tools_round(scenario, round_index)
        return _code(_program(scenario, round_index))

    return answer


def _is_forced(request: Mapping[str, Any], mode: str) -> bool:
    if mode == "tools":
        choice = request.get("tool_choice")
        return isinstance(choice, Mapping) and choice.get("type") == "function"
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return isinstance(content, str) and content.startswith(("You are out of", "You have spent"))


def _forced(scenario: str, mode: str) -> ScriptedResponse:
    answer = dict(FORCED_ANSWER)
    if scenario == "huge_reply":
        answer["description"] = "y" * HUGE_CHARS
    if mode == "tools":
        return tool_calls_reply([("final_answer", answer)])
    return _code(f"final_answer({answer['label']!r}, {answer['description']!r})")


def _tools_round(scenario: str, round_index: int) -> ScriptedResponse:
    if scenario == "invalid_arguments":
        calls = INVALID_TOOL_CALLS[round_index % len(INVALID_TOOL_CALLS)]
        return tool_calls_reply(list(calls))
    if scenario == "c_level":  # tools mode runs no programs: a program as a tool argument
        return tool_calls_reply([("text2image", {"prompts": [C_LEVEL_PROGRAMS[0]]})])
    if scenario == "flood":
        return tool_calls_reply([("text2image", {"prompts": ["a red circle"] * 32})] * 100)
    return tool_calls_reply(
        [("text2image", {"prompts": ["z" * HUGE_CHARS]})], content="x" * HUGE_CHARS
    )


def _program(scenario: str, round_index: int) -> str:
    if scenario == "invalid_arguments":
        return "\n".join(
            f"try:\n    {call}\nexcept Exception as error:\n    print('refused:', error)"
            for call in INVALID_PROGRAM_CALLS
        )
    if scenario == "c_level":
        return C_LEVEL_PROGRAMS[round_index % len(C_LEVEL_PROGRAMS)]
    if scenario == "flood":
        return 'for i in range(100):\n    text2image(["a red circle"] * 32)'
    return f"# {'x' * HUGE_CHARS}\nprint('done')"


def _code(source: str) -> ScriptedResponse:
    return text_reply(f"Next experiment.\n```python\n{source}\n```")
