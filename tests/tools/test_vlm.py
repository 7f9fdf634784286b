"""The VLM client and describer against a real loopback chat-completions server.

Every test talks HTTP to :class:`helpers.chat_server.ChatServer` on 127.0.0.1: the exact request
the SDK sends, the parsed reply, usage and cost, retries, timeouts, error mapping, secrecy of the
API key, and MAIA's describe/summarize semantics (dimmed regions, package prompts, concepts).
"""

from __future__ import annotations

import base64
import io
import logging
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from PIL import Image

from lightning_maia.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeoutError,
    ConfigurationError,
    MalformedResponseError,
    MissingDependencyError,
)
from lightning_maia.testing._chat_server import (
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
from lightning_maia.tools.backends._base import ImageDescriber, ImageItem, ImageSummarizer
from lightning_maia.tools.backends._regions import EMPTY_REGION_TEXT
from lightning_maia.tools.backends._regions import match_concepts as find_concepts
from lightning_maia.tools.backends.vlm import (
    PLACEHOLDER_API_KEY,
    ChatResult,
    ToolCall,
    VLMClient,
    data_url_to_image,
    image_to_data_url,
    parse_chat_completion,
    system_message,
    tool_message,
    user_message,
)
from lightning_maia.tools.backends.vlm_describer import (
    VLMDescriber,
    crop_region,
    highlight_region,
    load_prompt,
    parse_answer,
)

SECRET_KEY = "sk-test-Zq8vK3-DO-NOT-LEAK-7741"
ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_API_KEY")

DESCRIBE_PROMPT_TEXT = """\
The image shows a picture in which one region is highlighted: everything outside the region is
darkened. When a second image follows, it is a close-up crop of the same highlighted region.

Describe ONLY the highlighted region, not the darkened rest of the picture. Use one short phrase
(at most 12 words) that names what is there: objects or parts of objects, colours, shapes,
textures, patterns.

Answer in exactly this format:
[highlighted region]: <short phrase>"""

SUMMARIZE_PROMPT_TEXT = """\
Each of the following images shows a picture in which one region is highlighted: everything
outside the region is darkened.

What do the highlighted regions have in common? Consider several kinds of concepts: objects and
parts of objects, scenes, colours, shapes, textures and patterns. If the regions fall into a few
groups with a different common concept each, name every concept. Ignore the darkened parts.

Answer in exactly this format, with a short description:
[COMMON]: <short description>"""


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV_VARS, "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer() as running:
        yield running


@pytest.fixture
def make_client(server: ChatServer) -> Iterator[Callable[..., VLMClient]]:
    """Clients of ``server`` (model ``test-vlm``, short timeout), closed at teardown."""
    clients: list[VLMClient] = []

    def make(**kwargs: Any) -> VLMClient:
        options: dict[str, Any] = {
            "model": "test-vlm",
            "base_url": server.base_url,
            "api_key": SECRET_KEY,
            "timeout": 5.0,
            "max_retries": 0,
        }
        options.update(kwargs)
        client = VLMClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def decode_png(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return image


def error_texts(error: BaseException) -> list[str]:
    """str and repr of an error and every error in its chain."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current)]
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)
    return texts


# --- the request and the reply -----------------------------------------------------------------


def test_chat_sends_the_exact_request_and_parses_the_reply(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(text_reply("a red circle", prompt_tokens=1200, completion_tokens=30))
    client = make_client(
        max_tokens=64, temperature=0.2, price_per_1k_prompt=0.005, price_per_1k_completion=0.015
    )
    image = torch.rand(3, 12, 20)
    messages = [system_message("You describe images."), user_message("What is this?", [image])]

    result = client.chat(messages)

    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET_KEY}"
    body = request.json
    assert body is not None
    assert body["model"] == "test-vlm"
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.2
    assert "tools" not in body
    assert "tool_choice" not in body
    assert body["messages"][0] == {"role": "system", "content": "You describe images."}
    user = body["messages"][1]
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "text", "text": "What is this?"}
    assert user["content"][1]["type"] == "image_url"
    png = decode_png(user["content"][1]["image_url"]["url"])
    assert png.size == (20, 12)
    assert png.mode == "RGB"
    assert torch.allclose(
        data_url_to_image(user["content"][1]["image_url"]["url"]), image, atol=1 / 255
    )

    assert result.text == "a red circle"
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"
    assert result.model == "test-vlm"
    assert result.usage.requests == 1
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1200, 30)
    assert result.usage.cost_usd == pytest.approx(1.2 * 0.005 + 0.03 * 0.015)
    assert client.usage == result.usage


def test_chat_sends_tools_and_parses_tool_calls(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(
        tool_calls_reply([("dataset_exemplars", {"unit": 3}), ("describe_images", '{"ids": [1')])
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "dataset_exemplars",
                "description": "Top images of a unit.",
                "parameters": {"type": "object", "properties": {"unit": {"type": "integer"}}},
            },
        }
    ]
    client = make_client()

    result = client.chat([user_message("Go.")], tools=tools, tool_choice="auto", max_tokens=7)

    body = server.requests[0].json
    assert body is not None
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert body["max_tokens"] == 7
    assert result.text is None
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (
        ToolCall("call_1", "dataset_exemplars", '{"unit": 3}'),
        ToolCall("call_2", "describe_images", '{"ids": [1'),  # passed on as the model wrote it
    )
    assert result.to_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "dataset_exemplars", "arguments": '{"unit": 3}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "describe_images", "arguments": '{"ids": [1'},
            },
        ],
    }


def test_a_conversation_round_trips_through_the_server(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(tool_call_reply("call_units", {"prompt": "a dog"}), text_reply("done"))
    client = make_client()
    history = [user_message("Explain unit 3.")]
    first = client.chat(history)
    history += [first.to_message(), tool_message(first.tool_calls[0].id, "activation 4.2")]
    second = client.chat(history)

    assert second.text == "done"
    sent = server.requests[1].json
    assert sent is not None
    assert [message["role"] for message in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "activation 4.2",
    }
    assert client.usage.requests == 2
    assert client.usage.total_tokens == 30


def test_parse_chat_completion_accepts_content_parts_and_decoded_arguments() -> None:
    reply = {
        "choices": [
            {
                "message": {
                    "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "dog"}],
                    "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
                }
            }
        ]
    }
    result = parse_chat_completion(reply)
    assert result.text == "a dog"
    assert result.tool_calls == (ToolCall("call_0", "f", '{"x": 1}'),)
    assert result.usage.total_tokens == 0
    assert result.finish_reason is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, 2], "not a JSON object"),
        ({"choices": []}, "no choices"),
        ({"choices": [{"text": "legacy"}]}, "no message"),
        ({"choices": [{"message": {"content": 3}}]}, "not text"),
        ({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}, "length"),
        ({"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}, "no function name"),
    ],
)
def test_parse_chat_completion_rejects_what_does_not_parse(payload: object, reason: str) -> None:
    with pytest.raises(MalformedResponseError, match=reason):
        parse_chat_completion(payload)


# --- failures ----------------------------------------------------------------------------------


def test_a_server_that_is_down_raises_backend_error_in_time() -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    with VLMClient(model="m", base_url=base_url, timeout=0.5, max_retries=1) as client:
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1") as info:
            client.chat([user_message("hello")])
    elapsed = time.monotonic() - start
    assert type(info.value) is BackendError
    assert not info.value.retryable
    # Two refused connections and one backoff of at most 1 s.
    assert elapsed < 0.5 * 2 + 1.0 + 1.0


def test_a_slow_server_raises_timeout_after_every_retry(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.set_script(lambda request: text_reply("too late").delayed(3.0))
    timeout, retries = 0.5, 1
    client = make_client(timeout=timeout, max_retries=retries)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match=r"no answer within 0\.5 s \(2 attempts") as info:
        client.chat([user_message("hello")])
    elapsed = time.monotonic() - start
    assert info.value.retryable
    assert len(server.requests) == retries + 1
    assert timeout * (retries + 1) <= elapsed < timeout * (retries + 1) + 1.0 + 1.0


def test_a_rate_limit_is_retried_until_success(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(error_reply(429, retry_after=0), text_reply("finally"))
    client = make_client(max_retries=2)
    result = client.chat([user_message("hello")])
    assert result.text == "finally"
    assert len(server.requests) == 2
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"
    assert client.usage.requests == 1


def test_a_persistent_server_error_raises_after_every_retry(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.set_script([error_reply(500, "engine overloaded", retry_after=0.01)])
    server.repeat_last = True
    client = make_client(max_retries=2)
    with pytest.raises(BackendHTTPError, match=r"HTTP 500 .*engine overloaded") as info:
        client.chat([user_message("hello")])
    assert info.value.status == 500
    assert info.value.retryable
    assert len(server.requests) == 3


def test_a_client_error_is_not_retried(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(error_reply(400, "image too large"))
    client = make_client(max_retries=2)
    with pytest.raises(BackendHTTPError, match="image too large") as info:
        client.chat([user_message("hello")])
    assert info.value.status == 400
    assert not info.value.retryable
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (malformed_reply(), "not JSON"),
        (malformed_reply(b"<html>502 Bad Gateway</html>"), "not JSON"),
        (empty_choices_reply(), "no choices"),
        (ScriptedResponse({"choices": [{"index": 0}]}), "no message"),
    ],
)
def test_a_reply_that_does_not_parse_raises_malformed_response(
    server: ChatServer,
    make_client: Callable[..., VLMClient],
    reply: ScriptedResponse,
    match: str,
) -> None:
    server.enqueue(reply)
    with pytest.raises(MalformedResponseError, match=match):
        make_client().chat([user_message("hello")])


def test_a_dropped_connection_is_retried_then_raises_backend_error(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(dropped_connection(), text_reply("second try"))
    assert make_client(max_retries=1).chat([user_message("hi")]).text == "second try"

    server.enqueue(dropped_connection())
    with pytest.raises(BackendError, match=r"cannot reach .*disconnected"):
        make_client(max_retries=0).chat([user_message("hi")])


# --- the API key -------------------------------------------------------------------------------


def test_the_api_key_is_sent_but_never_shown(
    server: ChatServer, make_client: Callable[..., VLMClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The server echoes the key in its error text: the raised message still must not show it.
    server.enqueue(
        text_reply("fine"),
        error_reply(401, f"Incorrect API key provided: {SECRET_KEY}"),
        malformed_reply(f"not json {SECRET_KEY}".encode()),
        dropped_connection(),
    )
    client = make_client(max_retries=0)
    client.chat([user_message("hello")])
    errors: list[BaseException] = []
    for _ in range(3):
        with pytest.raises(BackendError) as info:
            client.chat([user_message("hello")])
        errors.append(info.value)

    assert all(r.headers["authorization"] == f"Bearer {SECRET_KEY}" for r in server.requests)
    assert [type(error) for error in errors] == [
        BackendHTTPError,
        MalformedResponseError,
        BackendError,
    ]
    shown = [repr(client), str(client), str(vars(client)), caplog.text]
    shown += [record.getMessage() for record in caplog.records]
    for error in errors:
        shown += error_texts(error)
    assert caplog.records  # the SDK and the client did log at DEBUG
    assert "***" in repr(client)
    for text in shown:
        assert SECRET_KEY not in text
        assert SECRET_KEY[3:15] not in text


def test_a_missing_key_sends_a_placeholder(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue("ok")
    client = make_client(api_key=None)
    client.chat([user_message("hello")])
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"
    assert not client.has_api_key
    assert "api_key=None" in repr(client)


# --- configuration -----------------------------------------------------------------------------


def test_base_url_model_and_key_fall_back_to_the_environment(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    server.enqueue("from env")
    with VLMClient() as client:
        assert client.chat([user_message("hello")]).text == "from env"
    request = server.requests[0]
    assert request.model == "env-model"
    assert request.headers["authorization"] == f"Bearer {SECRET_KEY}"

    server.enqueue("explicit wins")
    with VLMClient(model="arg-model") as client:
        client.chat([user_message("hello")])
    assert server.requests[1].model == "arg-model"


def test_a_missing_model_names_the_argument_and_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"`model`.*OPENAI_MODEL"):
        VLMClient(base_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"price_per_1k_prompt": -1.0}, "price_per_1k_prompt"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"`{name}` can be"):
        VLMClient(model="m", **options)


def test_a_missing_openai_extra_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'lightning-maia\[openai\]'"):
        VLMClient(model="m")


def test_a_pickled_client_keeps_its_settings_and_builds_a_new_connection(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue("one", "two")
    client = make_client()
    client.chat([user_message("hello")])
    copy = pickle.loads(pickle.dumps(client))
    try:
        assert copy.chat([user_message("hello")]).text == "two"
    finally:
        copy.close()
    assert server.requests[1].headers["authorization"] == f"Bearer {SECRET_KEY}"


def test_image_to_data_url_round_trips_and_checks_the_shape() -> None:
    image = torch.rand(3, 5, 7)
    url = image_to_data_url(image)
    assert decode_png(url).size == (7, 5)
    assert torch.allclose(data_url_to_image(url), image, atol=1 / 255)
    grey = data_url_to_image(image_to_data_url(torch.full((1, 2, 2), 0.5)))
    assert grey.shape == (3, 2, 2)
    with pytest.raises(ConfigurationError, match="`image` can be"):
        image_to_data_url(torch.rand(2, 2))
    with pytest.raises(ConfigurationError, match="`url` can be"):
        data_url_to_image("https://example.org/cat.png")


# --- the describer -----------------------------------------------------------------------------


def test_the_prompts_are_the_package_files() -> None:
    assert load_prompt("describe_region") == DESCRIBE_PROMPT_TEXT
    assert load_prompt("summarize_regions") == SUMMARIZE_PROMPT_TEXT


def test_describe_sends_the_dimmed_region_with_the_package_prompt(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(
        text_reply(
            "Sure.\n[highlighted region]: two striped dogs on grass.",
            prompt_tokens=300,
            completion_tokens=9,
        )
    )
    describer = VLMDescriber(
        make_client(price_per_1k_prompt=1.0), vocabulary=["dog", "cat", "grass", "texture=striped"]
    )
    image = torch.rand(3, 16, 16) * 0.8 + 0.2
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:10, 2:8] = True

    (description,) = describer.describe([ImageItem(image)], [mask])

    (request,) = server.requests
    assert request.texts() == [DESCRIBE_PROMPT_TEXT]
    (url,) = request.image_urls()
    assert decode_png(url).size == (16, 16)
    sent = data_url_to_image(url)
    assert torch.allclose(sent[:, mask], image[:, mask], atol=1 / 255)
    assert torch.allclose(sent[:, ~mask], image[:, ~mask] * describer.dim, atol=1 / 255)
    assert description.text == "two striped dogs on grass"
    assert description.concepts == ("dog", "grass", "texture=striped")
    assert description.usage.prompt_tokens == 300
    assert description.usage.cost_usd == pytest.approx(0.3)


def test_describe_with_a_crop_sends_a_close_up_after_the_dimmed_image(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue("[highlighted region]: a ring")
    describer = VLMDescriber(make_client(), show_crop=True, crop_margin=0.0, detail="low")
    image = torch.rand(3, 20, 30)
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[5:10, 10:20] = True

    describer.describe([ImageItem(image)], [mask])

    parts = [p for p in server.requests[0].content_parts() if p["type"] == "image_url"]
    assert [part["image_url"]["detail"] for part in parts] == ["low", "low"]
    assert decode_png(parts[0]["image_url"]["url"]).size == (30, 20)
    # The 10 x 5 box, scaled up to the image's longer side.
    assert decode_png(parts[1]["image_url"]["url"]).size == (30, 15)


def test_describe_whole_images_empty_masks_and_order(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    images = [torch.full((3, 8, 8), value) for value in (0.1, 0.5, 0.9, 0.7)]
    urls = {
        image_to_data_url(image): f"[highlighted region]: shade {i}"
        for i, image in enumerate(images)
    }
    lock, in_flight, most_in_flight = threading.Lock(), [0], [0]

    def answer(body: dict[str, Any]) -> str:
        with lock:
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
        (url,) = [p["image_url"]["url"] for p in body["messages"][0]["content"][1:]]
        time.sleep(0.2)  # long enough for the concurrent requests to overlap
        with lock:
            in_flight[0] -= 1
        return urls[url]

    server.set_script(answer)
    describer = VLMDescriber(make_client(), max_concurrency=3)
    empty = torch.zeros(8, 8, dtype=torch.bool)
    masks: list[torch.Tensor | None] = [None, None, empty, None]

    descriptions = describer.describe([ImageItem(image) for image in images], masks)

    assert [d.text for d in descriptions] == ["shade 0", "shade 1", EMPTY_REGION_TEXT, "shade 3"]
    assert len(server.requests) == 3  # none for the empty mask
    assert most_in_flight[0] > 1
    assert descriptions[2].usage.requests == 0
    assert describer.usage.requests == 3


def test_summarize_sends_every_region_in_one_request(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue(
        text_reply("[COMMON]: red objects,\nmostly circles", prompt_tokens=900, completion_tokens=6)
    )
    describer = VLMDescriber(make_client(), vocabulary=["red", "blue", "circle"])
    images = [torch.rand(3, 10, 10) for _ in range(3)]
    masks: list[torch.Tensor | None] = [torch.rand(10, 10) > 0.5 for _ in range(3)]

    summary = describer.summarize([ImageItem(image) for image in images], masks)

    (request,) = server.requests
    assert request.texts() == [SUMMARIZE_PROMPT_TEXT]
    urls = request.image_urls()
    assert len(urls) == 3
    for url, image, mask in zip(urls, images, masks, strict=True):
        assert mask is not None
        expected = highlight_region(image, mask, describer.dim)
        assert torch.allclose(data_url_to_image(url), expected, atol=1 / 255)
    assert summary.text == "red objects, mostly circles"
    assert summary.concepts == ("red", "circle")
    assert summary.usage.prompt_tokens == 900


def test_the_describer_implements_both_protocols(make_client: Callable[..., VLMClient]) -> None:
    describer = VLMDescriber(make_client())
    assert isinstance(describer, ImageDescriber)
    assert isinstance(describer, ImageSummarizer)
    assert describer.name == "vlm"
    assert SECRET_KEY not in repr(describer)


def test_a_describer_errors_propagate_typed(
    server: ChatServer, make_client: Callable[..., VLMClient]
) -> None:
    server.enqueue("[highlighted region]:  ", error_reply(503, retry_after=None))
    describer = VLMDescriber(make_client())
    item = ImageItem(torch.rand(3, 4, 4))
    with pytest.raises(MalformedResponseError, match="without a description"):
        describer.describe([item], [None])
    with pytest.raises(BackendHTTPError) as info:
        describer.summarize([item], [None])
    assert info.value.status == 503
    with pytest.raises(ConfigurationError, match="one entry per image"):
        describer.describe([item], [])


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"dim": 1.0}, "dim"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"detail": "max"}, "detail"),
    ],
)
def test_bad_describer_options_fail_at_construction(
    make_client: Callable[..., VLMClient], options: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"`{name}` can be"):
        VLMDescriber(make_client(), **options)


# --- pure helpers ------------------------------------------------------------------------------


def test_find_concepts_matches_whole_words_only() -> None:
    vocabulary = ["cat", "dog", "traffic light", "glass", "colour=red", "shape=star"]
    text = "A cathedral, red glasses and a traffic  light; no dogma, no stars-ish"
    assert find_concepts(text, vocabulary) == ("traffic light", "glass", "colour=red", "shape=star")
    assert find_concepts("CATS and Dogs", vocabulary) == ("cat", "dog")
    assert find_concepts("redder", ["colour=red"]) == ()


def test_parse_answer_takes_the_labelled_answer() -> None:
    assert parse_answer("[highlighted region]: **a blue star.**") == "a blue star"
    assert parse_answer("a plain answer\nwith more") == "a plain answer"
    assert parse_answer("[COMMON]: stripes\nand dots", first_line=False) == "stripes and dots"
    assert parse_answer("[COMMON]:") == ""


def test_highlight_and_crop_resize_masks_to_the_image() -> None:
    image = torch.ones(3, 8, 8)
    low_res = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # a float map at 2 x 2
    shown = highlight_region(image, low_res, dim=0.5)
    assert shown[:, :4, :4].eq(1.0).all()
    assert shown[:, 4:, :].eq(0.5).all()
    assert crop_region(image, low_res, margin=0.0).shape == (3, 8, 8)


def test_chat_result_defaults_are_empty() -> None:
    result = ChatResult(text="x")
    assert result.to_message() == {"role": "assistant", "content": "x"}
    assert result.usage.requests == 0


# --- the server itself -------------------------------------------------------------------------


def test_the_server_reports_an_exhausted_script_without_retries(
    make_client: Callable[..., VLMClient], server: ChatServer
) -> None:
    with pytest.raises(BackendHTTPError, match="script exhausted"):
        make_client(max_retries=2).chat([user_message("hello")])
    assert server.unscripted == 1
    assert len(server.requests) == 1


def test_the_server_stops_promptly_with_a_request_waiting_out_a_delay() -> None:
    server = ChatServer([text_reply("late").delayed(30.0)]).start()
    client = VLMClient(model="m", base_url=server.base_url, timeout=20.0, max_retries=0)
    failure: list[BaseException] = []

    def call() -> None:
        try:
            client.chat([user_message("hello")])
        except BaseException as error:
            failure.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5.0
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    server.stop()
    caller.join(timeout=10.0)
    client.close()
    assert time.monotonic() - start < 3.0
    assert not caller.is_alive()
    assert failure
    assert isinstance(failure[0], BackendError)


def test_the_server_lists_its_model(server: ChatServer) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(server.base_url + "/models", timeout=5) as reply:
        models = json.load(reply)
    assert models["data"][0]["id"] == server.model
    assert server.requests[0].method == "GET"
    assert server.chat_requests == []
