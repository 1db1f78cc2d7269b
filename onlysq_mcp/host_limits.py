"""What each known MCP host accepts in one tool result, and the image defaults that fit it.

A host names itself in `clientInfo.name`: in `initialize`, or on 2026-07-28 in each request's `_meta`.
The names below are the ones the hosts really send, as recorded in apify/mcp-client-capabilities
(`src/mcp_client_capabilities/mcp-clients.json`; `claude-code` also seen by screenpipe/screenpipe#5796).
A host's defaults replace the settings' defaults only: a setting the user set (environment or `.env`)
always wins. A host not listed here, or one that sends no name, gets the settings as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import ImageDelivery, Settings

# Claude Code counts an image's data against MAX_MCP_OUTPUT_TOKENS ("Tools that return image data are still
# subject to MAX_MCP_OUTPUT_TOKENS", code.claude.com/docs/en/mcp, "MCP output limits and warnings"), and has
# been seen to count it by the size of the base64, not the pixels (anthropics/claude-code#9152: a base64 image
# over the limit; hangwin/mcp-chrome#163: one screenshot counted as 154,162 tokens; #70010: its Read tool
# takes `base64.length * 0.125`). Even at 4 characters a token, the dearest of these estimates, 60,000 bytes
# of base64 are 15,000 tokens: the text and structured content of a 4-image result (about 3,000 characters,
# under 1,000 tokens) leave 9,000 tokens, over a third, of margin under the default 25,000.
CLAUDE_CODE_INLINE_BUDGET = 60_000
# The most Claude Code keeps inline for a tool that declares `anthropic/maxResultSizeChars` (below).
MAX_RESULT_SIZE_CHARS = 500_000


@dataclass(frozen=True)
class HostProfile:
    title: str
    # `clientInfo.name` as the host sends it, compared case-insensitively.
    names: frozenset[str]
    # What the host accepts in one tool result, and where that is documented (the README lists both).
    limit: str
    source: str
    # The host's defaults for ONLYSQ_MCP_IMAGE_DELIVERY and ONLYSQ_MCP_INLINE_BUDGET; None keeps the setting's.
    image_delivery: ImageDelivery | None = None
    inline_budget: int | None = None


HOSTS: tuple[HostProfile, ...] = (
    HostProfile(
        "Claude Desktop (and claude.ai)",
        frozenset({"claude-ai"}),
        "rejects a tool result over 1 MiB (1,048,576 bytes) whole, images included",
        "PrefectHQ/fastmcp#1036 (`result exceeds maximum length of 1048576`), anthropics/claude-code#66519",
        # Previews within the default 700,000 bytes of base64: the rest of the result stays far below 1 MiB.
        ImageDelivery.PREVIEW,
        700_000,
    ),
    HostProfile(
        "Claude Code",
        frozenset({"claude-code"}),
        "25,000 tokens per tool result (`MAX_MCP_OUTPUT_TOKENS`), image data included; text over 50,000 "
        "characters goes to a file unless the tool declares `anthropic/maxResultSizeChars`",
        "code.claude.com/docs/en/mcp (MCP output limits and warnings)",
        ImageDelivery.PREVIEW,
        CLAUDE_CODE_INLINE_BUDGET,
    ),
    HostProfile(
        "Cursor",
        frozenset({"cursor-vscode"}),
        "no documented limit",
        "apify/mcp-client-capabilities (the name)",
    ),
    HostProfile(
        "VS Code",
        frozenset({"visual studio code", "visual-studio-code"}),
        "no documented limit for images; long text results are cut for the model",
        "microsoft/vscode#311068",
    ),
)


def host_named(name: str | None) -> HostProfile | None:
    """The profile of the host that calls itself `name`, or None for an unknown or unnamed one."""
    if not name:
        return None
    wanted = name.strip().casefold()
    return next((host for host in HOSTS if wanted in host.names), None)


def image_defaults(settings: Settings, host: HostProfile | None) -> tuple[ImageDelivery, int]:
    """Image delivery and inline budget for a result to `host`: each setting the user set, else the host's
    default, else the setting's default."""
    chosen = settings.model_fields_set
    delivery = settings.onlysq_mcp_image_delivery
    budget = settings.onlysq_mcp_inline_budget
    if host is not None and host.image_delivery is not None and "onlysq_mcp_image_delivery" not in chosen:
        delivery = host.image_delivery
    if host is not None and host.inline_budget is not None and "onlysq_mcp_inline_budget" not in chosen:
        budget = host.inline_budget
    return delivery, budget


def long_text_meta() -> dict[str, int]:
    """A tool's `_meta` when its text result may run past 50,000 characters (a long chat reply, a full model
    list): Claude Code then keeps up to MAX_RESULT_SIZE_CHARS of it in the conversation rather than a file
    and a 2 kB preview. It reads the key from the tool's `tools/list` entry (code.claude.com/docs/en/mcp,
    "Raise the limit for a specific tool"; since 2.1.91); other hosts ignore `_meta` keys they do not know.
    """
    return {"anthropic/maxResultSizeChars": MAX_RESULT_SIZE_CHARS}
