"""A misbehaving model never crashes, hangs or floods training.

Unit-level checks of the pieces (argument ranges, tool exceptions, the program worker's deadline
and memory cap, operand checks of the interpreter), then real Lightning fits with UnitInterpreter
(foreground and background) against the loopback chat server playing each hostile script of
:mod:`lightning_maia.testing.hostile`. Peak memory and wall time are measured by
``lightning-maia bench faults``, not here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
from helpers.lightning_models import ShapesClassifier, shapes_loaders
from lightning.pytorch.loggers import CSVLogger

from lightning_maia._options import Backends, Output
from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._sandbox import run_program
from lightning_maia.agents._sandbox_worker import ProgramWorker
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.subject import Subject
from lightning_maia.testing._chat_server import ChatServer, tool_calls_reply
from lightning_maia.testing.hostile import C_LEVEL_PROGRAMS, hostile_script
from lightning_maia.tools.backends._procedural import ProceduralGenerator
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import NeuronSpec, ShapesWorld, SyntheticNeuronModel
from lightning_maia.world._scene import Concept

ROOT = Path(__file__).resolve().parents[2]


def client_for(server: ChatServer) -> VLMClient:
    return VLMClient(model="hostile", base_url=server.base_url, timeout=10, max_retries=0)


def star_toolbox() -> Toolbox:
    model = SyntheticNeuronModel([NeuronSpec("mono", (Concept("shape", "star"),))], seed=0)
    return Toolbox(
        Subject(model, ["neurons:0"]), "neurons:0", exemplar_data=ShapesWorld(size=40), k=4
    )


# -- the pieces -------------------------------------------------------------------------------


def test_out_of_range_arguments_are_observations_naming_the_argument() -> None:
    answers = [
        tool_calls_reply(
            [
                ("text2image", {"prompts": ["a red circle"], "seed": -5}),
                ("text2image", {"prompts": ["a red circle"], "seed": 2**40}),
                ("text2image", {"prompts": ["a red circle"], "n_per_prompt": 0}),
                ("text2image", {"prompts": []}),
                ("log_experiment", {"title": "t" * 5_000, "image_ids": []}),
            ]
        ),
        tool_calls_reply([("final_answer", {"label": "stars", "description": "stars"})]),
    ]
    with ChatServer(answers) as server:
        report = VLMAgent(client_for(server)).run(star_toolbox(), TaskSpec("describe_unit"))
    assert report.ok
    assert [call.error for call in report.steps[0].tool_calls] == [
        "text2image: argument `seed` must be at least 0, got -5",
        "text2image: argument `seed` must be at most 4294967295, got 1099511627776",
        "text2image: argument `n_per_prompt` must be at least 1, got 0",
        "text2image: argument `prompts` must have at least 1 item(s), got 0",
        "log_experiment: argument `title` must have at most 4,000 characters, got 5,000",
    ]
    assert report.images == 0


class _BrokenGenerator(ProceduralGenerator):
    def generate(self, prompts, seeds, size):  # type: ignore[no-untyped-def]
        raise ValueError("expected non-negative integer")


def test_any_exception_of_a_tool_is_an_observation() -> None:
    toolbox = star_toolbox()
    toolbox.generator = _BrokenGenerator()
    answers = [
        tool_calls_reply([("text2image", {"prompts": ["a red circle"], "seed": 1})]),
        tool_calls_reply([("final_answer", {"label": "stars", "description": "stars"})]),
    ]
    with ChatServer(answers) as server:
        report = VLMAgent(client_for(server)).run(toolbox, TaskSpec("describe_unit"))
        feedback = server.chat_requests[1].messages[-1]["content"]
    assert report.ok and report.rounds == 2
    expected = "text2image failed: ValueError: expected non-negative integer"
    assert report.steps[0].tool_calls[0].error == expected
    assert feedback == f"error: {expected}"


def test_an_unexpected_failure_is_a_failed_report_with_the_traceback_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self, force):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the episode")

    monkeypatch.setattr("lightning_maia.agents.vlm_agent._Episode._round", broken)
    with ChatServer([]) as server:
        report = VLMAgent(client_for(server)).run(star_toolbox(), TaskSpec("describe_unit"))
    assert report.status == "failed"
    assert report.failure_reason == "unexpected error: RuntimeError: a bug in the episode"
    (record,) = [r for r in caplog.records if r.name == "lightning_maia.agents.vlm_agent"]
    assert record.exc_info is not None and "a bug in the episode" in (record.exc_text or "")


@pytest.mark.parametrize(
    ("program", "refusal"),
    [
        (C_LEVEL_PROGRAMS[0], "`in` on a range of 1,000,000,000,000 numbers"),
        ("print(1.5 in range(10**12))", "`in` on a range of 1,000,000,000,000 numbers"),
        (C_LEVEL_PROGRAMS[1], "comparison on these values would walk more than 100,000 items"),
        (C_LEVEL_PROGRAMS[2], "list.count() on these values would walk more than 100,000 items"),
        (C_LEVEL_PROGRAMS[3], "sorted() on these values would walk more than 100,000 items"),
        (
            "x = []\nfor i in range(200):\n    x = [x]\nprint(x == x[0])",
            "comparison on these values would walk",
        ),
        ("a = [0] * 1000\nb = [a] * 1000\nprint([1] * 1000 in b)", "`in` on these values"),
    ],
)
def test_c_level_operations_are_refused_before_they_run(program: str, refusal: str) -> None:
    result = run_program(program, {}, timeout_s=5)
    assert result.error is not None and result.error.startswith("stopped at line ")
    assert refusal in result.error


def test_small_operations_still_run() -> None:
    program = (
        "print(3 in range(10**12), [[1], [2]] == [[1], [2]], sorted([3, 1, 2]), [1, 1].count(1))"
    )
    assert run_program(program, {}).output == "True True [1, 2, 3] 2\n"


def test_the_worker_deadline_ends_a_program_the_interpreter_did_not_stop() -> None:
    # A negative grace puts the parent's deadline before the interpreter's own time limit, as
    # for a C-level operation that never returns to the interpreter.
    with ProgramWorker(grace_s=-0.8) as worker:
        assert worker.run("x = 1", {}).ok
        tic = time.monotonic()
        result = worker.run("while True:\n    pass", {}, timeout_s=1.0, max_steps=10**9)
        elapsed = time.monotonic() - tic
        assert result.error is not None and "its process was ended" in result.error
        assert worker.kills == 1 and 0.15 < elapsed < 1.0
        after = worker.run("print(x)", {})  # a fresh child: the variables are gone
    assert after.error == "NameError at line 1: name 'x' is not defined"


def test_the_worker_caps_its_memory_and_keeps_no_secrets_in_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-the-child")
    with ProgramWorker(max_memory_mb=300) as worker:
        assert worker.run("x = 1", {}).ok
        assert worker._process is not None
        pid = worker._process.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    (line,) = [row for row in limits.splitlines() if row.startswith("Max address space")]
    assert line.split()[3:5] == [str(300 * 1024 * 1024)] * 2
    assert b"sk-never-in-the-child" not in environment


def test_stop_request_kills_the_program_at_once() -> None:
    asked = [0]

    def should_stop() -> bool:
        asked[0] += 1
        return asked[0] > 2

    with ProgramWorker() as worker:
        tic = time.monotonic()
        result = worker.run(
            "while True:\n    pass", {}, timeout_s=30, max_steps=10**9, should_stop=should_stop
        )
    assert time.monotonic() - tic < 5
    assert result.error == "stopped: the run was asked to stop; the program's process was ended"


# -- hostile models inside real fits ------------------------------------------------------------


def _fit(tmp_path: Path, scenario: str, mode: str, background: bool) -> list[UnitReport]:
    output, cache = tmp_path / "maia", tmp_path / "cache"
    with ChatServer(hostile_script(scenario, mode)) as server:
        agent = VLMAgent(
            client_for(server),
            mode=mode,
            max_rounds=5 if scenario == "c_level" else 3,
            program_timeout_s=5,
            cache_dir=cache,
        )
        interpreter = UnitInterpreter(
            units=["features.2:0-1"],
            backends=Backends(agent=agent),
            exemplars=Exemplars(k=4),
            output=Output(output_dir=str(output), progress=False),
            background=background,
        )
        train, val = shapes_loaders(train=32, val=32)
        trainer = pl.Trainer(
            default_root_dir=tmp_path,
            max_epochs=1,
            limit_train_batches=1,
            num_sanity_val_steps=0,
            logger=CSVLogger(tmp_path, name="logs"),
            callbacks=[interpreter],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        trainer.fit(ShapesClassifier(), train, val)
    assert trainer.state.finished
    reports = interpreter.reports
    assert [r.unit for r in reports] == ["features.2:0", "features.2:1"]
    for report in reports:  # each failed or forced, with the reason
        assert (not report.ok and report.failure_reason) or report.details.get("forced"), report
    artifacts = sum(
        path.stat().st_size
        for root in (output, cache, tmp_path / "logs")
        for path in root.rglob("*")
        if path.is_file()
    )
    assert artifacts < len(reports) * 1_000_000, artifacts
    return reports


@pytest.mark.slow
def test_invalid_arguments_for_every_tool_in_a_fit_tools_mode(tmp_path: Path) -> None:
    reports = _fit(tmp_path, "invalid_arguments", "tools", background=False)
    for report in reports:
        assert (report.label, report.details["forced"]) == ("forced", "3 rounds")
        first, second = report.steps[0].tool_calls, report.steps[1].tool_calls
        assert all(call.error for call in first + second)
        assert [call.error for call in first][:2] == [
            "text2image: argument `seed` must be at least 0, got -5",
            "text2image: argument `n_per_prompt` must be at least 1, got 0",
        ]
        assert (first[2].error or "").startswith("no image with id 'gen-999'; known ids: ")
        assert first[3].error == "call_units: no images asked for"
        assert second[-1].error == (
            "final_answer: `logic` must be one of single, or, and, got 'xor'"
        )
        assert report.images == 4  # the exemplars the callback fetched: no invalid call made one


@pytest.mark.slow
def test_invalid_arguments_for_every_tool_in_a_fit_code_mode_background(tmp_path: Path) -> None:
    reports = _fit(tmp_path, "invalid_arguments", "code", background=True)
    for report in reports:
        assert report.details["forced"] == "3 rounds"
        errors = [call.error for call in report.steps[0].tool_calls]
        assert len(errors) == 8 and all(errors)
        assert errors[:3] == [
            "text2image: argument `seed` must be at least 0, got -5",
            "text2image: argument `n_per_prompt` must be at least 1, got 0",
            "text2image: argument `prompts` must be a list, got 'a red circle'",
        ]
        assert report.steps[0].error is None  # the program caught every refusal itself


@pytest.mark.slow
def test_c_level_programs_in_a_fit(tmp_path: Path) -> None:
    reports = _fit(tmp_path, "c_level", "code", background=False)
    for report in reports:
        assert report.details["forced"] == "5 rounds"
        errors = [step.error or "" for step in report.steps[:5]]
        assert "`in` on a range" in errors[0] and "comparison" in errors[1]
        assert "list.count()" in errors[2] and "sorted()" in errors[3]
        assert "step limit" in errors[4]
        assert all(step.seconds < 5 for step in report.steps)


@pytest.mark.slow
def test_a_flood_of_tool_calls_in_a_fit_tools_mode_background(tmp_path: Path) -> None:
    reports = _fit(tmp_path, "flood", "tools", background=True)
    for report in reports:
        # The first two calls made the 64 images of the budget; the other six were refused;
        # the other 92 of the reply never ran. 4 exemplars were fetched before the episode.
        assert report.details["forced"] == "the budget of 64 images for this unit"
        calls = report.steps[0].tool_calls
        assert len(calls) == 8 and [bool(call.error) for call in calls] == [False] * 2 + [True] * 6
        assert "budget of 68 images" in (calls[2].error or "")
        assert "more than 8 tool calls; only the first 8 ran" in (report.steps[0].error or "")
        assert report.images == 4 + 64
        assert report.rounds == 2  # the flood, then the forced answer


@pytest.mark.slow
def test_a_flood_of_tool_calls_in_a_fit_code_mode(tmp_path: Path) -> None:
    reports = _fit(tmp_path, "flood", "code", background=False)
    for report in reports:
        assert report.details["forced"] == "the budget of 64 images for this unit"
        assert report.images == 4 + 64 and len(report.steps[0].tool_calls) == 3
        assert "would pass the budget of 68 images" in (report.steps[0].error or "")


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "background"), [("tools", False), ("code", True)])
def test_a_5_mb_reply_in_a_fit(tmp_path: Path, mode: str, background: bool) -> None:
    reports = _fit(tmp_path, "huge_reply", mode, background=background)
    for report in reports:
        assert report.status == "failed"
        assert report.failure_reason is not None
        assert report.failure_reason.startswith("no final answer after 4 rounds")
        assert all(len(step.request) < 20_000 for step in report.steps)
    entries = list((tmp_path / "cache").rglob("*.json"))
    assert entries and max(path.stat().st_size for path in entries) < 40_000


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    import lightning.pytorch as pl
    sys.path.insert(0, {tests!r})
    from helpers.lightning_models import ShapesClassifier, shapes_loaders
    from lightning_maia.agents.vlm_agent import VLMAgent
    from lightning_maia._options import Backends, Output
    from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
    from lightning_maia.testing._chat_server import ChatServer, text_reply
    from lightning_maia.tools.backends.vlm import VLMClient

    def answer(request):
        print("AGENT RUNNING", flush=True)
        return text_reply("```python\\nwhile True:\\n    pass\\n```")

    with ChatServer(answer) as server:
        client = VLMClient(model="m", base_url=server.base_url, timeout=10, max_retries=0)
        agent = VLMAgent(client, mode="code", max_rounds=50, program_timeout_s=60,
                         program_max_steps=10**9)
        interpreter = UnitInterpreter(units=["features.2:0"], backends=Backends(agent=agent),
                                      exemplars=Exemplars(k=4), output=Output(progress=False))
        train, val = shapes_loaders(train=32, val=32)
        trainer = pl.Trainer(max_epochs=3, limit_train_batches=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             num_sanity_val_steps=0, callbacks=[interpreter])
        try:
            trainer.fit(ShapesClassifier(), train, val)
        finally:
            print("REPORTS", [r.failure_reason for r in interpreter.reports], flush=True)
    """
)


