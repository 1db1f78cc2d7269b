"""`chat` through an MCP client against the fake OnlySq upstream."""

from __future__ import annotations

import time

import pytest
from mcp import Client

from tests.helpers import TEST_KEY, catalogue_loaded, text_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_chat_returns_reply_and_structured_metadata(server, upstream, mode):
    async with Client(server, mode=mode) as client:
        result = await client.call_tool("chat", {"prompt": "Hello there"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: Hello there"
    data = result.structured_content
    assert data["model"] == "gpt-4o-mini"
    assert data["reply"] == "Echo: Hello there"
    assert data["finish_reason"] == "stop"
    assert data["usage"]["total_tokens"] > 0
    call = upstream.requests_to("/ai/v2")[-1]
    assert call.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert call.headers["user-agent"].startswith("onlysq-mcp/")
    assert call.json["model"] == "gpt-4o-mini"
    # No progress token: nothing would show the pieces of a stream, so one JSON body is asked for.
    assert call.json["request"]["stream"] is False
    assert call.json["request"]["messages"] == [{"role": "user", "content": "Hello there"}]
    # Unset sampling options are not sent, so the model keeps its own defaults.
    assert "temperature" not in call.json["request"]
    assert "max_tokens" not in call.json["request"]


async def test_chat_sends_system_history_and_options(server, upstream):
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
    ]
    async with Client(server) as client:
        result = await client.call_tool(
            "chat",
            {
                "prompt": "What is my name?",
                "system": "Answer briefly.",
                "messages": history,
                "model": "gemini-2.5-flash",
                "temperature": 0.2,
                "max_tokens": 50,
            },
        )
    assert not result.is_error, text_of(result)
    sent = upstream.requests_to("/ai/v2")[-1].json
    assert sent["model"] == "gemini-2.5-flash"
    assert sent["request"]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        *history,
        {"role": "user", "content": "What is my name?"},
    ]
    assert sent["request"]["temperature"] == 0.2
    assert sent["request"]["max_tokens"] == 50
    assert result.structured_content["model"] == "gemini-2.5-flash"


async def test_chat_reports_progress_while_streaming(server, upstream):
    upstream.chat_reply = "A long answer that arrives in many small pieces. " * 4
    upstream.stream_chunk_delay = 0.02
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with Client(server, mode="legacy") as client:
        result = await client.call_tool("chat", {"prompt": "go"}, progress_callback=on_progress)
    assert not result.is_error
    assert text_of(result) == upstream.chat_reply
    assert len(seen) >= 2
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert seen[-1][0] <= len(upstream.chat_reply)
    assert "characters" in (seen[0][1] or "")
    assert upstream.requests_to("/ai/v2")[-1].json["request"]["stream"] is True


@pytest.mark.parametrize(
    ("setting", "with_progress", "streamed"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("true", False, True),
        ("false", True, False),
        # The booleans ONLYSQ_STREAM took before it had `auto`.
        ("1", False, True),
        ("no", True, False),
    ],
)
async def test_onlysq_stream_setting_decides_when_the_upstream_streams(
    make_settings, upstream, setting, with_progress, streamed
):
    from onlysq_mcp.server import app_factory

    upstream.chat_reply = "A reply in several pieces, one progress notification each. " * 2
    upstream.stream_chunk_delay = 0.01
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    server = app_factory(make_settings(ONLYSQ_STREAM=setting))
    async with Client(server, mode="legacy") as client:
        result = await client.call_tool(
            "chat", {"prompt": "go"}, progress_callback=on_progress if with_progress else None
        )
    assert text_of(result) == upstream.chat_reply
    assert upstream.requests_to("/ai/v2")[-1].json["request"]["stream"] is streamed
    assert bool(seen) is (streamed and with_progress)


