"""OnlySq AI API: chat and vision (`POST /ai/v2`), images (`POST /ai/imagen`), models (`GET /ai/models`).

The wire format and the client are in `onlysq_mcp.onlysq`; this module maps them onto `Provider`.
"""

from __future__ import annotations

import json
from importlib import resources

from ..onlysq import UPSTREAM, ModelInfo, ModelsResponse, OnlySqClient
from ..settings import Settings, StreamMode
from ..upstream import OnRetry
from .base import (
    ASPECT_RATIOS,
    Connect,
    ImageLimits,
    Kind,
    ModelEntry,
)
from .openai_compatible import OpenAIChatProvider

# The documents state vision for the Gemini family only; the catalogue has no vision flag.
VISION_PREFIXES = ("gemini",)


class OnlySqProvider(OpenAIChatProvider):
    name = "onlysq"
    title = "OnlySq"
    label = UPSTREAM
    offers = frozenset({"chat", "vision", "images"})
    image_limits = ImageLimits(max_prompt_chars=32_000, ratios=ASPECT_RATIOS, max_count=4, seed=True)

    client: OnlySqClient

    def __init__(self, client: OnlySqClient, stream_mode: StreamMode) -> None:
        self.client = client
        self.stream_mode = stream_mode

    @classmethod
    def from_settings(cls, settings: Settings, connect: Connect) -> OnlySqProvider:
        upstream = connect(
            UPSTREAM, settings.onlysq_base_url, "Set ONLYSQ_API_KEY to a valid key (the public key is `openai`)."
        )
        client = OnlySqClient(
            upstream,
            settings.onlysq_api_key.get_secret_value(),
            stream_timeout=settings.onlysq_mcp_stream_timeout,
        )
        return cls(client, settings.onlysq_stream)

    async def models(self) -> list[ModelEntry]:
        return entries_from(await self.client.list_models())

    def fallback_models(self) -> list[ModelEntry]:
        return load_bundled()

    async def generate_image(
        self, model: str, prompt: str, ratio: str, *, seed: int | None = None, on_retry: OnRetry | None = None
    ) -> bytes:
        return await self.client.generate_image(model, prompt, ratio, seed=seed, on_retry=on_retry)


def entries_from(response: ModelsResponse) -> list[ModelEntry]:
    return [_entry(model_id, info) for model_id, info in response.models.items()]


def _entry(model_id: str, info: ModelInfo) -> ModelEntry:
    modality = (info.modality or "text").lower()
    kind: Kind = "image" if modality == "image" else "sound" if modality == "sound" else "chat"
    return ModelEntry(
        id=model_id,
        provider="onlysq",
        kind=kind,
        vision=kind == "chat" and model_id.lower().startswith(VISION_PREFIXES),
        name=info.name or model_id,
        description=info.description or "",
        owner=info.owner,
        status=info.status,
        streaming=info.can_stream,
        tools=info.can_tools,
        thinking=info.can_think,
    )


def load_bundled() -> list[ModelEntry]:
    """The catalogue shipped in the package (`data/models.json`, built from the OnlySq documentation)."""
    text = resources.files("onlysq_mcp").joinpath("data/models.json").read_text(encoding="utf-8")
    return entries_from(ModelsResponse.model_validate(json.loads(text)))
