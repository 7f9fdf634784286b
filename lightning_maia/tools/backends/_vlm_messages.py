"""Chat messages for OpenAI-compatible endpoints, and the replies parsed from their answers.

Requests are built from :func:`user_message` (text then images, each image a PNG data URL made by
:func:`image_to_data_url`), :func:`system_message` and :func:`tool_message`. A decoded
chat-completions reply becomes a :class:`ChatResult` (its text, :class:`ToolCall` list, usage
and cost) through :func:`parse_chat_completion`, which raises
:class:`~lightning_maia.errors.MalformedResponseError` when the reply does not parse. Everything
here is pure: no network, no SDK. :mod:`~lightning_maia.tools.backends.vlm` re-exports it all.

>>> import torch
>>> image_to_data_url(torch.zeros(3, 2, 2))[:22]
'data:image/png;base64,'
>>> message = user_message("What is this?", [torch.zeros(3, 2, 2)])
>>> [part["type"] for part in message["content"]]
['text', 'image_url']
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lightning_maia.errors import MalformedResponseError, bad_option
from lightning_maia.tools.backends._base import Usage
from lightning_maia.tools.backends._regions import to_pil

#: A chat message in the OpenAI schema (``role``, ``content``, ...), as sent on the wire.
ChatMessage = dict[str, Any]

_IMAGE_DETAILS = ("low", "high", "auto")


# --- messages ----------------------------------------------------------------------------------


def image_to_data_url(image: Tensor) -> str:
    """A float (3, H, W) image in [0, 1] as a ``data:image/png;base64,...`` URL.

    A single-channel (1, H, W) image is sent as grey. Values are clamped to [0, 1] and rounded to
    8 bits (:func:`~lightning_maia.tools.backends._regions.to_pil`).
    """
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_url_to_image(url: str) -> Tensor:
    """The float (3, H, W) image in [0, 1] that a ``data:image/...;base64,...`` URL holds.

    The inverse of :func:`image_to_data_url`, for tests and scripted servers that read the
    images a client sent.
    """
    header, _, payload = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64") and payload):
        raise bad_option("url", "a data:image/...;base64,... URL", url[:40])
    with Image.open(io.BytesIO(base64.b64decode(payload))) as decoded:
        array = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255.0)


def image_part(image: Tensor | str, detail: str | None = None) -> dict[str, Any]:
    """One ``image_url`` content part: a tensor (sent as a PNG data URL) or a URL as is.

    ``detail`` (``low``, ``high`` or ``auto``) is OpenAI's resolution hint; None leaves it out.
    """
    if detail is not None and detail not in _IMAGE_DETAILS:
        raise bad_option("detail", "low, high, auto or None", detail)
    url = image if isinstance(image, str) else image_to_data_url(image)
    image_url: dict[str, Any] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def user_message(
    text: str, images: Sequence[Tensor | str] = (), detail: str | None = None
) -> ChatMessage:
    """A user message: the text, then each image as an ``image_url`` part (text only: a string)."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend(image_part(image, detail) for image in images)
    return {"role": "user", "content": parts}


def system_message(text: str) -> ChatMessage:
    """A system message."""
    return {"role": "system", "content": text}


def tool_message(tool_call_id: str, content: str) -> ChatMessage:
    """The result of one tool call, answering the assistant's call ``tool_call_id``."""
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


# --- replies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One function call the assistant asked for."""

    #: The id that the tool's answer (:func:`tool_message`) refers back to.
    id: str
    #: The function's name.
    name: str
    #: The arguments as the JSON string the model wrote; it may not parse.
    arguments: str


@dataclass(frozen=True)
class ChatResult:
    """The assistant's reply to one chat request."""

    #: The text the assistant wrote; None when it only called tools.
    text: str | None
    #: The function calls it asked for, in order.
    tool_calls: tuple[ToolCall, ...] = ()
    #: Why it stopped: ``stop``, ``length``, ``tool_calls``, ... (None when the server omits it).
    finish_reason: str | None = None
    #: Tokens and cost of this request.
    usage: Usage = field(default_factory=Usage)
    #: The model that answered, as the server names it.
    model: str = ""

    def to_message(self) -> ChatMessage:
        """The reply as an assistant message, to append to the conversation."""
        message: ChatMessage = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


