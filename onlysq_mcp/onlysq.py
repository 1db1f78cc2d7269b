"""Client of the OnlySq AI API: chat (`POST /ai/v2`), images (`POST /ai/imagen`), models (`GET /ai/models`).

Wire formats follow the OnlySq documentation (docs.onlysq.ru: API2.0, ImaGen, the model list; the model page
is kept in `scripts/onlysq_models_page.txt`) and public clients of the live service; nothing here knows
about MCP.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .openai_chat import ChatReader, ChatResult, Message, OnDelta, chat_request
from .upstream import OnRetry, Pacer, Upstream

UPSTREAM = "OnlySq"


# --- wire formats (chat messages and answers: `openai_chat`) ------------------------------------


class ModelInfo(BaseModel):
    """One entry of `GET /ai/models`; every field optional because the live catalogue varies.

    Validated entry by entry (`ModelsResponse.models` holds them raw), so one odd entry costs only itself.
    The docs' model table (seed `002`, `scripts/onlysq_models_page.txt`) gives ids, descriptions and
    modality only; `status` (`work`/`beta`), `tier`, `owner` and the `can-*` flags are known from public
    clients of the live API, which read them from an entry like `tests/recorded/onlysq_models.json` (its
    sources: `tests/recorded/README.md`). No document states them, hence no field is required.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str | None = None
    description: str | None = None
    modality: str | None = None
    status: str | None = None
    owner: str | None = None
    tier: int | None = None
    can_stream: bool | None = Field(None, alias="can-stream")
    can_tools: bool | None = Field(None, alias="can-tools")
    can_think: bool | None = Field(None, alias="can-think")


class ModelsResponse(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    api_version: Any = Field(None, alias="api-version")
    # Raw: each entry becomes a `ModelInfo` on its own (`providers.onlysq.entries_from`).
    models: dict[str, Any]


class ImagenResponse(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model: str | None = None
    files: list[str] = Field(min_length=1)
    elapsed_time: float | None = Field(None, alias="elapsed-time")


# --- client -------------------------------------------------------------------------------------


class OnlySqClient:
    def __init__(self, upstream: Upstream, api_key: str, *, stream_timeout: float) -> None:
        self._upstream = upstream
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._reader = ChatReader(upstream, stream_timeout)

    async def chat(
        self,
        model: str,
        messages: list[Message],
        *,
        stream: bool,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
        on_retry: OnRetry | None = None,
    ) -> ChatResult:
        """One chat completion; when `stream`, `on_delta` sees each piece of text as it arrives."""
        request = chat_request(messages, stream=stream, temperature=temperature, max_tokens=max_tokens)
        return await self._reader.ask(
            model,
            "/ai/v2",
            headers=self._headers,
            body={"model": model, "request": request},
            stream=stream,
            on_delta=on_delta,
            on_retry=on_retry,
        )

    async def list_models(self) -> ModelsResponse:
        # No retries: the catalogue has fallbacks, and tool calls wait for it.
        response = await self._upstream.request("GET", "/ai/models", retry=False)
        return self._upstream.parse(response, ModelsResponse, "models")

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
        """One image per request, as the current ImaGen revision returns; bytes exactly as sent."""
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "ratio": ratio}
        if seed is not None:
            # In no ImaGen revision and sent by no public client: passed on as is, possibly ignored.
            payload["seed"] = seed
        response = await self._upstream.request(
            "POST", "/ai/imagen", headers=self._headers, json_body=payload, on_retry=on_retry, pacer=pacer
        )
        imagen = self._upstream.parse(response, ImagenResponse, "files")
        del response  # the raw body is as large as the base64 text: free it before the decoded copy is made
        return self._upstream.decode_base64(imagen.files[0])
