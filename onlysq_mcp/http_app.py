"""Serving over streamable HTTP: bearer-token check, DNS-rebinding protection, per-client session cap,
connection timeouts, and the refusal to listen on a public address without a token.

Imported only for `--transport http`, so stdio start-up does not pay for the web stack.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import h11
import uvicorn
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .auth import ResourceMetadata, TokensFileError, resource_metadata, token_verifier
from .health import HealthRoutes, QuietProbes
from .principals import principal_in
from .settings import Settings
from .telemetry import configure_tracing

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::")
# Room in a request body besides the base64 image: the JSON-RPC envelope and a 10,000-character question,
# escaped as `\uXXXX` at worst.
BODY_HEADROOM = 128 * 1024
# On Ctrl-C or SIGTERM, calls in flight get this long to finish before they are cancelled: without a bound
# uvicorn waits for every open connection, and one Ctrl-C would not end a server with a slow call running.
GRACEFUL_SHUTDOWN_SECONDS = 5
SESSION_HEADER = MCP_SESSION_ID_HEADER.lower().encode()
PROTOCOL_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode()

logger = logging.getLogger(__name__)


class UnsafeBindError(Exception):
    """Listening where others can connect, with nothing to keep them out."""


def bind_address(host: str) -> str:
    """`[::1]` as people write it in URLs, `::1` as sockets take it."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def url_host(host: str) -> str:
    """The host as it appears in a URL and a `Host` header: IPv6 addresses in brackets."""
    host = bind_address(host)
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_address(host)).is_loopback
    except ValueError:
        return False


async def refuse(
    send: Send, status: int, error: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer a request with a JSON body saying what was wrong and what to do."""
    body = json.dumps({"error": error, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerTokenMiddleware:
    """Every HTTP request must carry exactly one `Authorization: Bearer <token>` that the verifier accepts
    (auth.py: a named token, compared in constant time, or an OAuth access token). The caller's principal goes
    into the scope as the SDK's `AuthenticatedUser`, where its session manager binds sessions to it and
    `get_access_token()` finds it (AuthContextMiddleware, mcp/server/auth/middleware/auth_context.py).

    The scheme is case-insensitive (RFC 9110 section 11.1; RFC 6750 section 2.1 for the `Bearer` form).
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, metadata_url: str | None = None) -> None:
        self.app = AuthContextMiddleware(app)
        self._verifier = verifier
        self._challenge = 'Bearer realm="onlysq-mcp"'
        if metadata_url is not None:
            # Where an MCP client finds the authorization server (RFC 9728 section 5.1).
            self._challenge += f', resource_metadata="{metadata_url}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(values) > 1:
            # Two credentials leave it open which one a proxy or the server checked: refuse both.
            await refuse(send, 400, "bad_request", "Send exactly one Authorization header.")
            return
        access = await self._verify(values[0] if values else b"")
        if access is None:
            challenge = self._challenge + (', error="invalid_token"' if values else "")
            await refuse(
                send,
                401,
                "unauthorized",
                "Send your token as `Authorization: Bearer <token>` (in the header, never in the URL).",
                [(b"www-authenticate", challenge.encode())],
            )
            return
        logger.debug("%s %s by %s", scope["method"], scope["path"], access.subject)
        scope = dict(scope, user=AuthenticatedUser(access), auth=AuthCredentials(access.scopes))
        await self.app(scope, receive, send)

    async def _verify(self, authorization: bytes) -> AccessToken | None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        return await self._verifier.verify_token(token.strip(b" ").decode("latin-1"))


