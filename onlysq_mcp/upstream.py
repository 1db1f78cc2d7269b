"""HTTP plumbing shared by the upstream clients: retries with backoff, timeouts, error mapping.

Each client (`onlysq.py`, `yandex.py`) owns one `Upstream` and speaks its own wire format on top of it.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from .errors import (
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .redaction import NO_SECRETS, Redactor, display_url

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A retry wait longer than this is not worth holding a tool call open for.
MAX_SINGLE_WAIT = 30.0
# Most characters of an upstream's own words quoted in an error.
DETAIL_CHARS = 300

OnRetry = Callable[[str], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    backoff: float
    deadline: float

    def wait_before(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = self.backoff * (2 ** (attempt - 1))
        return base + random.uniform(0, base / 2)


@dataclass(frozen=True)
class Upstream:
    """One upstream service reached through the process-wide `httpx2.AsyncClient`."""

    name: str
    client: httpx2.AsyncClient
    base_url: str
    policy: RetryPolicy
    read_timeout: float
    auth_hint: str
    redact: Redactor = NO_SECRETS

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        stream: bool = False,
        on_retry: OnRetry | None = None,
    ) -> httpx2.Response:
        """Send with retries; return a 2xx response or raise an `UpstreamError`.

        With `stream=True` the body is left unread and the caller must `aclose()` the response.
        """
        url = self.base_url.rstrip("/") + path
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            request = self.client.build_request(method, url, headers=headers, json=json_body)
            try:
                response = await self.client.send(request, stream=True)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
                failure: UpstreamError = UpstreamUnavailable(
                    self.name, f"could not reach {display_url(self.base_url)} ({type(exc).__name__})"
                )
                retry_after = None
            except httpx2.TimeoutException as exc:
                raise self.timeout_error(exc) from None
            else:
                if response.is_success:
                    if not stream:
                        await self._read_body(response)
                    return response
                await self._read_body(response)
                if response.status_code not in RETRY_STATUSES:
                    raise self.status_error(response, attempt, started)
                failure = self.status_error(response, attempt, started)
                retry_after = parse_retry_after(response.headers.get("retry-after"))

            elapsed = time.monotonic() - started
            wait = self.policy.wait_before(attempt, retry_after)
            if attempt > self.policy.retries or wait > MAX_SINGLE_WAIT or elapsed + wait > self.policy.deadline:
                raise self.final_error(failure, attempt, elapsed, wait if retry_after is not None else None)
            note = f"{failure}; retry {attempt} of {self.policy.retries} in {wait:.1f}s"
            logger.warning("%s", note)
            if on_retry is not None:
                await on_retry(note)
            await anyio.sleep(wait)

    async def _read_body(self, response: httpx2.Response) -> None:
        try:
            await response.aread()
        except httpx2.TimeoutException as exc:
            await response.aclose()
            raise self.timeout_error(exc) from None
        except httpx2.TransportError as exc:
            await response.aclose()
            raise UpstreamBadResponse(self.name, f"the connection broke while reading the answer ({exc})") from None

    def timeout_error(self, exc: httpx2.TimeoutException) -> UpstreamTimeout:
        if isinstance(exc, httpx2.ConnectTimeout):
            what = "connecting"
        elif isinstance(exc, httpx2.PoolTimeout):
            what = "waiting for a free connection"
        else:
            what = f"no data for {self.read_timeout:g}s (ONLYSQ_TIMEOUT)"
        return UpstreamTimeout(self.name, f"timed out: {what}. Try again, or raise the timeout.")

    def status_error(self, response: httpx2.Response, attempt: int, started: float) -> UpstreamError:
        status = response.status_code
        detail = self.error_detail(response)
        if status in (401, 403):
            return UpstreamAuthError(self.name, f"credentials refused (HTTP {status}: {detail}). {self.auth_hint}")
        if status == 429:
            return UpstreamRateLimited(
                self.name,
                f"rate limited (HTTP 429: {detail})",
                parse_retry_after(response.headers.get("retry-after")),
            )
        if 400 <= status < 500:
            return UpstreamRejected(self.name, f"request rejected (HTTP {status}: {detail})")
        return UpstreamUnavailable(self.name, f"service error (HTTP {status}: {detail})")

    def final_error(
        self, failure: UpstreamError, attempts: int, elapsed: float, retry_after: float | None
    ) -> UpstreamError:
        tries = "1 try" if attempts == 1 else f"{attempts} tries"
        advice = (
            f"the upstream asked to wait {retry_after:g}s, longer than this call can wait"
            if retry_after is not None and retry_after > MAX_SINGLE_WAIT
            else "try again in a minute, or pick another model"
        )
        message = f"{str(failure).removeprefix(self.name + ': ')}; gave up after {tries} in {elapsed:.1f}s: {advice}."
        return type(failure)(self.name, message)

    def error_detail(self, response: httpx2.Response) -> str:
        """The upstream's own words about the failure, shortened and scrubbed of secrets."""
        text = response.text
        detail = ""
        try:
            body = json.loads(text)
        except ValueError:
            content_type = response.headers.get("content-type", "")
            detail = "a non-JSON body" if "html" in content_type or text.lstrip().startswith("<") else text.strip()
        else:
            detail = find_error_message(body) or text.strip()
        return self.upstream_words(detail) or "no details"

    def upstream_words(self, text: str) -> str:
        """Text from the upstream as it may be quoted: secrets masked before the cut, so none is left in part."""
        return " ".join(self.redact(text).split())[:DETAIL_CHARS]

    def parse(self, response: httpx2.Response, model: type[M], field: str) -> M:
        """The body as the wire model; `field` names what a body that does not fit is missing."""
        return self.validate(self.parse_json(response), model, field)

    def validate(self, body: Any, model: type[M], field: str) -> M:
        try:
            return model.model_validate(body)
        except ValidationError:
            keys = self.upstream_words(", ".join(sorted(body))) if isinstance(body, dict) else type(body).__name__
            raise UpstreamBadResponse(
                self.name, f"answered without the `{field}` field (got: {keys or 'nothing'}); the API may have changed"
            ) from None

    def decode_base64(self, data: str) -> bytes:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamBadResponse(self.name, "returned image data that is not valid base64") from None

    def parse_json(self, response: httpx2.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            raise UpstreamBadResponse(
                self.name,
                f"answered HTTP {response.status_code} with a body that is not JSON "
                f"({len(response.content)} bytes). The service may be having trouble; try again later.",
            ) from None


def find_error_message(body: Any) -> str | None:
    """`{"error": {"message": ...}}` is the common shape; some services use `error`, `message` or `detail`."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    for key in ("error", "message", "detail"):
        if isinstance(body.get(key), str):
            return body[key]
    return None


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
