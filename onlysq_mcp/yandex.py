"""Client of Yandex AI Studio image generation (`POST /v1/images/generations`, OpenAI-style, synchronous).

Wire format per Yandex AI Studio's API reference for `POST /v1/images/generations` (yandex.cloud/docs,
ai-studio, OpenAI-compatible image generation): the model is the URI `art://<folder>/<model>` and `size` is
an aspect ratio such as `16x9`. Nothing here knows about MCP.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .upstream import OnRetry, Upstream

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


class YandexClient:
    def __init__(self, upstream: Upstream, folder_id: str, *, api_key: str | None, iam_token: str | None) -> None:
        self._upstream = upstream
        self._folder_id = folder_id
        authorization = f"Api-Key {api_key}" if api_key else f"Bearer {iam_token}"
        self._headers = {"Authorization": authorization, "OpenAI-Project": folder_id}

    async def generate_image(self, model: str, prompt: str, ratio: str, *, on_retry: OnRetry | None = None) -> bytes:
        """One image; `ratio` as OnlySq writes it (`16:9`), sent as Yandex's `16x9`."""
        payload = {"model": model_uri(model, self._folder_id), "prompt": prompt, "size": ratio.replace(":", "x")}
        response = await self._upstream.request(
            "POST", "/v1/images/generations", headers=self._headers, json_body=payload, on_retry=on_retry
        )
        images = self._upstream.parse(response, ImagesResponse, "data[0].b64_json")
        del response  # the raw body is as large as the base64 text: free it before the decoded copy is made
        return self._upstream.decode_base64(images.data[0].b64_json)
