"""The model catalogue: what the upstreams offer, cached, with a fallback when OnlySq cannot be reached.

Sources, best first: the live `GET /ai/models` (reused for `onlysq_mcp_models_cache_ttl` seconds), the
last good live copy, and the catalogue bundled in the package (`data/models.json`, built from the
OnlySq documentation). Yandex image models are added when Yandex is configured.
"""

from __future__ import annotations

import difflib
import json
import time
from importlib import resources
from typing import Literal

import anyio
from pydantic import BaseModel, Field

from .errors import UpstreamError
from .onlysq import ModelInfo, ModelsResponse, OnlySqClient
from .upstream import OnRetry

Kind = Literal["chat", "image", "sound"]
KindFilter = Literal["chat", "image", "vision", "all"]

# The documents state vision for the Gemini family only; the catalogue has no vision flag.
VISION_PREFIXES = ("gemini",)

YANDEX_IMAGE_MODELS: dict[str, str] = {
    "aliceai-image-art-3.0": "Alice AI Image Art 3.0: Yandex's current text-to-image model; returns JPEG.",
    "yandex-art": "YandexART: the earlier Yandex image model, being retired.",
}


class ModelEntry(BaseModel):
    id: str = Field(description="Model id to pass as `model` to the tools.")
    provider: Literal["onlysq", "yandex"] = Field(description="Which upstream serves it.")
    kind: Kind = Field(description="`chat` (text), `image` (generation) or `sound`.")
    vision: bool = Field(description="Accepts images in chat, so `describe_image` can use it.")
    name: str
    description: str
    owner: str | None = Field(None, description="Who made the model.")
    status: str | None = Field(None, description="`work` (stable) or `beta`, as the upstream reports.")
    streaming: bool | None = None
    tools: bool | None = None
    thinking: bool | None = None


class Catalogue(BaseModel):
    source: Literal["live", "cached", "bundled"] = Field(
        description="`live` from the upstream now, `cached` last good live copy, `bundled` shipped with the server."
    )
    note: str | None = Field(None, description="Why the catalogue is not live, when it is not.")
    models: list[ModelEntry]

    def find(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def select(self, kind: KindFilter = "all", search: str | None = None) -> list[ModelEntry]:
        needle = (search or "").strip().lower()
        chosen = []
        for model in self.models:
            if not is_kind(model, kind):
                continue
            text = " ".join(filter(None, [model.id, model.name, model.description, model.owner])).lower()
            if needle and needle not in text:
                continue
            chosen.append(model)
        return chosen

    def closest(self, model_id: str, kind: KindFilter) -> list[str]:
        ids = [m.id for m in self.select(kind)]
        return difflib.get_close_matches(model_id, ids, n=3, cutoff=0.5)


def is_kind(model: ModelEntry, kind: KindFilter) -> bool:
    if kind == "vision":
        return model.vision
    return kind == "all" or model.kind == kind


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


def yandex_entries() -> list[ModelEntry]:
    return [
        ModelEntry(
            id=model_id,
            provider="yandex",
            kind="image",
            vision=False,
            name=model_id,
            description=text,
            owner="yandex",
            status="work",
            streaming=False,
        )
        for model_id, text in YANDEX_IMAGE_MODELS.items()
    ]


def load_bundled() -> list[ModelEntry]:
    text = resources.files("onlysq_mcp").joinpath("data/models.json").read_text(encoding="utf-8")
    return entries_from(ModelsResponse.model_validate(json.loads(text)))


class CatalogueCache:
    """Serves the catalogue from memory while it is fresh; one fetch at a time refreshes it."""

    def __init__(self, client: OnlySqClient, ttl: float, *, include_yandex: bool) -> None:
        self._client = client
        self._ttl = ttl
        self._extra = yandex_entries() if include_yandex else []
        self._live: Catalogue | None = None
        self._fetched_at = 0.0
        self._lock = anyio.Lock()

    def _fresh(self) -> Catalogue | None:
        if self._live is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._live
        return None

    async def get(self, *, on_retry: OnRetry | None = None) -> Catalogue:
        if (fresh := self._fresh()) is not None:
            return fresh
        async with self._lock:
            # Another caller may have refreshed it while this one waited for the lock.
            if (fresh := self._fresh()) is not None:
                return fresh
            try:
                response = await self._client.list_models(on_retry=on_retry)
            except UpstreamError as exc:
                return self._fallback(str(exc))
            self._live = Catalogue(source="live", models=entries_from(response) + self._extra)
            self._fetched_at = time.monotonic()
            return self._live

    def _fallback(self, reason: str) -> Catalogue:
        if self._live is not None:
            age = time.monotonic() - self._fetched_at
            note = f"The live catalogue could not be fetched ({reason}); showing the copy from {age:.0f}s ago."
            return self._live.model_copy(update={"source": "cached", "note": note})
        note = (
            f"The live catalogue could not be fetched ({reason}); showing the catalogue bundled with this "
            "server, which may list models the service no longer offers."
        )
        return Catalogue(source="bundled", note=note, models=load_bundled() + self._extra)
