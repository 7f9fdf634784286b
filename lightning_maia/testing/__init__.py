"""Test utilities shipped with the package: a scripted chat-completions server on 127.0.0.1.

:class:`ChatServer` answers OpenAI-style chat completions from a script of replies
(:func:`text_reply`, :func:`tool_call_reply`, faults such as :func:`error_reply`);
:func:`hostile_script` scripts a model that misbehaves in the ways an agent must survive.
"""

from lightning_maia.testing._chat_server import (
    ChatRequest,
    ChatServer,
    ScriptedResponse,
    dropped_connection,
    empty_choices_reply,
    error_reply,
    malformed_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)
from lightning_maia.testing.hostile import SCENARIOS, hostile_script

__all__ = [
    "SCENARIOS",
    "ChatRequest",
    "ChatServer",
    "ScriptedResponse",
    "dropped_connection",
    "empty_choices_reply",
    "error_reply",
    "hostile_script",
    "malformed_reply",
    "text_reply",
    "tool_call_reply",
    "tool_calls_reply",
]
