"""The provider interface: the registry routes model ids, and a provider maps neutral turns to its wire format."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from onlysq_mcp.errors import ProviderNotConfigured
from onlysq_mcp.openai_chat import ChatResult, Usage
from onlysq_mcp.providers.base import InlineImage, ProviderName, Turn
from onlysq_mcp.providers.onlysq import OnlySqProvider
from onlysq_mcp.providers.registry import PROVIDERS, Registry
from onlysq_mcp.providers.yandex import YandexProvider
from onlysq_mcp.settings import StreamMode

pytestmark = pytest.mark.anyio


def no_upstream(*args: Any) -> Any:
    return None  # these tests send nothing


def test_the_provider_field_names_exactly_the_registered_providers():
    assert get_args(ProviderName) == tuple(kind.name for kind in PROVIDERS)
    assert len({kind.name for kind in PROVIDERS}) == len(PROVIDERS)
    for kind in PROVIDERS:
        assert ("images" in kind.offers) == (kind.image_limits is not None), kind.name


def test_models_are_routed_by_claim_then_to_the_default(make_settings):
    registry = Registry.from_settings(make_settings(), no_upstream)
    assert [type(p) for p in registry.providers] == [OnlySqProvider, YandexProvider]
    assert isinstance(registry.route("images", "aliceai-image-art-3.0"), YandexProvider)
    assert isinstance(registry.route("images", "art://folder/some-model"), YandexProvider)
    assert isinstance(registry.route("images", "flux"), OnlySqProvider)
    # Yandex offers no vision: its ids are not its own for that.
    assert isinstance(registry.route("vision", "art://folder/some-model"), OnlySqProvider)
    for chat_model in ("yandexgpt", "aliceai-llm/rc", "gpt://folder/qwen3-235b-a22b-fp8/latest"):
        assert isinstance(registry.route("chat", chat_model), YandexProvider), chat_model
    # An id is Yandex's only for what it names: an image model is no chat model, nor the reverse.
    for other in ("art://folder/some-model", "yandexgpt/unknown-branch", "gpt-4o-mini", "meta/llama"):
        assert isinstance(registry.route("chat", other), OnlySqProvider), other
    assert isinstance(registry.route("images", "yandexgpt"), OnlySqProvider)


def test_a_claimed_model_of_an_unconfigured_provider_says_what_to_set(make_settings):
    registry = Registry.from_settings(make_settings(yandex=False), no_upstream)
    assert [type(p) for p in registry.providers] == [OnlySqProvider]
    with pytest.raises(ProviderNotConfigured, match="set YANDEX_API_KEY"):
        registry.route("images", "aliceai-image-art-3.0/latest")
    with pytest.raises(ProviderNotConfigured, match="No configured provider offers chat"):
        Registry([]).route("chat", "gpt-4o-mini")


async def test_the_catalogue_has_every_configured_providers_models(make_settings):
    with_yandex = Registry.from_settings(make_settings(), no_upstream)
    without = Registry.from_settings(make_settings(yandex=False), no_upstream)
    assert {e.provider for e in with_yandex.fallback_entries()} == {"onlysq", "yandex"}
    assert {e.provider for e in without.fallback_entries()} == {"onlysq"}
    yandex = with_yandex.providers[1]
    assert {(e.id, e.kind) for e in (await yandex.models()).entries} == {
        ("aliceai-llm", "chat"),
        ("yandexgpt", "chat"),
        ("yandexgpt-lite", "chat"),
        ("aliceai-image-art-3.0", "image"),
    }


class RecordingClient:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def chat(self, model: str, messages: list[Any], **options: Any) -> ChatResult:
        self.messages = [m.model_dump(exclude_none=True) for m in messages]
        return ChatResult(model=model, reply="ok", finish_reason="stop", usage=Usage(total_tokens=3, extra=True))


async def test_onlysq_sends_neutral_turns_and_an_image_in_its_own_format():
    client = RecordingClient()
    provider = OnlySqProvider(client, StreamMode.AUTO)  # type: ignore[arg-type]
    turns = [Turn("system", "be brief"), Turn("user", "what is this?")]
    reply = await provider.chat("gemini", turns, image=InlineImage("image/png", b"\x89PNG"))
    assert client.messages == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
            ],
        },
    ]
    assert reply.usage == {"total_tokens": 3}  # counts only


def test_a_request_beyond_a_providers_image_limits_is_named():
    from onlysq_mcp.image_tools import beyond_limits
    from onlysq_mcp.providers.base import ImageLimits

    tight = ImageLimits(max_prompt_chars=10, ratios=frozenset({"1:1", "16:9"}), max_count=2, seed=False)
    assert beyond_limits(tight, "a cat", "16:9", 2) is None
    assert beyond_limits(tight, "a" * 11, "1:1", 1) == (
        "`prompt` is 11 characters, at most 10 are allowed: shorten it to 10 characters or fewer and call again"
    )
    assert beyond_limits(tight, "a cat", "4:3", 1) == "`aspect_ratio` must be one of 16:9, 1:1"
    assert beyond_limits(tight, "a cat", "1:1", 3) == "`count` must be at most 2"
    # Every ratio and count the tool's schema allows, today's providers take; prompt limits are their own
    # (Yandex: 500), and the tool's description states each.
    for kind in PROVIDERS:
        limits = kind.image_limits
        assert limits is None or beyond_limits(limits, "x" * limits.max_prompt_chars, "9:21", 4) is None
