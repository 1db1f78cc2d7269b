"""The model catalogue: what the providers offer, cached, with a fallback when a live list cannot be had.

Sources, best first: the providers' live lists (reused for `onlysq_mcp_models_cache_ttl` seconds), the
last good live copy, and the lists the providers ship with the server (`Provider.fallback_models`). A live
list is taken entry by entry: entries that cannot be read are left out, models whose status says they are
not offered are hidden, and a kind the live list has no entries of comes from the bundled list.
"""

from __future__ import annotations

import difflib
import logging
import time
from typing import Literal

import anyio
import anyio.abc
from pydantic import BaseModel, Field

from .errors import UpstreamError
from .providers.base import Kind, ModelEntry, ModelListing
from .providers.registry import Registry

logger = logging.getLogger(__name__)

KindFilter = Literal["chat", "image", "vision", "all"]

# After a failed fetch, the fallback is served for this long before the next try.
FAILURE_TTL = 30.0
# The background refresh never runs more often than this, however short the cache's lifetime.
MIN_REFRESH = 1.0
# Upstream connections a fetch holds at most: one fetch at a time (`_join`), one provider after another.
# The connection pool has this much room beyond ONLYSQ_MCP_MAX_CONCURRENCY, so that a burst of calls on a
# fresh server never waits behind the background fetch, which may take ONLYSQ_MCP_MODELS_TIMEOUT.
FETCH_CONNECTIONS = 1


class Catalogue(BaseModel):
    source: Literal["live", "cached", "bundled"] = Field(
        description="`live` from the upstream now, `cached` last good live copy, `bundled` shipped with the server."
    )
    note: str | None = Field(
        None, description="Why the catalogue is not live or not complete: fallbacks, unreadable or hidden entries."
    )
    models: list[ModelEntry]
    # Listed live with a status other than work/beta: not shown, but sent on when a caller names one, since
    # what such a status means is the upstream's to say.
    hidden: frozenset[str] = Field(frozenset(), exclude=True)
    # Kinds the live list had no entries of, shown from the bundled list instead.
    bundled_kinds: frozenset[Kind] = Field(frozenset(), exclude=True)

    @classmethod
    def from_live(cls, listing: ModelListing, bundled: list[ModelEntry]) -> Catalogue:
        """The live entries that are offered, plus the bundled entries of each provider's kinds it lacks."""
        present = {(m.provider, m.kind) for m in listing.entries}
        borrowed = [m for m in bundled if (m.provider, m.kind) not in present]
        hidden = frozenset(m.id for m in listing.entries if not m.offered)
        bundled_kinds = frozenset(m.kind for m in borrowed)
        notes = []
        if listing.skipped:
            notes.append(f"Entries of the live list left out because they could not be read: {listing.skipped}.")
        if hidden:
            notes.append(f"Models hidden because the live list gives a status other than work or beta: {len(hidden)}.")
        if bundled_kinds:
            notes.append(
                f"The live list has no {' or '.join(sorted(bundled_kinds))} models; those shown come from the "
                "catalogue bundled with this server, which may list models the service no longer offers."
            )
        return cls(
            source="live",
            note=" ".join(notes) or None,
            models=[m for m in listing.entries if m.offered] + borrowed,
            hidden=hidden,
            bundled_kinds=bundled_kinds,
        )

    def vouches_for(self, kind: KindFilter) -> bool:
        """Whether a model it does not list for `kind` is surely not offered: only a live list of that kind
        says so; a cached or bundled one may be older than the model."""
        if self.source != "live":
            return False
        if kind == "all":
            return not self.bundled_kinds
        return ("chat" if kind == "vision" else kind) not in self.bundled_kinds

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


