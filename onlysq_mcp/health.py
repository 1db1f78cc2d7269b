"""Probes for orchestrators: `/healthz` (the process answers) and `/readyz` (it can do its work now).

Both sit in front of the token check and the `Host` check. A kubelet probes with the pod's IP as `Host` and
cannot be given the token without writing it into the pod spec; and both answers are generic, so a caller
without the token, or a web page that rebinds a name to this server, learns only that it is up. Why a check
failed goes to the log, never into the answer.
"""

from __future__ import annotations

import json
import logging
import time

import anyio
import httpx2
from starlette.types import ASGIApp, Receive, Scope, Send

from .services import storage_of
from .settings import Settings

LIVE_PATH = "/healthz"
READY_PATH = "/readyz"
# Probes every few seconds from every kubelet must not turn into as many upstream requests.
READY_CACHE_SECONDS = 5.0
# The whole readiness check, storage and upstream, ends within this; a probe's default timeout is 1 s.
READY_CHECK_SECONDS = 3.0
# Below this the upstream answered as a web server: reachable, whatever it thinks of a bare `GET /`.
UNAVAILABLE_STATUS = 500

logger = logging.getLogger(__name__)


class Readiness:
    """Whether storage (the folder or the bucket) takes a file and the OnlySq API answers; the result is kept a few seconds,
    and probes that arrive together share one check."""

    def __init__(self, settings: Settings) -> None:
        self._storage = storage_of(settings)
        self._upstream = str(settings.onlysq_base_url)
        self._ready = False
        self._checked_at = -float("inf")
        self._lock = anyio.Lock()

    async def ready(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_SECONDS:
                with anyio.move_on_after(READY_CHECK_SECONDS) as timer:
                    self._ready = await self._storage_writable() and await self._upstream_reachable()
                if timer.cancelled_caught:
                    logger.warning("Not ready: the readiness check took over %s s", READY_CHECK_SECONDS)
                    self._ready = False
                self._checked_at = time.monotonic()
            return self._ready

    async def _storage_writable(self) -> bool:
        try:
            await self._storage.check()
        except OSError as exc:
            logger.warning("Not ready: %s", exc)
            return False
        return True

    async def _upstream_reachable(self) -> bool:
        # A client per check: a probe every few seconds does not need a pool, and none outlives the check.
        try:
            async with httpx2.AsyncClient(timeout=READY_CHECK_SECONDS, trust_env=False) as http:
                response = await http.get(self._upstream)
        except httpx2.HTTPError as exc:
            logger.warning("Not ready: the OnlySq API cannot be reached (%s)", type(exc).__name__)
            return False
        if response.status_code >= UNAVAILABLE_STATUS:
            logger.warning("Not ready: the OnlySq API answers HTTP %d", response.status_code)
            return False
        return True


async def answer(send: Send, status: int, state: str, head_only: bool) -> None:
    body = json.dumps({"status": state}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


class HealthRoutes:
    """Answers `GET`/`HEAD` on the probe paths itself; everything else goes on to `app`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self._readiness = Readiness(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (LIVE_PATH, READY_PATH) or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        head_only = scope["method"] == "HEAD"
        if path == LIVE_PATH:
            await answer(send, 200, "ok", head_only)
        elif await self._readiness.ready():
            await answer(send, 200, "ready", head_only)
        else:
            await answer(send, 503, "not ready", head_only)


class QuietProbes(logging.Filter):
    """Leaves successful probes out of uvicorn's access log: a line from every kubelet every few seconds
    would bury the requests. Its record's arguments are (client, method, path, HTTP version, status)
    (uvicorn/protocols/http/h11_impl.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 5 and args[2] in (LIVE_PATH, READY_PATH):
            return args[4] != 200
        return True
