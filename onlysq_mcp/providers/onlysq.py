"""OnlySq AI API: chat and vision (`POST /ai/v2`), images (`POST /ai/imagen`), models (`GET /ai/models`).

The wire format and the client are in `onlysq_mcp.onlysq`; this module maps them onto `Provider`.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from pydantic import ValidationError

from ..onlysq import UPSTREAM, ModelInfo, ModelsResponse, OnlySqClient
from ..settings import Settings, StreamMode
from ..upstream import OnRetry, Pacer
from .base import (
    ASPECT_RATIOS,
    Connect,
    ImageLimits,
    Kind,
    ModelEntry,
    ModelListing,
)
from .openai_compatible import OpenAIChatProvider

logger = logging.getLogger(__name__)

# The documents state vision for the Gemini family only; the catalogue has no vision flag.
VISION_PREFIXES = ("gemini",)
MODALITIES: dict[str, Kind] = {
    "text": "chat",
    "image": "image",
    "images": "image",  # the docs' model table writes "Images"
    "sound": "sound",
}
# Embedding models are listed among the text models (the docs list `e5-mistral-7b`, "optimized for embeddings",
# with modality Text: scripts/onlysq_models_page.txt); how the live list marks them is not established, so any
# of these markers counts.
EMBEDDING_FIELDS = ("type", "task", "kind", "category", "mode", "endpoint", "endpoints", "capabilities", "tags")
EMBEDDING_FLAGS = ("can-embed", "embedding", "embeddings", "is-embedding")
# Ids are echoed in tool output and logs: anything longer is not a model id.
MAX_ID_CHARS = 200


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

    async def models(self) -> ModelListing:
        listing = entries_from(await self.client.list_models())
        if listing.skipped:
            logger.warning("OnlySq's model list: %d entries could not be read and are left out", listing.skipped)
        return listing

    def fallback_models(self) -> list[ModelEntry]:
        return load_bundled()

    async def generate_image(
        self,
        model: str,
        prompt: str,
        ratio: str,
        *,
        seed: int | None = None,
        on_retry: OnRetry | None = None,
        pacer: Pacer | None = None,
    ) -> bytes:
        return await self.client.generate_image(model, prompt, ratio, seed=seed, on_retry=on_retry, pacer=pacer)


def entries_from(response: ModelsResponse) -> ModelListing:
    """The entries that can be read; one that cannot (a `null`, a list where text belongs, an unknown
    modality) is left out and counted, the others kept."""
    entries: list[ModelEntry] = []
    for model_id, raw in response.models.items():
        entry = _entry(model_id, raw)
        if entry is None:
            # The id only, never the entry: it is the upstream's text, possibly large.
            logger.debug("OnlySq's model list: entry %.80r left out", model_id)
        else:
            entries.append(entry)
    return ModelListing(entries, skipped=len(response.models) - len(entries))


def _entry(model_id: str, raw: Any) -> ModelEntry | None:
    if not model_id.strip() or len(model_id) > MAX_ID_CHARS:
        return None
    try:
        info = ModelInfo.model_validate(raw)
    except ValidationError:
        return None
    kind = _kind(model_id, info)
    if kind is None:
        return None
    return ModelEntry(
        id=model_id,
        provider="onlysq",
        kind=kind,
        vision=kind == "chat" and model_id.lower().startswith(VISION_PREFIXES),
        name=info.name or model_id,
        description=info.description or "",
        owner=info.owner,
        status=info.status,
        tier=info.tier,
        streaming=info.can_stream,
        tools=info.can_tools,
        thinking=info.can_think,
    )


def _kind(model_id: str, info: ModelInfo) -> Kind | None:
    """The entry's kind, or None for a modality this server does not know (rather than guess it is chat)."""
    modality = (info.modality or "text").strip().lower()
    if "embed" in modality or (modality == "text" and _is_embedding(model_id, info)):
        return "embedding"
    return MODALITIES.get(modality)


def _is_embedding(model_id: str, info: ModelInfo) -> bool:
    lowered = model_id.lower()
    # `e5-`: the E5 family (e5-mistral-7b in the docs) makes embeddings; `embed`: text-embedding-3-small, ...
    if lowered.startswith("e5-") or "embed" in lowered:
        return True
    extra = info.model_extra or {}
    if any(extra.get(flag) is True for flag in EMBEDDING_FLAGS):
        return True
    return any(_mentions_embedding(extra.get(field)) for field in EMBEDDING_FIELDS)


def _mentions_embedding(value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(item, str) and "embed" in item.lower() for item in values)


def load_bundled() -> list[ModelEntry]:
    """The catalogue shipped in the package (`data/models.json`, built from the OnlySq documentation)."""
    text = resources.files("onlysq_mcp").joinpath("data/models.json").read_text(encoding="utf-8")
    return entries_from(ModelsResponse.model_validate(json.loads(text))).entries
