"""`list_models` and the catalogue resource: live, cached, fallback, filters."""

from __future__ import annotations

import json

import anyio
import jsonschema
import pytest
from mcp import Client

from onlysq_mcp.server import app_factory
from tests.helpers import catalogue_loaded, text_of

pytestmark = pytest.mark.anyio


async def output_schema(client: Client, name: str) -> dict:
    tools = await client.list_tools()
    return next(t.output_schema for t in tools.tools if t.name == name)


async def test_live_catalogue_with_entries_and_table(server, upstream):
    async with Client(server) as client:
        result = await client.call_tool("list_models", {})
        schema = await output_schema(client, "list_models")
    assert not result.is_error
    data = result.structured_content
    jsonschema.validate(data, schema)
    assert data["source"] == "live"
    ids = {m["id"] for m in data["models"]}
    assert "fake-live-only" in ids  # only the live fake has it: proves this is not the bundled list
    gemini = next(m for m in data["models"] if m["id"] == "gemini-2.5-flash")
    assert gemini == {
        "id": "gemini-2.5-flash",
        "provider": "onlysq",
        "kind": "chat",
        "vision": True,
        "name": upstream.models["gemini-2.5-flash"]["name"],
        "description": upstream.models["gemini-2.5-flash"]["description"],
        "owner": "google",
        "status": "work",
        "tier": upstream.models["gemini-2.5-flash"]["tier"],
        "streaming": upstream.models["gemini-2.5-flash"]["can-stream"],
        "tools": upstream.models["gemini-2.5-flash"]["can-tools"],
        "thinking": upstream.models["gemini-2.5-flash"]["can-think"],
    }
    text = text_of(result)
    assert "\nchat (" in text and "gemini-2.5-flash[v]" in text  # unfiltered: ids grouped by kind
    async with Client(server) as client:
        table = text_of(await client.call_tool("list_models", {"search": "gemini"}))
    assert "id | provider | kind | tier | flags | name" in table
    assert "gemini-2.5-flash | onlysq | chat | 0 | vision" in table


@pytest.mark.parametrize(
    ("arguments", "expected", "excluded"),
    [
        ({"kind": "image"}, {"flux", "flux-2-dev"}, {"gpt-4o-mini", "gtts"}),
        ({"kind": "vision"}, {"gemini-2.5-flash", "gemini-2.0-flash"}, {"gpt-4o-mini", "flux"}),
        ({"kind": "chat"}, {"gpt-4o-mini", "gemini-2.5-flash", "deepseek-v3"}, {"flux", "gtts"}),
        ({"search": "GEMINI"}, {"gemini-2.5-flash", "gemini-2.0-flash"}, {"gpt-4o"}),
        ({"kind": "chat", "search": "openai"}, {"gpt-4o-mini", "gpt-4o"}, {"gemini-2.5-flash"}),
    ],
)
async def test_filters(make_settings, upstream, arguments, expected, excluded):
    server = app_factory(make_settings(yandex=False))
    async with Client(server) as client:
        result = await client.call_tool("list_models", arguments)
    ids = {m["id"] for m in result.structured_content["models"]}
    assert expected <= ids
    assert not ids & excluded
    assert result.structured_content["total"] == len(ids)


async def test_yandex_models_listed_only_when_configured(make_settings, upstream):
    for configured in (True, False):
        server = app_factory(make_settings(yandex=configured))
        async with Client(server) as client:
            result = await client.call_tool("list_models", {"kind": "image"})
        yandex = {m["id"] for m in result.structured_content["models"] if m["provider"] == "yandex"}
        assert (yandex == {"aliceai-image-art-3.0"}) is configured
        assert bool(yandex) is configured


async def test_no_match_says_so(server, upstream):
    async with Client(server) as client:
        result = await client.call_tool("list_models", {"search": "no-such-model-anywhere"})
    assert not result.is_error
    assert result.structured_content["models"] == []
    assert "No models match" in text_of(result)


async def test_catalogue_is_cached(server, upstream):
    async with Client(server) as client:
        for _ in range(3):
            await client.call_tool("list_models", {})
        await client.call_tool("chat", {"prompt": "hi"})
    assert len(upstream.requests_to("/ai/models")) == 1


async def test_cache_expires_after_ttl(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_MODELS_CACHE_TTL=0))
    async with Client(server) as client:
        await client.call_tool("list_models", {})
        await client.call_tool("list_models", {})
    assert len(upstream.requests_to("/ai/models")) == 2


async def test_unreachable_upstream_falls_back_to_bundled(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_RETRIES=0))
    upstream.add_fault("/ai/models", "status", status=503)
    async with Client(server) as client:
        result = await client.call_tool("list_models", {})
    assert not result.is_error
    data = result.structured_content
    assert data["source"] == "bundled"
    assert "HTTP 503" in data["note"]
    ids = {m["id"] for m in data["models"]}
    assert "fake-live-only" not in ids
    assert {"gpt-4o-mini", "gemini-2.5-flash", "flux"} <= ids
    assert len(ids) > 80
    assert "bundled" in text_of(result)


async def test_failure_after_success_serves_last_good_copy(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_MODELS_CACHE_TTL=0, ONLYSQ_RETRIES=0))
    async with Client(server) as client:
        await client.call_tool("list_models", {})
        upstream.add_fault("/ai/models", "malformed")
        result = await client.call_tool("list_models", {})
    data = result.structured_content
    assert data["source"] == "cached"
    assert "fake-live-only" in {m["id"] for m in data["models"]}
    assert "not JSON" in data["note"]


