"""ONLYSQ_MCP_PROXY: every outgoing call goes through the operator's proxy (HTTP or SOCKS5), never a stray one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import httpx2._transports.default
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from onlysq_mcp.host_config import server_env
from onlysq_mcp.server import app_factory
from onlysq_mcp.settings import Settings, SettingsError, load_settings
from tests.forward_proxy import ForwardProxy
from tests.helpers import free_port, text_of

pytestmark = pytest.mark.anyio

# Credentials that must reach the proxy and nothing else: no log line, no tool result.
PROXY_USER = "proxyuser"
PROXY_PASSWORD = "pr0xy-s3cret"


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    forward = ForwardProxy()
    forward.start()
    yield forward
    forward.stop()


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_chat_over_stdio_goes_through_the_proxy(stdio_params, upstream, proxy, scheme, tmp_path: Path):
    proxy_url = proxy.url(scheme, f"{PROXY_USER}:{PROXY_PASSWORD}")
    params = stdio_params.model_copy(
        update={
            "env": {
                **(stdio_params.env or {}),
                "ONLYSQ_MCP_PROXY": proxy_url,
                "ONLYSQ_MCP_LOG_LEVEL": "DEBUG",
                # Set too, and ignored: only ONLYSQ_MCP_PROXY routes calls.
                "HTTP_PROXY": "http://127.0.0.1:9",
                "ALL_PROXY": "http://127.0.0.1:9",
            }
        }
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            result = await client.call_tool("chat", {"prompt": "via the proxy"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: via the proxy"
    assert upstream.requests_to("/ai/v2")
    upstream_address = upstream.base_url.split("://", 1)[1].rstrip("/")
    chat = [r for r in proxy.requests if "/ai/v2" in r.target or r.target == upstream_address]
    assert chat, proxy.requests
    if scheme == "http":
        assert chat[0].target == f"{upstream.base_url.rstrip('/')}/ai/v2"
    assert {r.credentials for r in proxy.requests} == {f"{PROXY_USER}:{PROXY_PASSWORD}"}
    stderr = log.read_text()
    assert f"127.0.0.1:{proxy.port}" in stderr  # the start line names the proxy ...
    assert PROXY_PASSWORD not in stderr and PROXY_USER not in stderr  # ... without its credentials


async def test_a_dead_proxy_is_a_tool_error_naming_the_setting(make_settings, upstream):
    port = free_port()  # nothing listens there
    settings = make_settings(
        ONLYSQ_MCP_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}", ONLYSQ_RETRIES="0"
    )
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("chat", {"prompt": "hello"})
    assert result.is_error
    text = text_of(result)
    assert "ONLYSQ_MCP_PROXY" in text
    assert f"could not reach the proxy http://127.0.0.1:{port}" in text
    assert PROXY_PASSWORD not in text and PROXY_USER not in text
    assert not upstream.requests_to("/ai/v2")


async def test_a_dead_proxy_fails_an_image_download_naming_the_setting(make_settings, upstream):
    port = free_port()
    settings = make_settings(ONLYSQ_MCP_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("describe_image", {"image": "http://93.184.215.14/cat.png"})
    assert result.is_error
    text = text_of(result)
    assert f"could not reach the proxy http://127.0.0.1:{port} (ONLYSQ_MCP_PROXY)" in text
    assert PROXY_PASSWORD not in text and PROXY_USER not in text


async def test_describe_image_downloads_through_the_proxy_at_the_checked_address(make_settings, upstream, proxy, web):
    settings = make_settings(ONLYSQ_MCP_PROXY=proxy.url(), ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true")
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("describe_image", {"image": f"{web}/redirect"})
    assert not result.is_error, text_of(result)
    targets = [r.target for r in proxy.requests]
    # Each hop names the address its SSRF check resolved (here already an IP), so the proxy resolves nothing.
    assert f"{web}/redirect" in targets and f"{web}/cat.png" in targets
    assert f"{upstream.base_url.rstrip('/')}/ai/v2" in targets


async def test_one_ca_bundle_load_serves_both_clients_direct_and_proxied(
    make_settings, upstream, proxy, web, monkeypatch
):
    """Loading the CA bundle takes 20–35 ms: done once per run, not per client and per transport (a client
    with a proxy has two: the proxied one and the direct one)."""
    loads: list[bool] = []
    make = httpx2.create_ssl_context

    def counted(verify=True, cert=None, trust_env=True):
        if verify is True:  # a context with the CA bundle
            loads.append(trust_env)
        return make(verify=verify, cert=cert, trust_env=trust_env)

    # Where a client's transport makes its context, and where the server may make it itself.
    monkeypatch.setattr(httpx2._transports.default, "create_ssl_context", counted)
    monkeypatch.setattr(httpx2, "create_ssl_context", counted)
    settings = make_settings(ONLYSQ_MCP_PROXY=proxy.url(), ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true")
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool("describe_image", {"image": f"{web}/cat.png"})
        assert not result.is_error, text_of(result)
        with anyio.fail_after(5):
            while not loads:  # loaded in the background once the upstream client is built
                await anyio.sleep(0.01)
    # Once, and like the clients' own contexts, without SSL_CERT_FILE/SSL_CERT_DIR from the environment.
    assert loads == [False]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("ftp://proxy.example:21", "must start with http://"),
        ("http://proxy.example:3128/path", "without a path"),
        ("http://proxy.example:99999", "no valid port"),
        ("socks4://proxy.example:1080", "must start with http://"),
        ("http://:3128", "no host name"),
    ],
)
def test_a_proxy_url_is_checked_without_repeating_it(monkeypatch, tmp_path, value, complaint):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONLYSQ_MCP_PROXY", value.replace("://", f"://{PROXY_USER}:{PROXY_PASSWORD}@", 1))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "ONLYSQ_MCP_PROXY" in str(caught.value) and complaint in str(caught.value)
    assert PROXY_PASSWORD not in str(caught.value)


def test_proxy_credentials_are_secrets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONLYSQ_MCP_PROXY", "socks5h://proxyuser:pa%40ss-word@proxy.example:1080")
    settings = Settings()
    assert settings.onlysq_mcp_proxy == "socks5h://proxyuser:pa%40ss-word@proxy.example:1080"
    assert {"proxyuser", "pa%40ss-word", "pa@ss-word"} <= set(settings.secrets())


def test_a_proxy_with_credentials_is_a_secret_in_host_configs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONLYSQ_MCP_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128")
    assert "ONLYSQ_MCP_PROXY" in server_env(Settings()).secret_names
    monkeypatch.setenv("ONLYSQ_MCP_PROXY", "http://proxy.example:3128")
    assert "ONLYSQ_MCP_PROXY" not in server_env(Settings()).secret_names