@pytest.mark.slow
def test_sigterm_ends_a_fit_whose_agent_runs_an_endless_program(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SIGTERM_SCRIPT.format(tests=str(ROOT / "tests")))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:  # wait until the agent runs its first program
            lines.append(line)
            if "AGENT RUNNING" in line:
                break
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        tic = time.monotonic()
        rest, _ = process.communicate(timeout=30)
        elapsed = time.monotonic() - tic
    finally:
        process.kill()
    output = "".join(lines) + rest
    assert elapsed < 15, output
    assert "REPORTS ['stopped: the process received SIGTERM']" in output, output[-3000:]


def test_logs_name_the_failing_tool(caplog: pytest.LogCaptureFixture) -> None:
    toolbox = star_toolbox()
    toolbox.generator = _BrokenGenerator()
    answers = [
        tool_calls_reply([("text2image", {"prompts": ["a red circle"]})]),
        tool_calls_reply([("final_answer", {"label": "s", "description": "s"})]),
    ]
    caplog.set_level(logging.WARNING, logger="lightning_maia.agents.vlm_agent")
    with ChatServer(answers) as server:
        VLMAgent(client_for(server)).run(toolbox, TaskSpec("describe_unit"))
    assert [r.getMessage() for r in caplog.records] == [
        "tool text2image raised ValueError on neurons:0"
    ]


