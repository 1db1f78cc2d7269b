"""Host-aware defaults: the host's `clientInfo.name` picks image delivery and budget unless a setting is set,
and long text tools declare Claude Code's `anthropic/maxResultSizeChars`.

The stdio tests run a real server process, as each host would: in the 2026-07-28 envelope (the client's
`auto` mode, `clientInfo` in every request's `_meta`) and through the `initialize` handshake (`legacy`).
"""

from __future__ import annotations

import pytest
from mcp import Client, StdioServerParameters
from mcp_types import Implementation

from onlysq_mcp.host_limits import CLAUDE_CODE_INLINE_BUDGET, MAX_RESULT_SIZE_CHARS, host_named, image_defaults
from onlysq_mcp.settings import ImageDelivery
from tests.helpers import text_of

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
CLAUDE_CODE = Implementation(name="claude-code", version="2.1.300")
CLAUDE_DESKTOP = Implementation(name="claude-ai", version="0.14.10")
# Claude Code's default MAX_MCP_OUTPUT_TOKENS, and the plainest estimate of tokens from characters.
CLAUDE_CODE_TOKENS = 25_000
CHARS_PER_TOKEN = 4
ONE_MIB = 1_048_576
TODAY_BUDGET = 700_000


def with_env(params: StdioServerParameters, **env: str) -> StdioServerParameters:
    return params.model_copy(update={"env": {**(params.env or {}), **env}})


def images(result) -> list:
    return [block for block in result.content if block.type == "image"]


def inlined(result) -> set[str]:
    return {image["inline"] for image in result.structured_content["images"]}


def wire_size(result) -> int:
    """About what the result weighs on the wire: its JSON as the server writes it."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True))


async def four_images(params: StdioServerParameters, client_info: Implementation | None, mode: str = "auto"):
    async with Client(params, client_info=client_info, mode=mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "four foxes", "count": 4})
    assert not result.is_error, text_of(result)
    assert len(result.structured_content["images"]) == 4
    return result


@pytest.fixture
def noisy(upstream):
    """Incompressible 128 px images: 4 originals weigh about 262,000 bytes of base64, far over Claude Code's
    budget and well within today's default."""
    upstream.image_noise = True
    upstream.image_long_side = 128
    return upstream


@pytest.mark.parametrize("mode", MODES)
async def test_claude_code_gets_previews_within_its_token_limit(stdio_params, noisy, mode):
    result = await four_images(stdio_params, CLAUDE_CODE, mode)
    shown = images(result)
    assert len(shown) == 4 and inlined(result) == {"preview"}, text_of(result)
    assert sum(len(block.data) for block in shown) <= CLAUDE_CODE_INLINE_BUDGET
    # The whole result, counted as Claude Code may count it, stays a fifth under its limit.
    assert wire_size(result) / CHARS_PER_TOKEN <= 0.8 * CLAUDE_CODE_TOKENS


async def test_an_unknown_host_keeps_todays_defaults(stdio_params, noisy):
    result = await four_images(stdio_params, Implementation(name="some-agent", version="1"))
    shown = images(result)
    assert len(shown) == 4 and inlined(result) == {"original"}, text_of(result)
    assert CLAUDE_CODE_INLINE_BUDGET < sum(len(block.data) for block in shown) <= TODAY_BUDGET


@pytest.mark.parametrize("mode", MODES)
async def test_no_result_for_claude_desktop_reaches_1_mib(stdio_params, upstream, mode):
    upstream.image_noise = True
    upstream.image_long_side = 512  # 4 originals: over 4 MB of base64
    result = await four_images(stdio_params, CLAUDE_DESKTOP, mode)
    assert len(images(result)) == 4 and inlined(result) == {"preview"}, text_of(result)
    assert wire_size(result) < ONE_MIB


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ONLYSQ_MCP_INLINE_BUDGET": "300000"}, {"original"}),
        ({"ONLYSQ_MCP_IMAGE_DELIVERY": "link"}, {"none"}),
    ],
)
async def test_a_setting_the_user_set_overrides_the_host_default(stdio_params, noisy, env, expected):
    result = await four_images(with_env(stdio_params, **env), CLAUDE_CODE)
    assert inlined(result) == expected, text_of(result)


async def test_long_text_tools_declare_a_larger_result_to_claude_code(stdio_params, upstream):
    reply = "A long answer. " * 4_000  # 60,000 characters: over Claude Code's default 50,000
    upstream.chat_reply = reply
    async with Client(stdio_params, client_info=CLAUDE_CODE) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        result = await client.call_tool("chat", {"prompt": "tell me everything"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == reply
    declared = {name: (tool.meta or {}).get("anthropic/maxResultSizeChars") for name, tool in tools.items()}
    assert declared == {
        "chat": MAX_RESULT_SIZE_CHARS,
        "describe_image": MAX_RESULT_SIZE_CHARS,
        "list_models": MAX_RESULT_SIZE_CHARS,
        "generate_image": None,  # images count as tokens whatever a tool declares
    }
    assert len(reply) <= MAX_RESULT_SIZE_CHARS


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("claude-code", "Claude Code"),
        ("claude-ai", "Claude Desktop (and claude.ai)"),
        ("cursor-vscode", "Cursor"),
        ("Visual Studio Code", "VS Code"),
        ("Visual-Studio-Code", "VS Code"),
        (" Claude-Code ", "Claude Code"),
        ("claude", None),
        ("", None),
        (None, None),
    ],
)
def test_hosts_are_known_by_the_names_they_send(name, title):
    host = host_named(name)
    assert (host.title if host else None) == title


def test_only_settings_the_user_set_beat_the_host_default(make_settings):
    claude_code = host_named("claude-code")
    assert image_defaults(make_settings(), claude_code) == (ImageDelivery.PREVIEW, CLAUDE_CODE_INLINE_BUDGET)
    assert image_defaults(make_settings(), None) == (ImageDelivery.PREVIEW, TODAY_BUDGET)
    # Set to the very value of the default, it still counts as the user's choice.
    chosen = make_settings(ONLYSQ_MCP_INLINE_BUDGET=TODAY_BUDGET)
    assert image_defaults(chosen, claude_code) == (ImageDelivery.PREVIEW, TODAY_BUDGET)
    # An empty variable is "not set" (host config templates pass "" for blank fields).
    blank = make_settings(ONLYSQ_MCP_INLINE_BUDGET="", ONLYSQ_MCP_IMAGE_DELIVERY="")
    assert image_defaults(blank, claude_code) == (ImageDelivery.PREVIEW, CLAUDE_CODE_INLINE_BUDGET)
    # Cursor has no documented limit: the settings as they are.
    linked = make_settings(ONLYSQ_MCP_IMAGE_DELIVERY="link")
    assert image_defaults(linked, host_named("cursor-vscode")) == (ImageDelivery.LINK, TODAY_BUDGET)