async def test_an_unstreamed_answer_waits_for_the_whole_answer_bound_not_the_chunk_timeout(make_settings, upstream):
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_TIMEOUT="0.3", ONLYSQ_MCP_STREAM_TIMEOUT="1"))
    upstream.add_fault("/ai/v2", "delay", delay=0.6)  # longer than ONLYSQ_TIMEOUT, within the bound
    upstream.add_fault("/ai/v2", "delay", delay=3)  # beyond the bound
    async with Client(server) as client:
        slow = await client.call_tool("chat", {"prompt": "slow"})
        started = time.monotonic()
        too_slow = await client.call_tool("chat", {"prompt": "too slow"})
        waited = time.monotonic() - started
    assert text_of(slow) == "Echo: slow"
    assert too_slow.is_error
    assert "took longer than 1s (ONLYSQ_MCP_STREAM_TIMEOUT)" in text_of(too_slow)
    assert 0.9 < waited < 2.5
    assert [r.json["request"]["stream"] for r in upstream.requests_to("/ai/v2")] == [False, False]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "`prompt` is empty"),
        ({"prompt": "hi", "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": ""}]}, "content"),
        ({"prompt": "hi", "temperature": 5}, "temperature"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "model": "gpt-4o-mni"}, "Did you mean `gpt-4o-mini`"),
        ({"prompt": "hi", "model": "flux"}, "needs a chat model"),
    ],
)
async def test_chat_bad_input_is_a_tool_error_before_any_upstream_call(server, upstream, arguments, expected):
    async with Client(server) as client:
        await catalogue_loaded(client)
        result = await client.call_tool("chat", arguments)
        assert result.is_error
        assert expected in text_of(result)
        assert upstream.requests_to("/ai/v2") == []
        # The server keeps working after the error.
        ok = await client.call_tool("chat", {"prompt": "still there?"})
    assert text_of(ok) == "Echo: still there?"


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("status", {"status": 401}, "ONLYSQ_API_KEY"),
        ("status", {"status": 400, "message": "context too long"}, "context too long"),
        ("finish_error", {}, "finish_reason: error"),
        ("malformed", {}, "not JSON"),
        ("missing_field", {}, "choices"),
        ("abort_stream", {"after_chunks": 2}, "cut off after 8 characters"),
        ("stream_error", {"message": "provider exploded"}, "provider exploded"),
    ],
)
async def test_chat_upstream_failures_are_clear_tool_errors(make_settings, upstream, fault, options, expected):
    from onlysq_mcp.server import app_factory

    # Streamed, as a caller who asks for progress gets it (the unstreamed answer: the test below).
    server = app_factory(make_settings(ONLYSQ_STREAM="true"))
    upstream.add_fault("/ai/v2", fault, **options)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "hello"})
        assert result.is_error
        assert expected in text_of(result)
        assert "OnlySq" in text_of(result)
        after = await client.call_tool("chat", {"prompt": "again"})
    assert text_of(after) == "Echo: again"


async def test_chat_non_stream_failures(make_settings, upstream):
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_STREAM="false"))
    upstream.add_fault("/ai/v2", "finish_error")
    upstream.add_fault("/ai/v2", "missing_field")
    async with Client(server) as client:
        first = await client.call_tool("chat", {"prompt": "a"})
        second = await client.call_tool("chat", {"prompt": "b"})
    assert first.is_error and "finish_reason: error" in text_of(first)
    assert second.is_error and "`choices[0].message`" in text_of(second)


async def test_chat_retries_on_503_then_succeeds(server, upstream):
    upstream.add_fault("/ai/v2", "status", status=503, times=2)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "retry me"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: retry me"
    assert len(upstream.requests_to("/ai/v2")) == 3


async def test_chat_honours_retry_after_and_reports_giving_up(make_settings, upstream):
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_RETRIES=1))
    upstream.add_fault("/ai/v2", "status", status=429, retry_after="1", times=5)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "busy"})
    assert result.is_error
    assert "HTTP 429" in text_of(result)
    assert "2 tries" in text_of(result)
    calls = upstream.requests_to("/ai/v2")
    assert len(calls) == 2
    assert calls[1].time - calls[0].time >= 0.9


@pytest.mark.parametrize(
    ("retry_after", "retries", "expected"),
    [
        ("30", 0, "the upstream asked to wait 30s: try again in 30 s."),
        ("0", 0, "the upstream asked to wait 0s: try again in 1 s."),
        ("120", 3, "the upstream asked to wait 120s, longer than this call can wait: try again in 120 s."),
        (None, 0, "try again in a minute, or pick another model."),
    ],
)
async def test_a_rate_limit_error_says_when_to_try_again(make_settings, upstream, retry_after, retries, expected):
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_RETRIES=retries))
    upstream.add_fault("/ai/v2", "status", status=429, retry_after=retry_after)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "busy"})
    assert result.is_error
    assert text_of(result).startswith("Error executing tool chat: OnlySq: rate limited (HTTP 429"), text_of(result)
    assert text_of(result).endswith(expected), text_of(result)
    assert len(upstream.requests_to("/ai/v2")) == 1


async def test_bad_request_is_not_retried(server, upstream):
    upstream.add_fault("/ai/v2", "status", status=400, times=5)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "x"})
    assert result.is_error
    assert len(upstream.requests_to("/ai/v2")) == 1


@pytest.mark.parametrize("stream", ["true", "false"])
async def test_upstream_connection_is_reused_across_calls(make_settings, upstream, stream):
    """A stream read to its end returns its connection to the pool: no new TCP and TLS handshake per call."""
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_STREAM=stream))
    async with Client(server) as client:
        await catalogue_loaded(client)  # fetched in the background: it might otherwise want a second connection
        for i in range(3):
            result = await client.call_tool("chat", {"prompt": f"call {i}"})
            assert text_of(result) == f"Echo: call {i}"
    assert len({r.client for r in upstream.requests}) == 1
