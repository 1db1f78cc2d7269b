"""What an upstream, or a bug of ours, may do without ending the server or stalling its tools.

Corrupt and huge upstream bodies, a stalled or failing model catalogue, `Retry-After: 0`, and exceptions
injected into every upstream client and into the background image job.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp.image_jobs import ImageJob
from onlysq_mcp.onlysq import OnlySqClient
from onlysq_mcp.server import app_factory
from onlysq_mcp.yandex import YandexClient
from tests.helpers import start_http_server, stop_http_server, text_of, upstream_env

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connect(target: Any, **options: Any) -> AsyncIterator[Client]:
    """A client with a time limit: when a server process dies, its client waits for ever."""
    with anyio.fail_after(30):
        async with Client(target, **options) as client:
            yield client


def with_env(params: StdioServerParameters, **env: str) -> StdioServerParameters:
    return params.model_copy(update={"env": {**(params.env or {}), **env}})


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    with anyio.move_on_after(seconds):
        while not condition():
            await anyio.sleep(0.02)
    return condition()


# --- corrupt bodies and injected exceptions ---------------------------------------------------


async def test_corrupt_gzip_fails_one_call_and_the_server_lives_on(stdio_params, upstream):
    async with connect(stdio_params) as client:
        upstream.add_fault("/ai/imagen", "bad_gzip")
        image = await client.call_tool("generate_image", {"prompt": "a cat"})
        upstream.add_fault("/ai/v2", "bad_gzip")  # an event stream this time
        chat = await client.call_tool("chat", {"prompt": "hi"})
        image_after = await client.call_tool("generate_image", {"prompt": "a dog"})
        chat_after = await client.call_tool("chat", {"prompt": "still here"})
    for failed in (image, chat):
        assert failed.is_error
        assert "OnlySq: sent a body that cannot be decoded" in text_of(failed), text_of(failed)
        assert "DecodingError" in text_of(failed) and "try again" in text_of(failed)
    assert not image_after.is_error and image_after.structured_content["images"]
    assert text_of(chat_after) == "Echo: still here"


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[str]:
    """Make `owner.name` raise RuntimeError on its first call only; returns the list of failures raised."""
    original = getattr(owner, name)
    raised: list[str] = []

    def check() -> None:
        if not raised:
            raised.append(f"{owner.__name__}.{name}")
            raise RuntimeError(f"injected into {owner.__name__}.{name}")

    if name == "add":  # ImageJob.add is synchronous

        def sync(self: Any, *args: Any, **kwargs: Any) -> Any:
            check()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, sync)
    else:

        async def coro(self: Any, *args: Any, **kwargs: Any) -> Any:
            check()
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, coro)
    return raised


@pytest.mark.parametrize(
    ("owner", "name", "tool", "arguments", "expected"),
    [
        (OnlySqClient, "chat", "chat", {"prompt": "hi"}, "chat failed because of an unexpected error"),
        (OnlySqClient, "chat", "describe_image", {"image": "onlysq://images/x"}, None),
        (OnlySqClient, "list_models", "list_models", {}, None),
        (OnlySqClient, "generate_image", "generate_image", {"prompt": "x"}, "unexpected error on this server"),
        (
            YandexClient,
            "generate_image",
            "generate_image",
            {"prompt": "x", "model": "aliceai-image-art-3.0"},
            "unexpected error on this server",
        ),
        (ImageJob, "add", "generate_image", {"prompt": "x"}, "unexpected error on this server"),
    ],
    ids=["chat", "describe_image", "list_models", "onlysq-image", "yandex-image", "job"],
)
async def test_an_exception_in_a_client_or_job_fails_one_call_only(
    make_settings, upstream, monkeypatch, caplog, owner, name, tool, arguments, expected
):
    server = app_factory(make_settings())
    caplog.set_level(logging.ERROR)
    async with connect(server) as client:
        if tool == "describe_image":
            made = await client.call_tool("generate_image", {"prompt": "to describe"})
            arguments = {"image": made.structured_content["images"][0]["uri"]}
            expected = "describe_image failed because of an unexpected error"
        raised = fail_once(monkeypatch, owner, name)
        first = await client.call_tool(tool, arguments)
        second = await client.call_tool(tool, arguments)
        other = await client.call_tool("chat", {"prompt": "and the rest"})
    assert raised, "the injection was not reached"
    if expected is None:  # the catalogue falls back instead of failing
        assert not first.is_error and first.structured_content["source"] == "bundled"
        assert "unexpected error" in first.structured_content["note"]
    else:
        assert first.is_error, text_of(first)
        assert expected in text_of(first), text_of(first)
    assert "injected into" in caplog.text  # the traceback went to the log
    assert not second.is_error, text_of(second)
    assert text_of(other) == "Echo: and the rest"


# --- caps on what an upstream may send ----------------------------------------------------------


async def test_huge_answers_are_cut_off_at_the_caps(stdio_params, upstream):
    params = with_env(
        stdio_params,
        ONLYSQ_MCP_MAX_RESPONSE_BYTES="200000",
        ONLYSQ_MCP_MAX_IMAGE_BYTES="8000",
        ONLYSQ_MCP_STREAM_TIMEOUT="1",
        ONLYSQ_STREAM="true",  # the stream's caps; the unstreamed body's: the test below
    )
    async with connect(params) as client:
        await client.call_tool("list_models", {})
        started = time.monotonic()
        upstream.add_fault("/ai/imagen", "huge")  # 300 MB of JSON
        huge_image = await client.call_tool("generate_image", {"prompt": "x"})
        upstream.add_fault("/ai/v2", "huge")  # 300 MB of stream events
        huge_stream = await client.call_tool("chat", {"prompt": "x"})
        huge_seconds = time.monotonic() - started
        closed = await wait_for(lambda: upstream.disconnects >= 2)

        upstream.image_noise, upstream.image_long_side = True, 96  # a ~28 KB PNG in a ~37 KB body
        big_image = await client.call_tool("generate_image", {"prompt": "noise"})
        upstream.image_noise, upstream.image_long_side = False, 64

        upstream.chat_reply, upstream.stream_chunk_delay = "slow " * 40, 0.1  # ~5 s, each chunk in time
        started = time.monotonic()
        slow = await client.call_tool("chat", {"prompt": "slow"})
        slow_seconds = time.monotonic() - started
        upstream.chat_reply, upstream.stream_chunk_delay = None, 0.0

        after = await client.call_tool("chat", {"prompt": "after"})
    for result in (huge_image, huge_stream):
        assert result.is_error
        assert "larger than 200,000 bytes (ONLYSQ_MCP_MAX_RESPONSE_BYTES)" in text_of(result), text_of(result)
    assert huge_seconds < 5
    assert closed, "the oversized answers were read on instead of their connections being closed"
    assert big_image.is_error and "larger than 8,000 bytes (ONLYSQ_MCP_MAX_IMAGE_BYTES)" in text_of(big_image)
    assert slow.is_error and "longer than 1s (ONLYSQ_MCP_STREAM_TIMEOUT)" in text_of(slow)
    assert 0.9 < slow_seconds < 3
    assert text_of(after) == "Echo: after"


async def test_huge_non_streamed_chat_body_is_cut_off(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_STREAM="false", ONLYSQ_MCP_MAX_RESPONSE_BYTES=100_000))
    async with connect(server) as client:
        await client.call_tool("list_models", {})
        upstream.add_fault("/ai/v2", "huge")
        result = await client.call_tool("chat", {"prompt": "x"})
        after = await client.call_tool("chat", {"prompt": "after"})
    assert result.is_error and "larger than 100,000 bytes" in text_of(result)
    assert text_of(after) == "Echo: after"


# --- the model catalogue ------------------------------------------------------------------------


async def test_first_call_reaches_the_upstream_before_the_catalogue_answers(stdio_params, upstream):
    """Model checks never wait on the network: with the catalogue stalled, the first call still goes out.

    Not timed: the catalogue is held for longer than the test may run, so a call that waited for it would
    not be back (and the fetch would no longer be in flight) when the checks below run.
    """
    upstream.add_fault("/ai/models", "delay", delay=60)
    params = with_env(stdio_params, ONLYSQ_MCP_MODELS_TIMEOUT="60")
    async with connect(params) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("chat", {"prompt": "first"})
            # The server fetches the catalogue by itself, after start, without any call asking for it.
            while not upstream.requests_to("/ai/models"):
                await anyio.sleep(0.01)
        assert text_of(result) == "Echo: first"
        assert [r.json["request"]["messages"][-1]["content"] for r in upstream.requests_to("/ai/v2")] == ["first"]
        assert upstream.in_flight == 1  # the catalogue, still unanswered
        assert upstream.disconnects == 0  # and not given up on either
    assert len(upstream.requests_to("/ai/models")) == 1


async def test_calls_never_wait_for_a_connection_the_catalogue_fetch_holds(make_settings, upstream):
    """The background fetch has a connection of its own: with ONLYSQ_MCP_MAX_CONCURRENCY calls under way, one
    more would otherwise wait for the stalled catalogue (on a fresh server, a burst's last call did)."""
    upstream.add_fault("/ai/models", "hold")
    server = app_factory(make_settings(ONLYSQ_MCP_MAX_CONCURRENCY=1, ONLYSQ_MCP_MODELS_TIMEOUT=60))
    try:
        async with connect(server) as client:
            with anyio.fail_after(5):
                while not upstream.requests_to("/ai/models"):
                    await anyio.sleep(0.01)
                result = await client.call_tool("chat", {"prompt": "while the catalogue stalls"})
            assert text_of(result) == "Echo: while the catalogue stalls"
            assert upstream.in_flight == 1  # the catalogue, still held
    finally:
        upstream.release()


async def test_http_server_fetches_the_catalogue_as_it_starts(upstream, tmp_path):
    """Over HTTP the background fetch starts with the app's lifespan, before any session."""
    server = start_http_server(upstream_env(upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        with anyio.fail_after(10):
            while not upstream.requests_to("/ai/models"):
                await anyio.sleep(0.02)
    finally:
        stop_http_server(server)
    assert upstream.requests_to("/ai/v2") == []


async def test_stalled_catalogue_costs_list_models_one_short_timeout(stdio_params, upstream):
    upstream.add_fault("/ai/models", "delay", delay=30)
    # Without the stdio front door, the handshake ends once the server has loaded: the calls are timed alone.
    params = with_env(stdio_params, ONLYSQ_MCP_MODELS_TIMEOUT="1", ONLYSQ_MCP_FAST_START="false")
    async with connect(params) as client:
        started = time.monotonic()
        listed = await list_models_at_once(client, 3)
        waited = time.monotonic() - started
        started = time.monotonic()
        again = await client.call_tool("list_models", {})
        after_failure = time.monotonic() - started
    assert waited < 2.0, waited  # one shared 1 s fetch, not three in a row
    assert {r.structured_content["source"] for r in [*listed, again]} == {"bundled"}
    assert len(upstream.requests_to("/ai/models")) == 1
    assert after_failure < 0.5
    assert "ONLYSQ_MCP_MODELS_TIMEOUT" in again.structured_content["note"]


async def list_models_at_once(client: Client, n: int) -> list[Any]:
    results: list[Any] = []

    async def call() -> None:
        results.append(await client.call_tool("list_models", {}))

    async with anyio.create_task_group() as group:
        for _ in range(n):
            group.start_soon(call)
    return results


async def test_failing_catalogue_is_not_retried_on_every_call(stdio_params, upstream):
    # With retries on, each failed fetch would cost 0.5 + 1 + 2 s of backoff.
    params = with_env(stdio_params, ONLYSQ_RETRY_BACKOFF="0.5", ONLYSQ_RETRIES="3", ONLYSQ_MCP_FAST_START="false")
    upstream.add_fault("/ai/models", "status", status=503, times=10)
    async with connect(params) as client:
        # The background fetch starts once the HTTP client is ready, shortly after start.
        with anyio.fail_after(10):
            while not upstream.requests_to("/ai/models"):
                await anyio.sleep(0.05)
        durations = []
        for i in range(3):
            started = time.monotonic()
            result = await client.call_tool("chat", {"prompt": f"c{i}"})
            durations.append(time.monotonic() - started)
            assert text_of(result) == f"Echo: c{i}"
        await anyio.sleep(0.6)  # a first retry would be out by now
    assert len(upstream.requests_to("/ai/models")) == 1  # no retries, and the failure is remembered
    assert max(durations) < 0.5, durations


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(server, upstream):
    upstream.add_fault("/ai/models", "delay", delay=0.5)
    async with connect(server, mode="legacy") as client:
        listed = []

        async def patient() -> None:
            listed.append(await client.call_tool("list_models", {}))

        async with anyio.create_task_group() as group:
            with anyio.move_on_after(0.1):
                await client.call_tool("list_models", {"kind": "chat"})  # starts the fetch, then gives up
            group.start_soon(patient)
    assert listed[0].structured_content["source"] == "live"
    assert len(upstream.requests_to("/ai/models")) == 1


# --- Retry-After --------------------------------------------------------------------------------


async def test_retry_after_zero_still_waits_between_tries(stdio_params, upstream):
    async with connect(with_env(stdio_params, ONLYSQ_RETRY_BACKOFF="0")) as client:
        await client.call_tool("list_models", {})
        upstream.add_fault("/ai/v2", "status", status=429, retry_after="0", times=2)
        result = await client.call_tool("chat", {"prompt": "eventually"})
    assert text_of(result) == "Echo: eventually"
    stamps = [r.time for r in upstream.requests_to("/ai/v2")]
    assert len(stamps) == 3
    assert min(later - earlier for earlier, later in itertools.pairwise(stamps)) >= 0.09
