"""How the upstreams really answer (issue 12 points 1, 3, 5, 6), each variant a fault of the fake, through a real
server process: streamable HTTP (one uvicorn process for the module) or stdio where a setting differs.

Points 1 and 2 (retired model, `/latest`, the 500-character prompt limit) and the 200-with-error of a streamed
chat are also covered over stdio in test_generate_image.py; recorded bodies in test_recorded.py.
"""

from __future__ import annotations

import base64
import io

import pytest
from mcp import Client
from PIL import Image

from tests.fake_upstream import IMAGEN_PATH, YANDEX_CHAT_PATH, YANDEX_IMAGES_PATH
from tests.helpers import YANDEX_FOLDER, text_of

pytestmark = pytest.mark.anyio

YANDEX_IMAGE = {"model": "aliceai-image-art-3.0"}


async def call(url: str, tool: str, arguments: dict):
    async with Client(url) as client:
        return await client.call_tool(tool, arguments)


def returned_image(result) -> Image.Image:
    [inline] = [block for block in result.content if block.type == "image"]
    return Image.open(io.BytesIO(base64.b64decode(inline.data)))


# --- point 5: base64 as leniently as public clients decode it ----------------------------------------------------


@pytest.mark.parametrize("variant", ["wrapped", "data_uri", "url_safe", "unpadded"])
@pytest.mark.parametrize(
    ("path", "arguments", "fmt"),
    [(IMAGEN_PATH, {}, "PNG"), (YANDEX_IMAGES_PATH, YANDEX_IMAGE, "JPEG")],
)
async def test_lenient_base64_images_are_decoded(http_server, upstream, variant, path, arguments, fmt):
    upstream.add_fault(path, "base64_variant", message=variant)
    result = await call(http_server.url, "generate_image", {"prompt": "variant probe", **arguments})
    assert not result.is_error, text_of(result)
    image = returned_image(result)
    assert (image.format, image.size) == (fmt, (64, 64))
    # One request: a variant the fake could not apply answers 500, and its retry would hide that.
    assert len(upstream.requests_to(path)) == 1


# --- point 6: transient statuses retried like the OpenAI and Anthropic SDKs do ----------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
@pytest.mark.parametrize(
    ("path", "tool", "arguments"),
    [
        (IMAGEN_PATH, "generate_image", {"prompt": "x"}),
        (YANDEX_IMAGES_PATH, "generate_image", {"prompt": "x", **YANDEX_IMAGE}),
        (YANDEX_CHAT_PATH, "chat", {"prompt": "x", "model": "yandexgpt"}),
    ],
)
async def test_transient_statuses_are_retried(http_server, upstream, status, path, tool, arguments):
    upstream.add_fault(path, "status", status=status, message="try again soon")
    result = await call(http_server.url, tool, arguments)
    assert not result.is_error, text_of(result)
    assert len(upstream.requests_to(path)) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_client_errors_are_not_retried(http_server, upstream, status):
    upstream.add_fault(IMAGEN_PATH, "status", status=status, message="no")
    result = await call(http_server.url, "generate_image", {"prompt": "x"})
    assert result.is_error and f"HTTP {status}: no" in text_of(result), text_of(result)
    assert len(upstream.requests_to(IMAGEN_PATH)) == 1


# --- point 3: HTTP 200 with an error body ------------------------------------------------------------------------


async def test_unstreamed_chat_200_with_an_error_body(stdio_params, upstream):
    unstreamed = stdio_params.model_copy(update={"env": {**(stdio_params.env or {}), "ONLYSQ_STREAM": "false"}})
    upstream.add_fault("/ai/v2", "error_body", message="model overloaded")
    async with Client(unstreamed) as client:
        result = await client.call_tool("chat", {"prompt": "hi"})
    assert upstream.requests_to("/ai/v2")[0].json["request"]["stream"] is False
    assert result.is_error
    assert "OnlySq: answered with an error: model overloaded" in text_of(result), text_of(result)


@pytest.mark.parametrize("path", ["/ai/v2", YANDEX_CHAT_PATH])
async def test_an_error_event_inside_a_stream_gives_the_providers_message(http_server, upstream, path):
    upstream.add_fault(path, "stream_error", after_chunks=1, message="upstream provider failed")
    arguments = {"prompt": "hello there"} | ({"model": "yandexgpt"} if path == YANDEX_CHAT_PATH else {})
    result = await call(http_server.url, "chat", arguments)
    assert result.is_error and "upstream provider failed" in text_of(result), text_of(result)


async def test_yandex_chat_200_with_an_error_body(http_server, upstream):
    upstream.add_fault(YANDEX_CHAT_PATH, "error_body", message="folder quota exhausted")
    result = await call(http_server.url, "chat", {"prompt": "hi", "model": "yandexgpt"})
    assert result.is_error
    assert "Yandex AI Studio: answered with an error: folder quota exhausted" in text_of(result), text_of(result)


async def test_imagen_empty_files_gives_the_providers_message(http_server, upstream):
    upstream.add_fault(IMAGEN_PATH, "empty_files", message="provider queue")
    upstream.add_fault(IMAGEN_PATH, "empty_files")
    with_error = await call(http_server.url, "generate_image", {"prompt": "x"})
    without = await call(http_server.url, "generate_image", {"prompt": "x"})
    assert with_error.is_error and "OnlySq: answered with an error: provider queue" in text_of(with_error)
    assert without.is_error and "answered an empty or malformed `files` field" in text_of(without), text_of(without)


# --- point 1: Yandex model names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "aliceai-image-art-3.0/latest",
        f"art://{YANDEX_FOLDER}/aliceai-image-art-3.0",
        f"art://{YANDEX_FOLDER}/yandex-art",
    ],
)
async def test_yandex_image_model_spellings(http_server, upstream, model):
    result = await call(http_server.url, "generate_image", {"prompt": "x", "model": model})
    [request] = upstream.requests_to(YANDEX_IMAGES_PATH)
    assert request.json["model"].startswith(f"art://{YANDEX_FOLDER}/")
    if "yandex-art" in model:  # retired: the fake answers 403 "Access to model … denied" with valid keys
        assert result.is_error and "not available to this key or folder" in text_of(result), text_of(result)
        assert "credentials refused" not in text_of(result)
    else:
        assert not result.is_error, text_of(result)
