"""The live catalogue read entry by entry (issue 12 point 9): odd entries left out, a kind the live list lacks
taken from the bundled list, models not offered hidden, tier shown, embedding models never chat models."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from onlysq_mcp.onlysq import ModelsResponse
from onlysq_mcp.providers.onlysq import entries_from
from onlysq_mcp.server import app_factory
from tests.fake_upstream import CHAT_PATH, MODELS_PATH, FakeUpstream
from tests.helpers import start_http_server, stop_http_server, text_of, upstream_env

pytestmark = pytest.mark.anyio


def live_entry(**fields: Any) -> dict[str, Any]:
    """An entry shaped like the live ones (upstreams.md, `/ai/models`)."""
    return {
        "name": "Some Model",
        "description": "d",
        "modality": "text",
        "tier": 0,
        "status": "work",
        "can-stream": True,
        "can-tools": False,
        "can-think": False,
        "cost": 0,
        "owner": "someone",
    } | fields


def break_entries(upstream: FakeUpstream) -> None:
    """Two entries no reader can use, one model down, one known only by its status in upper case."""
    upstream.models["odd-null"] = None
    upstream.models["odd-list"] = live_entry(name=["a", "list"])
    upstream.models["gpt-4o"]["status"] = "offline"
    upstream.models["gemini-2.0-flash"]["status"] = "WORK"


def ids_of(result: Any) -> set[str]:
    return {m["id"] for m in result.structured_content["models"]}


# --- through real transports ----------------------------------------------------------------------


async def test_odd_entries_cost_only_themselves_over_stdio(stdio_params, upstream):
    break_entries(upstream)
    async with Client(stdio_params) as client:
        listed = await client.call_tool("list_models", {})
        unknown = await client.call_tool("chat", {"prompt": "hi", "model": "no-such-model"})
        live_only = await client.call_tool("chat", {"prompt": "hi", "model": "fake-live-only"})
        down = await client.call_tool("chat", {"prompt": "hi", "model": "gpt-4o"})
        embedding = await client.call_tool("chat", {"prompt": "hi", "model": "e5-mistral-7b"})
        chat_models = await client.call_tool("list_models", {"kind": "chat"})
    data = listed.structured_content
    assert data["source"] == "live"  # one odd entry no longer throws the whole live list away
    assert "fake-live-only" in ids_of(listed)
    assert not ids_of(listed) & {"odd-null", "odd-list", "gpt-4o"}
    assert "gemini-2.0-flash" in ids_of(listed)
    assert "Entries of the live list left out because they could not be read: 2." in data["note"]
    assert "Models hidden because the live list gives a status other than work or beta: 1." in data["note"]
    assert data["note"] in text_of(listed)
    # Model checking is still on: an unknown id is refused before any request.
    assert unknown.is_error and "Unknown model `no-such-model`" in text_of(unknown)
    assert not live_only.is_error and text_of(live_only) == "Echo: hi"
    # A hidden model named by the caller: the upstream has the last word (here it still answers).
    assert not down.is_error and text_of(down) == "Echo: hi"
    assert embedding.is_error
    assert "`e5-mistral-7b` is an embedding model, but this tool needs a chat model" in text_of(embedding)
    assert "e5-mistral-7b" not in ids_of(chat_models)
    sent = [r.json["model"] for r in upstream.requests_to(CHAT_PATH)]
    assert sent == ["fake-live-only", "gpt-4o"]


async def test_an_empty_live_list_falls_back_per_kind_over_http(upstream, tmp_path):
    upstream.add_fault(MODELS_PATH, "empty_models")
    server = start_http_server(upstream_env(upstream.base_url, tmp_path / "images", yandex=False), tmp_path)
    try:
        async with Client(server.url) as client:
            listed = await client.call_tool("list_models", {"kind": "chat"})
            default = await client.call_tool("chat", {"prompt": "still known"})
            newer = await client.call_tool("chat", {"prompt": "newer", "model": "fake-live-only"})
    finally:
        stop_http_server(server)
    data = listed.structured_content
    assert data["source"] == "live"
    assert {"gpt-4o-mini", "gemini-2.5-flash"} <= ids_of(listed)  # from the bundled list
    assert "fake-live-only" not in ids_of(listed)
    assert "The live list has no chat or embedding or image or sound models" in data["note"]
    assert "bundled" in data["note"]
    # Before: every model was "unknown". Now the default works, and an id the bundled list lacks goes upstream.
    assert text_of(default) == "Echo: still known"
    assert text_of(newer) == "Echo: newer"


# --- in process ------------------------------------------------------------------------------------


async def test_only_the_empty_kind_comes_from_the_bundled_list(make_settings, upstream):
    for model_id in [m for m, e in upstream.models.items() if e["modality"] == "image"]:
        del upstream.models[model_id]
    async with Client(app_factory(make_settings(yandex=False))) as client:
        images = await client.call_tool("list_models", {"kind": "image"})
        chats = await client.call_tool("list_models", {"kind": "chat"})
        refused = await client.call_tool("chat", {"prompt": "hi", "model": "no-such-model"})
    assert ids_of(images) == {"flux"}  # the docs' only image model
    assert "The live list has no image models" in images.structured_content["note"]
    assert "fake-live-only" in ids_of(chats)  # chat models are still the live ones
    assert "gpt-4o-mini-2024-07-18" not in ids_of(chats)  # bundled only, and chat has live entries
    assert refused.is_error and "Unknown model" in text_of(refused)


async def test_all_entries_odd_is_an_empty_list(make_settings, upstream):
    upstream.models = {"a": None, "b": [], "c": "text", "d": live_entry(status=["work"])}
    async with Client(app_factory(make_settings(yandex=False))) as client:
        listed = await client.call_tool("list_models", {"kind": "chat"})
        reply = await client.call_tool("chat", {"prompt": "hi"})
    note = listed.structured_content["note"]
    assert note.startswith("Entries of the live list left out because they could not be read: 4.")
    assert "The live list has no chat" in note
    assert "gpt-4o-mini" in ids_of(listed)
    # The fake lists nothing usable, so it refuses the model itself: the upstream had the last word.
    assert reply.is_error and "Model 'gpt-4o-mini' not found" in text_of(reply)
    assert len(upstream.requests_to(CHAT_PATH)) == 1


@pytest.mark.parametrize("status", ["offline", "disabled", "", "deprecated"])
async def test_statuses_other_than_work_or_beta_are_hidden(server, upstream, status):
    upstream.models["deepseek-v3"]["status"] = status
    upstream.models["gpt-4o-mini"]["status"] = "Beta"
    async with Client(server) as client:
        listed = await client.call_tool("list_models", {"kind": "chat"})
        suggested = await client.call_tool("chat", {"prompt": "hi", "model": "deepseek-v4"})
    assert "deepseek-v3" not in ids_of(listed)
    assert "gpt-4o-mini" in ids_of(listed)
    assert "deepseek-v3 |" not in text_of(listed)
    assert "deepseek-v3" not in text_of(suggested)  # not offered, so not suggested either


async def test_tier_is_shown(server, upstream):
    upstream.models["flux"]["tier"] = 3
    upstream.models["flux-2-dev"]["tier"] = None
    async with Client(server) as client:
        listed = await client.call_tool("list_models", {"kind": "image"})
    tiers = {m["id"]: m["tier"] for m in listed.structured_content["models"]}
    assert tiers["flux"] == 3
    assert tiers["flux-2-dev"] is None
    assert "flux | onlysq | image | 3 | - | FLUX" in text_of(listed)
    assert "flux-2-dev | onlysq | image | - | - |" in text_of(listed)


async def test_embedding_model_is_listed_as_such_and_not_as_chat(server, upstream):
    async with Client(server) as client:
        everything = await client.call_tool("list_models", {})
        chats = await client.call_tool("list_models", {"kind": "chat"})
        vision = await client.call_tool("list_models", {"kind": "vision"})
    e5 = next(m for m in everything.structured_content["models"] if m["id"] == "e5-mistral-7b")
    assert e5["kind"] == "embedding" and not e5["vision"]
    assert "\nembedding (1, makes vectors, not for `chat`): e5-mistral-7b\n" in text_of(everything)
    assert "e5-mistral-7b" not in ids_of(chats) | ids_of(vision)


@pytest.mark.parametrize(
    ("model_id", "fields"),
    [
        ("e5-mistral-7b", {}),
        ("E5-Mistral-7B", {}),
        ("text-embedding-3-small", {}),
        ("nomic-embed-text", {}),
        ("vectors-1", {"modality": "embedding"}),
        ("vectors-2", {"modality": "Embeddings"}),
        ("vectors-3", {"type": "embedding"}),
        ("vectors-4", {"task": "text-embedding"}),
        ("vectors-5", {"endpoints": ["/ai/embeddings"]}),
        ("vectors-6", {"can-embed": True}),
        ("vectors-7", {"embedding": True}),
    ],
)
def test_every_embedding_marker_counts(model_id, fields):
    listing = entries_from(ModelsResponse.model_validate({"models": {model_id: live_entry(**fields)}}))
    assert [e.kind for e in listing.entries] == ["embedding"]


@pytest.mark.parametrize(
    "entry",
    [
        None,
        [],
        "text",
        42,
        live_entry(name=["x"]),
        live_entry(description={"en": "x"}),
        live_entry(modality=["text", "image"]),
        live_entry(status=["work"]),
        live_entry(owner=["google"]),
        live_entry(tier=[0]),
        live_entry(tier="high"),
        live_entry(modality="video"),  # a kind this server does not know is not guessed to be chat
    ],
)
def test_an_unreadable_entry_is_left_out_and_counted(entry):
    raw = {"good": live_entry(), "bad": entry, "also-good": live_entry(modality="image", tier=2)}
    listing = entries_from(ModelsResponse.model_validate({"api-version": 7, "models": raw}))
    assert [(e.id, e.kind, e.tier) for e in listing.entries] == [("good", "chat", 0), ("also-good", "image", 2)]
    assert listing.skipped == 1


def test_ids_that_are_no_model_ids_are_left_out():
    raw = {"": live_entry(), "   ": live_entry(), "x" * 201: live_entry(), "ok": live_entry()}
    listing = entries_from(ModelsResponse.model_validate({"models": raw}))
    assert [e.id for e in listing.entries] == ["ok"]
    assert listing.skipped == 3


def test_plain_text_models_stay_chat_models():
    raw = {"gpt-4o-mini": live_entry(), "mistral-small-3.1": live_entry(type="Keys", endpoints=["API2.0"])}
    listing = entries_from(ModelsResponse.model_validate({"models": raw}))
    assert [e.kind for e in listing.entries] == ["chat", "chat"]
