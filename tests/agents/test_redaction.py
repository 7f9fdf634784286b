"""An endpoint that echoes the API key everywhere: the key reaches no file, log or message.

Real Lightning fits with UnitInterpreter and the VLM agent (tools and code mode) against the
loopback chat server; the server's script puts the key (plain, JSON-escaped and as an
Authorization header) into every field it controls.
"""

from __future__ import annotations

import json
import logging
import stat
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from helpers.lightning_models import ShapesClassifier, shapes_loaders
from lightning.pytorch.loggers import CSVLogger

from lightning_maia._options import Backends, Output
from lightning_maia.agents._response_cache import CachedChat
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.testing._chat_server import (
    ChatServer,
    error_reply,
    text_reply,
    tool_calls_reply,
)
from lightning_maia.tools.backends._vlm_redaction import REDACTED, Redactor
from lightning_maia.tools.backends.vlm import VLMClient

KEY = "sk-live-7f3a9c2e1b5d4f60"
ESCAPED = "".join(f"\\u{ord(c):04x}" for c in KEY)  # the key as JSON unicode escapes


def test_redactor_hides_every_form_of_the_key() -> None:
    redactor = Redactor([KEY])
    assert redactor.text(f"a {KEY} b") == f"a {REDACTED} b"
    assert redactor.text("Authorization: Bearer other-token-123") == (
        f"Authorization: Bearer {REDACTED}"
    )
    assert redactor.text('{"authorization": "Basic dXNlcjpwdw=="}') == (
        f'{{"authorization": "Basic {REDACTED}"}}'
    )
    assert redactor.text("curl -H 'x: Bearer abcdef123456'") == f"curl -H 'x: Bearer {REDACTED}'"
    assert json.loads(redactor.arguments(f'{{"label": "{ESCAPED}"}}')) == {"label": REDACTED}
    assert redactor.value({KEY: [KEY, (KEY,)], "n": 3}) == {
        REDACTED: [REDACTED, (REDACTED,)],
        "n": 3,
    }
    assert redactor.arguments('{"a": 1}') == '{"a": 1}'  # nothing to hide: the text as written
    assert Redactor([]).text("not-needed") == "not-needed"


def _echoing_tools_script() -> Any:
    """Round 1: the key in the text, a tool name and arguments; round 2: in the final answer;
    the second unit's first request: an HTTP error whose body holds the key."""
    rounds: dict[int, int] = {}

    def answer(request: dict[str, Any]) -> Any:
        opening = request["messages"][1]["content"]
        unit = 0 if "features.2:0" in opening else 1
        if unit == 1:
            return error_reply(400, f"invalid key {KEY} (Authorization: Bearer {KEY})")
        rounds[unit] = rounds.get(unit, 0) + 1
        if rounds[unit] % 2 == 1:
            return tool_calls_reply(
                [
                    (KEY, {}),
                    ("text2image", {"prompts": [f"a red circle {KEY}"], "seed": 0}),
                    ("dataset_exemplars", f'{{"x": "{ESCAPED}"}}'),
                ],
                content=f"Using Authorization: Bearer {KEY} and {KEY}",
            )
        final = (
            f'{{"label": "{ESCAPED}", "description": "Authorization: Bearer {KEY}", '
            f'"concepts": ["{KEY}"], "logic": "single"}}'
        )
        return tool_calls_reply([("final_answer", final)], content=KEY)

    return answer


CODE_PROGRAM = """```python
key = "sk-live-" + "7f3a9c2e1b5d4f60"
print("the key is", key)
log_experiment(key, [], conclusion="Authorization: Bearer " + key)
raise ValueError("leaking " + key)
```"""
CODE_FINAL = """```python
k = "sk-live-" + "7f3a9c2e1b5d4f60"
final_answer(k, "it echoes " + k, [k], "single")
```"""


def _echoing_code_script() -> Any:
    def answer(request: dict[str, Any]) -> Any:
        first_round = len(request["messages"]) == 2  # the system prompt and the opening
        program = CODE_PROGRAM if first_round else CODE_FINAL
        return text_reply(f"{KEY}\n{program}", model=KEY)

    return answer


