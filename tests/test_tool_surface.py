"""The tool surface is a contract with every model that calls it: a change must be deliberate.

After an intended change, regenerate with `UPDATE_SNAPSHOTS=1 pytest tests/test_tool_surface.py` and
review the diff of `tests/snapshots/tools.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools.json"


async def current_surface(server) -> list[dict]:
    async with Client(server) as client:
        tools = await client.list_tools()
    return [
        {
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "annotations": tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True),
            "inputSchema": tool.input_schema,
            "outputSchema": tool.output_schema,
        }
        for tool in sorted(tools.tools, key=lambda t: t.name)
    ]


async def test_tool_surface_matches_snapshot(server):
    surface = await current_surface(server)
    rendered = json.dumps(surface, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(rendered, encoding="utf-8")
    assert rendered == SNAPSHOT.read_text(encoding="utf-8"), (
        "The tool surface changed. If intended, run UPDATE_SNAPSHOTS=1 pytest tests/test_tool_surface.py "
        "and commit the new snapshot."
    )


async def test_every_tool_and_parameter_is_described(server):
    for tool in await current_surface(server):
        assert tool["description"] and len(tool["description"]) > 40, tool["name"]
        assert tool["title"], tool["name"]
        assert tool["outputSchema"], f"{tool['name']} has no output schema"
        for name, schema in tool["inputSchema"]["properties"].items():
            assert schema.get("description"), f"{tool['name']}.{name} has no description"


async def test_annotations_are_truthful(server):
    annotations = {tool["name"]: tool["annotations"] for tool in await current_surface(server)}
    assert all(a["openWorldHint"] is True for a in annotations.values())
    assert annotations["generate_image"]["readOnlyHint"] is False  # it writes files
    for name in ("chat", "list_models", "describe_image"):
        assert annotations[name]["readOnlyHint"] is True
    assert annotations["list_models"]["idempotentHint"] is True
