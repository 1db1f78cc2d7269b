"""Client of Yandex AI Studio's OpenAI-compatible API: chat (`POST /v1/chat/completions`) and image
generation (`POST /v1/images/generations`, synchronous).

Wire formats per Yandex AI Studio's documentation (the `yandex-cloud/docs` repository):
- images, the API reference of `POST /v1/images/generations`: the model is the URI `art://<folder>/<model>`
  and `size` is an aspect ratio such as `16x9`;
- chat, `en/ai-studio/concepts/openai-compatibility.md`: OpenAI's chat completions (`temperature`,
  `max_tokens`, `stream` supported), the model the URI `gpt://<folder>/<model>/<branch>` (`latest`, `rc`,
  `deprecated`; `concepts/generation/models.md`), the same `Authorization` and `OpenAI-Project: <folder>`
  headers as images, and "all services are available at `https://ai.api.cloud.yandex.net/v1`", so both
  use YANDEX_BASE_URL (its code examples name the host `llm.api.cloud.yandex.net` instead).
Nothing here knows about MCP.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .openai_chat import ChatReader, ChatResult, Message, OnDelta, chat_request
from .upstream import OnRetry, Pacer, Upstream

UPSTREAM = "Yandex AI Studio"


class _ImageData(BaseModel):
    model_config = ConfigDict(extra="allow")
    b64_json: str


class ImagesResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    data: list[_ImageData] = Field(min_length=1)
    size: str | None = None


def model_uri(model: str, folder_id: str) -> str:
    """`aliceai-image-art-3.0` → `art://<folder>/aliceai-image-art-3.0`; a full `art://` URI is kept."""
    return model if model.startswith("art://") else f"art://{folder_id}/{model}"


def chat_model_uri(model: str, folder_id: str) -> str:
    """`yandexgpt` → `gpt://<folder>/yandexgpt/latest`, `yandexgpt/rc` → `gpt://<folder>/yandexgpt/rc`;
    a full `gpt://` URI is kept."""
    if model.startswith("gpt://"):
        return model
    return f"gpt://{folder_id}/{model}" if "/" in model else f"gpt://{folder_id}/{model}/latest"


class YandexClient:
    def __init__(
        self,
        upstream: Upstream,
        folder_id: str,
        *,
        api_key: str | None,
        iam_token: str | None,
        stream_timeout: float,
    ) -> None:
        self._upstream = upstream
        self._folder_id = folder_id
        self._reader = ChatReader(upstream, stream_timeout)
        authorization = f"Api-Key {api_key}" if api_key else f"Bearer {iam_token}"
        self._headers = {"Authorization": authorization, "OpenAI-Project": folder_id}

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
        uri = chat_model_uri(model, self._folder_id)
        body = {"model": uri, **chat_request(messages, stream=stream, temperature=temperature, max_tokens=max_tokens)}
        return await self._reader.ask(
            model,
            "/v1/chat/completions",
            headers=self._headers,
            body=body,
            stream=stream,
            on_delta=on_delta,
            on_retry=on_retry,
        )

    async def generate_image(
        self, model: str, prompt: str, ratio: str, *, on_retry: OnRetry | None = None, pacer: Pacer | None = None
    ) -> bytes:
        """One image; `ratio` as OnlySq writes it (`16:9`), sent as Yandex's `16x9`.

        No seed: the reference of this endpoint lists none. `generationOptions.seed` belongs to the older
        asynchronous API (`ai-studio/image-generation/api-ref/ImageGenerationAsync/generate.md`), whose body
        this endpoint does not take and which served only the retired YandexART.
        """
        payload = {"model": model_uri(model, self._folder_id), "prompt": prompt, "size": ratio.replace(":", "x")}
        response = await self._upstream.request(
            "POST", "/v1/images/generations", headers=self._headers, json_body=payload, on_retry=on_retry, pacer=pacer
        )
        images = self._upstream.parse(response, ImagesResponse, "data[0].b64_json")
        del response  # the raw body is as large as the base64 text: free it before the decoded copy is made
        return self._upstream.decode_base64(images.data[0].b64_json)
