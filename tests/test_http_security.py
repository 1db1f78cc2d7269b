"""Serving over HTTP safely: bearer token, DNS-rebinding protection, no public bind without a token."""

from __future__ import annotations

import subprocess

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from onlysq_mcp.http_app import UnsafeBindError, check_bind, is_loopback
from onlysq_mcp.settings import Settings
from tests.helpers import (
    HTTP_TOKEN,
    INITIALIZE,
    MCP_HEADERS,
    clean_env,
    server_command,
    start_http_server,
    stop_http_server,
    upstream_env,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def token_server(fake_upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp("token")
    env = upstream_env(fake_upstream.base_url, folder / "images", ONLYSQ_MCP_HTTP_TOKEN=HTTP_TOKEN)
    server = start_http_server(env, folder)
    yield server
    stop_http_server(server)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {HTTP_TOKEN}", f"Bearer {HTTP_TOKEN}x", "Bearer"]
)
async def test_requests_without_the_token_are_refused(token_server, authorization):
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["authorization"] = authorization
    async with httpx2.AsyncClient() as http:
        response = await http.post(token_server.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert HTTP_TOKEN not in response.text


async def test_requests_with_the_token_work(token_server, fake_upstream):
    fake_upstream.reset()
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {HTTP_TOKEN}"}, timeout=30)
    async with http, Client(streamable_http_client(token_server.url, http_client=http)) as client:
        result = await client.call_tool("chat", {"prompt": "authorised"})
    assert result.content[0].text == "Echo: authorised"
    assert HTTP_TOKEN not in token_server.log.read_text()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(token_server, scheme):
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            token_server.url, json=INITIALIZE, headers=MCP_HEADERS | {"authorization": f"{scheme} {HTTP_TOKEN}"}
        )
    assert response.status_code == 200


async def test_two_authorization_headers_are_refused(token_server):
    good = f"Bearer {HTTP_TOKEN}"
    for second in (good, "Bearer wrong"):
        headers = [*MCP_HEADERS.items(), ("authorization", good), ("authorization", second)]
        async with httpx2.AsyncClient() as http:
            response = await http.post(token_server.url, json=INITIALIZE, headers=headers)
        assert response.status_code == 400
        assert "exactly one Authorization header" in response.json()["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example:80"}, 421),
        ({"origin": "http://evil.example"}, 403),
    ],
)
async def test_dns_rebinding_protection(http_server, headers, status):
    async with httpx2.AsyncClient() as http:
        response = await http.post(http_server.url, json=INITIALIZE, headers=MCP_HEADERS | headers)
    assert response.status_code == status


async def test_loopback_origin_is_accepted(http_server):
    headers = MCP_HEADERS | {"origin": f"http://localhost:{http_server.port}"}
    async with httpx2.AsyncClient() as http:
        response = await http.post(http_server.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 200


def test_public_bind_without_token_refuses_to_start(tmp_path):
    result = subprocess.run(
        [*server_command(), "--transport", "http", "--host", "0.0.0.0", "--port", "1"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "ONLYSQ_MCP_HTTP_TOKEN" in result.stderr
    assert "--allow-unauthenticated" in result.stderr
    assert "Traceback" not in result.stderr


def test_bind_rules(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("ONLYSQ_MCP_HTTP_TOKEN",):
        monkeypatch.delenv(name, raising=False)
    open_settings = Settings()
    check_bind(open_settings, "127.0.0.1", False)
    check_bind(open_settings, "localhost", False)
    check_bind(open_settings, "::1", False)
    check_bind(open_settings, "0.0.0.0", True)
    with pytest.raises(UnsafeBindError):
        check_bind(open_settings, "192.0.2.10", False)
    monkeypatch.setenv("ONLYSQ_MCP_HTTP_TOKEN", HTTP_TOKEN)
    check_bind(Settings(), "0.0.0.0", False)
    assert is_loopback("127.0.0.5") and not is_loopback("example.com")
