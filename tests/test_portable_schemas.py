"""Input schemas every host and model family accepts (issue 13.9), while the server still validates as before.

Cursor rejects type unions; Gemini's function calling (an OpenAPI 3.0 subset) rejects `anyOf`, `$ref`,
`const` and `additionalProperties`. The advertised schemas avoid them; the pydantic models behind the tools
still accept an explicit `null` for an optional parameter and refuse bad values with the same errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import pytest
from mcp import Client
from mcp.server.mcpserver.tools import Tool as SdkTool
from pydantic import BaseModel, Field

from onlysq_mcp.tools import portable_schema
from tests.fake_upstream import CHAT_PATH, IMAGEN_PATH
from tests.helpers import PNG, text_of

pytestmark = pytest.mark.anyio

UNPORTABLE = {"anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "const", "additionalProperties"}

# Arguments a model may send, each valid for its tool: the shaped schema must still accept them.
VALID = {
    "chat": [
        {"prompt": "hi"},
        {
            "prompt": "and now?",
            "system": "Answer in one sentence.",
            "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
            "model": "gpt-4o-mini",
            "temperature": 0.5,
            "max_tokens": 100,
        },
    ],
    "generate_image": [
        {"prompt": "a fox"},
        {"prompt": "a fox", "model": "flux", "aspect_ratio": "16:9", "count": 4, "seed": 7},
        {"job": "onlysq://jobs/abc"},
    ],
    "describe_image": [{"image": "cat.png"}, {"image": "cat.png", "question": "What colour?", "model": "gemini"}],
    "list_models": [{}, {"kind": "vision", "search": "gemini"}],
}
# ... and invalid ones it must still refuse: the bounds and enums survived the shaping.
INVALID = {
    "chat": [{}, {"prompt": "x", "messages": [{"role": "robot", "content": "y"}]}, {"prompt": "x", "temperature": 3}],
    "generate_image": [{"prompt": "x", "count": 9}, {"prompt": "x", "aspect_ratio": "7:5"}],
    "describe_image": [{"image": ""}],
    "list_models": [{"kind": "audio"}],
}


def subschemas(node: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema inside `node` (itself included), with where it is; property names are not keywords."""
    yield where, node
    for name, sub in node.get("properties", {}).items():
        yield from subschemas(sub, f"{where}.{name}")
    if "items" in node:
        yield from subschemas(node["items"], f"{where}[]")


