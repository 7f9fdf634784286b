"""A real chat-completions server on 127.0.0.1 that answers from a script, for tests.

It speaks the OpenAI protocol (``POST /v1/chat/completions``, ``GET /v1/models``), records every
request (headers and parsed JSON body) and answers each chat request with the next scripted
response, or with what a callable returns for the request's JSON. Responses can misbehave: an
HTTP error status (429 with ``Retry-After``, 500, ...), a delay, a body that is not JSON, a reply
without choices, a dropped connection.

**Why one file.** The server, its request handler and the scripted replies it serves are one
test double, used together.

>>> with ChatServer([text_reply("a red circle")]) as server:
...     import json, urllib.request
...     body = json.dumps({"model": "m", "messages": []}).encode()
...     request = urllib.request.Request(server.base_url + "/chat/completions", data=body)
...     reply = json.load(urllib.request.urlopen(request, timeout=5))
>>> reply["choices"][0]["message"]["content"], server.requests[0].model
('a red circle', 'm')

It is public so that users can test their own pipelines against a scripted VLM, offline; the
``overhead`` benchmark uses it as a slow stub VLM.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MODELS_PATHS = ("/v1/models", "/models")
DEFAULT_MODEL = "scripted-vlm"

_ids = itertools.count(1)


@dataclass(frozen=True)
class ScriptedResponse:
    """One answer of the server, and how it misbehaves.

    ``body`` is sent as JSON (a ``model`` of None is filled with the request's model); ``raw``,
    when set, is sent as is instead (e.g. malformed JSON). ``delay`` seconds pass before the
    answer; ``drop_connection`` closes the connection without any answer.
    """

    body: Mapping[str, Any] | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    drop_connection: bool = False

    def delayed(self, seconds: float) -> ScriptedResponse:
        """This response, sent after ``seconds``."""
        return replace(self, delay=seconds)


#: A script entry: a response, a reply text, or a whole JSON body.
Reply = ScriptedResponse | str | Mapping[str, Any]
#: A scripted handler: the request's JSON body in, the answer out.
Handler = Callable[[dict[str, Any]], Reply]
#: A script: answers served in order, or a handler.
Script = Sequence[Reply] | Handler


@dataclass(frozen=True)
class ChatRequest:
    """One request the server received."""

    method: str
    path: str
    #: Header names lower-cased.
    headers: dict[str, str]
    #: The parsed JSON body; None when there was none or it did not parse.
    json: dict[str, Any] | None
    raw: bytes
    received_at: float

    @property
    def model(self) -> str | None:
        return None if self.json is None else self.json.get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [] if self.json is None else list(self.json.get("messages", []))

    def content_parts(self) -> list[dict[str, Any]]:
        """Every content part of every message, in order (a string content is one text part)."""
        parts: list[dict[str, Any]] = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append({"type": "text", "text": content})
            elif isinstance(content, list):
                parts.extend(part for part in content if isinstance(part, dict))
        return parts

    def texts(self) -> list[str]:
        """The text of every text part, in order."""
        return [part["text"] for part in self.content_parts() if part.get("type") == "text"]

    def image_urls(self) -> list[str]:
        """The URL of every image part (data URLs for local images), in order."""
        return [
            part["image_url"]["url"]
            for part in self.content_parts()
            if part.get("type") == "image_url"
        ]


# --- responses ---------------------------------------------------------------------------------


def completion_body(
    message: Mapping[str, Any],
    *,
    finish_reason: str | None = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    model: str | None = None,
) -> dict[str, Any]:
    """A chat-completions reply body in the OpenAI schema around one assistant message."""
    return {
        "id": f"chatcmpl-scripted-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": dict(message), "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_reply(
    content: str,
    *,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str = "stop",
    model: str | None = None,
) -> ScriptedResponse:
    """The assistant answers with text."""
    message = {"role": "assistant", "content": content, "tool_calls": None}
    return ScriptedResponse(
        completion_body(
            message,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model,
        )
    )


def tool_calls_reply(
    calls: Sequence[tuple[str, Mapping[str, Any] | str]],
    *,
    content: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    model: str | None = None,
) -> ScriptedResponse:
    """The assistant calls functions: (name, arguments as a mapping or a raw JSON string).

    Call ids are ``call_1``, ``call_2``, ... in order.
    """
    tool_calls = [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for index, (name, arguments) in enumerate(calls, start=1)
    ]
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return ScriptedResponse(
        completion_body(
            message,
            finish_reason="tool_calls",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model,
        )
    )


def tool_call_reply(
    name: str, arguments: Mapping[str, Any] | str | None = None, **kwargs: Any
) -> ScriptedResponse:
    """The assistant calls one function (id ``call_1``); keywords as :func:`tool_calls_reply`."""
    return tool_calls_reply([(name, {} if arguments is None else arguments)], **kwargs)


def error_reply(
    status: int, message: str | None = None, *, retry_after: float | None = 0.0
) -> ScriptedResponse:
    """An HTTP error in OpenAI's error schema.

    ``retry_after`` seconds go into ``Retry-After`` (whole seconds) and ``retry-after-ms``; the
    SDK waits that long before retrying (0: its own backoff). None sends neither header.
    """
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(math.ceil(retry_after))
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    error_type = "rate_limit_error" if status == 429 else "server_error"
    body = {
        "error": {
            "message": message or f"scripted HTTP {status}",
            "type": error_type if status == 429 or status >= 500 else "invalid_request_error",
            "code": None,
        }
    }
    return ScriptedResponse(body, status=status, headers=headers)


def malformed_reply(raw: bytes = b'{"id": "chatcmpl-broken", "choices": [') -> ScriptedResponse:
    """A 200 reply whose body is not JSON, though it says so."""
    return ScriptedResponse(raw=raw)


def empty_choices_reply() -> ScriptedResponse:
    """A well-formed reply with no choices."""
    body = completion_body({"role": "assistant", "content": ""})
    body["choices"] = []
    return ScriptedResponse(body)


def dropped_connection() -> ScriptedResponse:
    """The server reads the request and closes the connection without answering."""
    return ScriptedResponse(drop_connection=True)


def as_response(reply: Reply) -> ScriptedResponse:
    """A script entry as a response: a string is a text reply, a mapping a whole JSON body."""
    if isinstance(reply, ScriptedResponse):
        return reply
    if isinstance(reply, str):
        return text_reply(reply)
    return ScriptedResponse(reply)


# --- the server --------------------------------------------------------------------------------


class ChatServer:
    """A chat-completions server on an ephemeral port of 127.0.0.1, in a daemon thread.

    ``script`` is a list of answers (served in order; see :func:`as_response`) or a callable
    from the request's JSON body to an answer. When the list runs out, the server repeats its
    last answer if ``repeat_last``, else answers HTTP 500 with ``x-should-retry: false`` and
    counts it in :attr:`unscripted`. It stops on :meth:`stop`, on leaving its ``with`` block, or
    by itself after ``max_lifetime_s``.
    """

    def __init__(
        self,
        script: Script = (),
        *,
        model: str = DEFAULT_MODEL,
        repeat_last: bool = False,
        max_lifetime_s: float = 120.0,
    ) -> None:
        self.model = model
        self.repeat_last = repeat_last
        self.max_lifetime_s = max_lifetime_s
        #: Chat requests answered without a scripted response.
        self.unscripted = 0
        self._lock = threading.Lock()
        self._queue: list[ScriptedResponse] = []
        self._handler: Handler | None = None
        self._last: ScriptedResponse | None = None
        self._requests: list[ChatRequest] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None
        self.set_script(script)

    # script

    def set_script(self, script: Script) -> None:
        """Replace the script: a list of answers or a callable (request JSON -> answer)."""
        with self._lock:
            if callable(script):
                self._handler, self._queue = script, []
            else:
                self._handler, self._queue = None, [as_response(reply) for reply in script]

    def enqueue(self, *replies: Reply) -> None:
        """Append answers to a list script."""
        with self._lock:
            if self._handler is not None:
                raise RuntimeError("the script is a callable; use set_script to replace it")
            self._queue.extend(as_response(reply) for reply in replies)

    @property
    def remaining(self) -> int:
        """Scripted answers not served yet (0 for a callable script)."""
        with self._lock:
            return len(self._queue)

    def _next_response(self, body: dict[str, Any]) -> ScriptedResponse:
        with self._lock:
            handler = self._handler
            if handler is None:
                if self._queue:
                    self._last = self._queue.pop(0)
                    return self._last
                if self.repeat_last and self._last is not None:
                    return self._last
                self.unscripted += 1
                return replace(
                    error_reply(500, "chat server script exhausted", retry_after=None),
                    headers={"x-should-retry": "false"},
                )
        return as_response(handler(body))

    # requests

    @property
    def requests(self) -> list[ChatRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[ChatRequest]:
        """The chat-completions requests received so far, in order."""
        return [request for request in self.requests if request.path in CHAT_PATHS]

    def _record(self, request: ChatRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # lifecycle

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the chat server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.chat_server = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._watchdog = threading.Timer(self.max_lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still waiting out a delay are dropped."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.cancel()
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return f"ChatServer({where}, {len(self.requests)} requests, {self.remaining} scripted left)"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    chat_server: ChatServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hang up (timeouts in the tests); loud about the rest."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedChatServer/1.0"
    #: Idle keep-alive connections close after this many seconds.
    timeout = 30.0
    server: _HTTPServer

    @property
    def chat_server(self) -> ChatServer:
        return self.server.chat_server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on recorded requests, not on access logs."""

    def do_GET(self) -> None:
        self._read_and_record()
        if self.path.split("?")[0] in MODELS_PATHS:
            model = {
                "id": self.chat_server.model,
                "object": "model",
                "created": 0,
                "owned_by": "test",
            }
            self._send(ScriptedResponse({"object": "list", "data": [model]}), None)
        else:
            self._send(error_reply(404, f"no route {self.path}", retry_after=None), None)

    def do_POST(self) -> None:
        request = self._read_and_record()
        if request.path not in CHAT_PATHS:
            self._send(error_reply(404, f"no route {self.path}", retry_after=None), None)
            return
        if request.json is None:
            self._send(
                error_reply(400, "the request body is not a JSON object", retry_after=None), None
            )
            return
        response = self.chat_server._next_response(request.json)
        if response.delay > 0 and self.chat_server._stopping.wait(response.delay):
            self.close_connection = True
            return
        if response.drop_connection:
            self.close_connection = True
            return
        self._send(response, request.model)

    def _read_and_record(self) -> ChatRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        request = ChatRequest(
            method=self.command,
            path=self.path.split("?")[0],
            headers={name.lower(): value for name, value in self.headers.items()},
            json=parsed if isinstance(parsed, dict) else None,
            raw=raw,
            received_at=time.monotonic(),
        )
        self.chat_server._record(request)
        return request

    def _send(self, response: ScriptedResponse, request_model: str | None) -> None:
        if response.raw is not None:
            payload = response.raw
        else:
            body = dict(response.body or {})
            if "model" in body and body["model"] is None:
                body["model"] = request_model or self.chat_server.model
            payload = json.dumps(body).encode()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # The client gave up (its timeout) and closed the connection.
            self.close_connection = True
