"""Log messages to the client (retries, slow upstreams), at the level each connection asked for."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, cast

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types import EmptyResult, LoggingLevel, SetLevelRequestParams

from .session_images import connection_of
from .upstream import OnRetry

if TYPE_CHECKING:
    from .services import Services

LOG_LEVELS: tuple[LoggingLevel, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# The level each client connection asked for with `logging/setLevel`; a connection that never asked gets all.
client_log_levels: weakref.WeakKeyDictionary[object, LoggingLevel] = weakref.WeakKeyDictionary()


async def set_client_log_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
    client_log_levels[connection_of(ctx.session)] = params.level
    return EmptyResult()


def client_log(ctx: Context, level: LoggingLevel = "warning") -> OnRetry:
    """Sends notes to the host's log, e.g. retries and slow upstreams: why a call takes longer than usual.

    The one way log messages reach the client, so the notes are masked of secrets here.
    """

    async def send(note: str) -> None:
        wanted = client_log_levels.get(connection_of(ctx.request_context.session), "debug")
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted):
            # The lifespan of the server is its `Services` (services.Runtime.run).
            services = cast("Services", ctx.request_context.lifespan_context)
            await ctx.log(level, services.redact(note), logger_name="onlysq_mcp.upstream")

    return send