def test_the_tool_call_budget_of_an_episode_forces_the_answer() -> None:
    final = tool_calls_reply([("final_answer", {"label": "s", "description": "s"})])
    answers = [
        tool_calls_reply([("dataset_exemplars", {}), ("dataset_exemplars", {})]),
        tool_calls_reply([("dataset_exemplars", {})]),
        final,
    ]
    with ChatServer(answers) as server:
        report = VLMAgent(client_for(server), max_tool_calls=2).run(
            star_toolbox(), TaskSpec("describe_unit")
        )
        forced = server.chat_requests[2].json
    assert report.ok and report.details["forced"] == "the budget of 2 tool calls for this unit"
    assert report.steps[1].tool_calls[0].error == (
        "not run: the budget of 2 tool calls for this unit is spent; give your final answer"
    )
    assert forced is not None and forced["tool_choice"]["function"]["name"] == "final_answer"
    assert forced["messages"][-1]["content"].startswith(
        "You have spent the budget of 2 tool calls for this unit: give your final answer now"
    )


def test_the_text_budget_forces_the_answer_and_long_replies_are_cut() -> None:
    from lightning_maia.testing._chat_server import text_reply

    final = tool_calls_reply([("final_answer", {"label": "s", "description": "s"})])
    with ChatServer([text_reply("x" * 5_000), final]) as server:
        report = VLMAgent(client_for(server), max_reply_chars=1_000, max_text_chars=500).run(
            star_toolbox(), TaskSpec("describe_unit")
        )
        resent = server.chat_requests[1].messages[2]["content"]
    assert report.details["forced"] == "the text budget of 500 characters"
    assert report.steps[0].request == "x" * 1_000 + (
        "\n[reply truncated: 4,000 more characters were cut]"
    )
    assert resent == report.steps[0].request  # what the model sees again is the cut reply
