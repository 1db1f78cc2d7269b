"""Yandex AI Studio: image generation (`POST /v1/images/generations`), when a key and folder are set.

The wire format and the client are in `onlysq_mcp.yandex`; this module maps them onto `Provider`. Its
models are a fixed list: Yandex has no listing endpoint for them.
"""

from __future__ import annotations

from ..settings import Settings
from ..upstream import OnRetry
from ..yandex import UPSTREAM, YandexClient
from .base import ASPECT_RATIOS, Connect, ImageLimits, ModelEntry, Provider

YANDEX_IMAGE_MODELS: dict[str, str] = {
    "aliceai-image-art-3.0": "Alice AI Image Art 3.0: Yandex's current text-to-image model; returns JPEG.",
    "yandex-art": "YandexART: the earlier Yandex image model, being retired.",
}


class YandexProvider(Provider):
    name = "yandex"
    title = "Yandex"
    label = UPSTREAM
    offers = frozenset({"images"})
    image_limits = ImageLimits(max_prompt_chars=32_000, ratios=ASPECT_RATIOS, max_count=4, seed=False)
    # A full `art://<folder>/<model>` URI names any model of any folder: it cannot be listed beforehand.
    listed_only = False

    def __init__(self, client: YandexClient) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, connect: Connect) -> YandexProvider | None:
        if not (settings.yandex_configured and settings.yandex_folder_id):
            return None
        upstream = connect(
            UPSTREAM,
            settings.yandex_base_url,
            "Check YANDEX_API_KEY / YANDEX_IAM_TOKEN and that YANDEX_FOLDER_ID is the folder they belong to.",
        )
        client = YandexClient(
            upstream,
            settings.yandex_folder_id,
            api_key=settings.yandex_api_key.get_secret_value() if settings.yandex_api_key else None,
            iam_token=settings.yandex_iam_token.get_secret_value() if settings.yandex_iam_token else None,
        )
        return cls(client)

    @classmethod
    def claims(cls, model_id: str) -> bool:
        return model_id.startswith("art://") or model_id in YANDEX_IMAGE_MODELS

    @classmethod
    def not_configured(cls, model_id: str) -> str:
        return (
            f"`{model_id}` is a Yandex AI Studio model, and Yandex is not configured: set YANDEX_API_KEY "
            "(or YANDEX_IAM_TOKEN) and YANDEX_FOLDER_ID, or use an OnlySq model such as `flux`."
        )

    async def models(self) -> list[ModelEntry]:
        return self.fallback_models()

    def fallback_models(self) -> list[ModelEntry]:
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

    async def generate_image(
        self, model: str, prompt: str, ratio: str, *, seed: int | None = None, on_retry: OnRetry | None = None
    ) -> bytes:
        return await self.client.generate_image(model, prompt, ratio, on_retry=on_retry)
