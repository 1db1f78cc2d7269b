"""What the model sees, whichever part of a result its host passes on.

Some hosts give the model only `structuredContent` when a result has it (Claude Code, Codex CLI, Copilot
CLI, ChatGPT with a widget), others only the text blocks (LibreChat, mcpo). For every tool, each of the two
must carry what the model needs on its own: the reply or answer, what was generated and where, notes and
failures, and what to do next with a pending job. Image bytes belong in image blocks only, never in
`structuredContent`.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from onlysq_mcp.server import app_factory
from tests.fake_upstream import IMAGEN_PATH
from tests.helpers import PNG, text_of

pytestmark = pytest.mark.anyio

# A run of base64 long enough to be data rather than a word, a hex id or a path (their `-`, `.`, `:` break runs).
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{100,}={0,2}")


def strings(value: Any) -> list[str]:
    """Every string inside a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def assert_no_image_data(result) -> None:
    structured = result.structured_content
    assert structured is not None, "the tool declares an output schema, so the result must carry structured content"
    dumped = json.dumps(structured)
    for block in result.content:
        if block.type == "image":
            assert block.data not in dumped
    for text in strings(structured):
        assert not text.startswith("data:"), text[:80]
        assert not BASE64_RUN.search(text), text[:80]


@pytest.mark.parametrize("data", [base64.b64encode(PNG).decode(), "data:image/png;base64,AAAA"])
def test_the_check_sees_image_data(data: str) -> None:
    planted = CallToolResult(content=[TextContent(type="text", text="")], structured_content={"images": [{"x": data}]})
    with pytest.raises(AssertionError):
        assert_no_image_data(planted)


async def test_chat_reply_in_both(server) -> None:
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "what is the capital of France?"})
    reply = "Echo: what is the capital of France?"
    assert reply in text_of(result)
    assert result.structured_content["reply"] == reply
    assert_no_image_data(result)


async def test_describe_image_answer_in_both(server) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")
    async with Client(server) as client:
        result = await client.call_tool("describe_image", {"image": image, "question": "What is it?"})
    answer = result.structured_content["answer"]
    assert "I see a" in answer and answer in text_of(result)
    assert_no_image_data(result)


async def test_list_models_ids_in_both(server) -> None:
    async with Client(server) as client:
        result = await client.call_tool("list_models", {"kind": "image"})
    ids = [model["id"] for model in result.structured_content["models"]]
    assert ids
    assert all(model_id in text_of(result) for model_id in ids)
    assert_no_image_data(result)


@pytest.mark.parametrize("delivery", ["inline", "preview", "link"])
async def test_generated_images_where_notes_and_failures_in_both(make_settings, upstream, delivery) -> None:
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_DELIVERY=delivery, ONLYSQ_RETRIES="0"))
    upstream.add_fault(IMAGEN_PATH, "status", status=500, message="the GPU caught fire")
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "count": 3, "seed": 7})
    assert not result.is_error, text_of(result)
    text, data = text_of(result), result.structured_content
    assert len(data["images"]) == 2
    for image in data["images"]:
        assert image["uri"] in text and image["path"] in text
    assert len(data["failures"]) == 1 and "GPU caught fire" in data["failures"][0]
    assert data["failures"][0] in text
    assert data["notes"] and all(note in text for note in data["notes"])
    assert any("7" in note for note in data["notes"])  # the seed sent
    inline = [block for block in result.content if block.type == "image"]
    assert len(inline) == (0 if delivery == "link" else 2)
    assert_no_image_data(result)


async def test_pending_job_next_step_in_both(make_settings, upstream) -> None:
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_WAIT="0.3"))
    upstream.add_fault(IMAGEN_PATH, "delay", delay=1.0)
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "a slow fox"})
    assert not result.is_error, text_of(result)
    text, data = text_of(result), result.structured_content
    job = data["job"]
    assert job["status"] == "running" and job["uri"] in text
    # The way on from here, in words the model can act on, naming the job.
    assert data["next_step"] and job["id"] in data["next_step"]
    assert data["next_step"] in text
    assert_no_image_data(result)
