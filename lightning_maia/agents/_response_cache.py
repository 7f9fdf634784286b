"""An on-disk cache of chat replies keyed by the full request, so a rerun replays for free.

The key hashes everything that decides the reply — model, endpoint, messages (images included,
as their data URLs), tools, tool choice, temperature and token limit — so a changed prompt,
image or setting is a miss, never a stale hit. Entries are JSON files written atomically,
readable by their owner only (0600, in 0700 folders). A reply is stored as the client returned
it, that is after :attr:`VLMClient.redactor` replaced any API key an endpoint echoed; a reply read
back is redacted again, so an entry written by an older version cannot bring a key back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightning_maia._atomic import write_text_atomically
from lightning_maia.tools.backends._base import Usage
from lightning_maia.tools.backends._vlm_messages import bound_reply
from lightning_maia.tools.backends.vlm import ChatMessage, ChatResult, ToolCall, VLMClient

log = logging.getLogger(__name__)


def request_key(
    client: VLMClient,
    messages: Sequence[ChatMessage],
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any] | None,
    max_tokens: int | None,
) -> str:
    payload = {
        "model": client.model,
        "endpoint": client.endpoint,
        "temperature": client.temperature,
        "max_tokens": max_tokens or client.max_tokens,
        "messages": list(messages),
        "tools": list(tools or []),
        "tool_choice": tool_choice,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class CachedChat:
    """``chat`` through a client, answering repeated requests from ``directory``.

    ``chat`` returns the reply and whether it came from the cache (a cached reply costs nothing).
    With ``directory=None`` every request goes to the client. With ``max_reply_chars`` and
    ``max_tool_calls`` every reply is cut to size (:func:`bound_reply`) before it is cached or
    returned, so a 5 MB reply is never stored whole.
    """

    def __init__(
        self,
        client: VLMClient,
        directory: str | Path | None = None,
        *,
        max_reply_chars: int | None = None,
        max_tool_calls: int | None = None,
    ) -> None:
        self.client = client
        self.directory = Path(directory) if directory is not None else None
        self.max_reply_chars = max_reply_chars
        self.max_tool_calls = max_tool_calls
        self.hits = 0
        self.misses = 0

    def _bounded(self, result: ChatResult) -> ChatResult:
        if self.max_reply_chars is None and self.max_tool_calls is None:
            return result
        return bound_reply(
            result,
            self.max_reply_chars if self.max_reply_chars is not None else sys.maxsize,
            self.max_tool_calls if self.max_tool_calls is not None else sys.maxsize,
        )

    def chat(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> tuple[ChatResult, bool]:
        if self.directory is None:
            return self._bounded(self.client.chat(messages, tools, tool_choice, max_tokens)), False
        key = request_key(self.client, messages, tools, tool_choice, max_tokens)
        path = self.directory / key[:2] / f"{key}.json"
        cached = self._load(path)
        if cached is not None:
            self.hits += 1
            return self._bounded(self.client.redactor.result(cached)), True
        self.misses += 1
        result = self._bounded(self.client.chat(messages, tools, tool_choice, max_tokens))
        self._save(path, result)
        return result, False

    @staticmethod
    def _load(path: Path) -> ChatResult | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return ChatResult(
                text=data["text"],
                tool_calls=tuple(ToolCall(**call) for call in data["tool_calls"]),
                finish_reason=data["finish_reason"],
                usage=Usage(**data["usage"]),
                model=data["model"],
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable cached reply %s (%s)", path, error)
            return None

    @staticmethod
    def _save(path: Path, result: ChatResult) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600 from the partial file's creation on: a reply never sits world-readable, not even
        # briefly.
        write_text_atomically(path, json.dumps(asdict(result)), mode=0o600)
