"""Whose call this is, and what that gives them: their own images and jobs, their share of the upstream.

Over HTTP with named tokens or OAuth the principal is the token's name or the JWT's `sub` (`auth.py`), found
where the SDK's auth middleware leaves it: the request scope's `user` (mcp/server/auth/middleware/bearer_auth.py,
`AuthenticatedUser`). Over stdio, over HTTP without tokens, and for the one shared `ONLYSQ_MCP_HTTP_TOKEN`
there is one principal: everything is theirs, stored as before, at the top of the storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context

# The principal of ONLYSQ_MCP_HTTP_TOKEN (auth.py), which a whole team may share.
SHARED_TOKEN_NAME = "shared"


def principal_of(ctx: Context[Any, Any] | None) -> str | None:
    """The caller's principal; None when the server has one user (stdio, no tokens, the shared token)."""
    request = ctx._request_context.request if ctx is not None and ctx._request_context is not None else None
    scope = getattr(request, "scope", None)
    if scope is not None:
        return principal_in(scope)
    return named(getattr(get_access_token(), "subject", None))


def principal_in(scope: Mapping[str, Any]) -> str | None:
    """The principal the auth middleware put into an HTTP request's scope (as for `principal_of`)."""
    return named(getattr(getattr(scope.get("user"), "access_token", None), "subject", None))


def named(subject: str | None) -> str | None:
    return None if subject == SHARED_TOKEN_NAME else subject


def owner_of(ctx: Context[Any, Any] | None) -> str:
    """The storage prefix of the caller's images and jobs."""
    return owner_prefix(principal_of(ctx))


def owner_prefix(principal: str | None) -> str:
    """Where a principal's objects live in storage. A digest, not the name: a `sub` may hold any character,
    and the storage's listing should not spell out who uses the service."""
    if principal is None:
        return ""
    return f"users/{hashlib.sha256(principal.encode()).hexdigest()[:32]}/"


class UserSlots:
    """At most `limit` upstream calls in flight per principal (ONLYSQ_MCP_MAX_CONCURRENCY_PER_USER), so one
    user's burst queues behind itself instead of taking every connection of the shared pool. A slot is held
    for a whole `chat` or `describe_image` call, or for one image of a generation (which may outlive its call)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    @asynccontextmanager
    async def slot(self, principal: str | None) -> AsyncIterator[None]:
        if self._limit is None or principal is None:
            yield
            return
        limiter = self._limiters.setdefault(principal, anyio.CapacityLimiter(self._limit))
        try:
            async with limiter:
                yield
        finally:
            # A principal's limiter lives while it is used: the table does not grow with every user ever seen.
            if not limiter.borrowed_tokens and not limiter.statistics().tasks_waiting:
                self._limiters.pop(principal, None)
