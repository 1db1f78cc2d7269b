"""Builds the MCP server: `app_factory(settings)` wires settings, upstream clients, tools and resources.

Tests build their own server with test settings; the command line builds one from the environment.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import warnings
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

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
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    SetLevelRequestParams,
)
from pydantic import AnyUrl, ValidationError

from . import __version__, tools
from .client_log import set_client_log_level
from .errors import ProviderNotConfigured, UpstreamError
from .image_jobs import JOB_PREFIX
from .images import RESOURCE_PREFIX, StoredImageTooLarge
from .principals import owner_of, principal_of
from .services import Runtime, Services, Transport
from .settings import Settings

logger = logging.getLogger(__name__)

# Logging to the client is deprecated from protocol 2026-07-28 on, but the hosts of today speak
# 2025-11-25 and show these messages; the SDK still delivers them where the protocol allows.
warnings.filterwarnings("ignore", message="The logging capability is deprecated", category=MCPDeprecationWarning)

# Tools that hold one of the caller's ONLYSQ_MCP_MAX_CONCURRENCY_PER_USER slots while they run.
SLOTTED_TOOLS = frozenset({"chat", "describe_image"})

INSTRUCTIONS = (
    "Tools backed by the OnlySq AI API (many chat models, image generation) and, when configured, Yandex AI Studio.\n"
    + tools.tool_guide()
    + "- Model ids must come from `list_models`; unknown ids are refused with suggestions.\n"
)


class OnlySqServer(MCPServer[Services]):
    """`MCPServer` with these changes.

    What tools and resources send out, results and errors alike, is masked of secrets here: the one way
    out for their text, whatever produced it (a log message to the client goes through `client_log.client_log`).

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
            owner = owner_of(context)
            try:
                data, mime = await store.open(str(uri).removeprefix(RESOURCE_PREFIX), owner)
            except FileNotFoundError:
                raise ResourceNotFoundError(f"no generated image at {uri}") from None
            except StoredImageTooLarge as exc:
                raise ResourceError(f"Cannot read {uri}: {exc}.") from None
            except OSError as exc:
                raise ResourceError(f"Cannot read {uri}: {exc}.") from None
            return [ReadResourceContents(content=data, mime_type=mime)]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Services, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        services = self._runtime.services
        redact = services.redact
        # generate_image takes a slot per image instead: its images may outlive the call.
        slot = services.user_slots.slot(principal_of(context)) if name in SLOTTED_TOOLS else contextlib.nullcontext()
        try:
            async with slot:
                result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            raise ToolError(redact(failure_text(name, exc))) from exc.__cause__
        return redact.model(result)


def cursor_position(cursor: str | None) -> int:
    """Where a `resources/list` cursor continues; the spec asks for -32602 on a cursor the server never made."""
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 12):
        raise MCPError(code=INVALID_PARAMS, message="invalid cursor: pass the `nextCursor` of the previous page")
    return int(cursor)


def failure_text(tool: str, error: ToolError) -> str:
    """What the caller reads when a tool fails: the one place where upstream errors become tool errors.

    An `UpstreamError` (or an unconfigured provider) says what went wrong and what to do. Anything else a
    tool raised is a fault of this server: its traceback goes to the log on stderr, and the caller gets a
    message instead of the SDK's bare "Error executing tool".
    """
    cause = error.__cause__
    prefix = f"Error executing tool {tool}: "
    if isinstance(cause, ValidationError):
        return describe_argument_errors(tool, cause)
    if not isinstance(error, UnexpectedToolError) or cause is None:
        return str(error)
    if isinstance(cause, UpstreamError | ProviderNotConfigured):
        return prefix + str(cause)
    logger.error("%s failed unexpectedly", tool, exc_info=cause)
    return prefix + (
        f"{tool} failed because of an unexpected error on this server ({type(cause).__name__}); the traceback "
        "is in the server's log. Try again; if it keeps failing, report it."
    )


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
        tools=tools.sdk_tools(),
    )
    # Hosts of the 2025-11-25 protocol set the level of the log messages they get (retry notices);
    # answering it also advertises the logging capability. From 2026-07-28 on the SDK routes levels itself.
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_client_log_level)

    @server.resource(
        JOB_PREFIX + "{job_id}",
        name="image-job",
        title="Image generation job",
        description="Status of a `generate_image` call that outlasted its wait, and its images once ready.",
        mime_type="application/json",
    )
    async def image_job(job_id: str, ctx: Context[Services, Any]) -> str:
        job = await runtime.services.jobs.find(owner_of(ctx), job_id)
        if job is None:
            raise ResourceNotFoundError(f"no image job `{job_id}`")
        return job.record().public().model_dump_json()

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
