"""The HTTP front door through a real `onlysq-mcp --transport http` process: session caps per client, unused
sessions closed, half-open connections timed out, tokens kept out of logs, any loopback bind host, and
large images either accepted or refused with a clear error."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers import (
    HTTP_TOKEN,
    INITIALIZE,
    MCP_HEADERS,
    HttpServer,
    make_image,
    start_http_server,
    stop_http_server,
    text_of,
    upstream_env,
)

pytestmark = pytest.mark.anyio

INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


@pytest.fixture
def serve(fake_upstream, tmp_path: Path) -> Iterator:
    """Start HTTP servers with extra settings; every one is stopped after the test."""
    started: list[HttpServer] = []

    def start(*args: str, host: str = "127.0.0.1", **env: str) -> HttpServer:
        folder = tmp_path / f"server-{len(started)}"
        folder.mkdir()
        server = start_http_server(
            upstream_env(fake_upstream.base_url, folder / "images", **env), folder, *args, host=host
        )
        started.append(server)
        return server

    yield start
    for server in started:
        stop_http_server(server)


async def initialize(http: httpx2.AsyncClient, url: str) -> httpx2.Response:
    return await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)


def in_session(session_id: str) -> dict[str, str]:
    return MCP_HEADERS | {"mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}


async def test_one_client_cannot_lock_out_others(serve):
    server = serve(ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT="3")
    # A second client, on another loopback address.
    other = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(local_address="127.0.0.2"))
    flood: list[httpx2.Response] = []
    async with httpx2.AsyncClient(timeout=30) as http, other:

        async def open_one() -> None:
            flood.append(await initialize(http, server.url))

        # A burst of initializes at once, as in the report (10,000 in 24 s): only the cap's worth succeed.
        async with anyio.create_task_group() as tasks:
            for _ in range(40):
                tasks.start_soon(open_one)
        opened = [r for r in flood if r.status_code == 200]
        assert len(opened) == 3
        assert {r.status_code for r in flood} == {200, 429}
        refused = await initialize(http, server.url)
        assert refused.status_code == 429
        assert "ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT" in refused.json()["message"]
        assert int(refused.headers["retry-after"]) > 0

        assert (await initialize(other, server.url)).status_code == 200

        # Ending a session frees its place.
        ended = await http.delete(server.url, headers=in_session(opened[0].headers["mcp-session-id"]))
        assert ended.status_code == 200
        assert (await initialize(http, server.url)).status_code == 200


async def test_with_named_tokens_sessions_are_counted_per_user_not_per_address(serve, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:alice-front-door-token-01234\nbob:bob-front-door-token-56789\n")
    server = serve(ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT="2", ONLYSQ_MCP_HTTP_TOKENS_FILE=str(tokens))
    # Everyone comes from 127.0.0.1, as a team behind one reverse proxy does.
    alice = httpx2.AsyncClient(headers={"authorization": "Bearer alice-front-door-token-01234"})
    bob = httpx2.AsyncClient(headers={"authorization": "Bearer bob-front-door-token-56789"})
    async with alice, bob:
        assert [(await initialize(alice, server.url)).status_code for _ in range(3)] == [200, 200, 429]
        assert [(await initialize(bob, server.url)).status_code for _ in range(3)] == [200, 200, 429]


async def test_stateless_requests_do_not_count_as_sessions(serve):
    server = serve(ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT="1")
    modern = MCP_HEADERS | {"mcp-protocol-version": "2026-07-28"}
    async with httpx2.AsyncClient() as http:
        assert (await initialize(http, server.url)).status_code == 200
        assert (await initialize(http, server.url)).status_code == 429
        # The 2026-07-28 protocol has no sessions: the cap has nothing to say about its requests.
        response = await http.post(server.url, json=PING, headers=modern)
    assert response.status_code != 429, response.text


async def test_sessions_unused_after_initialize_are_closed(serve):
    server = serve(ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT="2", ONLYSQ_MCP_UNUSED_SESSION_TIMEOUT="0.5")
    async with httpx2.AsyncClient() as http:
        unused = (await initialize(http, server.url)).headers["mcp-session-id"]
        used = (await initialize(http, server.url)).headers["mcp-session-id"]
        assert (await http.post(server.url, json=INITIALIZED, headers=in_session(used))).status_code == 202
        assert (await initialize(http, server.url)).status_code == 429

        time.sleep(2)
        assert (await http.post(server.url, json=PING, headers=in_session(unused))).status_code == 404
        assert (await http.post(server.url, json=PING, headers=in_session(used))).status_code == 200
        assert (await initialize(http, server.url)).status_code == 200


def closed_by_server(sock: socket.socket, within: float) -> float:
    """Seconds until the server closed `sock`; fails if it is still open after `within`."""
    sock.settimeout(within)
    start = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {within} s")
    return time.monotonic() - start


def not_found(sock: socket.socket) -> bytes:
    """One whole response to `GET /nothing` (Starlette's plain `Not Found`), read off a kept-alive socket."""
    sock.settimeout(5)
    received = b""
    while not received.endswith(b"Not Found"):
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    return received


def test_half_open_connections_are_closed(serve):
    server = serve(ONLYSQ_MCP_HTTP_REQUEST_TIMEOUT="1", ONLYSQ_MCP_HTTP_KEEP_ALIVE_TIMEOUT="1")
    address = ("127.0.0.1", server.port)
    with (
        socket.create_connection(address) as silent,
        socket.create_connection(address) as partial,
        socket.create_connection(address) as trickle,
        socket.create_connection(address) as kept_alive,
        socket.create_connection(address) as no_body,
    ):
        partial.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        no_body.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        kept_alive.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not_found(kept_alive).startswith(b"HTTP/1.1 404")
        # A byte at a time never completes the head, and must not keep the connection alive.
        for byte in b"GET / HTTP/1.1\r\n":
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        for sock in (silent, partial, trickle, kept_alive, no_body):
            assert closed_by_server(sock, within=3) < 3


def test_a_working_request_is_not_cut_by_the_head_timeout(serve):
    server = serve(ONLYSQ_MCP_HTTP_REQUEST_TIMEOUT="1", ONLYSQ_MCP_HTTP_KEEP_ALIVE_TIMEOUT="5")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        time.sleep(0.5)
        sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not_found(sock).startswith(b"HTTP/1.1 404")
        # Idle between requests is the keep-alive timeout's business (5 s here), not the head timeout's.
        time.sleep(1.5)
        sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not_found(sock).startswith(b"HTTP/1.1 404")


async def test_a_token_in_the_query_string_never_reaches_a_log(serve):
    secret = "query-secret-4f1c9a7e"
    server = serve(ONLYSQ_MCP_HTTP_TOKEN=HTTP_TOKEN, ONLYSQ_MCP_LOG_LEVEL="DEBUG")
    async with httpx2.AsyncClient() as http:
        refused = await http.post(f"{server.url}?token={secret}", json=INITIALIZE, headers=MCP_HEADERS)
        accepted = await http.post(
            f"{server.url}?token={secret}&x=1",
            json=INITIALIZE,
            headers=MCP_HEADERS | {"authorization": f"Bearer {HTTP_TOKEN}"},
        )
    assert (refused.status_code, accepted.status_code) == (401, 200)
    stop_http_server(server)
    log = server.log.read_text()
    assert secret not in log
    assert HTTP_TOKEN not in log
    assert "/mcp?token=*** HTTP/1.1" in log  # the access log did run, with the value masked


@pytest.mark.parametrize(("host", "option"), [("127.0.0.2", "127.0.0.2"), ("::1", "::1"), ("::1", "[::1]")])
async def test_any_loopback_bind_host_serves(serve, upstream, host, option):
    server = serve("--host", option, host=host)
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        result = await client.call_tool("chat", {"prompt": f"over {host}"})
    assert text_of(result) == f"Echo: over {host}"


def png_data_uri(size: tuple[int, int]) -> str:
    return "data:image/png;base64," + base64.b64encode(make_image("PNG", size, noise=True)).decode("ascii")


async def test_a_large_image_fits_the_http_body_limit(serve, upstream):
    server = serve()
    uri = png_data_uri((1100, 1100))  # about 3.6 MB of PNG, 4.8 MB as base64: over the SDK's 4 MiB default
    assert len(uri) > 4 * 1024 * 1024
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        result = await client.call_tool("describe_image", {"image": uri, "question": "What is it?"})
    assert not result.is_error, text_of(result)
    assert "1100x1100 image/png" in text_of(result)


async def test_a_body_over_the_limit_gets_a_clear_error(serve):
    server = serve(ONLYSQ_MCP_MAX_INPUT_BYTES="100000")  # the body limit stays at the SDK's 4 MiB floor
    uri = png_data_uri((1100, 1100))
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        with pytest.raises(MCPError, match="byte limit for one HTTP request") as raised:
            await client.call_tool("describe_image", {"image": uri, "question": "What is it?"})
        # The session survives: the next call works.
        assert (await client.list_tools()).tools
    assert "ONLYSQ_MCP_FILE_ROOTS" in str(raised.value)
