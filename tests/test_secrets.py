"""Secrets never leave the server: not in logs, errors, tool results, or the settings' repr."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from PIL import Image

from onlysq_mcp.client_log import client_log
from onlysq_mcp.server import app_factory
from tests.helpers import (
    YANDEX_FOLDER,
    clean_env,
    free_port,
    server_command,
    start_http_server,
    stop_http_server,
    text_of,
)
from tests.helpers import YANDEX_KEY as TEST_YANDEX_KEY

pytestmark = pytest.mark.anyio

ONLYSQ_KEY = "sq-SECRET-onlysq-4f1d2c"
YANDEX_KEY = "AQVN-SECRET-yandex-9b8a7c"
HTTP_TOKEN = "SECRET-http-token-5e6f7a"
SECRETS = (ONLYSQ_KEY, YANDEX_KEY, HTTP_TOKEN)


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_no_secret_in_logs_errors_or_results(fake_upstream, tmp_path):
    fake_upstream.reset()
    fake_upstream.api_keys = {ONLYSQ_KEY}
    fake_upstream.yandex_api_keys = {YANDEX_KEY}
    env = {
        "ONLYSQ_API_KEY": ONLYSQ_KEY,
        "ONLYSQ_BASE_URL": fake_upstream.base_url,
        "YANDEX_API_KEY": YANDEX_KEY,
        "YANDEX_FOLDER_ID": YANDEX_FOLDER,
        "YANDEX_BASE_URL": fake_upstream.base_url,
        "ONLYSQ_MCP_HTTP_TOKEN": HTTP_TOKEN,
        "ONLYSQ_MCP_OUTPUT_DIR": str(tmp_path / "images"),
        "ONLYSQ_MCP_LOG_LEVEL": "DEBUG",
        "ONLYSQ_RETRIES": "1",
        "ONLYSQ_RETRY_BACKOFF": "0.01",
    }
    server = start_http_server(env, tmp_path)
    seen: list[str] = []
    try:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {HTTP_TOKEN}"}, timeout=30)
        async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:
            calls = [
                ("chat", {"prompt": "hello"}),
                ("list_models", {}),
                ("generate_image", {"prompt": "a fox"}),
                ("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"}),
                ("describe_image", {"image": png_data_uri()}),
            ]
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content[0].text
                seen.append(result.model_dump_json())
            # Upstreams that echo the rejected key in their error must not have it passed on.
            fake_upstream.add_fault("/ai/v2", "status", status=401, message=f"key {ONLYSQ_KEY} is not valid")
            fake_upstream.add_fault("/v1/images/generations", "status", status=403, message=f"bad key {YANDEX_KEY}")
            fake_upstream.add_fault("/ai/v2", "status", status=503, message=f"busy for {ONLYSQ_KEY}", times=2)
            for tool, arguments in [
                ("chat", {"prompt": "again"}),
                ("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"}),
                ("chat", {"prompt": "retry"}),
            ]:
                result = await client.call_tool(tool, arguments)
                assert result.is_error
                assert "***" in result.content[0].text
                seen.append(result.model_dump_json())
            resources = await client.list_resources()
            seen.append(resources.model_dump_json())
    finally:
        stop_http_server(server)
    seen.append(server.log.read_text())
    assert "DEBUG" in seen[-1]  # the log really was verbose
    for text in seen:
        for secret in SECRETS:
            assert secret not in text
    # The upstreams did receive the keys: redaction is not a failure to send them.
    assert any(r.headers.get("authorization") == f"Bearer {ONLYSQ_KEY}" for r in fake_upstream.requests)
    assert any(r.headers.get("authorization") == f"Api-Key {YANDEX_KEY}" for r in fake_upstream.requests)
    json.dumps(seen)
    fake_upstream.reset()


# --- every path, through both real transports, checked byte for byte ------------------------------

IAM_TOKEN = "t1.SECRET-iam-Qw8Zr5Lp3n"
SQ_USER, SQ_PASSWORD = "sqUser-Q4mX9pLa", "sqPass-V7nK2wDe"
YANDEX_USER, YANDEX_PASSWORD = "yaUser-H3cR8tKo", "yaPass-B6jL1sMu"
EVERY_SECRET = (*SECRETS, IAM_TOKEN, SQ_USER, SQ_PASSWORD, YANDEX_USER, YANDEX_PASSWORD)
PROTOCOL = "2025-11-25"
FRAGMENT = 8


def leaked(text: str) -> list[str]:
    """Every secret, or 8-character piece of one, that appears in `text`."""
    return sorted(
        {s[i : i + FRAGMENT] for s in EVERY_SECRET for i in range(len(s) - FRAGMENT + 1) if s[i : i + FRAGMENT] in text}
    )


def straddling(secret: str) -> str:
    """A message whose secret crosses the 300-character cut of quoted upstream words."""
    return "x" * 290 + " " + secret


class RawSession:
    """Talks JSON-RPC to a server process and keeps every byte it answered, not just the parsed results."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.messages: list[dict[str, Any]] = []
        self._next_id = 0

    async def post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def initialize(self) -> None:
        await self.call("initialize", {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": CLIENT_INFO})
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        messages = await self.post({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        self.messages += messages
        answer = next(m for m in messages if m.get("id") == self._next_id and ("result" in m or "error" in m))
        return answer.get("result") or answer["error"]

    def log_notes(self) -> list[str]:
        return [str(m["params"]["data"]) for m in self.messages if m.get("method") == "notifications/message"]

    async def tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        result = await self.call("tools/call", {"name": name, "arguments": arguments})
        return bool(result.get("isError")), json.dumps(result)


CLIENT_INFO = {"name": "raw-test", "version": "1"}


class RawStdio(RawSession):
    def __init__(self, process: anyio.abc.Process) -> None:
        super().__init__()
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        await self._stdin.send(json.dumps(message).encode() + b"\n")
        if "id" not in message:
            return []
        seen = []
        with anyio.fail_after(30):
            while not seen or seen[-1].get("id") != message["id"]:
                line = await self._stdout.receive_until(b"\n", 64 * 2**20)
                self.received += line + b"\n"
                seen.append(json.loads(line))
        return seen


class RawHttp(RawSession):
    def __init__(self, client: httpx2.AsyncClient, url: str) -> None:
        super().__init__()
        self._client = client
        self._url = url
        self._headers = {
            "accept": "application/json, text/event-stream",
            "authorization": f"Bearer {HTTP_TOKEN}",
        }

    async def post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self._client.post(self._url, json=message, headers=self._headers)
        self.received += f"HTTP {response.status_code}\r\n".encode()
        for name, value in response.headers.multi_items():
            self.received += f"{name}: {value}\r\n".encode()
        self.received += b"\r\n" + response.content
        assert response.status_code < 300, response.text
        if "mcp-session-id" in response.headers:
            self._headers |= {"mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL}
        if not response.content:
            return []
        if response.headers.get("content-type", "").startswith("application/json"):
            return [response.json()]
        return [
            json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]


@asynccontextmanager
async def raw_server(transport: str, env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[RawSession, Path]]:
    """The server as a subprocess on `transport`, a raw session with it, and the file its stderr goes to."""
    if transport == "http":
        server = start_http_server(env, tmp_path)
        try:
            async with httpx2.AsyncClient(timeout=30) as client:
                session: RawSession = RawHttp(client, server.url)
                await session.initialize()
                yield session, server.log
        finally:
            stop_http_server(server)
        return
    log = tmp_path / "stdio-server.log"
    with log.open("wb") as stderr:
        async with await anyio.open_process(
            server_command(), env=clean_env(**env), cwd=str(tmp_path), stderr=stderr
        ) as process:
            session = RawStdio(process)
            await session.initialize()
            yield session, log
            assert process.stdin is not None
            await process.stdin.aclose()
            with anyio.fail_after(10):
                await process.wait()


def secret_env(tmp_path: Path, onlysq_url: str, yandex_url: str) -> dict[str, str]:
    return {
        "ONLYSQ_API_KEY": ONLYSQ_KEY,
        "ONLYSQ_BASE_URL": onlysq_url,
        "YANDEX_API_KEY": YANDEX_KEY,
        "YANDEX_IAM_TOKEN": IAM_TOKEN,
        "YANDEX_FOLDER_ID": YANDEX_FOLDER,
        "YANDEX_BASE_URL": yandex_url,
        "ONLYSQ_MCP_HTTP_TOKEN": HTTP_TOKEN,
        "ONLYSQ_MCP_OUTPUT_DIR": str(tmp_path / "images"),
        "ONLYSQ_MCP_LOG_LEVEL": "DEBUG",
        "ONLYSQ_RETRIES": "1",
        "ONLYSQ_RETRY_BACKOFF": "0.01",
    }


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_upstream_echoes_of_every_secret_never_reach_client_or_stderr(upstream, tmp_path, transport):
    upstream.api_keys = {ONLYSQ_KEY}
    upstream.yandex_api_keys = {YANDEX_KEY}
    upstream.chat_reply = f"your keys are {ONLYSQ_KEY} and {HTTP_TOKEN}"
    upstream.models["gpt-4o-mini"]["description"] = f"served with {IAM_TOKEN}"
    # Streamed, so the mid-answer errors below are the stream's (an unstreamed answer has no middle).
    env = secret_env(tmp_path, upstream.base_url, upstream.base_url) | {"ONLYSQ_STREAM": "true"}
    async with raw_server(transport, env, tmp_path) as (session, stderr):
        # Results: the reply, the model list and the catalogue resource echo secrets.
        failed, text = await session.tool("chat", {"prompt": "hello"})
        assert not failed and "your keys are *** and ***" in text
        failed, text = await session.tool("list_models", {"search": "gpt-4o-mini"})
        assert not failed and "served with ***" in text
        resource = await session.call("resources/read", {"uri": "onlysq://models"})
        assert "served with ***" in resource["contents"][0]["text"]

        upstream.add_fault("/ai/v2", "status", status=401, message=f"key {ONLYSQ_KEY} is not valid")
        upstream.add_fault("/ai/v2", "status", status=400, message=straddling(YANDEX_KEY))
        upstream.add_fault("/ai/v2", "status", status=503, message=straddling(HTTP_TOKEN), times=2)
        upstream.add_fault("/ai/v2", "stream_error", message=straddling(ONLYSQ_KEY))
        upstream.add_fault("/ai/v2", "stream_error", message=f"provider failed for {IAM_TOKEN}")
        # An unexpected key, listed first ("0" sorts before letters) and crossing the cut.
        upstream.add_fault("/ai/v2", "missing_field", message="0" + straddling(YANDEX_KEY))
        for expected in (
            "credentials refused",
            "request rejected",
            "gave up after 2 tries",
            "failed mid-answer",
            "failed mid-answer",
            "answered without the `choices` field",
        ):
            failed, text = await session.tool("chat", {"prompt": "again"})
            assert failed and expected in text and "***" in text, text
        upstream.add_fault("/v1/images/generations", "status", status=403, message=f"bad key {YANDEX_KEY}")
        failed, text = await session.tool("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"})
        assert failed and "***" in text, text
    received = session.received.decode()
    logged = stderr.read_text()
    # The retry notes went to the client's log and to stderr, masked.
    assert any("retry 1 of 1" in note and "***" in note for note in session.log_notes())
    assert "retry 1 of 1" in logged and "DEBUG" in logged
    assert leaked(received) == []
    assert leaked(logged) == []
    # The upstreams did receive the keys: masking is not a failure to send them.
    assert any(r.headers.get("authorization") == f"Bearer {ONLYSQ_KEY}" for r in upstream.requests)
    assert any(r.headers.get("authorization") == f"Api-Key {YANDEX_KEY}" for r in upstream.requests)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_base_url_credentials_never_printed(upstream, tmp_path, transport):
    # OnlySq is reachable (its DEBUG request lines carry the URL as configured) but drops the chat call;
    # nothing listens for Yandex.
    fake = upstream.base_url.removeprefix("http://")
    dead = free_port()
    onlysq_url = f"http://{SQ_USER}:{SQ_PASSWORD}@{fake}/"
    yandex_url = f"http://{YANDEX_USER}:{YANDEX_PASSWORD}@127.0.0.1:{dead}/"
    upstream.add_fault("/ai/v2", "drop", times=2)
    async with raw_server(transport, secret_env(tmp_path, onlysq_url, yandex_url), tmp_path) as (session, stderr):
        failed, text = await session.tool("chat", {"prompt": "hello"})
        assert failed and "closed the connection" in text, text
        failed, text = await session.tool("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"})
        assert failed and f"could not reach http://127.0.0.1:{dead}/" in text, text
    received = session.received.decode()
    logged = stderr.read_text()
    assert any(f"could not reach http://127.0.0.1:{dead}/" in note for note in session.log_notes())
    assert f"could not reach http://127.0.0.1:{dead}/" in logged
    assert f"http://***:***@{fake}/ai/models" in logged  # httpx2's own DEBUG line, masked
    assert leaked(received) == []
    assert leaked(logged) == []


async def test_every_way_out_of_a_tool_is_masked(make_settings):
    """Text no upstream client masked first: a tool's error, its result and its notes to the client's log."""
    server = app_factory(make_settings(ONLYSQ_MCP_HTTP_TOKEN=HTTP_TOKEN))
    notes = []

    async def on_log(params) -> None:
        notes.append(params.data)

    async def leaky(ctx: Context, fail: bool) -> str:
        await client_log(ctx)(f"note {HTTP_TOKEN}")
        if fail:
            raise ToolError(f"failed with {HTTP_TOKEN}")
        return f"result {HTTP_TOKEN}"

    server.add_tool(leaky)
    async with Client(server, mode="legacy", logging_callback=on_log) as client:
        failed = await client.call_tool("leaky", {"fail": True})
        passed = await client.call_tool("leaky", {"fail": False})
    assert failed.is_error and text_of(failed).endswith(": failed with ***")
    assert not passed.is_error and text_of(passed) == "result ***"
    assert passed.structured_content == {"result": "result ***"}
    assert notes == ["note ***", "note ***"]


def test_secrets_are_the_keys_tokens_and_base_url_credentials(make_settings):
    settings = make_settings(
        ONLYSQ_API_KEY="openai",
        ONLYSQ_BASE_URL="https://sq-user:p%40ss-word@api.example/",
        YANDEX_IAM_TOKEN="iam-token-1",
        ONLYSQ_MCP_HTTP_TOKEN="http-token-1",
    )
    # The public key is no secret: masking it would garble every mention of OpenAI models.
    assert sorted(settings.secrets()) == sorted(
        ["sq-user", "p%40ss-word", "p@ss-word", TEST_YANDEX_KEY, "iam-token-1", "http-token-1"]
    )
