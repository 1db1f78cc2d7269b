"""`generate_image` through an MCP client against the fake OnlySq ImaGen and Yandex AI Studio."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from onlysq_mcp import image_tools
from onlysq_mcp.images import pixel_size, sniff_mime
from onlysq_mcp.server import app_factory
from tests.fake_upstream import IMAGEN_PATH, IMAGEN_RATIOS, MODELS_PATH, YANDEX_IMAGES_PATH, _render_image
from tests.helpers import TEST_KEY, YANDEX_FOLDER, YANDEX_IAM, YANDEX_KEY, catalogue_loaded, text_of

pytestmark = pytest.mark.anyio

YANDEX_MODEL_URI = f"art://{YANDEX_FOLDER}/aliceai-image-art-3.0"


def blocks(result, kind: str) -> list:
    return [block for block in result.content if block.type == kind]


def ratio_dims(ratio: str, long_side: int = 64) -> tuple[int, int]:
    w, h = (int(part) for part in ratio.split(":"))
    return (long_side, round(long_side * h / w)) if w >= h else (round(long_side * w / h), long_side)


async def output_schema(client: Client) -> dict:
    tools = await client.list_tools()
    return next(t.output_schema for t in tools.tools if t.name == "generate_image")


# --- OnlySq -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_default_model_returns_image_text_and_link(server, upstream, output_dir, mode):
    async with Client(server, mode=mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "a red fox in snow"})
        schema = await output_schema(client)
    assert not result.is_error, text_of(result)
    assert [b.type for b in result.content] == ["text", "image", "resource_link"]
    call = upstream.requests_to(IMAGEN_PATH)[-1]
    assert call.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert call.json == {"model": "flux", "prompt": "a red fox in snow", "ratio": "1:1"}

    data = result.structured_content
    jsonschema.validate(data, schema)
    assert (data["provider"], data["model"], data["aspect_ratio"], data["failures"]) == ("onlysq", "flux", "1:1", [])
    [image] = data["images"]
    saved = Path(image["path"])
    assert saved.parent == output_dir.resolve()
    assert (image["width"], image["height"], image["mime_type"], image["inline"]) == (64, 64, "image/png", "original")
    assert image["bytes"] == saved.stat().st_size

    [inline] = blocks(result, "image")
    assert inline.mime_type == "image/png"
    assert base64.b64decode(inline.data) == saved.read_bytes()
    [link] = blocks(result, "resource_link")
    assert (link.uri, link.mime_type, link.size) == (image["uri"], "image/png", image["bytes"])

    text = text_of(result)
    for fact in ("onlysq/flux", "64x64", str(saved), image["uri"], "s."):
        assert fact in text


async def test_every_aspect_ratio_reaches_the_upstream(server, upstream):
    async with Client(server) as client:
        for ratio in IMAGEN_RATIOS:
            result = await client.call_tool("generate_image", {"prompt": "tree", "aspect_ratio": ratio})
            assert not result.is_error, text_of(result)
            assert upstream.requests_to(IMAGEN_PATH)[-1].json["ratio"] == ratio
            [image] = result.structured_content["images"]
            assert (image["width"], image["height"]) == ratio_dims(ratio), ratio
            assert pixel_size(Path(image["path"]).read_bytes()) == ratio_dims(ratio)
            assert "{}x{}".format(*ratio_dims(ratio)) in text_of(result)
    assert len(upstream.requests_to(IMAGEN_PATH)) == len(IMAGEN_RATIOS)


async def test_count_runs_concurrent_requests_and_saves_distinct_files(server, upstream):
    upstream.latency = 0.2
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "three cats", "count": 3})
    assert not result.is_error, text_of(result)
    assert len(upstream.requests_to(IMAGEN_PATH)) == 3
    assert upstream.max_in_flight >= 3
    assert len(blocks(result, "image")) == 3
    assert len(blocks(result, "resource_link")) == 3
    paths = {image["path"] for image in result.structured_content["images"]}
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths)
    assert len({link.uri for link in blocks(result, "resource_link")}) == 3
    assert "Generated 3 images" in text_of(result)


async def test_seed_is_passed_through(server, upstream):
    async with Client(server) as client:
        first = await client.call_tool("generate_image", {"prompt": "dune", "seed": 1234})
        second = await client.call_tool("generate_image", {"prompt": "dune", "seed": 1234})
    assert [r.json["seed"] for r in upstream.requests_to(IMAGEN_PATH)] == [1234, 1234]
    paths = [r.structured_content["images"][0]["path"] for r in (first, second)]
    assert paths[0] != paths[1]
    assert Path(paths[0]).read_bytes() == Path(paths[1]).read_bytes()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
async def test_mime_is_sniffed_from_the_bytes(server, upstream, fmt, mime):
    upstream.imagen_format = fmt
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "format"})
        schema = await output_schema(client)
    assert not result.is_error, text_of(result)
    jsonschema.validate(result.structured_content, schema)
    [image] = result.structured_content["images"]
    assert image["mime_type"] == mime
    assert Path(image["path"]).suffix == {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}[fmt]
    assert blocks(result, "image")[0].mime_type == mime
    assert blocks(result, "resource_link")[0].mime_type == mime
    assert sniff_mime(Path(image["path"]).read_bytes()) == mime


async def test_progress_grows_while_waiting(server, upstream, monkeypatch):
    monkeypatch.setattr(image_tools, "HEARTBEAT_SECONDS", 0.03)
    upstream.latency = 0.25
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server, mode="legacy") as client:
        result = await client.call_tool("generate_image", {"prompt": "wait", "count": 2}, progress_callback=on_progress)
    assert not result.is_error, text_of(result)
    values = [p for p, _, _ in seen]
    assert values == sorted(set(values)), "progress must strictly increase"
    assert any("generating" in (m or "") for _, _, m in seen)
    assert seen[-1][:2] == (2, 2) and "2 of 2 images ready" in (seen[-1][2] or "")


# --- Yandex AI Studio ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["api-key", "iam"])
async def test_yandex_model_with_either_credential(make_settings, upstream, auth):
    if auth == "api-key":
        settings = make_settings()
        expected = f"Api-Key {YANDEX_KEY}"
    else:
        settings = make_settings(
            yandex=False,
            YANDEX_IAM_TOKEN=YANDEX_IAM,
            YANDEX_FOLDER_ID=YANDEX_FOLDER,
            YANDEX_BASE_URL=upstream.base_url,
        )
        expected = f"Bearer {YANDEX_IAM}"
    async with Client(app_factory(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "northern lights", "model": "aliceai-image-art-3.0", "aspect_ratio": "16:9"}
        )
        schema = await output_schema(client)
    assert not result.is_error, text_of(result)
    jsonschema.validate(result.structured_content, schema)
    call = upstream.requests_to(YANDEX_IMAGES_PATH)[-1]
    assert call.headers["authorization"] == expected
    assert call.json == {"model": YANDEX_MODEL_URI, "prompt": "northern lights", "size": "16x9"}
    assert upstream.requests_to(IMAGEN_PATH) == []
    data = result.structured_content
    assert (data["provider"], data["model"]) == ("yandex", "aliceai-image-art-3.0")
    [image] = data["images"]
    assert (image["mime_type"], image["width"], image["height"]) == ("image/jpeg", 64, 36)
    assert Path(image["path"]).suffix == ".jpg"
    assert blocks(result, "image")[0].mime_type == "image/jpeg"
    assert "yandex/aliceai-image-art-3.0" in text_of(result)


async def test_yandex_full_model_uri_and_ignored_seed(server, upstream):
    async with Client(server) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "forest", "model": YANDEX_MODEL_URI, "seed": 5, "count": 2}
        )
    assert not result.is_error, text_of(result)
    calls = upstream.requests_to(YANDEX_IMAGES_PATH)
    assert [c.json["model"] for c in calls] == [YANDEX_MODEL_URI] * 2
    assert all("seed" not in c.json for c in calls)
    assert "`seed` was ignored" in text_of(result)
    assert result.structured_content["model"] == YANDEX_MODEL_URI


@pytest.mark.parametrize("model", ["aliceai-image-art-3.0", "aliceai-image-art-3.0/latest", "art://folder/some-model"])
async def test_yandex_model_without_yandex_configured(make_settings, upstream, model):
    async with Client(app_factory(make_settings(yandex=False))) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": model})
    assert result.is_error
    for name in ("YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "YANDEX_FOLDER_ID"):
        assert name in text_of(result)
    assert upstream.requests_to(YANDEX_IMAGES_PATH) == [] and upstream.requests_to(IMAGEN_PATH) == []


@pytest.mark.parametrize("configured", [True, False])
async def test_yandex_models_listed_only_when_configured(make_settings, upstream, configured):
    async with Client(app_factory(make_settings(yandex=configured))) as client:
        result = await client.call_tool("list_models", {"kind": "image"})
    models = {m["id"]: m["provider"] for m in result.structured_content["models"]}
    assert models["flux"] == "onlysq"
    yandex = {m for m, provider in models.items() if provider == "yandex"}
    assert yandex == ({"aliceai-image-art-3.0"} if configured else set())


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("status", {"status": 401}, "YANDEX_API_KEY"),
        ("status", {"status": 400, "message": "content filter"}, "content filter"),
        ("missing_field", {}, "`data[0].b64_json`"),
        ("bad_base64", {}, "not valid base64"),
        ("not_image", {}, "not a PNG, JPEG, WebP or GIF"),
    ],
)
async def test_yandex_failures_are_clear_tool_errors(server, upstream, fault, options, expected):
    upstream.add_fault(YANDEX_IMAGES_PATH, fault, **options)
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": "aliceai-image-art-3.0"})
    assert result.is_error
    assert "Yandex AI Studio" in text_of(result) and expected in text_of(result)
    assert YANDEX_KEY not in text_of(result)


# --- size budget and delivery --------------------------------------------------------------------


async def test_over_budget_inlines_a_preview_and_saves_the_exact_original(make_settings, upstream):
    upstream.image_noise = True
    upstream.image_long_side = 1024
    budget = 60_000
    server = app_factory(make_settings(ONLYSQ_MCP_INLINE_BUDGET=budget))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "static", "seed": 7})
        schema = await output_schema(client)
        [image] = result.structured_content["images"]
        read = await client.read_resource(image["uri"])
    assert not result.is_error, text_of(result)
    jsonschema.validate(result.structured_content, schema)
    # The fake draws noise from prompt and seed, so the bytes it sent can be drawn again here.
    sent = _render_image("static", 7, 1024, 1024, "PNG", True)
    saved = Path(image["path"]).read_bytes()
    assert hashlib.sha256(saved).digest() == hashlib.sha256(sent).digest()
    assert base64.b64decode(read.contents[0].blob) == sent
    assert (image["inline"], image["width"], image["height"], image["bytes"]) == ("preview", 1024, 1024, len(sent))

    [preview] = blocks(result, "image")
    assert len(preview.data) <= budget < len(base64.b64encode(sent))
    shown = base64.b64decode(preview.data)
    assert sniff_mime(shown) == preview.mime_type
    assert max(pixel_size(shown)) < 1024
    assert "preview" in text_of(result) and "full-resolution file is on disk" in text_of(result)


async def test_budget_is_shared_by_several_images(make_settings, upstream):
    upstream.image_noise = True
    upstream.image_long_side = 256
    budget = 40_000
    server = app_factory(make_settings(ONLYSQ_MCP_INLINE_BUDGET=budget))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "many", "count": 4})
    assert not result.is_error, text_of(result)
    previews = blocks(result, "image")
    assert len(previews) == 4
    assert sum(len(b.data) for b in previews) <= budget
    assert {i["inline"] for i in result.structured_content["images"]} == {"preview"}


async def test_link_mode_sends_no_image_data(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_DELIVERY="link"))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "linked", "count": 2})
    assert not result.is_error, text_of(result)
    assert blocks(result, "image") == []
    links = blocks(result, "resource_link")
    assert len(links) == 2
    assert {i["inline"] for i in result.structured_content["images"]} == {"none"}
    assert all(Path(i["path"]).is_file() for i in result.structured_content["images"])
    assert "not inlined" in text_of(result)


async def test_inline_mode_sends_originals_even_over_budget(make_settings, upstream):
    upstream.image_noise = True
    upstream.image_long_side = 256
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_DELIVERY="inline", ONLYSQ_MCP_INLINE_BUDGET=10_000))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "big"})
    [image] = result.structured_content["images"]
    [inline] = blocks(result, "image")
    assert len(inline.data) > 10_000
    assert base64.b64decode(inline.data) == Path(image["path"]).read_bytes()
    assert image["inline"] == "original"


# --- resources -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_generated_image_is_a_readable_listed_resource(server, upstream, fmt):
    upstream.imagen_format = fmt
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "resource", "count": 2})
        listed = await client.list_resources()
        links = blocks(result, "resource_link")
        reads = [await client.read_resource(link.uri) for link in links]
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt]
    listed_uris = {str(r.uri): r for r in listed.resources}
    for link, read, image in zip(links, reads, result.structured_content["images"], strict=True):
        [content] = read.contents
        assert base64.b64decode(content.blob) == Path(image["path"]).read_bytes()
        assert content.mime_type == mime
        assert str(content.uri) == link.uri
        assert listed_uris[link.uri].mime_type == mime


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"prompt": "x", "aspect_ratio": "7:5"}, "'16:9'"),
        ({"prompt": "x", "aspect_ratio": "7:5"}, "'9:21'"),
        ({"prompt": "x", "count": 0}, "greater than or equal to 1"),
        ({"prompt": "x", "count": 5}, "less than or equal to 4"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "`prompt` is empty"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "model": "fluxx"}, "Did you mean `flux`"),
        ({"prompt": "x", "model": "gpt-4o-mini"}, "needs an image model"),
    ],
)
async def test_bad_arguments_are_tool_errors_without_generation(server, upstream, arguments, expected):
    async with Client(server) as client:
        await catalogue_loaded(client)
        result = await client.call_tool("generate_image", arguments)
        assert result.is_error
        assert expected in text_of(result)
        ok = await client.call_tool("generate_image", {"prompt": "still works"})
    assert not ok.is_error
    assert [r.json["prompt"] for r in upstream.requests_to(IMAGEN_PATH)] == ["still works"]


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("status", {"status": 401}, "ONLYSQ_API_KEY"),
        ("status", {"status": 500, "message": "GPU on fire", "times": 10}, "GPU on fire"),
        ("malformed", {}, "not JSON"),
        ("html", {"status": 200}, "not JSON"),
        ("missing_field", {}, "`files`"),
        ("bad_base64", {}, "not valid base64"),
        ("not_image", {}, "not a PNG, JPEG, WebP or GIF"),
    ],
)
async def test_upstream_failures_are_clear_tool_errors(server, upstream, output_dir, fault, options, expected):
    upstream.add_fault(IMAGEN_PATH, fault, **options)
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "doomed"})
    assert result.is_error
    assert "No image was generated" in text_of(result)
    assert "OnlySq" in text_of(result) and expected in text_of(result)
    assert TEST_KEY not in text_of(result)
    assert list(output_dir.iterdir()) == []


async def test_one_failure_of_several_keeps_the_others(server, upstream):
    upstream.add_fault(IMAGEN_PATH, "status", status=400, message="one bad GPU", times=1)
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "pair", "count": 2})
    assert not result.is_error, text_of(result)
    assert len(upstream.requests_to(IMAGEN_PATH)) == 2
    assert len(blocks(result, "image")) == 1
    data = result.structured_content
    assert len(data["images"]) == 1
    [failure] = data["failures"]
    assert "one bad GPU" in failure
    assert "Failed:" in text_of(result) and "one bad GPU" in text_of(result)


async def test_unwritable_output_dir_fails_before_any_upstream_call(make_settings, upstream, tmp_path):
    blocker = tmp_path / "regular-file"
    blocker.write_text("I am not a folder")
    server = app_factory(make_settings(ONLYSQ_MCP_OUTPUT_DIR=blocker / "images"))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "lost"})
    assert result.is_error
    assert "ONLYSQ_MCP_OUTPUT_DIR" in text_of(result)
    assert str(blocker / "images") in text_of(result)
    assert upstream.requests == []
    assert upstream.requests_to(MODELS_PATH) == []


# --- end to end over stdio -----------------------------------------------------------------------


async def test_stdio_generate_and_read_back(stdio_params, upstream, output_dir):
    upstream.imagen_format = "JPEG"
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "over stdio", "aspect_ratio": "3:2"})
        assert not result.is_error, text_of(result)
        [link] = blocks(result, "resource_link")
        read = await client.read_resource(link.uri)
    [saved] = list(output_dir.iterdir())
    [content] = read.contents
    assert content.mime_type == "image/jpeg"
    assert base64.b64decode(content.blob) == saved.read_bytes()
    assert pixel_size(saved.read_bytes()) == ratio_dims("3:2")


# --- Yandex as it really answers (issue 12: retired YandexART, the 500-character prompt limit) ----------------


async def test_yandex_prompt_over_500_characters_is_refused_before_any_request(stdio_params, upstream):
    async with Client(stdio_params) as client:
        tools = (await client.list_tools()).tools
        result = await client.call_tool("generate_image", {"prompt": "a" * 501, "model": "aliceai-image-art-3.0"})
        shorter = await client.call_tool("generate_image", {"prompt": "a" * 500, "model": "aliceai-image-art-3.0"})
    assert result.is_error
    assert "shorten it to 500 characters" in text_of(result) and "501" in text_of(result)
    assert not shorter.is_error, text_of(shorter)
    assert len(upstream.requests_to(YANDEX_IMAGES_PATH)) == 1
    (generate,) = [tool for tool in tools if tool.name == "generate_image"]
    described = generate.input_schema["properties"]["prompt"]["description"]
    assert "32,000 characters for OnlySq models" in described and "500 characters for Yandex models" in described


async def test_a_model_denied_by_yandex_is_reported_as_unavailable_not_as_bad_keys(stdio_params, upstream):
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": f"art://{YANDEX_FOLDER}/yandex-art"})
        latest = await client.call_tool("generate_image", {"prompt": "x", "model": "aliceai-image-art-3.0/latest"})
    assert result.is_error
    message = text_of(result)
    assert "not available to this key or folder" in message and "Access to model" in message
    assert "credentials refused" not in message and "YANDEX_API_KEY" not in message
    assert not latest.is_error, text_of(latest)
    assert (
        upstream.requests_to(YANDEX_IMAGES_PATH)[-1].json["model"]
        == f"art://{YANDEX_FOLDER}/aliceai-image-art-3.0/latest"
    )


@pytest.mark.parametrize(
    ("tool", "arguments", "path"),
    [
        ("chat", {"prompt": "hi"}, "/ai/v2"),
        ("generate_image", {"prompt": "x"}, IMAGEN_PATH),
        ("generate_image", {"prompt": "x", "model": "aliceai-image-art-3.0"}, YANDEX_IMAGES_PATH),
    ],
)
async def test_http_200_with_an_error_body_gives_the_providers_message(stdio_params, upstream, tool, arguments, path):
    upstream.add_fault(path, "error_body", message="provider queue is full")
    async with Client(stdio_params) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert "answered with an error: provider queue is full" in text_of(result), text_of(result)
    assert "the API may have changed" not in text_of(result)


async def test_a_transient_500_is_retried(stdio_params, upstream):
    upstream.add_fault(IMAGEN_PATH, "status", status=500, message="one bad GPU")
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "x"})
    assert not result.is_error, text_of(result)
    assert len(upstream.requests_to(IMAGEN_PATH)) == 2
