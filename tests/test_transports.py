"""End to end as hosts connect: the installed `onlysq-mcp` over stdio, and over streamable HTTP (uvicorn)."""

from __future__ import annotations

import subprocess
import sys

import httpx2
import pytest
from mcp import Client, StdioServerParameters

from tests.helpers import (
    TEST_KEY,
    clean_env,
    server_command,
    start_http_server,
    stop_http_server,
    text_of,
    upstream_env,
)

pytestmark = pytest.mark.anyio

TOOLS = {"chat", "list_models", "generate_image", "describe_image"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_lists_tools_and_chats(stdio_params, upstream, mode):
    async with Client(stdio_params, mode=mode) as client:
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == TOOLS
        assert all(t.description for t in tools.tools)
        result = await client.call_tool("chat", {"prompt": "over stdio"})
        assert text_of(result) == "Echo: over stdio"
        models = await client.call_tool("list_models", {"kind": "vision"})
        assert models.structured_content["source"] == "live"
        bad = await client.call_tool("chat", {"prompt": ""})
        assert bad.is_error
        again = await client.call_tool("chat", {"prompt": "still alive"})
        assert text_of(again) == "Echo: still alive"
    assert upstream.requests_to("/ai/v2")[0].headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_streams_only_for_a_progress_token(stdio_params, upstream, mode):
    """With a progress token the answer is streamed and its pieces become progress; without one a single
    JSON body is asked for, and may take longer than ONLYSQ_TIMEOUT (up to ONLYSQ_MCP_STREAM_TIMEOUT)."""
    assert stdio_params.env is not None
    params = stdio_params.model_copy(
        update={"env": stdio_params.env | {"ONLYSQ_TIMEOUT": "0.3", "ONLYSQ_MCP_STREAM_TIMEOUT": "5"}}
    )
    upstream.chat_reply = "word " * 40
    upstream.stream_chunk_delay = 0.03
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(params, mode=mode) as client:
        upstream.add_fault("/ai/v2", "delay", delay=0.8)
        quiet = await client.call_tool("chat", {"prompt": "long"})
        assert seen == []
        watched = await client.call_tool("chat", {"prompt": "long"}, progress_callback=on_progress)
    assert text_of(quiet) == text_of(watched) == upstream.chat_reply
    assert len(seen) >= 2
    assert [r.json["request"]["stream"] for r in upstream.requests_to("/ai/v2")] == [False, True]


def test_python_dash_m_runs_the_same_server(upstream, tmp_path):
    """`python -m onlysq_mcp` answers --version and --help like the console script."""
    out = subprocess.run([sys.executable, "-m", "onlysq_mcp", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("onlysq-mcp ")
    helptext = subprocess.run([*server_command(), "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("--transport", "--host", "--port", "--version", "ONLYSQ_API_KEY", "stdio", "http"):
        assert word in helptext


async def test_python_dash_m_over_stdio(upstream, output_dir, tmp_path):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "onlysq_mcp"],
        env=clean_env(**upstream_env(upstream.base_url, output_dir)),
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        result = await client.call_tool("chat", {"prompt": "via -m"})
    assert text_of(result) == "Echo: via -m"


def test_invalid_setting_stops_with_one_line(tmp_path):
    result = subprocess.run(
        server_command(),
        env=clean_env(ONLYSQ_TIMEOUT="soon", ONLYSQ_API_KEY="sq-secret-value"),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ONLYSQ_TIMEOUT" in lines[0]
    assert "Traceback" not in result.stderr
    assert "sq-secret-value" not in result.stderr


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_http_lists_tools_and_chats(http_server, fake_upstream, mode):
    fake_upstream.reset()
    async with Client(http_server.url, mode=mode) as client:
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == TOOLS
        result = await client.call_tool("chat", {"prompt": "over http"})
        assert text_of(result) == "Echo: over http"
        models = await client.call_tool("list_models", {"kind": "image"})
        assert {"flux", "aliceai-image-art-3.0"} <= {m["id"] for m in models.structured_content["models"]}


async def test_http_progress_and_concurrent_sessions(http_server, fake_upstream):
    fake_upstream.reset()
    fake_upstream.chat_reply = "tick " * 30
    fake_upstream.stream_chunk_delay = 0.02
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(http_server.url, mode="legacy") as first, Client(http_server.url) as second:
        result = await first.call_tool("chat", {"prompt": "a"}, progress_callback=on_progress)
        other = await second.call_tool("chat", {"prompt": "b"})
    assert text_of(result) == fake_upstream.chat_reply
    assert text_of(other) == fake_upstream.chat_reply
    assert len(seen) >= 2
    fake_upstream.reset()


async def test_http_listens_on_loopback_by_default(http_server):
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"http://localhost:{http_server.port}/mcp", headers={"accept": "text/event-stream"})
    # A GET without a session is refused, but by our MCP endpoint, not by a missing route.
    assert response.status_code in (400, 405, 406)


async def test_http_server_logs_to_stderr_not_stdout(fake_upstream, tmp_path):
    server = start_http_server(upstream_env(fake_upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        async with Client(server.url) as client:
            await client.call_tool("chat", {"prompt": "log me"})
    finally:
        stop_http_server(server)
    log = server.log.read_text()
    assert "Uvicorn running" in log or "Application startup complete" in log
    assert TEST_KEY not in log