def assert_portable(tool: str, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    for where, node in subschemas(schema):
        place = f"{tool}{where}"
        assert not UNPORTABLE & node.keys(), f"{place}: {sorted(UNPORTABLE & node.keys())}"
        assert isinstance(node.get("type"), str), f"{place} has no single type: {node.get('type')}"
        assert "title" not in node, place
        assert "default" not in node or node["default"] is not None, f"{place} advertises a null default"
        if "enum" in node:
            assert node["type"] == "string" and all(isinstance(v, str) for v in node["enum"]), place
    # Nothing can hide in keywords the walk does not enter.
    assert set(schema) <= {"type", "properties", "required"}, sorted(schema)


async def test_every_input_schema_is_portable_and_still_checks_arguments(server, stdio_params):
    async with Client(server) as client:
        in_process = (await client.list_tools()).tools
    # What a host gets over stdio, where the front door answers from data/fast_start.json.
    async with Client(stdio_params) as client:
        over_stdio = (await client.list_tools()).tools
    assert {t.name for t in in_process} == set(VALID)
    for tool in in_process:
        assert_portable(tool.name, tool.input_schema)
        validator = jsonschema.Draft202012Validator(tool.input_schema)
        for arguments in VALID[tool.name]:
            validator.validate(arguments)
        for arguments in INVALID[tool.name]:
            assert not validator.is_valid(arguments), (tool.name, arguments)
    assert [t.input_schema for t in over_stdio] == [t.input_schema for t in in_process]
    [chat] = [t for t in in_process if t.name == "chat"]
    turn = chat.input_schema["properties"]["messages"]["items"]
    assert turn["required"] == ["role", "content"] and turn["properties"]["role"]["enum"] == [
        "system",
        "user",
        "assistant",
    ]


async def test_explicit_nulls_work_like_omitted_arguments_through_stdio(stdio_params, upstream, tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    nulls = {
        "chat": {
            "prompt": "hi",
            "system": None,
            "messages": None,
            "model": None,
            "temperature": None,
            "max_tokens": None,
        },
        "list_models": {"kind": "chat", "search": None},
        "generate_image": {"prompt": "a fox", "model": None, "seed": None, "job": None},
        "describe_image": {"image": str(tmp_path / "cat.png"), "model": None},
    }
    async with Client(stdio_params) as client:
        for tool, with_nulls in nulls.items():
            omitted = {name: value for name, value in with_nulls.items() if value is not None}
            sent_null = await client.call_tool(tool, with_nulls)
            left_out = await client.call_tool(tool, omitted)
            assert not sent_null.is_error, text_of(sent_null)
            assert not left_out.is_error, text_of(left_out)
            if tool != "generate_image":  # each generation is a new file
                assert sent_null.structured_content == left_out.structured_content, tool
    first, second = upstream.requests_to(CHAT_PATH)[:2]
    assert first.json == second.json  # the same request upstream, null or not


REFUSED = [
    ("generate_image", {"prompt": "x", "count": 9}, "`count`: Input should be less than or equal to 4"),
    (
        "generate_image",
        {"prompt": "x", "aspect_ratio": "7:5"},
        "`aspect_ratio`: Input should be '1:1', '16:9', '21:9', '3:2', '2:3', '4:5', '5:4', '3:4', '4:3', "
        "'9:16' or '9:21'",
    ),
    (
        "chat",
        {"prompt": "x", "messages": [{"role": "robot", "content": "y"}]},
        "`messages.0.role`: Input should be 'system', 'user' or 'assistant'",
    ),
    ("chat", {"prompt": None}, "`prompt`: Input should be a valid string"),
    ("list_models", {"kind": "audio"}, "`kind`: Input should be 'chat', 'image', 'vision' or 'all'"),
]


async def test_bad_arguments_are_still_refused_with_clear_errors_through_stdio(stdio_params, upstream):
    async with Client(stdio_params) as client:
        for tool, arguments, error in REFUSED:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            expected = f"Error executing tool {tool}: invalid arguments: {error}. Fix them and call again."
            assert text_of(result) == expected
    assert upstream.requests_to(CHAT_PATH) == upstream.requests_to(IMAGEN_PATH) == []


# --- the shaping rules, on parameters the tools do not have (yet) ----------------------------------------


class Point(BaseModel):
    x: int
    label: Literal["only"] = "only"


class Chain(BaseModel):
    next: Chain | None = None


def shaped(fn: Any) -> dict[str, Any]:
    return portable_schema(SdkTool.from_function(fn).parameters)


def test_shaping_inlines_collapses_and_drops():
    async def sample(
        points: list[Point] | None = None,
        counts: dict[str, int] | None = None,
        title: str = Field("t", description="A parameter named like a keyword."),
        mode: Literal["a", "b"] | None = None,
    ) -> str:
        return ""

    assert shaped(sample) == {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer"},
                        "label": {"type": "string", "enum": ["only"], "default": "only"},
                    },
                    "required": ["x"],
                },
            },
            "counts": {"type": "object"},
            "title": {"type": "string", "default": "t", "description": "A parameter named like a keyword."},
            "mode": {"type": "string", "enum": ["a", "b"]},
        },
    }


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [(int | str, "a union of 2 types"), (Literal[1, 2], "enum values must be strings"), (Chain, "refers to itself")],
)
def test_a_parameter_without_a_portable_schema_is_refused(annotation, reason):
    async def sample(value: Any) -> str:
        return ""

    sample.__annotations__["value"] = annotation

    with pytest.raises(TypeError, match=reason):
        shaped(sample)
