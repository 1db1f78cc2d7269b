"""What a caller may point `describe_image` at: local files by transport and roots, URLs by address (SSRF)."""

from __future__ import annotations

import io
import ipaddress
import os
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from PIL import Image

from onlysq_mcp import image_sources
from onlysq_mcp.image_sources import ImageInputError, InputPolicy, IPAddress, download
from onlysq_mcp.server import app_factory
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


def write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), "green").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


async def describe(server, image: str):
    async with Client(server) as client:
        return await client.call_tool("describe_image", {"image": image})


async def test_remote_callers_cannot_read_local_files_by_default(make_settings, upstream, tmp_path):
    picture = write_png(tmp_path / "pic.png")
    server = app_factory(make_settings(), transport="http")
    for spec in (str(picture), picture.as_uri()):
        result = await describe(server, spec)
        assert result.is_error
        assert "ONLYSQ_MCP_FILE_ROOTS" in text_of(result)
    assert upstream.requests_to("/ai/v2") == []


async def test_stdio_callers_read_local_files(make_settings, upstream, tmp_path):
    picture = write_png(tmp_path / "pic.png")
    result = await describe(app_factory(make_settings(), transport="stdio"), str(picture))
    assert not result.is_error and "I see a 20x10" in text_of(result)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_file_roots_confine_reads(make_settings, upstream, tmp_path, transport):
    root = tmp_path / "allowed"
    inside = write_png(root / "in.png")
    outside = write_png(tmp_path / "secret" / "out.png")
    (root / "link.png").symlink_to(outside)
    server = app_factory(make_settings(ONLYSQ_MCP_FILE_ROOTS=str(root)), transport=transport)

    ok = await describe(server, str(inside))
    assert not ok.is_error, text_of(ok)
    for sneaky in (str(outside), str(root / ".." / "secret" / "out.png"), str(root / "link.png")):
        refused = await describe(server, sneaky)
        assert refused.is_error, sneaky
        assert "outside the folders" in text_of(refused)
    assert len(upstream.requests_to("/ai/v2")) == 1


async def test_several_roots(make_settings, upstream, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    picture = write_png(second / "p.png")
    first.mkdir()
    server = app_factory(make_settings(ONLYSQ_MCP_FILE_ROOTS=f"{first}{os.pathsep}{second}"), transport="http")
    assert not (await describe(server, str(picture))).is_error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://localhost:9/x.png",
        "http://[::1]:9/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x.png",
        "http://192.168.1.1/x.png",
        "http://0.0.0.0:9/x.png",
    ],
)
async def test_private_addresses_are_refused_before_connecting(make_settings, upstream, url):
    result = await describe(app_factory(make_settings()), url)
    assert result.is_error
    assert "ONLYSQ_MCP_ALLOW_PRIVATE_URLS" in text_of(result)
    assert upstream.requests_to("/ai/v2") == []


async def test_private_addresses_allowed_by_the_operator(make_settings, upstream, web):
    server = app_factory(make_settings(ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true"))
    result = await describe(server, f"{web}/cat.png")
    assert not result.is_error, text_of(result)


async def test_every_redirect_hop_is_checked(web, monkeypatch):
    """The first hop passes the check; the redirect target is checked again before it is contacted."""
    checked: list[str] = []

    async def only_first_url(url: httpx2.URL, policy: InputPolicy) -> list[IPAddress]:
        checked.append(str(url))
        if len(checked) > 1:
            raise ImageInputError("refused the second hop")
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(image_sources, "check_public", only_first_url)
    async with httpx2.AsyncClient() as http:
        with pytest.raises(ImageInputError, match="second hop"):
            await download(f"{web}/redirect", http, InputPolicy(max_bytes=10_000_000))
    assert checked == [f"{web}/redirect", f"{web}/cat.png"]


async def test_only_http_and_https(make_settings, upstream):
    result = await describe(app_factory(make_settings()), "ftp://example.com/x.png")
    assert result.is_error and "not supported" in text_of(result)


async def test_over_real_http_transport_local_files_are_refused(http_server, fake_upstream, tmp_path):
    picture = write_png(tmp_path / "pic.png")
    async with Client(http_server.url) as client:
        result = await client.call_tool("describe_image", {"image": str(picture)})
    assert result.is_error and "ONLYSQ_MCP_FILE_ROOTS" in text_of(result)
