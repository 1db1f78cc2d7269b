"""What the tools and resources use, created once per server run: `Services`, and `Runtime` that holds them.

Tools reach the services through their `Context` (the lifespan context); static resources get no request
context from the SDK, so they reach them through the `Runtime`.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import anyio
import anyio.abc
import httpx2
from pydantic import HttpUrl

from . import __version__
from .catalogue import FETCH_CONNECTIONS, CatalogueCache
from .decoding import DECODE_BUDGET, MAX_DECODES, DecodeBudget
from .image_jobs import JobBoard, JobLedger
from .image_sources import FETCH_SECONDS, InputPolicy
from .images import ImageStore
from .principals import UserSlots
from .providers.registry import Registry
from .redaction import Redactor
from .session_images import SessionImages
from .settings import Settings
from .storage import BucketStorage, FolderStorage, Storage
from .upstream import RetryPolicy, Upstream

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]


@dataclass(frozen=True)
class Services:
    """What the tools need, created once per server run and shared by every session."""

    settings: Settings
    downloads: LazyClient
    providers: Registry
    catalogue: CatalogueCache
    store: ImageStore
    session_images: SessionImages
    jobs: JobBoard
    input_policy: InputPolicy
    # Image decodes of every call share one memory budget.
    decodes: DecodeBudget
    # ONLYSQ_MCP_MAX_CONCURRENCY_PER_USER: a chat or describe_image call, or one image of a generation, each.
    user_slots: UserSlots
    # Every text that leaves the server passes this (see `redaction`).
    redact: Redactor


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


class Runtime:
    """Holds the services while the server runs."""

    def __init__(self) -> None:
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the server is not running")
        return self._services

    @asynccontextmanager
    async def run(self, settings: Settings, transport: Transport) -> AsyncIterator[Services]:
        timeout = httpx2.Timeout(
            settings.onlysq_timeout, connect=settings.onlysq_connect_timeout, pool=settings.onlysq_timeout
        )
        headers = {"User-Agent": f"onlysq-mcp/{__version__} (+https://github.com/onlysq-mcp/onlysq-mcp)"}
        # A burst of tool calls queues for a connection instead of opening hundreds at once.
        limits = httpx2.Limits(
            max_connections=settings.onlysq_mcp_max_concurrency + FETCH_CONNECTIONS,
            max_keepalive_connections=settings.onlysq_mcp_max_concurrency + FETCH_CONNECTIONS,
        )
        # trust_env off: a stray proxy variable must not reroute calls that carry API keys; only the
        # operator's own ONLYSQ_MCP_PROXY does. Image jobs belong to the server run, not to the request that started them.
        tls = DeferredTLS()
        build = functools.partial(
            httpx2.AsyncClient,
            timeout=timeout,
            headers=headers,
            limits=limits,
            trust_env=False,
            verify=tls.verify(),
            proxy=settings.onlysq_mcp_proxy,
        )
        async with (
            LazyClient(build) as http,
            LazyClient(functools.partial(download_client, settings, headers, tls)) as downloads,
            anyio.create_task_group() as jobs,
        ):
            self._services = build_services(settings, http, downloads, transport, jobs)
            jobs.start_soon(prepare_in_background, http, tls, self._services.catalogue)
            try:
                yield self._services
            finally:
                self._services = None
                jobs.cancel_scope.cancel()


async def prepare_in_background(http: LazyClient, tls: DeferredTLS, catalogue: CatalogueCache) -> None:
    """What the first tool call would otherwise wait for: the upstream client, its CA bundle, the live catalogue.

    Started with the server, never awaited by a request: `initialize` and `tools/list` need none of them.
    A call waits for the client only: the CA bundle is loaded after it is built, while the call goes out.
    """
    try:
        await http.prepare()
        await anyio.to_thread.run_sync(tls.load)
    except Exception:
        # The first call will build what is missing itself, and report what goes wrong; the server runs on.
        logger.exception("preparing the upstream HTTP client in the background failed")
    await catalogue.keep_fresh()


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
    return httpx2.AsyncClient(
        timeout=timeout,
        headers=headers,
        limits=limits,
        trust_env=False,
        verify=tls.verify(),
        proxy=settings.onlysq_mcp_proxy,
    )


def storage_of(settings: Settings) -> Storage:
    """The storage ONLYSQ_MCP_STORAGE_URL names (settings checked its form), or the output folder."""
    url = settings.storage_url
    if not url.startswith("s3://"):
        return FolderStorage(Path(url.removeprefix("file://")))
    endpoint = settings.onlysq_mcp_s3_endpoint_url
    return BucketStorage(
        url,
        endpoint=str(endpoint).rstrip("/") if endpoint else None,
        presign_seconds=settings.onlysq_mcp_s3_presign_seconds,
    )


def build_services(
    settings: Settings,
    http: LazyClient,
    downloads: LazyClient,
    transport: Transport,
    tasks: anyio.abc.TaskGroup,
) -> Services:
    redact = Redactor(settings.secrets())
    providers = Registry.from_settings(settings, UpstreamFactory(settings, http, redact))
    storage = storage_of(settings)
    return Services(
        settings=settings,
        downloads=downloads,
        providers=providers,
        catalogue=CatalogueCache(
            providers, settings.onlysq_mcp_models_cache_ttl, timeout=settings.onlysq_mcp_models_timeout, tasks=tasks
        ),
        store=ImageStore(storage, settings.onlysq_mcp_max_image_bytes),
        # Over stdio one host launched this process: the whole run is its session.
        session_images=SessionImages(one_client=transport == "stdio"),
        jobs=JobBoard(tasks, JobLedger(storage, settings.onlysq_mcp_job_lease)),
        input_policy=InputPolicy(
            max_bytes=settings.onlysq_mcp_max_input_bytes,
            local_files=transport == "stdio",
            file_roots=settings.onlysq_mcp_file_roots,
            allow_private_urls=settings.onlysq_mcp_allow_private_urls,
            proxy=settings.onlysq_mcp_proxy,
        ),
        decodes=DecodeBudget(DECODE_BUDGET, MAX_DECODES),
        user_slots=UserSlots(settings.onlysq_mcp_max_concurrency_per_user),
        redact=redact,
    )


class UpstreamFactory:
    """Every provider's `Upstream`: one HTTP client, one retry policy, one set of limits and secrets."""

    def __init__(self, settings: Settings, http: LazyClient, redact: Redactor) -> None:
        self._settings = settings
        self._http = http
        self._redact = redact

    def __call__(self, name: str, base_url: HttpUrl, auth_hint: str) -> Upstream:
        settings = self._settings
        return Upstream(
            name=name,
            client=self._http.get,
            base_url=str(base_url),
            policy=RetryPolicy(settings.onlysq_retries, settings.onlysq_retry_backoff, settings.onlysq_retry_deadline),
            read_timeout=settings.onlysq_timeout,
            auth_hint=auth_hint,
            max_body_bytes=settings.onlysq_mcp_max_response_bytes,
            max_image_bytes=settings.onlysq_mcp_max_image_bytes,
            redact=self._redact,
            proxy=settings.onlysq_mcp_proxy,
        )
