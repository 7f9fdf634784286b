"""A typed client for OpenAI-compatible chat endpoints with vision (OpenAI, Azure, vLLM, Ollama).

:class:`VLMClient` wraps the ``openai`` SDK (the ``openai`` extra): it sends chat messages, with
images as PNG data URLs, and returns the assistant's reply as a :class:`ChatResult` with its token
usage and cost. SDK errors come back as the library's typed errors: no answer in time
(:class:`~lightning_maia.errors.BackendTimeoutError`), an HTTP error status
(:class:`~lightning_maia.errors.BackendHTTPError`), an unreachable server
(:class:`~lightning_maia.errors.BackendError`), an answer that does not parse
(:class:`~lightning_maia.errors.MalformedResponseError`). The SDK retries timeouts, dropped
connections, 429 and 5xx replies ``max_retries`` times before the error is raised.

Building messages and parsing replies is :mod:`~lightning_maia.tools.backends._vlm_messages`'s
work; its names are re-exported here, so ``from lightning_maia.tools.backends.vlm import
ChatResult, user_message`` keeps working.

The API key never appears in the client's ``repr``, in error messages or in logs, and every reply
passes through :attr:`VLMClient.redactor` (:mod:`~lightning_maia.tools.backends._vlm_redaction`)
before it is returned: an endpoint that echoes the key (or any ``Authorization`` value) in its
text, tool calls or error bodies gets ``[redacted]`` back into the library instead.

>>> import torch
>>> image_to_data_url(torch.zeros(3, 2, 2))[:22]
'data:image/png;base64,'
>>> message = user_message("What is this?", [torch.zeros(3, 2, 2)])
>>> [part["type"] for part in message["content"]]
['text', 'image_url']
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lightning_maia._optional import require
from lightning_maia.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeoutError,
    ConfigurationError,
    MalformedResponseError,
    bad_option,
)
from lightning_maia.tools.backends._base import Usage
from lightning_maia.tools.backends._vlm_messages import (
    ChatMessage,
    ChatResult,
    ToolCall,
    data_url_to_image,
    image_part,
    image_to_data_url,
    parse_chat_completion,
    system_message,
    tool_message,
    user_message,
)
from lightning_maia.tools.backends._vlm_redaction import Redactor

__all__ = [
    "DEFAULT_BASE_URL",
    "PLACEHOLDER_API_KEY",
    "ChatMessage",
    "ChatResult",
    "ToolCall",
    "VLMClient",
    "data_url_to_image",
    "image_part",
    "image_to_data_url",
    "parse_chat_completion",
    "system_message",
    "tool_message",
    "user_message",
]

log = logging.getLogger(__name__)

#: The key sent when none is configured: local servers (vLLM, Ollama) usually need none.
PLACEHOLDER_API_KEY = "not-needed"
#: Where the SDK sends requests when no base URL is configured.
DEFAULT_BASE_URL = "https://api.openai.com/v1"

_SNIPPET_CHARS = 200


# --- the client --------------------------------------------------------------------------------


class _Secret:
    """A string that never shows itself in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class VLMClient:
    """Chat with an OpenAI-compatible endpoint that accepts images.

    Arguments left None fall back to the environment: ``base_url`` to ``OPENAI_BASE_URL`` (else
    OpenAI's API), ``model`` to ``OPENAI_MODEL`` (required), ``api_key`` to ``OPENAI_API_KEY``
    (else a placeholder, as local servers need no key). ``timeout`` (seconds) bounds each
    attempt; the SDK retries timeouts, dropped connections, 429 and 5xx ``max_retries`` times.
    Prices (USD per 1,000 tokens) turn token counts into :attr:`Usage.cost_usd`.

    The SDK client is built on the first request; :attr:`usage` sums every request's usage.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        temperature: float = 0.0,
        max_tokens: int = 512,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
    ) -> None:
        require("openai", extra="openai")
        model = model or os.environ.get("OPENAI_MODEL")
        if not model:
            raise ConfigurationError(
                "no VLM model is configured: pass `model` (e.g. VLMClient(model='gpt-4o')) "
                "or set the OPENAI_MODEL environment variable"
            )
        if not timeout > 0:
            raise bad_option("timeout", "a positive number of seconds", timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise bad_option("max_retries", "an integer >= 0", max_retries)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise bad_option("max_tokens", "an integer >= 1", max_tokens)
        if not temperature >= 0:
            raise bad_option("temperature", "a number >= 0", temperature)
        for name, price in (
            ("price_per_1k_prompt", price_per_1k_prompt),
            ("price_per_1k_completion", price_per_1k_completion),
        ):
            if not price >= 0:
                raise bad_option(name, "a number >= 0", price)
        self.model: str = model
        self.base_url: str | None = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = _Secret(api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY)
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.price_per_1k_prompt = float(price_per_1k_prompt)
        self.price_per_1k_completion = float(price_per_1k_completion)
        #: The summed usage of every request this client made.
        self.usage = Usage()
        self._sdk: Any = None
        self._lock = threading.Lock()

    @property
    def redactor(self) -> Redactor:
        """Replaces the configured key and any Authorization value in text by ``[redacted]``."""
        return Redactor([self._api_key.reveal()] if self.has_api_key else [])

    @property
    def endpoint(self) -> str:
        """The base URL requests go to, without credentials or query, for messages."""
        parts = urlsplit(self.base_url or DEFAULT_BASE_URL)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    @property
    def has_api_key(self) -> bool:
        """Whether a real key (not the placeholder) is configured."""
        return self._api_key.reveal() != PLACEHOLDER_API_KEY

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.endpoint!r}, "
            f"timeout={self.timeout}, max_retries={self.max_retries}, "
            f"api_key={'***' if self.has_api_key else None})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sdk"] = None  # An HTTP client does not pickle; the copy builds its own.
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __enter__(self) -> VLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SDK's HTTP connections (a later request opens new ones)."""
        with self._lock:
            sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close()

    def _client(self) -> Any:
        with self._lock:
            if self._sdk is None:
                openai = require("openai", extra="openai")
                self._sdk = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key.reveal(),
                    max_retries=self.max_retries,
                    timeout=self.timeout,
                )
            return self._sdk

    def chat(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Send ``messages`` (and the ``tools`` the model may call); return the assistant's reply.

        ``max_tokens`` overrides the client's limit for this request.
        """
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
        }
        if tools:
            request["tools"] = list(tools)
        if tool_choice is not None:
            request["tool_choice"] = tool_choice
        log.debug(
            "chat request to %s: model=%s, %d messages, %d tools",
            self.endpoint,
            self.model,
            len(request["messages"]),
            len(request["tools"]) if tools else 0,
        )
        body = self._send(request)
        try:
            payload = json.loads(body)
        except ValueError:
            snippet = body[:_SNIPPET_CHARS]
            raise MalformedResponseError(
                self._redact(f"{self.endpoint} answered with a body that is not JSON: {snippet!r}")
            ) from None
        try:
            result = parse_chat_completion(
                payload, self.price_per_1k_prompt, self.price_per_1k_completion
            )
        except MalformedResponseError as error:
            raise MalformedResponseError(
                self._redact(f"{self.endpoint} sent a reply that does not parse: {error}")
            ) from None
        result = self.redactor.result(result)
        with self._lock:
            self.usage.add(result.usage)
        log.debug(
            "chat reply from %s: finish_reason=%s, %d tool calls, %d+%d tokens",
            self.endpoint,
            result.finish_reason,
            len(result.tool_calls),
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
        )
        return result

    def _send(self, request: dict[str, Any]) -> str:
        """POST the request through the SDK (with its retries); the raw body, or a typed error."""
        openai = require("openai", extra="openai")
        client = self._client()
        try:
            raw = client.chat.completions.with_raw_response.create(**request)
            return str(raw.text)
        except openai.APITimeoutError as error:
            raise BackendTimeoutError(
                f"{self.endpoint} gave no answer within {self.timeout:g} s "
                f"({self._attempts}, model {self.model!r})"
            ) from self._safe_cause(error)
        except openai.APIStatusError as error:
            status = int(error.status_code)
            raise BackendHTTPError(
                self._redact(
                    f"{self.endpoint} answered HTTP {status} (model {self.model!r}): "
                    f"{_error_detail(error.body)}"
                ),
                status=status,
            ) from self._safe_cause(error)
        except openai.APIConnectionError as error:
            cause = error.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
            raise BackendError(
                self._redact(f"cannot reach {self.endpoint} ({self._attempts}): {reason}")
            ) from self._safe_cause(error)
        except openai.APIResponseValidationError as error:
            raise MalformedResponseError(
                self._redact(f"{self.endpoint} sent a reply that does not parse: {error}")
            ) from self._safe_cause(error)

    @property
    def _attempts(self) -> str:
        return "1 attempt" if self.max_retries == 0 else f"{self.max_retries + 1} attempts"

    def _safe_cause(self, error: BaseException) -> BaseException | None:
        """``error`` to chain to ours, or None when its chain shows the key (a server echoed it)."""
        key = self._api_key.reveal()
        current: BaseException | None = error
        while current is not None:
            if key in str(current) or key in repr(current):
                return None
            current = current.__cause__ or current.__context__
        return error

    def _redact(self, text: str) -> str:
        return self.redactor.text(text)


def _error_detail(body: object) -> str:
    """The error message in an OpenAI-style error body, shortened."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, Mapping) else inner
        text = str(message) if message is not None else json.dumps(body)
    else:
        text = str(body) if body is not None else "no details"
    return text[:_SNIPPET_CHARS]
