"""The test infrastructure of the replica tests, checked on its own: the round-robin reverse proxy
(tests/round_robin_proxy.py) in front of tiny backends, and the moto S3 server (tests/s3_server.py) as obstore
sees it. A failure here means the replica and storage tests would prove nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2
import obstore
import pytest
from obstore.store import S3Store
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.helpers import free_port
from tests.round_robin_proxy import ProxyHandle, asgi_server, round_robin_proxy
from tests.s3_server import get_object, list_keys, s3_env

pytestmark = pytest.mark.anyio


class Backend:
    """A tiny backend: /echo answers with what it received and who it is; /sse sends one event, then waits for
    `release` before the second, so a reader holding the first event proves the proxy did not buffer. `ended`
    is set once an /sse response is over, finished or cut."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.ended = threading.Event()
        self.app = Starlette(routes=[Route("/echo", self.echo, methods=["GET", "POST"]), Route("/sse", self.sse)])

    async def echo(self, request: Request) -> Response:
        answer = {
            "backend": self.name,
            "method": request.method,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": (await request.body()).decode(),
        }
        return JSONResponse(answer, headers={"mcp-session-id": f"session-from-{self.name}"})

    async def sse(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"event: message\ndata: first\n\n"
                with anyio.fail_after(10):
                    while not self.release.is_set():
                        await anyio.sleep(0.01)  # a cancellable wait, so a client that leaves ends it
                yield b"event: message\ndata: second\n\n"
            finally:
                self.ended.set()

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def backends() -> Iterator[list[tuple[Backend, str]]]:
    first, second = Backend("a"), Backend("b")
    with asgi_server(first.app, name="backend-a") as url_a, asgi_server(second.app, name="backend-b") as url_b:
        yield [(first, url_a), (second, url_b)]


@pytest.fixture
def proxy(backends: list[tuple[Backend, str]]) -> Iterator[ProxyHandle]:
    with round_robin_proxy([url for _, url in backends]) as handle:
        yield handle


async def test_proxy_alternates_backends_per_request_on_one_connection(
    proxy: ProxyHandle, backends: list[tuple[Backend, str]]
) -> None:
    url_a, url_b = (url for _, url in backends)
    headers = {
        "authorization": "Bearer secret-token",
        "mcp-session-id": "abc123",
        "mcp-protocol-version": "2025-11-25",
        "last-event-id": "42",
        "content-type": "application/json",
        # Hop-by-hop: Connection and the header it names stay between client and proxy.
        "connection": "keep-alive, x-hop",
        "x-hop": "1",
    }
    async with httpx2.AsyncClient(trust_env=False, timeout=5) as client:
        answers = []
        for n in range(6):
            response = await client.post(f"{proxy.url}/echo?n={n}", headers=headers, content=json.dumps({"n": n}))
            assert response.status_code == 200
            assert response.headers["mcp-session-id"] == f"session-from-{response.json()['backend']}"
            answers.append(response.json())

    assert [answer["backend"] for answer in answers] == ["a", "b"] * 3
    assert proxy.served_by == [url_a, url_b] * 3
    assert len({entry.client for entry in proxy.forwarded}) == 1, "the client's requests shared one connection"
    assert [entry.status for entry in proxy.forwarded] == [200] * 6
    for n, answer in enumerate(answers):
        assert answer["method"] == "POST"
        assert answer["query"] == f"n={n}"
        assert answer["body"] == json.dumps({"n": n})
        received = answer["headers"]
        for name in ("authorization", "mcp-session-id", "mcp-protocol-version", "last-event-id", "content-type"):
            assert received[name] == headers[name]
        assert "x-hop" not in received
        assert received["x-forwarded-for"] == "127.0.0.1"
        assert received["host"] == (url_a if answer["backend"] == "a" else url_b).removeprefix("http://")


async def test_proxy_streams_sse_events_as_they_come(proxy: ProxyHandle, backends: list[tuple[Backend, str]]) -> None:
    (first, _), _ = backends
    async with httpx2.AsyncClient(trust_env=False, timeout=5) as client:
        with anyio.fail_after(5):
            async with client.stream("GET", f"{proxy.url}/sse", headers={"accept": "text/event-stream"}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                received = [await anext(lines), await anext(lines)]
                # The backend is still holding its second event: the first came through on its own.
                assert received == ["event: message", "data: first"]
                assert not first.release.is_set()
                first.release.set()
                received += [line async for line in lines]
    assert received == ["event: message", "data: first", "", "event: message", "data: second", ""]
    assert proxy.forwarded[0].status == 200


async def test_proxy_ends_the_backend_stream_when_the_client_leaves(
    proxy: ProxyHandle, backends: list[tuple[Backend, str]]
) -> None:
    (first, _), _ = backends
    async with httpx2.AsyncClient(trust_env=False, timeout=5) as client:
        with anyio.fail_after(5):
            async with client.stream("GET", f"{proxy.url}/sse") as response:
                assert await anext(response.aiter_lines()) == "event: message"
    # The client closed its connection mid-stream; the backend, still waiting for `release`, is let go.
    assert await anyio.to_thread.run_sync(first.ended.wait, 3)
    assert not first.release.is_set()


async def test_proxy_answers_502_at_once_for_a_dead_backend(backends: list[tuple[Backend, str]]) -> None:
    (_, alive), _ = backends
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with round_robin_proxy([alive, dead]) as proxy:
        async with httpx2.AsyncClient(trust_env=False, timeout=5) as client:
            statuses = []
            for _ in range(4):
                started = time.monotonic()
                statuses.append((await client.get(f"{proxy.url}/echo")).status_code)
                assert time.monotonic() - started < 2
    assert statuses == [200, 502, 200, 502]
    assert proxy.served_by == [alive, dead, alive, dead]
    assert proxy.forwarded[1].error and proxy.forwarded[1].error.startswith("ConnectError")


async def test_moto_serves_what_obstore_writes(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    env = s3_env(endpoint, bucket, "images/run-1")
    assert env["ONLYSQ_MCP_STORAGE_URL"] == f"s3://{bucket}/images/run-1"
    store = S3Store(
        bucket,
        prefix="images/run-1",
        config={
            "endpoint": env["ONLYSQ_MCP_S3_ENDPOINT_URL"],
            "region": env["AWS_REGION"],
            "access_key_id": env["AWS_ACCESS_KEY_ID"],
            "secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        },
        client_options={"allow_http": True},
    )
    await obstore.put_async(store, "cat 1.png", b"\x89PNG fake bytes")
    await obstore.put_async(store, "sub/dog.jpg", b"jpeg bytes")

    assert list_keys(endpoint, bucket, "images/") == ["images/run-1/cat 1.png", "images/run-1/sub/dog.jpg"]
    assert list_keys(endpoint, bucket, "other/") == []
    assert get_object(endpoint, bucket, "images/run-1/cat 1.png") == b"\x89PNG fake bytes"
    with pytest.raises(httpx2.HTTPStatusError) as missing:
        get_object(endpoint, bucket, "images/run-1/nothing.png")
    assert missing.value.response.status_code == 404