def _fit(tmp_path: Path, server: ChatServer, mode: str) -> tuple[UnitInterpreter, Path, Path]:
    output, cache = tmp_path / "maia", tmp_path / "cache"
    client = VLMClient(
        model="scripted-vlm", base_url=server.base_url, api_key=KEY, timeout=5, max_retries=0
    )
    agent = VLMAgent(client, mode=mode, max_rounds=3, cache_dir=cache)
    interpreter = UnitInterpreter(
        units=["features.2:0-1"],
        backends=Backends(agent=agent),
        exemplars=Exemplars(k=4),
        output=Output(output_dir=str(output), progress=False),
    )
    train, val = shapes_loaders(val=32)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path, name="logs"),
        callbacks=[interpreter],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(ShapesClassifier(), train, val)
    return interpreter, output, cache


def _files_holding_the_key(root: Path) -> list[str]:
    # A program's source may hold the key in pieces ("sk-live-" + "..."); what it computes may not.
    needles = (KEY.encode(), ESCAPED.encode())
    return [
        str(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and any(n in path.read_bytes() for n in needles)
    ]


@pytest.mark.parametrize("mode", ["tools", "code"])
def test_an_echoed_key_reaches_no_artifact_log_or_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    script = _echoing_tools_script() if mode == "tools" else _echoing_code_script()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught, ChatServer(script) as server:
        warnings.simplefilter("always")
        interpreter, output, cache = _fit(tmp_path, server, mode)
        # The client did send the key (so the test could leak it), as an Authorization header.
        assert server.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"
    reports = interpreter.reports
    assert [r.unit for r in reports] == ["features.2:0", "features.2:1"]
    first = reports[0]
    assert first.ok, first.failure_reason
    assert first.label == REDACTED and REDACTED in first.description
    if mode == "tools":
        assert first.concepts == (REDACTED,)
        assert not reports[1].ok and "HTTP 400" in (reports[1].failure_reason or "")
        assert REDACTED in (reports[1].failure_reason or "")
        tool_names = [c.tool for c in first.steps[0].tool_calls]
        assert tool_names == [REDACTED, "text2image", "dataset_exemplars"]
        assert f"unknown tool '{REDACTED}'" in (first.steps[0].tool_calls[0].error or "")
    else:
        assert reports[1].ok
        assert first.steps[0].error == f"ValueError at line 4: leaking {REDACTED}"
        logged = first.steps[0].tool_calls[0]
        assert (logged.tool, logged.arguments["arg0"]) == ("log_experiment", REDACTED)
        assert first.evidence[0].conclusion == f"Authorization: Bearer {REDACTED}"
        feedback = [
            m["content"] for r in server.chat_requests for m in r.messages if m["role"] == "user"
        ]
        assert f"Program output:\nthe key is {REDACTED}\n" in [f[:38] for f in feedback]

    assert sorted(output.rglob("report.html")) and sorted(tmp_path.rglob("unit_reports/*.csv"))
    entries = sorted(cache.rglob("*.json"))
    assert entries, "the replies were cached"
    assert _files_holding_the_key(tmp_path) == []
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in entries)

    texts = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    texts += [str(w.message) for w in caught]
    texts += [r.failure_reason or "" for r in reports]
    assert not [text for text in texts if KEY in text or ESCAPED in text]


def test_a_cache_entry_written_with_a_key_is_redacted_when_read(tmp_path: Path) -> None:
    with ChatServer([text_reply("fresh")]) as server:
        client = VLMClient(
            model="m", base_url=server.base_url, api_key=KEY, timeout=5, max_retries=0
        )
        cache = CachedChat(client, tmp_path)
        messages = [{"role": "user", "content": "hi"}]
        result, cached = cache.chat(messages)
        assert (result.text, cached) == ("fresh", False)
        (entry,) = tmp_path.rglob("*.json")
        data = json.loads(entry.read_text())
        data["text"] = f"old entry with {KEY}"
        entry.write_text(json.dumps(data))
        again, cached = cache.chat(messages)
    assert (again.text, cached) == (f"old entry with {REDACTED}", True)
