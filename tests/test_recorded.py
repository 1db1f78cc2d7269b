"""The clients against bodies the providers' own documents show (issue 12 point 10), through a real server.

Each test queues one file of tests/recorded/ (sources in its README) on the fake, which sends it byte for byte,
and calls a tool of a real `onlysq-mcp` process: over streamable HTTP (a module-wide uvicorn process) or, where
a fresh model catalogue is needed, over stdio. The expectations come from the recorded file itself, so a client
that misreads what the provider documents fails here even when the fake's own answers pass.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mcp import Client

from tests.fake_upstream import CHAT_PATH, IMAGEN_PATH, MODELS_PATH, RECORDED_DIR, YANDEX_CHAT_PATH, YANDEX_IMAGES_PATH
from tests.helpers import YANDEX_FOLDER, text_of

pytestmark = pytest.mark.anyio

YANDEX_IMAGE = {"model": "aliceai-image-art-3.0"}


def recorded_json(name: str) -> Any:
    return json.loads((RECORDED_DIR / name).read_text(encoding="utf-8"))


def recorded_reply(name: str) -> str:
    """The reply a recorded chat answer carries; an event stream read the way the docs' sample client reads it."""
    if not name.endswith(".sse"):
        return recorded_json(name)["choices"][0]["message"]["content"]
    text = []
    for line in (RECORDED_DIR / name).read_text(encoding="utf-8").splitlines():
        data = line.removeprefix("data: ").strip()
        if data and data != "[DONE]":
            text.append(json.loads(data)["choices"][0]["delta"].get("content") or "")
    return "".join(text)


async def call(url: str, tool: str, arguments: dict[str, Any]):
    async with Client(url) as client:
        return await client.call_tool(tool, arguments)


# --- answers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "arguments"),
    [
        (CHAT_PATH, "onlysq_v2_stream.sse", {"prompt": "Write a one-line story about AI."}),
        # A plain JSON answer to the streamed request the server sends by default (ONLYSQ_STREAM).
        (CHAT_PATH, "onlysq_v2_completion.json", {"prompt": "Hi! Write a short one-line story"}),
        (YANDEX_CHAT_PATH, "yandex_chat_stream.sse", {"prompt": "What can LLMs do?", "model": "yandexgpt"}),
        (YANDEX_CHAT_PATH, "yandex_chat_completion.json", {"prompt": "What can LLMs do?", "model": "yandexgpt"}),
    ],
)
async def test_recorded_chat_answers_are_read_whole(http_server, upstream, path, name, arguments):
    upstream.add_fault(path, "recorded", message=name)
    result = await call(http_server.url, "chat", arguments)
    assert not result.is_error, text_of(result)
    expected = recorded_reply(name)
    assert expected and text_of(result) == expected
    assert result.structured_content["finish_reason"] == "stop"
    if name == "onlysq_v2_completion.json":
        assert result.structured_content["usage"]["total_tokens"] == 30
    assert len(upstream.requests_to(path)) == 1


@pytest.mark.parametrize(
    ("path", "name", "arguments", "image"),
    [
        (IMAGEN_PATH, "onlysq_imagen.json", {"prompt": "cat on a blue water wave"}, lambda body: body["files"][0]),
        (IMAGEN_PATH, "onlysq_imagen_older.json", {"prompt": "Cat"}, lambda body: body["files"][0]),
        (YANDEX_IMAGES_PATH, "yandex_images.json", {"prompt": "A cute baby sea otter", **YANDEX_IMAGE},
         lambda body: body["data"][0]["b64_json"]),
    ],
)  # fmt: skip
async def test_recorded_image_answers_give_their_image(http_server, upstream, path, name, arguments, image):
    upstream.add_fault(path, "recorded", message=name)
    result = await call(http_server.url, "generate_image", arguments)
    assert not result.is_error, text_of(result)
    sent = base64.b64decode(image(recorded_json(name)))
    [inline] = [block for block in result.content if block.type == "image"]
    assert (inline.mime_type, base64.b64decode(inline.data)) == ("image/png", sent)
    [saved] = result.structured_content["images"]
    assert (saved["width"], saved["height"]) == ((4, 3) if name == "onlysq_imagen_older.json" else (3, 2))


async def test_recorded_model_list_is_the_catalogue(stdio_params, upstream):
    upstream.add_fault(MODELS_PATH, "recorded", message="onlysq_models.json")
    async with Client(stdio_params) as client:  # a new process: its catalogue is fetched now, not cached
        result = await client.call_tool("list_models", {"kind": "all"})
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data["source"] == "live"
    listed = {m["id"]: m for m in data["models"] if m["provider"] == "onlysq"}
    recorded = recorded_json("onlysq_models.json")["models"]
    assert "fake-live-only" not in listed  # the fake's own catalogue was not used
    for model_id in ("gemini-2.5-flash", "gpt-4o-mini", "deepseek-v3", "flux"):
        entry = recorded[model_id]
        assert listed[model_id]["description"] == entry["description"], model_id
        assert listed[model_id]["kind"] == {"text": "chat", "image": "image"}[entry["modality"]], model_id
    assert listed["gemini-2.5-flash"]["vision"] is True and listed["gemini-2.5-flash"]["owner"] == "google"
    assert listed["flux"].get("owner") is None  # absent in the recorded entry, and not invented
    assert len(upstream.requests_to(MODELS_PATH)) == 1


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "name", "tool", "arguments", "expected"),
    [
        # HTTP 200 carrying `{"error": {"message": ...}}`, the error shape public clients check for.
        (CHAT_PATH, 200, "onlysq_error.json", "chat", {"prompt": "hi"},
         "OnlySq: answered with an error: provider queue is full, try again later"),
        (IMAGEN_PATH, 200, "onlysq_error.json", "generate_image", {"prompt": "x"},
         "OnlySq: answered with an error: provider queue is full, try again later"),
        (IMAGEN_PATH, 400, "onlysq_error.json", "generate_image", {"prompt": "x"},
         "OnlySq: request rejected (HTTP 400: provider queue is full, try again later)"),
        (YANDEX_IMAGES_PATH, 403, "yandex_error_403_model_denied.json", "generate_image", {"prompt": "x", **YANDEX_IMAGE},
         f"the model is not available to this key or folder (HTTP 403: Access to model art://{YANDEX_FOLDER}/"
         "yandex-art/latest denied)"),
        # Under the 500 characters the server checks itself: the provider's own limit text still gets through.
        (YANDEX_IMAGES_PATH, 400, "yandex_error_400_prompt_limit.json", "generate_image", {"prompt": "x", **YANDEX_IMAGE},
         "request rejected (HTTP 400: Prompt positive size 702 exceeds limit (500))"),
    ],
)  # fmt: skip
async def test_recorded_errors_give_the_providers_message(http_server, upstream, path, status, name, tool, arguments,
                                                          expected):  # fmt: skip
    upstream.add_fault(path, "recorded", message=name, status=status)
    result = await call(http_server.url, tool, arguments)
    assert result.is_error
    assert expected in text_of(result), text_of(result)
    for wrong in ("the API may have changed", "credentials refused", "YANDEX_API_KEY"):
        assert wrong not in text_of(result)
    assert len(upstream.requests_to(path)) == 1  # none of these is worth a retry
