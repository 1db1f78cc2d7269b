"""Yandex AI Studio: chat (`POST /v1/chat/completions`) and image generation (`POST /v1/images/generations`),
when a key and folder are set.

The wire format and the client are in `onlysq_mcp.yandex` (sources named there); this module maps them onto
`Provider`. Its models are fixed lists: the chat models are YandexGPT and Alice AI LLM as Yandex's model list
names them (`yandex-cloud/docs`, `ru/ai-studio/concepts/generation/models.md`: `aliceai-llm`, `yandexgpt`,
`yandexgpt-lite`, each "OpenAI-compatible"); any other `gpt://<folder>/<model>/<branch>` URI is passed on.
"""

from __future__ import annotations

from ..settings import Settings, StreamMode
from ..upstream import OnRetry, Pacer
from ..yandex import UPSTREAM, YandexClient
from .base import (
    ASPECT_RATIOS,
    Capability,
    Connect,
    ImageLimits,
    Kind,
    ModelEntry,
    ModelListing,
)
from .openai_compatible import OpenAIChatProvider

YANDEX_CHAT_MODELS: dict[str, str] = {
    "aliceai-llm": "Alice AI LLM: Yandex's newest chat model (32K-token context).",
    "yandexgpt": "YandexGPT Pro: Yandex's large chat model (32K-token context); `yandexgpt/rc` for the next release.",
    "yandexgpt-lite": "YandexGPT Lite: the faster, cheaper YandexGPT (32K-token context).",
}
YANDEX_IMAGE_MODELS: dict[str, str] = {
    "aliceai-image-art-3.0": "Alice AI Image Art 3.0: Yandex's current text-to-image model; returns JPEG.",
}
# Release branches of a chat model (models.md, "model lifecycle"): `yandexgpt/rc` is a model id too.
CHAT_BRANCHES = frozenset({"latest", "rc", "deprecated"})


class YandexProvider(OpenAIChatProvider):
    name = "yandex"
    title = "Yandex"
    label = UPSTREAM
    offers = frozenset({"chat", "images"})
    # Alice AI ART refuses longer prompts live: "Prompt positive size 702 exceeds limit (500)" (seen by several
    # public clients; the API reference's 32k is the generic limit). No seed: see `YandexClient.generate_image`.
    image_limits = ImageLimits(max_prompt_chars=500, ratios=ASPECT_RATIOS, max_count=4, seed=False)
    # A full `art://` or `gpt://` URI names any model of any folder: it cannot be listed beforehand.
    listed_only = False

    client: YandexClient

    def __init__(self, client: YandexClient, stream_mode: StreamMode) -> None:
        self.client = client
        self.stream_mode = stream_mode

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return settings.yandex_configured

    @classmethod
    def from_settings(cls, settings: Settings, connect: Connect) -> YandexProvider | None:
        if not (cls.configured(settings) and settings.yandex_folder_id):
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
            stream_timeout=settings.onlysq_mcp_stream_timeout,
        )
        return cls(client, settings.onlysq_stream)

    @classmethod
    def claims(cls, model_id: str, capability: Capability) -> bool:
        if capability == "chat":
            name, _, branch = model_id.partition("/")
            return model_id.startswith("gpt://") or (
                name in YANDEX_CHAT_MODELS and (not branch or branch in CHAT_BRANCHES)
            )
        # `aliceai-image-art-3.0/latest` is how many public clients write it, and it works live.
        return model_id.startswith("art://") or model_id.removesuffix("/latest") in YANDEX_IMAGE_MODELS

    @classmethod
    def not_configured(cls, model_id: str) -> str:
        return (
            f"`{model_id}` is a Yandex AI Studio model, and Yandex is not configured: set YANDEX_API_KEY "
            "(or YANDEX_IAM_TOKEN) and YANDEX_FOLDER_ID, or pick another model from `list_models`."
        )

    async def models(self) -> ModelListing:
        return ModelListing(self.fallback_models())

    def fallback_models(self) -> list[ModelEntry]:
        return [_entry(model_id, text, "chat") for model_id, text in YANDEX_CHAT_MODELS.items()] + [
            _entry(model_id, text, "image") for model_id, text in YANDEX_IMAGE_MODELS.items()
        ]

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
        return await self.client.generate_image(model, prompt, ratio, on_retry=on_retry, pacer=pacer)


def _entry(model_id: str, description: str, kind: Kind) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        provider="yandex",
        kind=kind,
        vision=False,
        name=model_id,
        description=description,
        owner="yandex",
        status="work",
        streaming=kind == "chat",
    )
