"""What every tool uses: its services, model checks against the catalogue, progress while a reply streams."""

from __future__ import annotations

import time
from typing import Literal, cast

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import is_version_at_least

from .catalogue import KindFilter, ModelEntry, is_kind
from .host_limits import HostProfile, host_named
from .providers.base import Capability, OnDelta, Provider
from .services import Services

# Progress while a reply streams in: the first piece at once, then at most this often.
PROGRESS_INTERVAL = 0.25
EMPTY_MODEL = "`model` is empty: pass a model id from `list_models`, or leave it out for the default."
ModelKind = Literal["chat", "vision", "image"]
# The capability a tool needs of a provider, by the kind of model it takes.
CAPABILITY: dict[ModelKind, Capability] = {"chat": "chat", "vision": "vision", "image": "images"}


def supports_resource_links(ctx: Context) -> bool:
    """Whether this request's protocol version has `resource_link` content blocks (added in 2025-06-18).

    Older clients reject a whole result holding one (TypeScript SDK 1.12: `CallToolResultSchema` knows text,
    image, audio and embedded resources only). The version is the session's, or for 2026-07-28 the request's
    own (`Context.protocol_version`, mcp/server/mcpserver/context.py); an unknown version counts as older.
    """
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, "2025-06-18")


def host_profile(ctx: Context) -> HostProfile | None:
    """What the calling host accepts in a tool result, known from the `clientInfo.name` it sent; None for a
    host not in `host_limits.HOSTS` or one that sent no name.

    The session's `client_params` hold the `initialize` params, or on 2026-07-28 the ones the SDK builds from
    the request's `_meta` envelope, present when that names the client (mcp/server/connection.py
    `Connection.from_envelope`).
    """
    params = ctx.session.client_params
    return host_named(params.client_info.name if params is not None else None)


def services_of(ctx: Context) -> Services:
    """The services of this server run: the lifespan context (`services.Runtime.run`)."""
    return cast(Services, ctx.request_context.lifespan_context)


def provider_for(services: Services, kind: ModelKind, model_id: str) -> Provider:
    """The provider serving `model_id` for a tool that needs a `kind` model, the model checked first."""
    if not model_id:
        raise ToolError(EMPTY_MODEL)
    provider = services.providers.route(CAPABILITY[kind], model_id)
    if provider.listed_only:
        check_model(services, model_id, kind)
    return provider


def check_model(services: Services, model_id: str, kind: KindFilter) -> ModelEntry | None:
    """Refuse a model the live catalogue does not list for this kind, before any upstream call.

    Without a fresh live catalogue at hand (not fetched yet, expired, or failing), or when the live list has
    no entries of this kind, the upstream gets the last word, since the model may be newer than any list; so
    it does for a model the live list hides by its status. The check never waits for a fetch.
    """
    if not model_id:
        raise ToolError(EMPTY_MODEL)
    catalogue = services.catalogue.live()
    if catalogue is None:
        return None
    entry = catalogue.find(model_id)
    if entry is not None and is_kind(entry, kind):
        return entry
    if not catalogue.vouches_for(kind) or model_id in catalogue.hidden:
        return None
    wanted = {"chat": "a chat model", "vision": "a vision model", "image": "an image model", "all": "a model"}[kind]
    if entry is not None:
        article = "an" if entry.kind[0] in "aeiou" else "a"
        problem = f"`{model_id}` is {article} {entry.kind} model, but this tool needs {wanted}."
    else:
        problem = f"Unknown model `{model_id}`; this tool needs {wanted}."
    suggestions = catalogue.closest(model_id, kind)
    hint = (
        "Did you mean " + " or ".join(f"`{s}`" for s in suggestions) + "?"
        if suggestions
        else f"Call `list_models` with kind `{kind}` to see the choices."
    )
    raise ToolError(f"{problem} {hint}")


def progress_of(ctx: Context) -> OnDelta | None:
    """Where the pieces of a reply go while it streams in: progress notifications, when the caller sent a
    progress token (`_meta.progressToken`, MCP spec "Progress"); None otherwise, and nothing needs a stream."""
    meta = ctx.request_context.meta
    if meta is None or meta.get("progress_token") is None:
        return None
    return StreamProgress(ctx).on_delta


class StreamProgress:
    """Turns arriving pieces of a reply into progress notifications, without flooding the client."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._chars = 0
        self._last = 0.0

    async def on_delta(self, piece: str) -> None:
        self._chars += len(piece)
        now = time.monotonic()
        if self._last and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        await self._ctx.report_progress(self._chars, None, f"received {self._chars} characters")
