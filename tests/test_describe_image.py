"""`describe_image` through an MCP client: every kind of image source, its checks, and downscaling."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from onlysq_mcp import image_sources
from onlysq_mcp.server import app_factory
from tests.fake_upstream import CHAT_PATH, IMAGEN_PATH
from tests.helpers import BIG_PNG, PNG, catalogue_loaded, make_image, text_of

pytestmark = pytest.mark.anyio

QUESTION = "Describe this image in detail."
JPEG = make_image("JPEG", (30, 20))
SEEN = re.compile(r"I see a (\d+)x(\d+) (image/\w+) image \((\d+) bytes\)\. Question: (.*)", re.S)


def sent_image(upstream) -> tuple[str, bytes, str]:
    """(mime, bytes, question) of the image part in the last request to /ai/v2, checking its shape."""
    [message] = upstream.requests_to(CHAT_PATH)[-1].json["request"]["messages"]
    assert message["role"] == "user"
    text, image = message["content"]
    assert text["type"] == "text"
    assert image["type"] == "image_url"
    match = re.fullmatch(r"data:(image/\w+);base64,(.+)", image["image_url"]["url"], re.S)
    assert match, image["image_url"]["url"][:80]
    return match.group(1), base64.b64decode(match.group(2), validate=True), text["text"]


async def describe(server, arguments: dict, **client_options):
    async with Client(server, **client_options) as client:
        result = await client.call_tool("describe_image", arguments)
        tools = await client.list_tools()
    if not result.is_error:
        schema = next(t.output_schema for t in tools.tools if t.name == "describe_image")
        jsonschema.validate(result.structured_content, schema)
    return result


# --- sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_file_path(server, upstream, tmp_path, mode):
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    result = await describe(server, {"image": str(path)}, mode=mode)
    assert not result.is_error, text_of(result)
    assert text_of(result) == f"I see a 50x40 image/png image ({len(PNG)} bytes). Question: {QUESTION}"
    assert sent_image(upstream) == ("image/png", PNG, QUESTION)
    assert upstream.requests_to(CHAT_PATH)[-1].json["model"] == "gemini-2.5-flash"
    data = result.structured_content
    assert data["answer"] == text_of(result)
    assert (data["model"], data["mime_type"], data["width"], data["height"]) == (
        "gemini-2.5-flash",
        "image/png",
        50,
        40,
    )
    assert data["downscaled"] is False
    assert str(path) in data["source"]


@pytest.mark.parametrize(
    ("kind", "data", "mime"),
    [
        ("file-uri", PNG, "image/png"),
        ("data-uri", PNG, "image/png"),
        ("data-uri-wrong-type", JPEG, "image/jpeg"),
        ("base64-png", PNG, "image/png"),
        # Base64 of a JPEG starts with `/9j/`, which also looks like the start of a path.
        ("base64-jpeg", JPEG, "image/jpeg"),
        ("base64-wrapped", PNG, "image/png"),
        ("webp-file", make_image("WEBP", (20, 10)), "image/webp"),
    ],
)
async def test_other_sources(server, upstream, tmp_path, kind, data, mime):
    path = tmp_path / "picture name.img"
    path.write_bytes(data)
    encoded = base64.b64encode(data).decode()
    image = {
        "file-uri": path.as_uri(),
        "data-uri": f"data:{mime};base64,{encoded}",
        "data-uri-wrong-type": f"data:image/png;base64,{encoded}",
        "base64-png": encoded,
        "base64-jpeg": encoded,
        "base64-wrapped": "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)),
        "webp-file": str(path),
    }[kind]
    result = await describe(server, {"image": image})
    assert not result.is_error, text_of(result)
    assert sent_image(upstream) == (mime, data, QUESTION)
    assert result.structured_content["mime_type"] == mime
    assert SEEN.fullmatch(text_of(result)).group(3) == mime


async def test_gif_is_sent_as_a_still_image(server, upstream, tmp_path):
    """Vision models document PNG, JPEG and WebP; a GIF goes as its first frame, the file untouched."""
    path = tmp_path / "anim.gif"
    original = make_image("GIF", (12, 34))
    path.write_bytes(original)
    result = await describe(server, {"image": str(path)})
    assert not result.is_error, text_of(result)
    mime, sent, _ = sent_image(upstream)
    assert mime in ("image/png", "image/jpeg")
    assert sent[:3] in (b"\x89PN", b"\xff\xd8\xff")
    assert result.structured_content["mime_type"] == "image/gif"
    assert result.structured_content["downscaled"] is True
    assert (result.structured_content["width"], result.structured_content["height"]) == (12, 34)
    assert path.read_bytes() == original


async def test_generated_image_uri(server, upstream):
    async with Client(server) as client:
        generated = await client.call_tool("generate_image", {"prompt": "a lighthouse", "aspect_ratio": "16:9"})
        [image] = generated.structured_content["images"]
        result = await client.call_tool("describe_image", {"image": image["uri"], "question": "What is this?"})
    assert not result.is_error, text_of(result)
    assert sent_image(upstream) == ("image/png", Path(image["path"]).read_bytes(), "What is this?")
    assert text_of(result).startswith("I see a 64x36 image/png image")
    assert image["uri"] in result.structured_content["source"]


@pytest.mark.parametrize("path", ["/cat.png", "/redirect"])
async def test_http_url(make_settings, upstream, web, path):
    server = app_factory(make_settings(ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true"))
    result = await describe(server, {"image": web + path})
    assert not result.is_error, text_of(result)
    assert sent_image(upstream) == ("image/png", PNG, QUESTION)
    assert (result.structured_content["width"], result.structured_content["height"]) == (50, 40)


async def test_custom_question_and_model(server, upstream, tmp_path):
    path = tmp_path / "q.jpg"
    path.write_bytes(JPEG)
    result = await describe(server, {"image": str(path), "question": "How many cats?", "model": "gemini-2.0-flash"})
    assert not result.is_error, text_of(result)
    assert text_of(result).endswith("Question: How many cats?")
    assert upstream.requests_to(CHAT_PATH)[-1].json["model"] == "gemini-2.0-flash"
    assert sent_image(upstream)[2] == "How many cats?"
    assert result.structured_content["model"] == "gemini-2.0-flash"


# --- downscaling ---------------------------------------------------------------------------------


async def test_long_image_is_downscaled_and_the_original_kept(make_settings, upstream, tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(make_image("PNG", (3000, 200)))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    server = app_factory(make_settings(ONLYSQ_MCP_VISION_MAX_SIDE=1024))
    result = await describe(server, {"image": str(path)})
    assert not result.is_error, text_of(result)
    width, height, mime, _, _ = SEEN.fullmatch(text_of(result)).groups()
    assert (int(width), int(height), mime) == (1024, 68, "image/jpeg")
    data = result.structured_content
    assert (data["width"], data["height"], data["mime_type"], data["downscaled"]) == (3000, 200, "image/png", True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


async def test_heavy_image_is_recompressed_under_the_byte_limit(make_settings, upstream, tmp_path):
    original = make_image("PNG", (400, 400), noise=True)
    path = tmp_path / "noise.png"
    path.write_bytes(original)
    server = app_factory(make_settings(ONLYSQ_MCP_VISION_MAX_BYTES=30_000))
    result = await describe(server, {"image": str(path)})
    assert not result.is_error, text_of(result)
    _, sent, _ = sent_image(upstream)
    assert len(sent) <= 30_000 < len(original)
    assert int(SEEN.fullmatch(text_of(result)).group(4)) == len(sent)
    assert result.structured_content["downscaled"] is True
    assert path.read_bytes() == original


# --- refusals ------------------------------------------------------------------------------------


def bad_image(case: str, tmp_path: Path, web: str) -> str:
    (tmp_path / "notes.txt").write_text("just some text, no picture here")
    (tmp_path / "big.png").write_bytes(BIG_PNG)
    (tmp_path / "broken.png").write_bytes(PNG[:16] + b"\0" * 200)
    return {
        "missing-file": str(tmp_path / "nope.png"),
        "directory": str(tmp_path),
        "not-an-image": str(tmp_path / "notes.txt"),
        "over-size-file": str(tmp_path / "big.png"),
        "broken-header": str(tmp_path / "broken.png"),
        "windows-path": "C:\\nope\\x.png",
        "bad-base64-data-uri": "data:image/png;base64,@@not base64@@",
        "bad-base64-raw": "A" * 101,
        "text-data-uri": "data:text/plain,hello",
        "empty-data-uri": "data:image/png;base64,",
        "base64-not-image": base64.b64encode(b"plain text, not a picture at all " * 4).decode(),
        "url-404": web + "/missing.png",
        "url-over-cap-declared": web + "/big-declared.png",
        "url-over-cap-streamed": web + "/big-streamed.png",
        "url-unreachable": "http://127.0.0.1:9/x.png",
        "unknown-generated": "onlysq://images/20250101-000000-nothing-deadbeef.png",
        "generated-escape": "onlysq://images/../../etc/passwd",
        "ftp": "ftp://example.com/x.png",
    }[case]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-file", "no file at"),
        ("directory", "is not a file"),
        ("not-an-image", "not a PNG, JPEG, WebP or GIF image"),
        ("over-size-file", "ONLYSQ_MCP_MAX_INPUT_BYTES"),
        ("broken-header", "cannot be decoded"),
        ("windows-path", "no file at `C:\\nope\\x.png`"),
        ("bad-base64-data-uri", "not valid base64"),
        ("bad-base64-raw", "not valid base64"),
        ("text-data-uri", "only base64 data: URIs"),
        ("empty-data-uri", "empty"),
        ("base64-not-image", "not a PNG, JPEG, WebP or GIF image"),
        ("url-404", "HTTP 404"),
        ("url-over-cap-declared", "ONLYSQ_MCP_MAX_INPUT_BYTES"),
        ("url-over-cap-streamed", "ONLYSQ_MCP_MAX_INPUT_BYTES"),
        ("url-unreachable", "failed (ConnectError)"),
        ("unknown-generated", "no generated image"),
        ("generated-escape", "no generated image"),
        ("ftp", "`ftp://` is not supported"),
    ],
)
async def test_unusable_images_are_refused_before_any_upstream_call(
    make_settings, upstream, tmp_path, web, case, expected
):
    server = app_factory(make_settings(ONLYSQ_MCP_MAX_INPUT_BYTES=2048, ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true"))
    result = await describe(server, {"image": bad_image(case, tmp_path, web)})
    assert result.is_error
    assert "Cannot use `image`" in text_of(result)
    assert expected in text_of(result)
    assert upstream.requests_to(CHAT_PATH) == []


async def test_slow_url_times_out(make_settings, upstream, web, monkeypatch):
    monkeypatch.setattr(image_sources, "FETCH_SECONDS", 0.2)
    server = app_factory(make_settings(ONLYSQ_MCP_ALLOW_PRIVATE_URLS="true"))
    started = time.monotonic()
    result = await describe(server, {"image": web + "/slow.png"})
    assert time.monotonic() - started < 0.9
    assert result.is_error and "timed out" in text_of(result)
    assert upstream.requests_to(CHAT_PATH) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"model": "gpt-4o-mini"}, "needs a vision model"),
        ({"model": "flux"}, "needs a vision model"),
        ({"model": "gemini-2.5-flsh"}, "Did you mean `gemini-2.5-flash`"),
        ({"question": "  "}, "`question` is empty"),
        ({"image": ""}, "`image`: String should have at least 1 character"),
        ({"image": "   "}, "`image` is empty"),
    ],
)
async def test_bad_arguments(server, upstream, tmp_path, arguments, expected):
    path = tmp_path / "ok.png"
    path.write_bytes(PNG)
    async with Client(server) as client:
        await catalogue_loaded(client)
        result = await client.call_tool("describe_image", {"image": str(path)} | arguments)
    assert result.is_error
    assert expected in text_of(result)
    assert upstream.requests_to(CHAT_PATH) == []
    assert upstream.requests_to(IMAGEN_PATH) == []


async def test_upstream_failure_is_a_clear_tool_error(server, upstream, tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(PNG)
    upstream.add_fault(CHAT_PATH, "status", status=400, message="image rejected by the provider")
    result = await describe(server, {"image": str(path)})
    assert result.is_error
    assert "OnlySq" in text_of(result) and "image rejected by the provider" in text_of(result)


# --- end to end over HTTP ------------------------------------------------------------------------


async def test_http_transport_data_uri(http_server, upstream):
    uri = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    async with Client(http_server.url) as client:
        result = await client.call_tool("describe_image", {"image": uri, "question": "Colour?"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == f"I see a 30x20 image/jpeg image ({len(JPEG)} bytes). Question: Colour?"
    assert sent_image(upstream) == ("image/jpeg", JPEG, "Colour?")
