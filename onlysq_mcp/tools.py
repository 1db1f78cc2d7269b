"""The tools of this server, in one list: each a plain async function with its title and annotations.

The function's docstring is the description the model reads, its annotated parameters the input schema
(advertised in the portable shape of `portable_schema`). The server registers `TOOLS` in this order;
anything that needs the tool list (docs, tests) reads it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.tools import Tool as SdkTool
from mcp_types import ToolAnnotations

from .host_limits import long_text_meta
from .image_tools import describe_image, generate_image
from .text_tools import chat, list_models


@dataclass(frozen=True)
class Tool:
    fn: Callable[..., Any]
    title: str
    annotations: ToolAnnotations
    # Its line in the server's instructions: when to pick this tool.
    guide: str
    # A text result that can outgrow a host's default (a long reply, a full model list): say so in `_meta`.
    long_text: bool = False

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")


def hints(*, read_only: bool, idempotent: bool) -> ToolAnnotations:
    # Every tool calls an upstream (open world) and none deletes anything.
    return ToolAnnotations(
        read_only_hint=read_only, destructive_hint=False, idempotent_hint=idempotent, open_world_hint=True
    )


TOOLS: tuple[Tool, ...] = (
    Tool(
        chat,
        "Chat with an OnlySq model",
        hints(read_only=True, idempotent=False),
        "ask another language model (GPT, Gemini, Claude, DeepSeek, Llama, ...) for text: a second opinion,\n"
        "  a translation, a draft. Pass earlier turns in `messages` to continue a conversation.",
        long_text=True,
    ),
    Tool(
        generate_image,
        "Generate images",
        hints(read_only=False, idempotent=False),
        "make pictures from a text description (OnlySq `flux` by default; Yandex models when\n"
        "  configured). Images are saved on the server and returned inline or as previews with resource links;\n"
        "  a generation that outlasts the wait returns a job handle: call again with `job` set to it.",
    ),
    Tool(
        describe_image,
        "Describe an image",
        hints(read_only=True, idempotent=False),
        "have a vision model look at an image (file path, URL, data URI, or a generated image's\n"
        "  onlysq://images/... URI) and answer a question about it.",
        long_text=True,
    ),
    Tool(
        list_models,
        "List available models",
        hints(read_only=True, idempotent=True),
        "find model ids before choosing `model` for another tool; filter by kind or text.",
        long_text=True,
    ),
)


def tool_guide() -> str:
    """One line per tool for the server's instructions, in the order of `TOOLS`."""
    return "".join(f"- `{tool.name}`: {tool.guide}\n" for tool in TOOLS)


def sdk_tools() -> list[SdkTool]:
    """`TOOLS` as the SDK registers them, each advertising its input schema in the portable shape.

    Only the advertised schema changes: the SDK still validates every call against the function's own
    pydantic model (`fn_metadata`), so an explicit `null` for an optional parameter is still accepted and
    a bad value still gets pydantic's error.
    """
    registered = []
    for tool in TOOLS:
        sdk_tool = SdkTool.from_function(
            tool.fn,
            title=tool.title,
            description=tool.description,
            annotations=tool.annotations,
            meta=long_text_meta() if tool.long_text else None,
        )
        sdk_tool.parameters = portable_schema(sdk_tool.parameters)
        registered.append(sdk_tool)
    return registered


# Keywords left in an input schema that no shaping rule below removes: a parameter typed so that its schema
# needs one cannot be advertised portably, and is refused at start-up rather than sent to a host.
UNPORTABLE = frozenset({"anyOf", "oneOf", "allOf", "not", "$ref", "const"})


def portable_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (pydantic's, of a tool's parameters) as every host and model family accepts it.

    Cursor rejects type unions, and Gemini's function calling (an OpenAPI 3.0 subset:
    https://ai.google.dev/api/caching#Schema) rejects `anyOf`, `$ref`, `const` and `additionalProperties`,
    also through hosts that pass schemas on unchanged. So: every `$ref` is inlined from `$defs`; an
    optional parameter (`T | None = None`, `anyOf: [T, null]`) is declared as `T`, without a null default;
    a single literal (`const`) is a one-value enum and every enum is string-typed; `additionalProperties`
    goes, and so do the `title`s pydantic derives from the names, which tell the model nothing.
    """
    definitions: dict[str, Any] = schema.get("$defs", {})

    def shape(node: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
        node = dict(node)
        if (ref := node.pop("$ref", None)) is not None:
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise TypeError(f"{name} refers to itself: a recursive schema cannot be inlined")
            return shape({**definitions[name], **node}, (*seen, name))
        if (variants := node.pop("anyOf", None)) is not None:
            kept = [variant for variant in variants if variant != {"type": "null"}]
            if len(kept) != 1:
                raise TypeError(f"a union of {len(kept)} types has no portable schema: {variants}")
            return shape({**kept[0], **node}, seen)
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if "enum" in node:
            if not all(isinstance(value, str) for value in node["enum"]):
                raise TypeError(f"enum values must be strings: {node['enum']}")
            node["type"] = "string"
        if node.get("default", ...) is None:
            del node["default"]
        for key in ("$defs", "additionalProperties", "title"):
            node.pop(key, None)
        if "properties" in node:
            node["properties"] = {name: shape(sub, seen) for name, sub in node["properties"].items()}
        if "items" in node:
            node["items"] = shape(node["items"], seen)
        if UNPORTABLE & node.keys() or isinstance(node.get("type"), list):
            raise TypeError(f"no portable schema for {node}")
        return node

    return shape(schema, ())