async def test_unknown_model_is_accepted_when_only_bundled_list_is_known(make_settings, upstream):
    """The bundled list may be out of date: the upstream gets the last word then."""
    server = app_factory(make_settings(ONLYSQ_RETRIES=0))
    upstream.add_fault("/ai/models", "status", status=500)
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "hi", "model": "fake-live-only"})
    assert not result.is_error
    assert result.structured_content["model"] == "fake-live-only"


async def test_catalogue_resource(server, upstream):
    async with Client(server) as client:
        resources = await client.list_resources()
        assert "onlysq://models" in {str(r.uri) for r in resources.resources}
        read = await client.read_resource("onlysq://models")
    content = read.contents[0]
    assert content.mime_type == "application/json"
    body = json.loads(content.text)
    assert body["source"] == "live"
    assert "fake-live-only" in {m["id"] for m in body["models"]}


async def test_catalogue_is_refreshed_in_the_background_before_it_expires(make_settings, upstream):
    """Stale-while-revalidate: model checks keep a live list across expiries, and no call fetches it."""
    server = app_factory(make_settings(ONLYSQ_MCP_MODELS_CACHE_TTL=2, ONLYSQ_MCP_MODELS_TIMEOUT=1))
    async with Client(server) as client:
        await catalogue_loaded(client)
        with anyio.fail_after(10):
            while len(upstream.requests_to("/ai/models")) < 3:  # ≈ 2 s: past the first copy's expiry
                result = await client.call_tool("chat", {"prompt": "hi", "model": "gpt-4o-mni"})
                assert "Did you mean `gpt-4o-mini`" in text_of(result)
                await anyio.sleep(0.1)
    assert upstream.requests_to("/ai/v2") == []


# --- the text part stays small, the structured part whole (issue 13, point 7) ------------------------------


def large_catalogue(upstream, chats: int = 200, images: int = 6) -> None:
    """Long ids, so that they cannot all fit in the text, with vision, beta and tier marks among them."""
    template = upstream.models["gpt-4o"]
    models = {}
    for n in range(chats):
        models[f"vendor-family-model-{n:03d}-instruct-2025-06-01"] = template | {
            "name": f"Model {n}",
            "description": "A long description that only the structured part carries. " * 5,
            "status": "beta" if n % 7 == 0 else "work",
            "tier": n % 3,
        }
    for n in range(images):
        models[f"painter-{n}"] = upstream.models["flux"] | {"name": f"Painter {n}"}
    upstream.models = models


async def test_unfiltered_text_is_compact_and_structured_part_whole(stdio_params, upstream):
    large_catalogue(upstream)
    async with Client(stdio_params) as client:
        result = await client.call_tool("list_models", {})
    text = text_of(result)
    assert len(text.encode()) <= 4096, len(text.encode())
    data = result.structured_content
    assert {m["id"] for m in data["models"]} >= set(upstream.models)
    assert data["total"] == len(data["models"])
    assert all(m["description"] for m in data["models"])
    lines = text.splitlines()
    # Every image model is named although the chat ids fill the rest, and the missing chat ids are counted.
    image_line = next(line for line in lines if line.startswith("image ("))
    assert all(f"painter-{n}" in image_line for n in range(6))
    chat_line = next(line for line in lines if line.startswith("chat ("))
    shown = chat_line.count("vendor-family-model-")
    assert 20 < shown < 200
    chats = sum(m["kind"] == "chat" for m in data["models"])
    assert chat_line.endswith(f"… +{chats - shown} more")
    assert "vendor-family-model-000-instruct-2025-06-01[beta]" in chat_line
    assert "vendor-family-model-001-instruct-2025-06-01[t1]" in chat_line
    assert "only the structured part carries" not in text


async def test_bundled_text_names_every_model_within_the_limit(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_RETRIES=0))
    upstream.add_fault("/ai/models", "status", status=503)
    async with Client(server) as client:
        result = await client.call_tool("list_models", {})
    text = text_of(result)
    assert result.structured_content["source"] == "bundled"
    assert len(text.encode()) <= 4096, len(text.encode())
    words = set(text.replace(",", " ").split())
    for model in result.structured_content["models"]:
        assert model["id"] in words or any(w.startswith(model["id"] + "[") for w in words), model["id"]


async def test_filtered_text_is_a_table_while_small_else_grouped(server, upstream):
    async with Client(server) as client:
        small = text_of(await client.call_tool("list_models", {"kind": "image"}))
    assert "id | provider | kind | tier | flags | name" in small
    large_catalogue(upstream)
    async with Client(server) as client:
        result = await client.call_tool("list_models", {"kind": "chat"})
    text = text_of(result)
    assert len(text.encode()) <= 4096
    assert "id | provider" not in text and "\nchat (203): vendor-family-model-000" in text
    assert result.structured_content["total"] == 200 + 3  # and Yandex's three chat models


async def test_long_note_is_clipped_in_the_text_only(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_RETRIES=0))
    upstream.add_fault("/ai/models", "status", status=503, message="x" * 20_000)
    async with Client(server) as client:
        result = await client.call_tool("list_models", {})
    assert len(text_of(result).encode()) <= 4096
    assert "flux" in text_of(result)
