"""The HTTP clients of a server run: one for the upstreams, one for image URLs callers pass, both built
lazily (`LazyClient`) on one CA bundle loaded late (`DeferredTLS`).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import cast

import anyio
import httpx2

from .image_sources import FETCH_SECONDS
from .settings import Settings


class LazyClient:
    """An `httpx2.AsyncClient` built once, then shared; closed when the server stops.

    Building a client imports the HTTP stack (about 25 ms here; its SSL context is a `DeferredTLS`), which
    neither `initialize` nor `tools/list` needs: built at start-up it delayed every host's first tool list,
    built on first use it delayed the first call. `prepare` builds it in a worker thread after start; `get`
    waits for that build rather than start a second one. Without a build under way the client is built at
    once, synchronously, with no `await` between the check and the assignment, so calls that arrive
    together on the event loop share one client.
    """

    def __init__(self, build: Callable[[], httpx2.AsyncClient]) -> None:
        self._build = build
        self._client: httpx2.AsyncClient | None = None
        self._building: anyio.Event | None = None
        self._closed = False

    def __call__(self) -> httpx2.AsyncClient:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        if self._client is None:
            self._client = self._build()
        return self._client

    async def get(self) -> httpx2.AsyncClient:
        """The client, once the build under way (if any) has ended."""
        if self._building is not None:
            await self._building.wait()
        return self()

    async def prepare(self) -> None:
        """Build the client in a worker thread, so that the event loop goes on answering requests meanwhile."""
        if self._client is not None or self._closed:
            return
        self._building = anyio.Event()
        try:
            # Shielded: a thread cannot be stopped, and a client it built while the server stops must still be
            # kept (closed with the rest) or closed here.
            with anyio.CancelScope(shield=True):
                client = await anyio.to_thread.run_sync(self._build)
                if self._client is None and not self._closed:
                    self._client = client
                else:
                    await client.aclose()
        finally:
            # After a failure the callers build the client themselves, and say what went wrong.
            self._building.set()
            self._building = None

    async def __aenter__(self) -> LazyClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()


class DeferredTLS:
    """The SSL context httpx2 makes for `verify=True` (`httpx2.create_ssl_context`), made when first needed.

    Loading the CA bundle into it takes 20–35 ms here. Made with the client, it held up the first call even
    to a plain-http upstream, which never needs it; made here, it is loaded in a worker thread after the
    client is built (`prepare_in_background`; OpenSSL reads the bundle without holding the GIL), or at the
    first TLS handshake if that comes first (a handshake during that load waits for it). One context serves both clients and, with a proxy, both of a
    client's transports, which each loaded the bundle before. Verification is unchanged: the same function
    with the same arguments (`trust_env=False`, as the clients) makes the same context.

    httpcore2 and anyio use the context they are given only through `set_alpn_protocols` and `wrap_bio`
    (httpcore2/_async/connection.py, anyio/streams/tls.py), which this forwards; anyio calls the `wrap_bio`
    of a context that is not exactly an `ssl.SSLContext` in a worker thread, as for truststore's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None

    def load(self) -> ssl.SSLContext:
        """The context, made (once, whichever thread asks first) if it is not there yet."""
        with self._lock:
            if self._context is None:
                self._context = httpx2.create_ssl_context(trust_env=False)
            return self._context

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            # Private and special names are this object's own: a copy or a half-made instance asks for them.
            raise AttributeError(name)
        return getattr(self.load(), name)

    def verify(self) -> ssl.SSLContext:
        """This, as httpx2's `verify=` argument (typed as an `ssl.SSLContext`, used as one through `__getattr__`)."""
        return cast(ssl.SSLContext, self)


def download_client(settings: Settings, headers: dict[str, str], tls: DeferredTLS) -> httpx2.AsyncClient:
    """The client for image URLs callers pass: its own pool, so stalled image hosts never take the
    connections upstream calls wait for.

    No keep-alive: each download connects to an address pinned by IP (`image_sources.pinned_get`), and a
    kept connection would be reused for any other host name at that IP, under the first name's TLS check.
    No proxy from the environment: the address checked must be the address contacted. ONLYSQ_MCP_PROXY is
    used, as the way out of this network for every call: the request names the checked IP (an
    absolute-form URL, a CONNECT or SOCKS target), so the proxy contacts that address and resolves no name
    (the TLS name check stays the host's, `sni_hostname`). The name is still resolved here, before the
    call: a network where only the proxy can resolve names cannot fetch image URLs.
    """
    timeout = httpx2.Timeout(FETCH_SECONDS, connect=settings.onlysq_connect_timeout)
    limits = httpx2.Limits(max_connections=settings.onlysq_mcp_max_downloads, max_keepalive_connections=0)
    return http_client(settings, headers, tls, timeout, limits)


def http_client(
    settings: Settings, headers: dict[str, str], tls: DeferredTLS, timeout: httpx2.Timeout, limits: httpx2.Limits
) -> httpx2.AsyncClient:
    # trust_env off: a stray proxy variable must not reroute calls that carry API keys; only the operator's own
    # ONLYSQ_MCP_PROXY does.
    return httpx2.AsyncClient(
        timeout=timeout,
        headers=headers,
        limits=limits,
        trust_env=False,
        verify=tls.verify(),
        proxy=settings.onlysq_mcp_proxy,
    )
