"""Builds the MCP server: `app_factory(settings)` wires settings, upstream clients, tools and resources.

Tests build their own server with test settings; the command line builds one from the environment.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
import anyio.abc
import httpx2
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedResourceError,
    UnexpectedToolError,
)
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    EmptyResult,
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    SetLevelRequestParams,
)
from pydantic import AnyUrl, HttpUrl, ValidationError

from . import __version__, image_tools, tools
from .catalogue import CatalogueCache
from .image_jobs import JobBoard
from .image_sources import FETCH_SECONDS, InputPolicy
from .images import RESOURCE_PREFIX, ImageStore, StoredImageTooLarge
from .onlysq import UPSTREAM as ONLYSQ
from .onlysq import OnlySqClient
from .redaction import Redactor
from .session_images import SessionImages
from .settings import Settings
from .upstream import RetryPolicy, Upstream
from .yandex import UPSTREAM as YANDEX
from .yandex import YandexClient

# Logging to the client is deprecated from protocol 2026-07-28 on, but the hosts of today speak
# 2025-11-25 and show these messages; the SDK still delivers them where the protocol allows.
warnings.filterwarnings("ignore", message="The logging capability is deprecated", category=MCPDeprecationWarning)

INSTRUCTIONS = """\
Tools backed by the OnlySq AI API (many chat models, image generation) and, when configured, Yandex AI Studio.
- `chat`: ask another language model (GPT, Gemini, Claude, DeepSeek, Llama, ...) for text: a second opinion,
  a translation, a draft. Pass earlier turns in `messages` to continue a conversation.
- `generate_image`: make pictures from a text description (OnlySq `flux` by default; Yandex models when
  configured). Images are saved on the server and returned inline or as previews with resource links.