def parse_chat_completion(
    payload: object, price_per_1k_prompt: float = 0.0, price_per_1k_completion: float = 0.0
) -> ChatResult:
    """The :class:`ChatResult` in a decoded chat-completions reply; raise if it does not parse.

    >>> reply = {"model": "m", "choices": [{"message": {"content": "a dog"},
    ...          "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    >>> result = parse_chat_completion(reply, price_per_1k_prompt=1.0)
    >>> result.text, result.usage.prompt_tokens, result.usage.cost_usd
    ('a dog', 10, 0.01)
    """
    if not isinstance(payload, Mapping):
        raise MalformedResponseError(f"the reply is {type(payload).__name__}, not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError("the reply has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, Mapping) else None
    if not isinstance(message, Mapping):
        raise MalformedResponseError("the reply's first choice has no message")
    text = _message_text(message.get("content"))
    tool_calls = tuple(_tool_call(raw, index) for index, raw in enumerate(_tool_calls(message)))
    finish_reason = choice.get("finish_reason")
    if text is None and not tool_calls:
        raise MalformedResponseError(
            f"the reply has neither text nor tool calls (finish_reason={finish_reason!r})"
        )
    prompt_tokens, completion_tokens = _token_counts(payload.get("usage"))
    usage = Usage(
        requests=1,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=prompt_tokens / 1000 * price_per_1k_prompt
        + completion_tokens / 1000 * price_per_1k_completion,
    )
    model = payload.get("model")
    return ChatResult(
        text=text,
        tool_calls=tool_calls,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=usage,
        model=model if isinstance(model, str) else "",
    )


def _message_text(content: object) -> str | None:
    if content is None or isinstance(content, str):
        return content
    # Some servers answer with a list of content parts instead of a string.
    if isinstance(content, list) and all(isinstance(part, Mapping) for part in content):
        texts = [part.get("text") for part in content if part.get("type") == "text"]
        if all(isinstance(text, str) for text in texts):
            return "".join(text for text in texts if isinstance(text, str))
    raise MalformedResponseError(f"the reply's content is {type(content).__name__}, not text")


def _tool_calls(message: Mapping[str, Any]) -> list[object]:
    raw = message.get("tool_calls")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponseError("the reply's tool_calls is not a list")
    return raw


def _tool_call(raw: object, index: int) -> ToolCall:
    function = raw.get("function") if isinstance(raw, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if (
        not isinstance(raw, Mapping)
        or not isinstance(function, Mapping)
        or not isinstance(name, str)
    ):
        raise MalformedResponseError(f"tool call {index} of the reply has no function name")
    arguments = function.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):  # Some servers send the arguments decoded.
        arguments = json.dumps(arguments)
    call_id = raw.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) else f"call_{index}", name=name, arguments=arguments
    )


def _token_counts(usage: object) -> tuple[int, int]:
    if not isinstance(usage, Mapping):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


#: The longest tool name kept from a reply (OpenAI allows 64 characters).
MAX_TOOL_NAME_CHARS = 64


def bound_reply(result: ChatResult, max_chars: int, max_tool_calls: int) -> ChatResult:
    """``result`` cut to size before it is stored, re-sent or rendered.

    The text is cut at ``max_chars`` with a note saying how much was cut; a tool call's
    arguments longer than ``max_chars`` become a JSON string that says so (the tool then answers
    that its arguments must be an object); tool names are cut at 64 characters; calls past
    ``max_tool_calls`` are dropped.

    >>> reply = ChatResult(text="x" * 30, tool_calls=(ToolCall("c1", "f", "{}"),) * 3)
    >>> bounded = bound_reply(reply, max_chars=10, max_tool_calls=2)
    >>> bounded.text, len(bounded.tool_calls)
    ('xxxxxxxxxx\\n[reply truncated: 20 more characters were cut]', 2)
    """
    text = result.text
    if text is not None and len(text) > max_chars:
        cut = len(text) - max_chars
        text = f"{text[:max_chars]}\n[reply truncated: {cut:,} more characters were cut]"
    calls = []
    for call in result.tool_calls[:max_tool_calls]:
        arguments = call.arguments
        if len(arguments) > max_chars:
            arguments = json.dumps(
                f"[{len(arguments):,} characters of arguments were cut: the limit is {max_chars:,}]"
            )
        calls.append(
            ToolCall(
                id=call.id[:MAX_TOOL_NAME_CHARS],
                name=call.name[:MAX_TOOL_NAME_CHARS],
                arguments=arguments,
            )
        )
    if text == result.text and calls == list(result.tool_calls):
        return result
    return ChatResult(
        text=text,
        tool_calls=tuple(calls),
        finish_reason=result.finish_reason,
        usage=result.usage,
        model=result.model[:MAX_TOOL_NAME_CHARS],
    )
