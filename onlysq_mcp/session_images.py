"""Which generated images a client lists as resources: those of its own session, never another's.

A session is what the transport keeps per client: the whole run over stdio (one host launched this
process), an `Mcp-Session-Id` over streamable HTTP (protocol 2025-11-25). Requests of the stateless
protocol 2026-07-28 over HTTP belong to no session, so they list no images; their images are reached by
the URIs in the tool results, as are images of earlier runs. Identities across sessions are a later issue.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from mcp.server.mcpserver import Context
from mcp_types import Resource, ResourceListChangedNotification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .images import SavedImage

# A session lists its newest images only; older ones stay readable at their URIs.
KEEP_LISTED = 1000


@dataclass
class Shelf:
    """One session's images, oldest first, numbered from 0 so a cursor stays valid as the oldest drop out."""

    resources: deque[Resource] = field(default_factory=lambda: deque(maxlen=KEEP_LISTED))
    added: int = 0

    def add(self, image: SavedImage, description: str) -> None:
        # A neutral title: the prompt stays out of listings.
        self.resources.append(
            Resource(
                uri=image.uri,
                name=image.name,
                title="Generated image",
                description=description,
                mime_type=image.mime,
                size=image.size_bytes,
            )
        )
        self.added += 1

    def page(self, start: int, size: int) -> tuple[list[Resource], int | None]:
        """Up to `size` images from number `start` on, and the number to continue from (None at the end)."""
        first = self.added - len(self.resources)
        skip = max(start - first, 0)
        chunk = list(islice(self.resources, skip, skip + size))
        end = first + skip + len(chunk)
        return chunk, end if end < self.added else None


def connection_of(session: object) -> object:
    # The SDK hands out one session object per request; the connection behind it is what a session is.
    return getattr(session, "_connection", session)


class SessionImages:
    """The shelves of the sessions alive now; a shelf goes when its session's connection does."""

    def __init__(self, *, one_client: bool) -> None:
        self._run = Shelf() if one_client else None
        self._shelves: weakref.WeakKeyDictionary[object, Shelf] = weakref.WeakKeyDictionary()

    def shelf(self, session: object) -> Shelf | None:
        """The images the client behind `session` lists; None when its requests belong to no session."""
        if self._run is not None:
            return self._run
        connection = connection_of(session)
        if getattr(connection, "session_id", None) is None:
            return None
        return self._shelves.setdefault(connection, Shelf())


async def announce_list_changed(ctx: Context, *, in_request: bool) -> None:
    """Tell the client its resource list changed.

    While the tool call runs, on that call's own stream: over HTTP it is open for sure, while the
    session's standalone stream may not be yet. Afterwards (a job that outlasted its call) on the
    standalone stream. From 2026-07-28 on change notifications travel on `subscriptions/listen`
    streams only (mcp/server/lowlevel/server.py, `get_capabilities`).
    """
    session = ctx.session
    if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
        await ctx.notify_resources_changed()
    elif in_request:
        await session.send_notification(ResourceListChangedNotification(), related_request_id=ctx.request_id)
    else:
        await session.send_resource_list_changed()
