"""Upstream failures the server must survive: drops, stalls, timeouts, cancellation, bursts."""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import Client

from onlysq_mcp.catalogue import FETCH_CONNECTIONS
from onlysq_mcp.server import app_factory
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


async def test_dropped_connection_is_retried(server, upstream):
    upstream.add_fault("/ai/v2", "drop")
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "after a drop"})
    assert text_of(result) == "Echo: after a drop"
    assert len(upstream.requests_to("/ai/v2")) == 2


async def test_connection_refused_names_the_upstream_and_gives_up(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_BASE_URL="http://127.0.0.1:9", ONLYSQ_RETRIES=1))
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "hello", "model": "gpt-4o-mini"})
    assert result.is_error
    message = text_of(result)
    assert "OnlySq" in message and "could not reach" in message and "2 tries" in message


async def test_stalled_stream_is_abandoned_after_the_read_timeout(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_TIMEOUT="0.5", ONLYSQ_STREAM="true"))
    upstream.add_fault("/ai/v2", "stall", delay=5, after_chunks=1)
    started = time.monotonic()
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "stall please"})
    assert time.monotonic() - started < 4
    assert result.is_error
    assert "timed out" in text_of(result) and "0.5s" in text_of(result) and "OnlySq" in text_of(result)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ("true", "timed out: no data for 0.3s (ONLYSQ_TIMEOUT)"),
        # Unstreamed, nothing arrives until the answer is complete: the whole-answer bound applies.
        ("false", "took longer than 0.6s (ONLYSQ_MCP_STREAM_TIMEOUT)"),
    ],
)
async def test_slow_answer_times_out_without_retry(make_settings, upstream, stream, expected):
    server = app_factory(make_settings(ONLYSQ_TIMEOUT="0.3", ONLYSQ_MCP_STREAM_TIMEOUT="0.6", ONLYSQ_STREAM=stream))
    async with Client(server) as client:
        await client.call_tool("list_models", {})  # warm the catalogue
        upstream.add_fault("/ai/v2", "delay", delay=3)
        result = await client.call_tool("chat", {"prompt": "slow"})
    assert result.is_error and expected in text_of(result)
    assert len(upstream.requests_to("/ai/v2")) == 1


async def test_html_error_page_is_summarised(server, upstream):
    upstream.add_fault("/ai/v2", "html", status=502, times=10)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "x"})
    assert result.is_error
    assert "HTTP 502" in text_of(result) and "non-JSON body" in text_of(result)
    assert "<html" not in text_of(result)


async def test_burst_of_calls_is_limited_to_the_concurrency_setting(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_MAX_CONCURRENCY=3))
    async with Client(server) as client:
        await client.call_tool("list_models", {})
        upstream.latency = 0.1
        results = []

        async def call(i: int) -> None:
            results.append(await client.call_tool("chat", {"prompt": f"n{i}"}))

        async with anyio.create_task_group() as group:
            for i in range(12):
                group.start_soon(call, i)
    assert len(results) == 12 and not any(r.is_error for r in results)
    assert upstream.max_in_flight <= 3 + FETCH_CONNECTIONS  # the pool's room for the background catalogue fetch


async def test_cancelled_call_cancels_the_upstream_request(server, upstream):
    upstream.chat_reply = "slow " * 100
    upstream.stream_chunk_delay = 0.05
    async with Client(server, mode="legacy") as client:
        await client.call_tool("list_models", {})
        with anyio.move_on_after(0.3):
            # A caller who watches progress gets a stream, which is what takes long here.
            await client.call_tool("chat", {"prompt": "cancel me"}, progress_callback=ignore_progress)
        # The upstream stream would take ~5 s; once cancelled nothing is left in flight.
        await anyio.sleep(0.5)
        in_flight_after = upstream.in_flight
        result = await client.call_tool("chat", {"prompt": "next"})
    assert in_flight_after == 0
    assert upstream.disconnects == 1
    assert not result.is_error


async def ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    pass


@pytest.mark.parametrize(("level", "expected"), [(None, 1), ("warning", 1), ("error", 0)])
async def test_retries_are_logged_to_the_client_at_its_level(server, upstream, level, expected):
    messages = []

    async def on_log(params) -> None:
        messages.append(params)

    upstream.add_fault("/ai/v2", "status", status=503)
    async with Client(server, mode="legacy", logging_callback=on_log) as client:
        assert client.server_capabilities.logging is not None
        if level is not None:
            await client.set_logging_level(level)
        result = await client.call_tool("chat", {"prompt": "log the retry"})
    assert not result.is_error
    retry_notes = [m for m in messages if "retry 1 of" in str(m.data)]
    assert len(retry_notes) == expected
    if expected:
        assert retry_notes[0].level == "warning" and "HTTP 503" in retry_notes[0].data