class _Fetch:
    """One fetch of the live catalogue, shared by every caller that arrives while it runs."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Catalogue | None = None


class CatalogueCache:
    """Serves the catalogue from memory while it is fresh; one fetch at a time refreshes it.

    Tool calls check their model against the live copy when there is a fresh one (`live`) and never wait
    for it: `keep_fresh` fetches it in the background from the start of the server on. `list_models` waits
    for a fetch when no fresh copy is there (`get`): the fetch has its own short time limit, every caller
    waits on the same one, and after a failure the fallback is served at once for `FAILURE_TTL` seconds
    instead of trying again on every call.
    """

    def __init__(self, providers: Registry, ttl: float, *, timeout: float, tasks: anyio.abc.TaskGroup) -> None:
        self._providers = providers
        self._ttl = ttl
        self._timeout = timeout
        # The fetch runs here, not in the caller: a caller that is cancelled must not cancel it for the others.
        self._tasks = tasks
        self._live: Catalogue | None = None
        self._fetched_at = 0.0
        self._failure: str | None = None
        self._failed_at = 0.0
        self._fetch: _Fetch | None = None

    def _fresh(self) -> Catalogue | None:
        if self._live is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._live
        return None

    def live(self) -> Catalogue | None:
        """The live catalogue while it is fresh, at once: model checks never wait on the network."""
        return self._fresh()

    async def get(self) -> Catalogue:
        """The best catalogue there is, waiting (within the fetch's time limit) for a live one if none is fresh."""
        if (fresh := self._fresh()) is not None:
            return fresh
        if self._failure is not None and time.monotonic() - self._failed_at < FAILURE_TTL:
            return self._fallback(self._failure)
        return await self._join()

    async def keep_fresh(self) -> None:
        """Fetch the live catalogue now, then again shortly before each copy expires, while the server runs.

        Stale-while-revalidate: calls go on using the copy at hand while the next one is fetched, so after
        the first fetch no call waits for one. After a failure the next try comes `FAILURE_TTL` later.
        """
        if self._ttl == 0:
            return  # nothing is reused, so there is nothing to keep fresh
        while True:
            if self._until_due() <= 0:
                await self._join()
            await anyio.sleep(max(self._until_due(), MIN_REFRESH))

    def _until_due(self) -> float:
        """Seconds until the next background fetch; `list_models` may have fetched since the last one."""
        now = time.monotonic()
        if self._failure is not None:
            return self._failed_at + FAILURE_TTL - now
        if self._live is None:
            return 0.0
        # Early enough that even a fetch using its whole time limit ends before the copy expires.
        lead = min(self._timeout, self._ttl / 2)
        return self._fetched_at + self._ttl - lead - now

    async def _join(self) -> Catalogue:
        """The result of the fetch under way, or of a new one: never two at a time."""
        fetch = self._fetch
        if fetch is None:
            fetch = self._fetch = _Fetch()
            self._tasks.start_soon(self._refresh, fetch)
        await fetch.done.wait()
        # No result: the fetch was cancelled with the server. Only a waiter still there needs the fallback;
        # the background fetch, cancelled at every stop, must not read the bundled list for nobody.
        return self._fallback("the server is stopping") if fetch.result is None else fetch.result

    async def _refresh(self, fetch: _Fetch) -> None:
        try:
            fetch.result = await self._load()
        finally:
            self._fetch = None
            fetch.done.set()

    async def _load(self) -> Catalogue:
        reason = f"no answer within {self._timeout:g}s (ONLYSQ_MCP_MODELS_TIMEOUT)"
        with anyio.move_on_after(self._timeout):
            try:
                entries = await self._providers.catalogue_entries()
            except UpstreamError as exc:
                reason = str(exc)
            except Exception:
                # A background task: whatever goes wrong must end as a fallback, never in the server's task group.
                logger.exception("fetching the model catalogue failed unexpectedly")
                reason = "an unexpected error on this server (see its log)"
            else:
                self._live = Catalogue.from_live(entries, self._providers.fallback_entries())
                self._fetched_at = time.monotonic()
                self._failure = None
                return self._live
        self._failure, self._failed_at = reason, time.monotonic()
        logger.warning("model catalogue: %s; using the fallback for %gs", reason, FAILURE_TTL)
        return self._fallback(reason)

    def _fallback(self, reason: str) -> Catalogue:
        if self._live is not None:
            age = time.monotonic() - self._fetched_at
            note = f"The live catalogue could not be fetched ({reason}); showing the copy from {age:.0f}s ago."
            return self._live.model_copy(update={"source": "cached", "note": note})
        note = (
            f"The live catalogue could not be fetched ({reason}); showing the catalogue bundled with this "
            "server, which may list models the service no longer offers."
        )
        return Catalogue(source="bundled", note=note, models=self._providers.fallback_entries())
