"""The tools of this server, in one list: each a plain async function with its title and annotations.

The function's docstring is the description the model reads, its annotated parameters the input schema.
The server registers `TOOLS` in this order; anything that needs the tool list (docs, tests) reads it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer
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
    ),
    Tool(
        generate_image,
        "Generate images",
        hints(read_only=False, idempotent=False),
        "make pictures from a text description (OnlySq `flux` by default; Yandex models when\n"
        "  configured). Images are saved on the server and returned inline or as previews with resource links.",
    ),
    Tool(
        describe_image,
        "Describe an image",
        hints(read_only=True, idempotent=False),
        "have a vision model look at an image (file path, URL, data URI, or a generated image's\n"
        "  onlysq://images/... URI) and answer a question about it.",
    ),
    Tool(
        list_models,
        "List available models",
        hints(read_only=True, idempotent=True),
        "find model ids before choosing `model` for another tool; filter by kind or text.",
    ),
)


def tool_guide() -> str:
    """One line per tool for the server's instructions, in the order of `TOOLS`."""
    return "".join(f"- `{tool.name}`: {tool.guide}\n" for tool in TOOLS)


# Tools whose text result can outgrow a host's default (a chat reply of 100,000 tokens, a full model list).
LONG_TEXT = frozenset({"chat", "describe_image", "list_models"})


def register(server: MCPServer[Any]) -> None:
    for tool in TOOLS:
        meta = long_text_meta() if tool.name in LONG_TEXT else None
        server.add_tool(
            tool.fn, title=tool.title, description=tool.description, annotations=tool.annotations, meta=meta
        )
