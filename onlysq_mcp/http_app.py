"""Serving over streamable HTTP: bearer-token check, DNS-rebinding protection, and the refusal to listen
on a public address without a token.

Imported only for `--transport http`, so stdio start-up does not pay for the web stack.
"""

from __future__ import annotations

import hmac
import ipaddress
import json

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import Settings

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class UnsafeBindError(Exception):
    """Listening where others can connect, with nothing to keep them out."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """Every HTTP request must carry `Authorization: Bearer <token>`; compared in constant time."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                await self._refuse(send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        body = json.dumps(
            {"error": "unauthorized", "message": "Send the server's token as `Authorization: Bearer <token>`."}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="onlysq-mcp"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host and Origin checks stay on whatever the bind address (the SDK turns them off off-loopback)."""
    hosts = [f"{name}:*" for name in LOOPBACK_NAMES] + list(LOOPBACK_NAMES)
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        hosts += [host, f"{host}:*"]
    hosts += settings.onlysq_mcp_allowed_hosts
    origins = [f"{scheme}://{name}" for name in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_http_app(server: MCPServer, settings: Settings, host: str) -> ASGIApp:
    app: ASGIApp = server.streamable_http_app(transport_security=transport_security(settings, host), host=host)
    if settings.onlysq_mcp_http_token is not None:
        app = BearerTokenMiddleware(app, settings.onlysq_mcp_http_token.get_secret_value())
    return app


def check_bind(settings: Settings, host: str, allow_unauthenticated: bool) -> None:
    if is_loopback(host) or settings.onlysq_mcp_http_token is not None or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"refusing to serve on {host} without a token: anyone who can reach it could spend your API keys and "
        "read the results. Set ONLYSQ_MCP_HTTP_TOKEN, serve on 127.0.0.1, or pass --allow-unauthenticated "
        "if something in front of this server already checks who connects."
    )


def serve_http(server: MCPServer, settings: Settings, host: str, port: int) -> None:
    app = build_http_app(server, settings, host)
    uvicorn.run(app, host=host, port=port, log_level=settings.onlysq_mcp_log_level.lower(), log_config=None)