class ServeResourceMetadata:
    """Answers the protected-resource metadata paths before the bearer check: a client reads them to learn
    where to get a token (RFC 9728 section 3)."""

    def __init__(self, app: ASGIApp, metadata: ResourceMetadata) -> None:
        self.app = app
        self._metadata = metadata

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._metadata.paths:
            await self._metadata.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class DropQueryString:
    """The MCP endpoint takes no query parameters; a token put in the URL by mistake goes no further."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            scope = dict(scope, query_string=b"")
        await self.app(scope, receive, send)


QUERY_VALUE = re.compile(r"=[^&\s]*")


class MaskQueryInAccessLog(logging.Filter):
    """uvicorn's access line prints the path with its query string (the third argument of its
    `'%s - "%s %s HTTP/%s" %d'` record, uvicorn/protocols/http/h11_impl.py): keep the names, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            path, _, query = args[2].partition("?")
            record.args = (*args[:2], f"{path}?{QUERY_VALUE.sub('=***', query)}", *args[3:])
        return True


class QuietShutdownCancel(logging.Filter):
    """Calls still running after `GRACEFUL_SHUTDOWN_SECONDS` are cancelled; uvicorn logs one line saying so
    ("Cancel N running task(s)"), then a traceback per call (`Exception in ASGI application`,
    uvicorn/protocols/http/h11_impl.py, `run_asgi`) that says nothing more: those are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


class ExplainBodyLimit:
    """The SDK refuses an oversized body with a plain-text 413 (RequestBodyLimitMiddleware,
    mcp/server/transport_security.py), which a client reports as a bare transport failure. A JSON-RPC error
    body instead reaches the caller as this request's error (mcp/client/streamable_http.py reads a non-2xx
    JSON-RPC error), saying what to send instead."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self._body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32600,
                    "message": f"The request is over this server's {limit:,}-byte limit for one HTTP request. "
                    "For describe_image pass a smaller image, an https URL, or a file path under "
                    "ONLYSQ_MCP_FILE_ROOTS instead of inline data.",
                },
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def explain(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._body)).encode())]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": self._body})
            elif not replaced:
                await send(message)

        await self.app(scope, receive, explain)


@dataclass
class OpenSession:
    client: str
    opened: float
    used: bool = False


def client_key(scope: Scope) -> str:
    """Who is asking: the principal of a named token or an OAuth token (a team behind one proxy shares its
    address); else the remote address, after uvicorn applied X-Forwarded-For from trusted proxies only
    (uvicorn's FORWARDED_ALLOW_IPS, 127.0.0.1 by default), as one shared token cannot tell clients apart."""
    principal = principal_in(scope)
    if principal is not None:
        return f"principal {principal}"
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def may_open_session(scope: Scope) -> bool:
    """Whether the SDK serves this request on the session path: no protocol version header yet (the
    `initialize` handshake), or one of the handshake versions. Later versions are stateless and open no
    session (the routing in mcp/server/streamable_http_manager.py `_handle_request`)."""
    version = dict(scope["headers"]).get(PROTOCOL_VERSION_HEADER)
    return version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS


