"""A round-robin HTTP reverse proxy for the tests: one port on 127.0.0.1 in front of N backend base URLs, each
HTTP *request* (not each TCP connection: MCP clients keep theirs alive) forwarded to the next backend in turn,
the way a load balancer without session affinity spreads a client over replicas.

It runs as uvicorn + a small ASGI app in a background thread of the test process, with its own event loop
(the FakeUpstream pattern), not as a subprocess: the tests read what it did (`ProxyHandle.forwarded`) as a
plain list with no stats endpoint or file, it starts in milliseconds with nothing to import, and the backends
it fronts (server replicas) are subprocesses anyway, so sharing the test process costs them nothing.

What a reverse proxy such as nginx does by default, it does:
- responses stream chunk by chunk as the backend sends them (raw bytes, no decoding), so an SSE body
  (text/event-stream) arrives piecemeal and may stay open as long as the backend keeps it open; when the
  client goes away, the backend request is closed too;
- request and response headers pass through (Authorization, Mcp-Session-Id, MCP-Protocol-Version,
  Content-Type, Last-Event-ID, ...) except the hop-by-hop ones (RFC 9110 7.6.1: Connection and what it names,
  Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*); Host becomes the backend's (nginx's default
  `proxy_set_header Host $proxy_host`) and the client's address is appended to X-Forwarded-For;
- a backend that cannot be reached (connection refused, reset before answering) gives 502 at once, with no
  retry on another backend, so a test sees which request met the dead replica. A backend that fails in the
  middle of a response has its client connection cut (uvicorn closes it), so the client sees a truncated body.

Request bodies are read whole before forwarding: MCP requests are small JSON documents.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import uvicorn

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class Forwarded:
    """One request the proxy handled: the backend it went to, and the status the client got (None while the
    backend has not answered yet; 502 when it could not be reached, with `error` naming why)."""

    backend: str
    method: str
    path: str  # with the query string, as sent to the backend
    client: tuple[str, int]  # the client's address and port: one port for requests on one kept-alive connection
    status: int | None = None
    error: str | None = None


@dataclass
class ProxyHandle:
    url: str  # the proxy's base URL, e.g. http://127.0.0.1:PORT (append /mcp for the MCP endpoint)
    backends: list[str]
    forwarded: list[Forwarded] = field(default_factory=list)  # in the order the requests arrived

    @property
    def served_by(self) -> list[str]:
        """The backend of each request so far, in arrival order."""
        return [entry.backend for entry in self.forwarded]


def _kept(raw: list[tuple[bytes, bytes]], also_drop: set[str]) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers of `raw`: without the hop-by-hop ones, nor those its Connection header names."""
    named = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    dropped = HOP_BY_HOP | named | also_drop
    return [(name, value) for name, value in raw if name.decode("latin-1").lower() not in dropped]


class _Proxy:
    def __init__(self, handle: ProxyHandle, client: httpx2.AsyncClient) -> None:
        self.handle = handle
        self.client = client
        self.turn = 0

    def next_backend(self) -> str:
        # Only the proxy's event loop calls this, so the turn needs no lock.
        backend = self.handle.backends[self.turn % len(self.handle.backends)]
        self.turn += 1
        return backend

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with anyio.create_task_group() as group:
            group.start_soon(self.watch_disconnect, receive, group.cancel_scope)
            await self.exchange(scope, bytes(body), send)
            group.cancel_scope.cancel()

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def watch_disconnect(receive: Any, scope: anyio.CancelScope) -> None:
        """End the exchange (and the backend request with it) once the client has gone: a long SSE stream
        otherwise keeps the backend busy until it writes again."""
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def exchange(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        backend = self.next_backend()
        target = scope["raw_path"].decode("latin-1") or scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        entry = Forwarded(backend, scope["method"], target, tuple(scope["client"] or ("", 0)))
        self.handle.forwarded.append(entry)
        headers = _kept(scope["headers"], {"host", "content-length"})
        client_host = entry.client[0] or "unknown"
        forwarded_for = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
        headers = [(name, value) for name, value in headers if name != b"x-forwarded-for"]
        headers.append((b"x-forwarded-for", ", ".join([*forwarded_for, client_host]).encode("latin-1")))
        request = self.client.build_request(scope["method"], backend + target, headers=headers, content=body or None)
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.TransportError as exc:
            entry.status, entry.error = 502, f"{type(exc).__name__}: {exc}"
            await send_text(send, 502, f"bad gateway: {backend} did not answer ({type(exc).__name__})")
            return
        entry.status = response.status_code
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _kept(response.headers.raw, set()),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


async def send_text(send: Any, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@contextmanager
def round_robin_proxy(backends: list[str]) -> Iterator[ProxyHandle]:
    """Serve the proxy on a free port of 127.0.0.1 until the block ends. `backends` are base URLs
    (scheme://host:port, no trailing slash); the request's path and query are appended to them."""
    if not backends:
        raise ValueError("round_robin_proxy needs at least one backend")
    handle = ProxyHandle("", [url.rstrip("/") for url in backends])
    # No read timeout: an SSE stream may stay quiet for as long as the backend likes. A refused connection
    # fails at once; the connect timeout only bounds a backend that accepts and stalls. The client binds to
    # the proxy's event loop on first use, and is closed there at lifespan shutdown.
    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=5, read=None, write=30, pool=None),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=20),
        trust_env=False,
    )
    with asgi_server(_Proxy(handle, client), name="round-robin-proxy") as url:
        handle.url = url
        yield handle


@contextmanager
def asgi_server(app: Any, *, name: str = "asgi-server") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free port of 127.0.0.1, in a background thread with its own event
    loop, until the block ends; yields its base URL. Open streams are cut at the end."""
    # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted sockets (see FakeUpstream.start).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        interface="asgi3",
        ws="none",
        lifespan="auto",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        # Open SSE streams would hold shutdown forever; their clients see the connection close.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} failed to start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()
