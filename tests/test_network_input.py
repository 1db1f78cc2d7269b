"""Image URLs as an attacker writes them: downloads in their own pool, addresses that hide IPv4 inside IPv6,
DNS answers that change after the check (rebinding), and URLs or paths that cannot be used at all."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cryptography import x509
from mcp import Client, StdioServerParameters

from onlysq_mcp.image_sources import ImageInputError, InputPolicy, check_public, download, parse_url
from tests.helpers import make_image, self_signed_server, start_http_server, stop_http_server, text_of, upstream_env

pytestmark = pytest.mark.anyio

PNG = make_image("PNG", (12, 8))
REFUSED = "Error executing tool describe_image: Cannot use `image`: "
STALL_LIMIT = 15.0  # a stalled download is released after this long even if the test never releases it


@dataclass
class ImageSite:
    """What the local image server saw: each request's path and Host header, and the stalls in progress."""

    url: str
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)
    stalled: int = 0
    release: threading.Event = field(default_factory=threading.Event)


def serve_images(
    site_factory: Any, bind: tuple[str, int], context: ssl.SSLContext | None = None
) -> Iterator[ImageSite]:
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                site.seen.append((self.path, self.headers.get("Host", "")))
            if self.path == "/stall.png":
                with lock:
                    site.stalled += 1
                site.release.wait(STALL_LIMIT)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up first
                self.wfile.write(PNG)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(bind, Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    site = site_factory(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def site() -> Iterator[ImageSite]:
    """A web server on 127.0.0.1 serving a PNG at any path; /stall.png answers only when released."""
    yield from serve_images(lambda port: ImageSite(f"http://127.0.0.1:{port}", port), ("127.0.0.1", 0))


def params_with(params: StdioServerParameters, **env: str) -> StdioServerParameters:
    return params.model_copy(update={"env": {**(params.env or {}), **env}})


# --- 6: downloads have their own connections ------------------------------------------------------


async def test_stalled_downloads_do_not_hold_up_chat_over_http(fake_upstream, upstream, site, tmp_path):
    """With two upstream connections in all, two image hosts that never answer must not starve `chat`."""
    env = upstream_env(
        upstream.base_url, tmp_path / "images", ONLYSQ_MCP_MAX_CONCURRENCY="2", ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true"
    )
    server = start_http_server(env, tmp_path)
    try:
        async with Client(server.url) as client, anyio.create_task_group() as group:
            described: list[Any] = []

            async def describe() -> None:
                described.append(await client.call_tool("describe_image", {"image": f"{site.url}/stall.png"}))

            group.start_soon(describe)
            group.start_soon(describe)
            with anyio.fail_after(10):
                while site.stalled < 2:
                    await anyio.sleep(0.02)
            started = time.monotonic()
            reply = await client.call_tool("chat", {"prompt": "not stuck behind images"})
            elapsed = time.monotonic() - started
            site.release.set()
        assert text_of(reply) == "Echo: not stuck behind images"
        assert elapsed < 3, f"chat waited {elapsed:.1f} s behind stalled downloads"
        assert [r.is_error for r in described] == [False, False], [text_of(r) for r in described]
    finally:
        stop_http_server(server)


# --- 11: IPv4 hidden in IPv6 ----------------------------------------------------------------------

REFUSED_LITERALS = [
    ("http://[::7f00:1]/x.png", "127.0.0.1"),  # IPv4-compatible
    ("http://[::127.0.0.1]:8080/x.png", "127.0.0.1"),
    ("http://[::a00:1]/x.png", "10.0.0.1"),
    ("http://[::ffff:127.0.0.1]/x.png", "127.0.0.1"),  # IPv4-mapped
    ("http://[::ffff:a9fe:a9fe]/latest", "169.254.169.254"),
    ("http://[64:ff9b::7f00:1]/x.png", "127.0.0.1"),  # NAT64 well-known prefix
    ("http://[64:ff9b::a9fe:a9fe]/latest", "169.254.169.254"),
    ("http://[2002:7f00:1::]/x.png", "127.0.0.1"),  # 6to4
    ("http://[2002:c0a8:101::1]/x.png", "192.168.1.1"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x.png", "127.0.0.1"),  # Teredo, client 127.0.0.1
    ("http://[2001:0:7f00:1:8000:f227:bfa7:5cb2]/x.png", "127.0.0.1"),  # Teredo, server 127.0.0.1
]


@pytest.mark.parametrize(("url", "inside"), REFUSED_LITERALS)
async def test_ipv6_carrying_a_private_ipv4_is_refused(url, inside):
    with pytest.raises(ImageInputError, match="ONLYSQ_MCP_ALLOW_PRIVATE_URLS") as refused:
        await check_public(parse_url(url), InputPolicy(max_bytes=1000))
    carried = str(refused.value).split("(which carries ", 1)[1].split(")", 1)[0]
    assert inside in carried.split(", ")


async def test_local_use_nat64_prefix_is_refused():
    """64:ff9b:1::/48 (RFC 8215) is not globally reachable, whatever IPv4 address it carries."""
    with pytest.raises(ImageInputError, match="non-public"):
        await check_public(parse_url("http://[64:ff9b:1::808:808]/x.png"), InputPolicy(max_bytes=1000))


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/x.png",
        "http://[2606:4700:4700::1111]/x.png",
        "http://[::ffff:8.8.8.8]/x.png",
        "http://[64:ff9b::808:808]/x.png",
        "http://[2002:808:808::1]/x.png",
    ],
)
async def test_ipv6_carrying_a_public_ipv4_is_allowed(url):
    [address] = await check_public(parse_url(url), InputPolicy(max_bytes=1000))
    assert str(address) == str(ipaddress.ip_address(parse_url(url).host))


async def test_embedded_ipv4_refused_over_stdio(stdio_params, upstream, site):
    """Through the real server: the address is refused before any connection, and the reason names it."""
    async with Client(stdio_params) as client:
        for literal, inside in [
            ("::7f00:1", "127.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("2002:7f00:1::", "127.0.0.1"),
        ]:
            result = await client.call_tool("describe_image", {"image": f"http://[{literal}]:{site.port}/x.png"})
            assert result.is_error
            assert text_of(result) == (
                f"{REFUSED}the address {literal} (which carries {inside}), a private, loopback or "
                "otherwise non-public address; such URLs are refused (the operator can allow them with "
                "ONLYSQ_MCP_ALLOW_PRIVATE_URLS)."
            )
    assert site.seen == []
    assert upstream.requests_to("/ai/v2") == []


# --- 11: the connection goes to the address that was checked ---------------------------------------


class Resolver:
    """socket.getaddrinfo for `name`: the first answer, then the second for every later lookup (rebinding)."""

    def __init__(self, name: str, first: str, later: str) -> None:
        self.name, self.first, self.later = name, first, later
        self.lookups = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (self.name, self.name.encode()):
            self.lookups += 1
            host = self.first if self.lookups == 1 else self.later
        return self._real(host, port, *args, **kwargs)


class Unreachable(httpx2.AsyncBaseTransport):
    """Passes requests on, except to `address`, which stands for a public host the tests cannot reach."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.requests: list[httpx2.Request] = []
        self._real = httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if request.url.host == self.address:
            raise httpx2.ConnectError("unreachable from the tests", request=request)
        return await self._real.handle_async_request(request)


async def test_a_dns_answer_that_changes_after_the_check_is_never_used(site, monkeypatch):
    public = "93.184.216.34"
    resolver = Resolver("rebind.test", first=public, later="127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    transport = Unreachable(public)
    async with httpx2.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx2.ConnectError):
            await download(f"http://rebind.test:{site.port}/cat.png", http, InputPolicy(max_bytes=1_000_000))
    assert resolver.lookups == 1
    assert site.seen == []  # nothing reached 127.0.0.1, the second answer
    [request] = transport.requests
    assert request.url.host == public
    assert request.headers["host"] == f"rebind.test:{site.port}"
    assert request.extensions["sni_hostname"] == "rebind.test"


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[tuple[ImageSite, ssl.SSLContext]]:
    """An HTTPS image server on 127.0.0.1 whose certificate names only `pinned.test`, and a context trusting it."""
    server_context, cert_file = self_signed_server(tmp_path, x509.DNSName("pinned.test"))
    client_context = ssl.create_default_context(cafile=str(cert_file))
    for found in serve_images(
        lambda port: ImageSite(f"https://pinned.test:{port}", port), ("127.0.0.1", 0), server_context
    ):
        yield found, client_context


async def test_https_to_a_pinned_address_checks_the_certificate_for_the_name(tls_site, monkeypatch):
    """Connected by IP, yet TLS sends and verifies the host name: the certificate names only `pinned.test`."""
    site, trust = tls_site
    resolver = Resolver("pinned.test", first="127.0.0.1", later="192.0.2.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    policy = InputPolicy(max_bytes=1_000_000, allow_private_urls=True)
    async with httpx2.AsyncClient(verify=trust, trust_env=False) as http:
        body = await download(f"{site.url}/cat.png", http, policy)
    assert body == PNG
    assert site.seen == [("/cat.png", f"pinned.test:{site.port}")]
    assert resolver.lookups == 1


async def test_private_url_allowed_keeps_the_host_header_over_stdio(stdio_params, upstream, site):
    """With private URLs allowed the address is pinned too; the server still sees the name the caller wrote."""
    params = params_with(stdio_params, ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true")
    async with Client(params) as client:
        result = await client.call_tool("describe_image", {"image": f"http://localhost:{site.port}/named.png"})
    assert not result.is_error, text_of(result)
    assert site.seen == [("/named.png", f"localhost:{site.port}")]


# --- 12: inputs that cannot be used say why ---------------------------------------------------------

UNUSABLE = [
    ("/tmp/a\x00b.png", "the path `/tmp/a\\x00b.png` contains a NUL byte (\\x00)"),
    ("file:///a%00b", "the path `/a\\x00b` contains a NUL byte (\\x00)"),
    (
        "http://example.com:99999/x.png",
        "`http://example.com:99999/x.png` has port 99999; a port is a number from 1 to 65535.",
    ),
    ("http://h:abc/", "`http://h:abc/` is not a valid URL: Invalid port: 'abc'."),
    ("http://h:0/", "`http://h:0/` has port 0; a port is a number from 1 to 65535."),
    (
        "http://xn--a.com/",
        "`http://xn--a.com/` has an invalid host name: `xn--a` is not a valid international (IDNA) label: "
        "decoding with 'idna' codec failed (UnicodeError: Invalid character '\\x80'); check the URL.",
    ),
    (
        "http://exa mple.com",
        "`http://exa mple.com` has an invalid host name: ' ' cannot appear in a host name; check the URL.",
    ),
    (
        f"http://{'a' * 64}.com/",
        f"`http://{'a' * 64}.com/` has an invalid host name: the label `{'a' * 37}...` is 64 characters long, "
        "over the 63 allowed; check the URL.",
    ),
    (
        "http://☃.—/",
        "`http://☃.—/` is not a valid URL: Invalid IDNA hostname: '☃.—' "
        "(Codepoint U+2603 at position 1 of '☃' not allowed).",
    ),
    ("http://a..b/x.png", "`http://a..b/x.png` has an invalid host name: it has an empty label"),
]


async def test_unusable_inputs_name_the_problem_over_stdio(stdio_params, upstream):
    async with Client(stdio_params) as client:
        for spec, reason in UNUSABLE:
            result = await client.call_tool("describe_image", {"image": spec})
            assert result.is_error, spec
            assert text_of(result).startswith(REFUSED + reason), (spec, text_of(result))
        alive = await client.call_tool("chat", {"prompt": "still here"})
    assert text_of(alive) == "Echo: still here"
    assert upstream.requests_to("/ai/v2") != []
