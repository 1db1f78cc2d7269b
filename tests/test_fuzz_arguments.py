"""Arbitrary arguments thrown at every tool: each call gets a result or a tool error, and the server stays up."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mcp import Client

from tests.helpers import text_of

pytestmark = pytest.mark.anyio

TOOL_PARAMETERS = {
    "chat": ["prompt", "system", "messages", "model", "temperature", "max_tokens"],
    "list_models": ["kind", "search"],
    "generate_image": ["prompt", "model", "aspect_ratio", "count", "seed"],
    "describe_image": ["image", "question", "model"],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def tool_calls(draw):
    tool = draw(st.sampled_from(sorted(TOOL_PARAMETERS)))
    names = st.sampled_from(TOOL_PARAMETERS[tool]) | st.text(min_size=1, max_size=12)
    arguments = draw(st.dictionaries(names, json_values, max_size=6))
    return tool, arguments


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=tool_calls())
async def test_any_arguments_get_a_result_or_a_tool_error(server, upstream, call):
    tool, arguments = call
    # Never let a generated value send the server to a host off this machine.
    assume(not any(isinstance(v, str) and "://" in v for v in arguments.values()))
    async with Client(server) as client:
        [schema] = [t.input_schema for t in (await client.list_tools()).tools if t.name == tool]
        result = await client.call_tool(tool, arguments)
        missing = [name for name in schema.get("required", []) if name not in arguments]
        if missing:  # refused before any work, naming what to add
            assert result.is_error and f"`{missing[0]}`: Field required" in text_of(result), text_of(result)
        if result.is_error:
            text = result.content[0].text
            assert text.startswith(f"Error executing tool {tool}: ")
            for noise in ("Traceback", "input_value", "errors.pydantic.dev"):
                assert noise not in text
        else:  # the client checked it against the tool's output schema
            assert result.structured_content is not None and text_of(result)
        alive = await client.call_tool("list_models", {"kind": "chat"})
        assert not alive.is_error
