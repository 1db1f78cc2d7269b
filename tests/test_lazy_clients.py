"""The upstream HTTP client is built once, in the background after start, and closed when the server stops.

Building an `httpx2.AsyncClient` imports the HTTP stack, and loading the CA bundle into its SSL context takes
as long again: on the start path they delayed the answer to `tools/list` (docs/benchmarks.md, cold start), on
the first call's path they delayed that call. The CA bundle is loaded after the client is built, and only a
TLS handshake waits for it.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
import time

import anyio
import httpx2
import httpx2._transports.default
import pytest
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSStream
from cryptography import x509
from mcp import Client

from onlysq_mcp.server import app_factory
from tests.helpers import self_signed_server, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[httpx2.AsyncClient]:
    """Every `httpx2.AsyncClient` constructed while the test runs."""
    clients: list[httpx2.AsyncClient] = []

    class Recorded(httpx2.AsyncClient):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            clients.append(self)

    monkeypatch.setattr(httpx2, "AsyncClient", Recorded)
    return clients


async def test_client_is_built_once_in_the_background_and_closed_at_shutdown(server, upstream, built):
    replies: list[str] = []

    async def chat(client: Client, prompt: str) -> None:
        result = await client.call_tool("chat", {"prompt": prompt})
        assert not result.is_error, text_of(result)
        replies.append(text_of(result))

    async with Client(server) as client:
        await client.list_tools()
        # No tool call yet: the background task builds the client and fetches the catalogue with it.
        with anyio.fail_after(10):
            while not upstream.requests_to("/ai/models"):
                await anyio.sleep(0.01)
        assert len(built) == 1
        async with anyio.create_task_group() as calls:
            for n in range(5):
                calls.start_soon(chat, client, f"hello {n}")
        assert sorted(replies) == [f"Echo: hello {n}" for n in range(5)]
        # The upstream client, shared by the background task and the five calls; no call fetched an image URL.
        assert len(built) == 1
        assert not built[0].is_closed
    assert built[0].is_closed


async def test_a_call_during_the_background_build_waits_for_it(server, upstream, built, monkeypatch):
    """A second build would cost the first call what the background build is there to save."""
    started = anyio.Event()
    build = httpx2.AsyncClient

    def slow_build(*args, **kwargs):
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.3)  # in the worker thread, like importing the HTTP stack
        return build(*args, **kwargs)

    monkeypatch.setattr(httpx2, "AsyncClient", slow_build)
    async with Client(server) as client:
        await started.wait()
        result = await client.call_tool("chat", {"prompt": "during the build"})
    assert text_of(result) == "Echo: during the build"
    assert len(built) == 1


async def test_a_call_to_a_plain_http_upstream_never_waits_for_the_ca_bundle(server, upstream, monkeypatch):
    """Loading the CA bundle is stalled here: the call goes out, and the bundle is still loaded meanwhile."""
    release = threading.Event()
    loads: list[bool] = []
    make = httpx2.create_ssl_context

    def stalled(verify=True, cert=None, trust_env=True):
        if verify is True:  # a context with the CA bundle, as both clients ask for
            loads.append(True)
            release.wait(10)
        return make(verify=verify, cert=cert, trust_env=trust_env)

    # Where a client's transport makes its context, and where the server may make it itself.
    monkeypatch.setattr(httpx2._transports.default, "create_ssl_context", stalled)
    monkeypatch.setattr(httpx2, "create_ssl_context", stalled)
    async with Client(server) as client:
        try:
            with anyio.fail_after(5):
                result = await client.call_tool("chat", {"prompt": "no TLS on the way"})
                assert text_of(result) == "Echo: no TLS on the way"
                while not loads:  # the background task loads it for the first TLS handshake to come
                    await anyio.sleep(0.01)
        finally:
            release.set()
    assert loads == [True]


async def test_an_upstream_certificate_no_trusted_ca_signed_is_refused(make_settings, tmp_path):
    """The CA bundle loaded late still decides: the client ends every handshake, and sends nothing."""
    context, _ = self_signed_server(tmp_path, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    outcomes: list[str | bytes] = []

    async def handle(stream: SocketStream) -> None:
        try:
            tls = await TLSStream.wrap(stream, server_side=True, ssl_context=context, standard_compatible=False)
        except (ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError):
            outcomes.append("handshake refused")
            return
        with anyio.move_on_after(5):
            outcomes.append(await tls.receive())
        await tls.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with anyio.create_task_group() as serving:
        serving.start_soon(listener.serve, handle)
        settings = make_settings(ONLYSQ_BASE_URL=f"https://127.0.0.1:{port}", ONLYSQ_RETRIES=0)
        async with Client(app_factory(settings)) as client:
            with anyio.fail_after(10):
                result = await client.call_tool("chat", {"prompt": "over TLS"})
        serving.cancel_scope.cancel()
    assert result.is_error
    assert "could not reach" in text_of(result)
    # The call's connection and the catalogue's, each ended by the client at the certificate.
    assert outcomes
    assert set(outcomes) == {"handshake refused"}
