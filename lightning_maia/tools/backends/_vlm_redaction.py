"""Keep credentials out of everything a model or an endpoint writes.

A hostile or careless endpoint can echo the caller's API key back: in the reply text, in a tool
call's name or arguments, in an error body. The VLM client passes every reply through one
:class:`Redactor` before it returns it, so the key is gone before anything is stored, logged,
cached, shown to the model again or rendered in a report; the agent passes the text that code-mode
programs compute (printed output, tool arguments, final answers, error messages) through the same
redactor, as a program can assemble the key from pieces.

Redacted are the configured key (as written, JSON-escaped and URL-quoted), and the value of any
``Authorization`` header or ``Bearer`` token, whatever key it holds.

>>> redactor = Redactor(["sk-live-123456"])
>>> redactor.text("key sk-live-123456, Authorization: Bearer abcdefgh12345")
'key [redacted], Authorization: Bearer [redacted]'
>>> redactor.arguments('{"label": "\\\\u0073k-live-123456"}')
'{"label": "[redacted]"}'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from lightning_maia.tools.backends._vlm_messages import ChatResult, ToolCall

#: What a secret is replaced with.
REDACTED = "[redacted]"

# ``Authorization: Bearer xyz``, ``"authorization": "Basic xyz"``, ``authorization=xyz``.
_AUTHORIZATION = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token)\s+)?"
    r"(?!\[redacted\])(?!(?:bearer|basic|token)\b)[^\s\"',;}\]]+"
)
# A bearer token anywhere else (``Bearer sk-...`` in an echoed curl line).
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])[A-Za-z0-9._~+/=-]{6,}")


class Redactor:
    """Replace ``secrets`` (and any Authorization value) by ``[redacted]`` in text and values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.update({secret, json.dumps(secret)[1:-1], quote(secret, safe="")})
        # Longest first, so that a form containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every secret and Authorization value replaced."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        text = _AUTHORIZATION.sub(lambda m: f"{m[1]}{m[2] or ''}{REDACTED}", text)
        return _BEARER.sub(lambda m: f"{m[1]}{REDACTED}", text)

    def value(self, value: Any) -> Any:
        """``value`` with every string inside it (keys of mappings too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.value(item) for item in value)
        return value

    def arguments(self, raw: str) -> str:
        """Tool-call arguments (a JSON string) redacted after decoding, so that escapes such as
        ``\\u0073k-...`` hide nothing; text that does not parse is redacted as it is."""
        try:
            decoded = json.loads(raw)
        except (ValueError, RecursionError):
            return self.text(raw)
        cleaned = self.value(decoded)
        if cleaned == decoded and self.text(raw) == raw:
            return raw  # keep the model's own spelling when there was nothing to hide
        return json.dumps(cleaned)

    def result(self, result: ChatResult) -> ChatResult:
        """A chat reply with its text, tool names, call ids, arguments and model redacted."""
        return replace(
            result,
            text=None if result.text is None else self.text(result.text),
            tool_calls=tuple(
                ToolCall(
                    id=self.text(call.id),
                    name=self.text(call.name),
                    arguments=self.arguments(call.arguments),
                )
                for call in result.tool_calls
            ),
            model=self.text(result.model),
        )
