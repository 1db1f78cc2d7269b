"""The providers of this server, in one list, and the registry that routes model ids to them.

Adding a provider: a module beside `onlysq.py` implementing `base.Provider`, its tests, its class in
`PROVIDERS` (and its name in `base.ProviderName`).
"""

from __future__ import annotations

from ..errors import ProviderNotConfigured
from ..settings import Settings
from .base import Capability, Connect, ModelEntry, ModelListing, Provider
from .onlysq import OnlySqProvider
from .yandex import YandexProvider

# In order of precedence: for a capability, the first configured provider offering it is the default.
PROVIDERS: tuple[type[Provider], ...] = (OnlySqProvider, YandexProvider)


class Registry:
    """The configured providers; routes a model id to the one that serves it."""

    def __init__(self, providers: list[Provider]) -> None:
        self._providers = providers

    @classmethod
    def from_settings(cls, settings: Settings, connect: Connect) -> Registry:
        built = (kind.from_settings(settings, connect) for kind in PROVIDERS)
        return cls([provider for provider in built if provider is not None])

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers)

    def route(self, capability: Capability, model_id: str) -> Provider:
        """The provider that claims `model_id`, else the first configured one offering `capability`.

        Raises `ProviderNotConfigured` when the provider claiming it has no settings, or none offers it.
        """
        for kind in PROVIDERS:
            if capability in kind.offers and kind.claims(model_id, capability):
                provider = self._configured(kind)
                if provider is None:
                    raise ProviderNotConfigured(kind.not_configured(model_id))
                return provider
        for provider in self._providers:
            if capability in provider.offers:
                return provider
        raise ProviderNotConfigured(f"No configured provider offers {capability}.")

    def _configured(self, kind: type[Provider]) -> Provider | None:
        return next((p for p in self._providers if type(p) is kind), None)

    async def catalogue_entries(self) -> ModelListing:
        """Every configured provider's models now; raises `UpstreamError` when one cannot list them."""
        entries: list[ModelEntry] = []
        skipped = 0
        for provider in self._providers:
            listing = await provider.models()
            entries += listing.entries
            skipped += listing.skipped
        return ModelListing(entries, skipped)

    def fallback_entries(self) -> list[ModelEntry]:
        """The models shipped with the server, for when the live catalogue cannot be fetched."""
        return [entry for provider in self._providers for entry in provider.fallback_models()]