class SessionGuard:
    """Caps the sessions one client may hold open, and closes sessions that see no request after their
    `initialize`, so that a client opening sessions in a loop cannot fill the session manager for everyone.

    Which sessions are still open is read from the SDK's session manager (`_server_instances`,
    mcp/server/streamable_http_manager.py): sessions also end there by DELETE, idle timeout or crash.
    """

    def __init__(
        self, app: ASGIApp, manager: StreamableHTTPSessionManager, per_client: int, unused_timeout: float
    ) -> None:
        self.app = app
        self._manager = manager
        self._per_client = per_client
        self._unused_timeout = unused_timeout
        self._sessions: dict[str, OpenSession] = {}
        self._opening: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._close_unused_sessions)
                await self.app(scope, receive, send)
                tasks.cancel_scope.cancel()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session_id = dict(scope["headers"]).get(SESSION_HEADER)
        if session_id is not None:
            if (session := self._sessions.get(session_id.decode("latin-1"))) is not None:
                session.used = True
            await self.app(scope, receive, send)
        elif scope["method"] == "POST" and may_open_session(scope):
            await self._open_session(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = client_key(scope)
        self._forget_ended()
        held = sum(1 for session in self._sessions.values() if session.client == client) + self._opening[client]
        if held >= self._per_client:
            logger.info("Refusing a new session for %s: it holds %d open sessions", client, held)
            await refuse(
                send,
                429,
                "too_many_sessions",
                f"This client already has {held} open MCP sessions (ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT). "
                "End sessions you no longer use (HTTP DELETE with their Mcp-Session-Id) or reuse one; "
                "idle sessions are closed after ONLYSQ_MCP_SESSION_IDLE_TIMEOUT seconds.",
                [(b"retry-after", str(math.ceil(self._unused_timeout)).encode())],
            )
            return

        # Counted as held from admission until the answer starts, when it is either a session or nothing;
        # the request itself may end a little later, after the client already saw the answer.
        self._opening[client] += 1
        answered = False

        def done_opening() -> None:
            nonlocal answered
            answered = True
            self._opening[client] -= 1
            if not self._opening[client]:
                del self._opening[client]

        async def record_session(message: Message) -> None:
            if message["type"] == "http.response.start" and not answered:
                opened = dict(message.get("headers", [])).get(SESSION_HEADER)
                if opened is not None and message["status"] < 400:
                    self._sessions[opened.decode("latin-1")] = OpenSession(client, time.monotonic())
                done_opening()
            await send(message)

        try:
            await self.app(scope, receive, record_session)
        finally:
            if not answered:
                done_opening()

    def _forget_ended(self) -> None:
        open_ids = self._manager._server_instances
        for session_id in [sid for sid in self._sessions if sid not in open_ids]:
            del self._sessions[session_id]

    async def _close_unused_sessions(self) -> None:
        while True:
            await anyio.sleep(min(1.0, self._unused_timeout / 2))
            self._forget_ended()
            cutoff = time.monotonic() - self._unused_timeout
            for session_id, session in list(self._sessions.items()):
                if session.used or session.opened > cutoff:
                    continue
                del self._sessions[session_id]
                transport = self._manager._server_instances.get(session_id)
                if transport is not None:
                    logger.info("Closing session %s: no request after initialize", session_id)
                    try:
                        # Ends the session's server task, which then drops it from the manager.
                        await transport.terminate()
                    except Exception:
                        # This task runs for the server's lifetime: one session's failure must not end it.
                        logger.exception("Closing unused session %s failed", session_id)


READING_REQUEST = (h11.IDLE, h11.SEND_BODY)


class RequestTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus limits on how slowly a request may arrive: its head within
    `request_timeout` seconds of its first byte (of the connection, for the first request), and no pause
    longer than that within its body.

    uvicorn only times out idle keep-alive connections after a response (h11_impl.py `on_response_complete`):
    a connection that sends nothing, half a request line, or a body that never comes, would otherwise stay
    open for ever.
    """

    request_timeout: float = 10.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_request_timer()

    def data_received(self, data: bytes) -> None:
        before = self.conn.their_state
        # More of a body restarts the pause allowed; the first byte after a keep-alive pause starts a head's.
        if before is h11.SEND_BODY or (before is h11.IDLE and self._request_timer is None):
            self._arm_request_timer()
        super().data_received(data)
        after = self.conn.their_state
        if after is h11.SEND_BODY and before is h11.IDLE:
            self._arm_request_timer()
        elif after not in READING_REQUEST:
            self._disarm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_timer()
        super().connection_lost(exc)

    def _arm_request_timer(self) -> None:
        self._disarm_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def _disarm_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self.conn.their_state not in READING_REQUEST:
            return
        if self.flow.read_paused:
            # uvicorn stopped reading because the app has not taken the body yet: the wait is ours.
            self._arm_request_timer()
            return
        logger.debug("Closing a connection whose request did not arrive within %s s", self.request_timeout)
        self.transport.close()


def request_timeout_protocol(seconds: float) -> type[H11Protocol]:
    return type("RequestTimeoutH11Protocol", (RequestTimeoutH11Protocol,), {"request_timeout": seconds})


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host and Origin checks stay on whatever the bind address (the SDK turns them off off-loopback)."""
    names = list(LOOPBACK_NAMES)
    if bind_address(host) not in WILDCARD_HOSTS and url_host(host) not in names:
        # Whatever address the server listens on, clients name it in `Host`: 127.0.0.2, [::1], a LAN address.
        names.append(url_host(host))
    hosts = names + [f"{name}:*" for name in names] + settings.onlysq_mcp_allowed_hosts
    origins = [f"{scheme}://{name}" for name in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def max_request_body(settings: Settings) -> int:
    """Big enough for the largest image `describe_image` accepts, sent as base64 in a data URI
    (4 characters for every 3 bytes), so an allowed image is never refused by the transport instead."""
    base64_size = 4 * math.ceil(settings.onlysq_mcp_max_input_bytes / 3)
    return max(DEFAULT_MAX_REQUEST_BODY_SIZE, base64_size + BODY_HEADROOM)


def build_http_app(server: MCPServer, settings: Settings, host: str, *, stateless: bool = False) -> ASGIApp:
    """`stateless` (or ONLYSQ_MCP_STATELESS): the SDK's stateless mode, where every request is served on its
    own and no session outlives it (`_handle_stateless_request`, mcp/server/streamable_http_manager.py)."""
    stateless = stateless or settings.onlysq_mcp_stateless
    app: ASGIApp = server.streamable_http_app(
        transport_security=transport_security(settings, host),
        host=bind_address(host),
        max_request_body_size=max_request_body(settings),
        session_idle_timeout=settings.onlysq_mcp_session_idle_timeout,
        stateless_http=stateless,
    )
    app = ExplainBodyLimit(app, max_request_body(settings))
    if not stateless:
        # Without sessions there is nothing to cap, and every request would count as one being opened.
        app = SessionGuard(
            app,
            server.session_manager,
            per_client=settings.onlysq_mcp_max_sessions_per_client,
            unused_timeout=settings.onlysq_mcp_unused_session_timeout,
        )
    # The probes answer outside the token and `Host` checks (health.py says why).
    return HealthRoutes(DropQueryString(with_auth(app, settings)), settings)


def with_auth(app: ASGIApp, settings: Settings) -> ASGIApp:
    verifier = token_verifier(settings)
    if verifier is None:
        return app
    metadata = resource_metadata(settings)
    app = BearerTokenMiddleware(app, verifier, metadata.url if metadata else None)
    return ServeResourceMetadata(app, metadata) if metadata else app


def check_bind(settings: Settings, host: str, allow_unauthenticated: bool) -> None:
    if is_loopback(host) or settings.http_auth_configured or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"refusing to serve on {host} without a token: anyone who can reach it could spend your API keys and "
        "read the results. Set ONLYSQ_MCP_HTTP_TOKEN, ONLYSQ_MCP_HTTP_TOKENS_FILE or ONLYSQ_MCP_AUTH_ISSUER "
        "(with ONLYSQ_MCP_AUTH_AUDIENCE and ONLYSQ_MCP_AUTH_JWKS_URL), serve on 127.0.0.1, or pass "
        "--allow-unauthenticated "
        "if something in front of this server already checks who connects."
    )


def serve_http(server: MCPServer, settings: Settings, host: str, port: int, *, stateless: bool = False) -> None:
    try:
        app = build_http_app(server, settings, host, stateless=stateless)
    except TokensFileError as exc:
        print(f"onlysq-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger("uvicorn.access").addFilter(MaskQueryInAccessLog())
    logging.getLogger("uvicorn.access").addFilter(QuietProbes())
    logging.getLogger("uvicorn.error").addFilter(QuietShutdownCancel())
    configure_tracing(os.environ)
    config = uvicorn.Config(
        app,
        host=bind_address(host),
        port=port,
        http=request_timeout_protocol(settings.onlysq_mcp_http_request_timeout),
        timeout_keep_alive=settings.onlysq_mcp_http_keep_alive_timeout,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_level=settings.onlysq_mcp_log_level.lower(),
        log_config=None,
    )
    uvicorn.Server(config).run()
