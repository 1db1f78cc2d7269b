"""What the tools and resources use, created once per server run: `Services`, and `Runtime` that holds them.

Tools reach the services through their `Context` (the lifespan context); static resources get no request
context from the SDK, so they reach them through the `Runtime`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import httpx2
from pydantic import HttpUrl

from . import __version__
from .catalogue import FETCH_CONNECTIONS, CatalogueCache
from .decoding import DECODE_BUDGET, MAX_DECODES, DecodeBudget
from .http_clients import DeferredTLS, LazyClient, download_client, http_client
from .image_jobs import JobBoard, JobLedger
from .image_sources import InputPolicy
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
        tls = DeferredTLS()
        build = functools.partial(http_client, settings, headers, tls, timeout, limits)
        # Image jobs belong to the server run, not to the request that started them: they run in its task group.
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
