"""`chat` and `list_models` with Yandex AI Studio's chat models, against the fake `POST /v1/chat/completions`."""

from __future__ import annotations

import pytest
from mcp import Client

from onlysq_mcp.server import app_factory
from tests.fake_upstream import CHAT_PATH, YANDEX_CHAT_PATH
from tests.helpers import YANDEX_FOLDER, YANDEX_IAM, YANDEX_KEY, text_of

pytestmark = pytest.mark.anyio

YANDEX_CHAT_MODELS = {"aliceai-llm", "yandexgpt", "yandexgpt-lite"}


async def test_yandex_chat_streams_over_stdio(stdio_params, upstream):
    upstream.chat_reply = "слово " * 30
    upstream.stream_chunk_delay = 0.02
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(stdio_params) as client:
        result = await client.call_tool(
            "chat", {"prompt": "Привет", "system": "Be brief.", "model": "yandexgpt"}, progress_callback=on_progress
        )
        listed = await client.call_tool("list_models", {"kind": "chat"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == upstream.chat_reply
    assert len(seen) >= 2  # the reply arrived in pieces, each reported as progress
    data = result.structured_content
    assert data["finish_reason"] == "stop" and data["usage"]["total_tokens"] > 0
    [call] = upstream.requests_to(YANDEX_CHAT_PATH)
    assert call.headers["authorization"] == f"Api-Key {YANDEX_KEY}"
    assert call.headers["openai-project"] == YANDEX_FOLDER
    assert call.json == {
        "model": f"gpt://{YANDEX_FOLDER}/yandexgpt/latest",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Привет"}],
        "stream": True,
    }
    assert upstream.requests_to(CHAT_PATH) == []
    listed_yandex = {m["id"] for m in listed.structured_content["models"] if m["provider"] == "yandex"}
    assert listed_yandex == YANDEX_CHAT_MODELS


@pytest.mark.parametrize(
    ("model", "uri"),
    [
        ("aliceai-llm", f"gpt://{YANDEX_FOLDER}/aliceai-llm/latest"),
        ("yandexgpt-lite/rc", f"gpt://{YANDEX_FOLDER}/yandexgpt-lite/rc"),
        (f"gpt://{YANDEX_FOLDER}/yandexgpt/deprecated", f"gpt://{YANDEX_FOLDER}/yandexgpt/deprecated"),
    ],
)
async def test_yandex_model_ids_become_model_uris(make_settings, upstream, model, uri):
    settings = make_settings(
        yandex=False, YANDEX_IAM_TOKEN=YANDEX_IAM, YANDEX_FOLDER_ID=YANDEX_FOLDER, YANDEX_BASE_URL=upstream.base_url
    )
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("chat", {"prompt": "hi", "model": model, "temperature": 0.3, "max_tokens": 50})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: hi"
    [call] = upstream.requests_to(YANDEX_CHAT_PATH)
    assert call.headers["authorization"] == f"Bearer {YANDEX_IAM}"
    assert (call.json["model"], call.json["temperature"], call.json["max_tokens"]) == (uri, 0.3, 50)
    # No progress token, so one JSON body rather than a stream (the stream: the stdio test above).
    assert call.json["stream"] is False


@pytest.mark.parametrize("configured", [True, False])
async def test_yandex_chat_models_listed_only_when_configured(make_settings, upstream, configured):
    async with Client(app_factory(make_settings(yandex=configured))) as client:
        result = await client.call_tool("list_models", {"kind": "chat"})
    models = result.structured_content["models"]
    yandex = {m["id"] for m in models if m["provider"] == "yandex"}
    assert yandex == (YANDEX_CHAT_MODELS if configured else set())
    assert all(m["kind"] == "chat" for m in models)
    assert "gpt-4o-mini" in {m["id"] for m in models}


@pytest.mark.parametrize("model", ["yandexgpt", "aliceai-llm/rc", "gpt://b1gother/yandexgpt/latest"])
async def test_yandex_chat_model_without_yandex_configured(make_settings, upstream, model):
    async with Client(app_factory(make_settings(yandex=False))) as client:
        result = await client.call_tool("chat", {"prompt": "x", "model": model})
    assert result.is_error
    assert "Yandex is not configured" in text_of(result)
    for name in ("YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "YANDEX_FOLDER_ID"):
        assert name in text_of(result)
    assert upstream.requests_to(YANDEX_CHAT_PATH) == [] and upstream.requests_to(CHAT_PATH) == []


async def test_a_folder_the_key_does_not_belong_to_is_refused_like_any_credential(make_settings, upstream):
    settings = make_settings(YANDEX_FOLDER_ID="b1gsomeoneelse")
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("chat", {"prompt": "x", "model": "yandexgpt"})
    assert result.is_error
    text = text_of(result)
    assert "Yandex AI Studio: credentials refused (HTTP 403: Permission to" in text, text
    assert "YANDEX_FOLDER_ID is the folder they belong to" in text
    assert YANDEX_KEY not in text


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("status", {"status": 401}, "credentials refused (HTTP 401"),
        ("status", {"status": 400, "message": "content filter"}, "request rejected (HTTP 400: content filter)"),
        ("status", {"status": 503, "times": 4}, "gave up after 4 tries"),  # through every retry
        ("abort_stream", {"after_chunks": 1}, "The answer was cut off after 4 characters"),
        ("stream_error", {"after_chunks": 1, "message": "overloaded"}, "the model failed mid-answer (overloaded)"),
        ("finish_error", {}, "reported a failed generation"),
        ("missing_field", {}, "answered without the `choices` field"),
    ],
)
async def test_yandex_chat_failures_are_the_same_tool_errors(make_settings, upstream, fault, options, expected):
    # Streamed, as a caller who asks for progress gets it; `test_chat.py` covers the unstreamed answer.
    server = app_factory(make_settings(ONLYSQ_STREAM="true"))
    upstream.add_fault(YANDEX_CHAT_PATH, fault, **options)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "hello there", "model": "aliceai-llm"})
        after = await client.call_tool("chat", {"prompt": "again", "model": "aliceai-llm"})
    assert result.is_error
    assert "Yandex AI Studio: " in text_of(result) and expected in text_of(result), text_of(result)
    assert YANDEX_KEY not in text_of(result)
    assert text_of(after) == "Echo: again"  # the server lives on, and the next call succeeds