- `describe_image`: have a vision model look at an image (file path, URL, data URI, or a generated image's
  onlysq://images/... URI) and answer a question about it.
- `list_models`: find model ids before choosing `model` for another tool; filter by kind or text.
- Model ids must come from `list_models`; unknown ids are refused with suggestions.
"""


@dataclass(frozen=True)
class Services:
    """What the tools need, created once per server run and shared by every session."""

    settings: Settings
    http: httpx2.AsyncClient
    downloads: httpx2.AsyncClient
    onlysq: OnlySqClient
    yandex: YandexClient | None
    catalogue: CatalogueCache
    store: ImageStore
    session_images: SessionImages
    jobs: JobBoard
    input_policy: InputPolicy
    # Every text that leaves the server passes this (see `redaction`).
    redact: Redactor


class Runtime:
    """Holds the services while the server runs.

    Static resources get no request context from the SDK, so tools and resources alike reach the
    services through this object rather than through the lifespan context.
    """

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
            max_connections=settings.onlysq_mcp_max_concurrency,
            max_keepalive_connections=settings.onlysq_mcp_max_concurrency,
        )
        # trust_env off: a stray proxy variable must not reroute calls that carry API keys.
        # Image jobs belong to the server run, not to the request that started them.
        async with (
            httpx2.AsyncClient(timeout=timeout, headers=headers, limits=limits, trust_env=False) as http,
            download_client(settings, headers) as downloads,
            anyio.create_task_group() as jobs,
        ):
            self._services = build_services(settings, http, downloads, transport, jobs)
            try:
                yield self._services
            finally:
                self._services = None
                jobs.cancel_scope.cancel()


def download_client(settings: Settings, headers: dict[str, str]) -> httpx2.AsyncClient:
    """The client for image URLs callers pass: its own pool, so stalled image hosts never take the
    connections upstream calls wait for.

    No keep-alive: each download connects to an address pinned by IP (`image_sources.pinned_get`), and a
    kept connection would be reused for any other host name at that IP, under the first name's TLS check.
    No proxy from the environment: the address checked must be the address contacted.
    """
    timeout = httpx2.Timeout(FETCH_SECONDS, connect=settings.onlysq_connect_timeout)
    limits = httpx2.Limits(max_connections=settings.onlysq_mcp_max_downloads, max_keepalive_connections=0)
    return httpx2.AsyncClient(timeout=timeout, headers=headers, limits=limits, trust_env=False)


Transport = Literal["stdio", "http"]


class OnlySqServer(MCPServer[Services]):
    """`MCPServer` with these changes.

    What tools and resources send out, results and errors alike, is masked of secrets here: the one way
    out for their text, whatever produced it (a log message to the client goes through `tools.client_log`).

    Argument errors read as instructions: which argument, what is wrong with it. The SDK passes pydantic's
    text through, with the rejected values and a documentation link; a model acts faster on the field
    names and rules alone, and the values may be long or private.

    Generated images are not registered with the SDK, whose resources every session lists: each session
    lists its own (`session_images`), a page at a time, and is told when that list changes. Any image this
    server saved, in this run or an earlier one, is read from the output folder by its URI.
    """

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        super().__init__(**options)
        self._runtime = runtime
        lowlevel = self._lowlevel_server
        lowlevel.add_request_handler("resources/list", PaginatedRequestParams, self._list_resources_page)
        # The SDK's transports build their `initialize` answer from these options, and by default they
        # deny `resources.listChanged` (mcp/server/lowlevel/server.py, `create_initialization_options`).
        lowlevel.create_initialization_options = functools.partial(  # type: ignore[method-assign]
            lowlevel.create_initialization_options, notification_options=NotificationOptions(resources_changed=True)
        )

    async def _list_resources_page(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams
    ) -> ListResourcesResult:
        """The static resources, then the caller's session's images, oldest first, a page at a time."""
        services = self._runtime.services
        start = cursor_position(params.cursor)
        shelf = services.session_images.shelf(ctx.session)
        images, after = shelf.page(start, services.settings.onlysq_mcp_resources_page_size) if shelf else ([], None)
        static = await self.list_resources() if params.cursor is None else []
        return ListResourcesResult(resources=[*static, *images], next_cursor=None if after is None else str(after))

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Services, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        redact = self._runtime.services.redact
        try:
            contents = await self._read_resource(uri, context)
        except ResourceError as exc:
            # An unexpected error's message names only the URI; its cause goes to the (masked) log.
            if isinstance(exc, UnexpectedResourceError):
                raise
            raise type(exc)(redact(str(exc))) from exc.__cause__
        if isinstance(contents, InputRequiredResult):
            return contents
        return [
            replace(item, content=redact(item.content)) if isinstance(item.content, str) else item for item in contents
        ]

    async def _read_resource(
        self, uri: AnyUrl | str, context: Context[Services, Any] | None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError:
            if not str(uri).startswith(RESOURCE_PREFIX):
                raise
            store = self._runtime.services.store
            try:
                data, mime = await anyio.to_thread.run_sync(store.open, str(uri).removeprefix(RESOURCE_PREFIX))
            except FileNotFoundError:
                raise ResourceNotFoundError(f"no generated image at {uri}") from None
            except StoredImageTooLarge as exc:
                raise ResourceError(f"Cannot read {uri}: {exc}.") from None
            return [ReadResourceContents(content=data, mime_type=mime)]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Services, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        redact = self._runtime.services.redact
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            # An unexpected error's message is only the tool's name; its cause goes to the (masked) log.
            if isinstance(exc, UnexpectedToolError):
                raise
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(redact(describe_argument_errors(name, exc.__cause__))) from exc.__cause__
            raise ToolError(redact(str(exc))) from exc.__cause__
        return redact.model(result)


def cursor_position(cursor: str | None) -> int:
    """Where a `resources/list` cursor continues; the spec asks for -32602 on a cursor the server never made."""
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 12):
        raise MCPError(code=INVALID_PARAMS, message="invalid cursor: pass the `nextCursor` of the previous page")
    return int(cursor)


def describe_argument_errors(tool: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"`{where}`: {item['msg']}")
    # The same prefix as every other tool error, so callers can rely on one shape.
    return f"Error executing tool {tool}: invalid arguments: " + "; ".join(problems) + ". Fix them and call again."


def app_factory(settings: Settings, *, transport: Transport = "stdio") -> MCPServer[Services]:
    """The server, for `transport`: over HTTP callers are remote and may not read local files by default."""
    runtime = Runtime()

    def lifespan(_: MCPServer[Services]) -> AbstractAsyncContextManager[Services]:
        return runtime.run(settings, transport)

    server = OnlySqServer(
        runtime,
        name="onlysq-mcp",
        title="OnlySq AI",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://github.com/onlysq-mcp/onlysq-mcp",
        lifespan=lifespan,
        log_level=settings.onlysq_mcp_log_level,
    )
    tools.register(server, runtime)
    # Hosts of the 2025-11-25 protocol set the level of the log messages they get (retry notices);
    # answering it also advertises the logging capability. From 2026-07-28 on the SDK routes levels itself.
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_client_log_level)
    image_tools.register(server, runtime)

    @server.resource(
        "onlysq://models",
        name="model-catalogue",
        title="Model catalogue",
        description="Every model the upstreams offer, as JSON (the same entries `list_models` returns).",
        mime_type="application/json",
    )
    async def model_catalogue() -> str:
        catalogue = await runtime.services.catalogue.get()
        return json.dumps(catalogue.model_dump(mode="json"), ensure_ascii=False)

    return server


async def set_client_log_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
    tools.client_log_levels[tools.connection_of(ctx.session)] = params.level
    return EmptyResult()


def build_services(
    settings: Settings,
    http: httpx2.AsyncClient,
    downloads: httpx2.AsyncClient,
    transport: Transport,
    tasks: anyio.abc.TaskGroup,
) -> Services:
    policy = RetryPolicy(settings.onlysq_retries, settings.onlysq_retry_backoff, settings.onlysq_retry_deadline)
    redact = Redactor(settings.secrets())

    def upstream(name: str, base_url: HttpUrl, auth_hint: str) -> Upstream:
        return Upstream(
            name=name,
            client=http,
            base_url=str(base_url),
            policy=policy,
            read_timeout=settings.onlysq_timeout,
            auth_hint=auth_hint,
            max_body_bytes=settings.onlysq_mcp_max_response_bytes,
            max_image_bytes=settings.onlysq_mcp_max_image_bytes,
            redact=redact,
        )

    onlysq = OnlySqClient(
        upstream(ONLYSQ, settings.onlysq_base_url, "Set ONLYSQ_API_KEY to a valid key (the public key is `openai`)."),
        settings.onlysq_api_key.get_secret_value(),
        stream=settings.onlysq_stream,
        stream_timeout=settings.onlysq_mcp_stream_timeout,
    )
    yandex = None
    if settings.yandex_configured and settings.yandex_folder_id:
        yandex_upstream = upstream(
            YANDEX,
            settings.yandex_base_url,
            "Check YANDEX_API_KEY / YANDEX_IAM_TOKEN and that YANDEX_FOLDER_ID is the folder they belong to.",
        )
        yandex = YandexClient(
            yandex_upstream,
            settings.yandex_folder_id,
            api_key=settings.yandex_api_key.get_secret_value() if settings.yandex_api_key else None,
            iam_token=settings.yandex_iam_token.get_secret_value() if settings.yandex_iam_token else None,
        )
    catalogue = CatalogueCache(
        onlysq,
        settings.onlysq_mcp_models_cache_ttl,
        timeout=settings.onlysq_mcp_models_timeout,
        tasks=tasks,
        include_yandex=yandex is not None,
    )
    return Services(
        settings=settings,
        http=http,
        downloads=downloads,
        onlysq=onlysq,
        yandex=yandex,
        catalogue=catalogue,
        store=ImageStore(settings.onlysq_mcp_output_dir, settings.onlysq_mcp_max_image_bytes),
        # Over stdio one host launched this process: the whole run is its session.
        session_images=SessionImages(one_client=transport == "stdio"),
        jobs=JobBoard(tasks),
        input_policy=InputPolicy(
            max_bytes=settings.onlysq_mcp_max_input_bytes,
            local_files=transport == "stdio",
            file_roots=settings.onlysq_mcp_file_roots,
            allow_private_urls=settings.onlysq_mcp_allow_private_urls,
        ),
        redact=redact,
    )
