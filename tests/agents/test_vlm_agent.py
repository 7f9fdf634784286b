"""The VLM agent against a real chat-completions server on 127.0.0.1 that plays whole episodes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.errors import ConfigurationError
from lightning_maia.subject import Subject
from lightning_maia.testing._chat_server import (
    ChatServer,
    error_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)
from lightning_maia.tools.backends.vlm import VLMClient, data_url_to_image
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import NeuronSpec, ShapesWorld, SyntheticNeuronModel
from lightning_maia.world._scene import Concept

FINAL = {
    "label": "stars",
    "description": "fires on stars of any colour",
    "concepts": ["shape=star"],
    "logic": "single",
}


@pytest.fixture(scope="module")
def model() -> SyntheticNeuronModel:
    return SyntheticNeuronModel([NeuronSpec("mono", (Concept("shape", "star"),))], seed=0)


@pytest.fixture(scope="module")
def dataset() -> ShapesWorld:
    return ShapesWorld(size=60, seed=1)


def make_toolbox(model: SyntheticNeuronModel, dataset: ShapesWorld) -> Toolbox:
    return Toolbox(Subject(model, ["neurons:0"]), "neurons:0", exemplar_data=dataset, k=4)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer() as running:
        yield running


def agent_for(server: ChatServer, **kwargs) -> VLMAgent:
    client = VLMClient(
        model="scripted-vlm",
        base_url=server.base_url,
        api_key="sk-test-secret",
        timeout=5.0,
        max_retries=0,
    )
    return VLMAgent(client, **kwargs)


def test_tool_mode_plays_a_whole_episode(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [
            tool_call_reply("dataset_exemplars"),
            tool_call_reply("describe_images", {"image_ids": ["exemplar-1", "exemplar-2"]}),
            tool_calls_reply(
                [
                    (
                        "text2image",
                        {"prompts": ["a large red star", "a large red circle"], "seed": 0},
                    ),
                    ("call_units", {"image_ids": ["gen-1", "gen-2"]}),
                ]
            ),
            tool_call_reply(
                "log_experiment",
                {
                    "title": "star vs circle",
                    "image_ids": ["gen-1", "gen-2"],
                    "conclusion": "stars fire, circles do not",
                },
            ),
            tool_call_reply("final_answer", FINAL),
        ]
    )
    report = agent_for(server, images_per_message=3).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.status == "ok", report.failure_reason
    assert (report.label, report.concepts, report.logic) == ("stars", ("shape=star",), "single")
    assert report.agent == "vlm-tools" and report.rounds == 5
    assert [c.tool for s in report.steps for c in s.tool_calls] == [
        "dataset_exemplars",
        "describe_images",
        "text2image",
        "call_units",
        "log_experiment",
        "final_answer",
    ]
    star_call = report.steps[2].tool_calls[1]
    assert star_call.image_ids == ["mask-1", "mask-2"]
    assert "gen-1: activation" in star_call.observation
    assert [e.title for e in report.evidence] == ["star vs circle"]
    assert report.usage.prompt_tokens == 50 and report.usage.completion_tokens == 25

    first, second = server.chat_requests[:2]
    assert first.json["messages"][0]["role"] == "system"
    assert "interpretability scientist" in first.json["messages"][0]["content"]
    names = [tool["function"]["name"] for tool in first.json["tools"]]
    assert names == [
        "dataset_exemplars",
        "text2image",
        "edit_images",
        "call_units",
        "describe_images",
        "summarize_images",
        "log_experiment",
        "final_answer",
    ]
    # After dataset_exemplars the model sees the first 3 exemplars, highlighted, as PNGs.
    images = second.image_urls()
    assert len(images) == 3
    assert data_url_to_image(images[0]).shape == (3, 64, 64)
    assert second.messages[-2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": second.messages[-2]["content"],
    }
    assert second.messages[-2]["content"].startswith("exemplar-1: activation")
    assert all("sk-test-secret" not in json.dumps(r.json) for r in server.chat_requests)
    assert server.chat_requests[0].headers["authorization"] == "Bearer sk-test-secret"


def test_model_mistakes_go_back_as_observations(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [
            tool_call_reply("exec_shell", {"cmd": "ls"}),
            tool_call_reply("text2image", "{not json"),
            tool_call_reply("text2image", {"prompts": ["a flibbertigibbet"]}),
            text_reply("I think it is stars."),
            tool_call_reply("final_answer", {"label": "", "description": "x"}),
            tool_call_reply("final_answer", FINAL),
        ]
    )
    report = agent_for(server).run(make_toolbox(model, dataset), TaskSpec("describe_unit"))
    assert report.status == "ok" and report.label == "stars"
    errors = [c.error for s in report.steps for c in s.tool_calls]
    assert errors[0].startswith("unknown tool 'exec_shell'")
    assert errors[1].startswith("arguments are not valid JSON")
    assert "flibbertigibbet" in errors[2]
    assert report.steps[3].error == "the reply called no tool"
    assert errors[3] == "final_answer: `label` must be a non-empty string"
    tool_answers = [m for m in server.chat_requests[1].messages if m["role"] == "tool"]
    assert tool_answers[-1]["content"].startswith("error: unknown tool 'exec_shell'")
    nudge = server.chat_requests[4].messages[-1]
    assert nudge == {
        "role": "user",
        "content": "Reply with tool calls; to finish, call final_answer.",
    }


def test_out_of_rounds_forces_a_final_answer(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [tool_call_reply("dataset_exemplars")] * 2 + [tool_call_reply("final_answer", FINAL)]
    )
    report = agent_for(server, max_rounds=2).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.status == "ok" and report.rounds == 3
    forced = server.chat_requests[2].json
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "final_answer"}}
    assert [t["function"]["name"] for t in forced["tools"]] == ["final_answer"]


def test_no_answer_even_when_forced_is_a_failed_report(server: ChatServer, model, dataset) -> None:
    server.set_script([text_reply("thinking")] * 3)
    report = agent_for(server, max_rounds=2).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.status == "failed"
    assert report.failure_reason == "no final answer after 3 rounds"


def test_token_budget_forces_the_answer(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [tool_call_reply("dataset_exemplars"), tool_call_reply("final_answer", FINAL)]
    )
    report = agent_for(server, max_total_tokens=10).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.ok and report.rounds == 2
    assert "tool_choice" in server.chat_requests[1].json


def test_backend_failure_is_a_failed_report_in_bounded_time(
    server: ChatServer, model, dataset
) -> None:
    server.set_script([error_reply(500, retry_after=0.01)] * 5)
    started = time.perf_counter()
    report = agent_for(server).run(make_toolbox(model, dataset), TaskSpec("describe_unit"))
    assert time.perf_counter() - started < 10
    assert report.status == "failed"
    assert report.failure_reason.startswith("VLM backend failed:")
    assert "500" in report.failure_reason
    assert "sk-test-secret" not in report.failure_reason


def test_reply_cache_replays_without_requests(
    server: ChatServer, model, dataset, tmp_path: Path
) -> None:
    script = [
        tool_call_reply("text2image", {"prompts": ["a star"], "seed": 1}),
        tool_call_reply("final_answer", FINAL),
    ]
    server.set_script(list(script))
    first = agent_for(server, cache_dir=tmp_path).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert len(server.chat_requests) == 2 and first.usage.total_tokens == 30
    second = agent_for(server, cache_dir=tmp_path).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert len(server.chat_requests) == 2  # nothing new was sent
    assert second.label == first.label and second.usage.total_tokens == 0


def test_many_units_with_a_concurrency_limit(server: ChatServer, model, dataset) -> None:
    server.set_script(lambda request: tool_call_reply("final_answer", FINAL))
    toolboxes = [make_toolbox(model, dataset) for _ in range(3)]
    reports = agent_for(server).run_many(toolboxes, TaskSpec("describe_unit"), concurrency=2)
    assert [r.label for r in reports] == ["stars"] * 3
    with pytest.raises(ConfigurationError, match="`concurrency`"):
        agent_for(server).run_many(toolboxes, TaskSpec("describe_unit"), concurrency=0)


class _HeldRequests:
    """A handler that holds each request until ``hold`` requests are in flight at once (or
    10 s pass), records the peak, then answers with the unit the request names; the first
    units answer last, so that reports in input order are not an accident of timing."""

    def __init__(self, hold: int, units: int) -> None:
        self.hold, self.units = hold, units
        self.active = self.peak = 0
        self.lock = threading.Condition()

    def __call__(self, request: dict) -> object:
        text = request["messages"][1]["content"]
        index = int(text.split("neurons:")[1].split(".")[0])
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.lock.notify_all()
            self.lock.wait_for(lambda: self.peak >= self.hold, timeout=10.0)
        time.sleep(0.05 * (self.units - index))
        with self.lock:
            self.active -= 1
        return tool_call_reply("final_answer", {**FINAL, "label": f"unit {index}"})


@pytest.mark.parametrize("concurrency", [3, 8])
def test_run_many_holds_exactly_concurrency_requests_in_flight(
    server: ChatServer, dataset, concurrency: int
) -> None:
    # Eight units: asyncio's default pool (cpu_count + 4 threads) would cap a 2-core machine at 6.
    units = 8
    neurons = [NeuronSpec("mono", (Concept("shape", "star"),), variant=i) for i in range(units)]
    model = SyntheticNeuronModel(neurons, seed=0)
    specs = [f"neurons:{i}" for i in range(units)]
    subject = Subject(model, specs)
    toolboxes = [Toolbox(subject, spec, exemplar_data=dataset, k=4) for spec in specs]
    held = _HeldRequests(hold=concurrency, units=units)
    server.set_script(held)
    reports = agent_for(server).run_many(toolboxes, TaskSpec("describe_unit"), concurrency)
    assert held.peak == concurrency
    assert [r.unit for r in reports] == specs
    assert [r.label for r in reports] == [f"unit {i}" for i in range(units)]
    assert len(server.chat_requests) == units


def test_spurious_check_requires_a_verdict(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [
            tool_call_reply("final_answer", FINAL),
            tool_call_reply("final_answer", {**FINAL, "verdict": "core"}),
        ]
    )
    task = TaskSpec(
        "spurious_check", class_names=("star", "circle"), candidate_attributes=("background",)
    )
    report = agent_for(server).run(make_toolbox(model, dataset), task)
    assert report.verdict == "core"
    assert report.steps[0].tool_calls[0].error.startswith("final_answer: `verdict` must be one of")
    schema = server.chat_requests[0].json["tools"][-1]["function"]["parameters"]
    assert schema["properties"]["verdict"]["enum"] == ["core", "spurious", "unclear"]


def test_bad_options_are_named(server: ChatServer) -> None:
    client = VLMClient(model="m", base_url=server.base_url)
    with pytest.raises(ConfigurationError, match="`mode` can be tools or code, got 'exec'"):
        VLMAgent(client, mode="exec")
    with pytest.raises(ConfigurationError, match="`max_rounds`"):
        VLMAgent(client, max_rounds=0)


PROGRAM = """```python
exemplars = dataset_exemplars()
for d in describe_images([e.id for e in exemplars[:2]]):
    print(d.id, d.description)
gen = text2image(["a large red star", "a large red circle"], seed=0)
calls = call_units([g.id for g in gen])
acts = {c.id: round(c.activation, 2) for c in calls}
print(sorted(acts, key=acts.get, reverse=True)[0])
log_experiment("star vs circle", [c.id for c in calls], conclusion="stars win")
```"""


def code_reply(source: str):
    return text_reply(f"Let me test.\n{source}")


def test_code_mode_runs_programs_in_the_sandbox(server: ChatServer, model, dataset) -> None:
    final = '```python\nfinal_answer("stars", "fires on stars", ["shape=star"], "single")\n```'
    server.set_script([code_reply(PROGRAM), code_reply(final)])
    report = agent_for(server, mode="code").run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.ok, report.failure_reason
    assert report.agent == "vlm-code" and report.label == "stars" and report.rounds == 2
    assert [c.tool for c in report.steps[0].tool_calls] == [
        "dataset_exemplars",
        "describe_images",
        "text2image",
        "call_units",
        "log_experiment",
    ]
    assert report.steps[0].error is None
    output = server.chat_requests[1].messages[-2]["content"]
    assert output.startswith("Program output:\nexemplar-1 ")
    assert "\ngen-1\n" in output  # the star beat the circle
    system = server.chat_requests[0].messages[0]["content"]
    assert "def text2image(prompts: list[str], n_per_prompt: int = 1" in system
    assert "def final_answer(" in system


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("().__class__.__subclasses__()", "refused"),
        ("__import__('os').system('echo hi')", "refused"),
        ("import os", "import"),
        ("open('/etc/passwd').read()", "open"),
        ("while True:\n    pass", "step limit"),
    ],
)
def test_code_mode_refuses_escapes_and_reports_them(
    server: ChatServer, model, dataset, program: str, expected: str
) -> None:
    final = '```python\nfinal_answer("stars", "fires on stars")\n```'
    server.set_script([code_reply(f"```python\n{program}\n```"), code_reply(final)])
    report = agent_for(server, mode="code", program_max_steps=2_000).run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.ok
    assert expected in (report.steps[0].error or "")
    feedback = server.chat_requests[1].messages[-1]["content"]
    assert "Error:" in feedback and expected in feedback


def test_code_mode_asks_for_a_code_block(server: ChatServer, model, dataset) -> None:
    server.set_script(
        [text_reply("no code here"), code_reply('```python\nfinal_answer("stars", "x")\n```')]
    )
    report = agent_for(server, mode="code").run(
        make_toolbox(model, dataset), TaskSpec("describe_unit")
    )
    assert report.ok and report.steps[0].error == "the reply held no ```python code block"
    assert server.chat_requests[1].messages[-1]["content"] == (
        "Reply with one program in a ```python code block."
    )
