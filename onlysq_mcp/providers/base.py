"""What a provider is: what it offers, its models, its limits, which model ids it claims, and its calls.

Nothing here knows about MCP: a provider takes neutral turns and images, and returns neutral results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, Field, HttpUrl

from ..settings import Settings
from ..upstream import OnRetry, Pacer, Upstream

# The `provider` field of the tools' output. A literal rather than `str` so that the schema lists the
# choices; `tests/test_providers.py` checks it names exactly the providers of the registry.
ProviderName = Literal["onlysq", "yandex"]
Capability = Literal["chat", "vision", "images"]
# `embedding`: a text model that makes vectors, not replies (the docs name `e5-mistral-7b`): never offered as chat.
Kind = Literal["chat", "image", "sound", "embedding"]
Role = Literal["system", "user", "assistant"]
OnDelta = Callable[[str], Awaitable[None]]
# Statuses of models the service offers now: the live /ai/models list says `work` or `beta`, and public
# clients of it keep `work` only. Any other value, whatever the service uses for a model that is down, hides it.
OFFERED_STATUSES = frozenset({"work", "beta"})
ASPECT_RATIOS = frozenset({"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"})


class ModelEntry(BaseModel):
    id: str = Field(description="Model id to pass as `model` to the tools.")
    provider: ProviderName = Field(description="Which upstream serves it.")
    kind: Kind = Field(
        description="`chat` (text), `image` (generation), `sound`, or `embedding` (text to vectors: not for `chat`)."
    )
    vision: bool = Field(description="Accepts images in chat, so `describe_image` can use it.")
    name: str
    description: str
    owner: str | None = Field(None, description="Who made the model.")
    status: str | None = Field(None, description="`work` (stable) or `beta`, as the upstream reports.")
    tier: int | None = Field(
        None, description="Access tier the upstream reports; a key of a lower tier may be refused this model."
    )
    streaming: bool | None = None
    tools: bool | None = None
    thinking: bool | None = None

    @property
    def offered(self) -> bool:
        """Whether the upstream offers it now: no status (a bundled entry), `work` or `beta`."""
        return self.status is None or self.status.strip().lower() in OFFERED_STATUSES


@dataclass(frozen=True)
class ModelListing:
    """A provider's live models, and how many entries of its answer could not be read (and were left out)."""

    entries: list[ModelEntry]
    skipped: int = 0


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation, whatever the upstream's message format."""

    role: Role
    text: str


@dataclass(frozen=True)
class InlineImage:
    """An image sent along with the newest turn (for vision)."""

    mime: str
    data: bytes


@dataclass(frozen=True)
class ChatReply:
    model: str
    reply: str
    finish_reason: str
    # Token counts the upstream reported: prompt_tokens, completion_tokens, total_tokens.
    usage: dict[str, int] = field(default_factory=dict)
    # Said when the reply may not be all of it.
    note: str | None = None


@dataclass(frozen=True)
class ImageLimits:
    """What one image request may ask of a provider."""

    max_prompt_chars: int
    ratios: frozenset[str]
    max_count: int
    # Whether a seed is sent at all; the provider may still ignore it (OnlySq documents none).
    seed: bool


class Connect(Protocol):
    """Makes the `Upstream` (retries, limits, redaction) a provider sends its requests through."""

    def __call__(self, name: str, base_url: HttpUrl, auth_hint: str) -> Upstream: ...


class Provider(ABC):
    """One upstream. Subclasses set the class attributes and implement what they offer."""

    name: ClassVar[ProviderName]
    # How messages to the caller name it, e.g. "Yandex's image API".
    title: ClassVar[str]
    # How its errors name it (`UpstreamError.upstream`).
    label: ClassVar[str]
    offers: ClassVar[frozenset[Capability]]
    image_limits: ClassVar[ImageLimits | None] = None
    # Whether its model ids must be in the live catalogue before a call is sent.
    listed_only: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, connect: Connect) -> Provider | None:
        """The provider for these settings, or None when it is not configured."""

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        """Whether these settings configure it: `from_settings` then builds it (the start-up line names these)."""
        return True

    @classmethod
    def claims(cls, model_id: str, capability: Capability) -> bool:
        """Whether `model_id` is this provider's for `capability` whatever the default; ids nobody claims go
        to the default."""
        return False

    @classmethod
    def not_configured(cls, model_id: str) -> str:
        """Why a model it claims cannot be used without its settings, and what to set."""
        return f"`{model_id}` belongs to {cls.title}, which is not configured."

    @abstractmethod
    async def models(self) -> ModelListing:
        """Its models now, hidden ones (status) included; raises `UpstreamError` when they cannot be listed."""

    def fallback_models(self) -> list[ModelEntry]:
        """Its models when `models()` fails: a list shipped with the server."""
        return []

    async def chat(
        self,
        model: str,
        turns: list[Turn],
        *,
        image: InlineImage | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
        on_retry: OnRetry | None = None,
    ) -> ChatReply:
        """One reply; `image` goes with the last turn; `on_delta` sees each piece of a streamed reply."""
        raise NotImplementedError(f"{self.title} offers no chat")

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
        """One image, as the upstream sent it; `seed` only where `image_limits.seed`; each attempt paced by `pacer`."""
        raise NotImplementedError(f"{self.title} offers no image generation")
