"""HTTP plumbing shared by the upstream clients: retries with backoff, timeouts, error mapping.

Each client (`onlysq.py`, `yandex.py`) owns one `Upstream` and speaks its own wire format on top of it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from .errors import (
    GenerationFailed,
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

# Retried like the OpenAI and Anthropic Python SDKs do (`_should_retry`: 408, 409, 429 and every 5xx); peer MCP
# servers of OnlySq retry a transient 500 and succeed.
RETRY_STATUSES = frozenset({408, 409, 429})
# A retry wait longer than this is not worth holding a tool call open for.
MAX_SINGLE_WAIT = 30.0
MODEL_DENIED = re.compile(r"access to model .* denied", re.IGNORECASE)
# Most characters of an upstream's own words quoted in an error.
DETAIL_CHARS = 300
# `Retry-After: 0` (or a tiny value) must not turn retries into a burst against a service that is already
# refusing us: no retry after a Retry-After starts sooner than this, nor sooner than our own backoff.
MIN_RETRY_AFTER_WAIT = 0.1
# Only the first few hundred characters of an error body are shown; reading more is wasted memory.
ERROR_BODY_BYTES = 64_000

URL_SAFE = str.maketrans("-_", "+/")
OnRetry = Callable[[str], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)


class Pacer(Protocol):
    """Paces the attempts of related requests (the images of one call), retries included."""

    def attempt(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one attempt is on the wire, until its answer's headers (or its failure) arrive."""
        ...

    def rate_limited(self) -> None:
        """An attempt was answered 429."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    backoff: float
    deadline: float

    def wait_before(self, attempt: int, retry_after: float | None) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        backoff = base + random.uniform(0, base / 2)
        if retry_after is not None:
            return max(retry_after, backoff, MIN_RETRY_AFTER_WAIT)
        return backoff


@dataclass(frozen=True)
class Failure:
    """What one httpx2 exception means for a call: the error to raise, what happened, what to do."""

    kind: type[UpstreamError]
    what: str
    advice: str
    # Failures before the upstream saw the request, or of a kept-alive connection it had closed: worth a retry.
    retry: bool = False


NETWORK = "Check the network and the service address, or try again in a minute."
TROUBLE = "The service may be having trouble; try again in a minute."
OURS = "This is a fault of this server or its settings (ONLYSQ_BASE_URL, YANDEX_BASE_URL); report it if it persists."
WAIT = "Try again, or raise the timeout."

# Every public exception class of httpx2 (httpx2/_exceptions.py, httpx2/_sse.py), each with its own entry:
# a class added by an httpx2 release fails `test_every_httpx2_exception_is_mapped` until it has one, like
# httpx's own `test_httpcore_all_exceptions_mapped`. Lookups walk the class's MRO, so at run time a new
# class still gets the entry of its nearest ancestor.
HTTPX2_FAILURES: dict[type[Exception], Failure] = {
    httpx2.ConnectError: Failure(UpstreamUnavailable, "could not reach {base_url}", NETWORK, retry=True),
    httpx2.ConnectTimeout: Failure(UpstreamUnavailable, "could not reach {base_url} in time", NETWORK, retry=True),
    httpx2.ReadError: Failure(
        UpstreamUnavailable, "the connection broke while reading the answer", TROUBLE, retry=True
    ),
    httpx2.WriteError: Failure(
        UpstreamUnavailable, "the connection broke while sending the request", TROUBLE, retry=True
    ),
    httpx2.CloseError: Failure(UpstreamUnavailable, "the connection failed while closing", TROUBLE, retry=True),
    httpx2.NetworkError: Failure(UpstreamUnavailable, "the network connection failed", NETWORK, retry=True),
    httpx2.RemoteProtocolError: Failure(
        UpstreamUnavailable, "closed the connection or broke the HTTP protocol", TROUBLE, retry=True
    ),
    httpx2.ReadTimeout: Failure(UpstreamTimeout, "timed out: no data for {timeout:g}s (ONLYSQ_TIMEOUT)", WAIT),
    httpx2.WriteTimeout: Failure(UpstreamTimeout, "timed out: sending the request took over {timeout:g}s", WAIT),
    httpx2.PoolTimeout: Failure(
        UpstreamTimeout,
        "timed out: waiting for a free connection",
        "Too many calls at once: try again, or raise ONLYSQ_MCP_MAX_CONCURRENCY.",
    ),
    httpx2.TimeoutException: Failure(UpstreamTimeout, "timed out", WAIT),
    httpx2.DecodingError: Failure(
        UpstreamBadResponse, "sent a body that cannot be decoded: it does not match its Content-Encoding", TROUBLE
    ),
    httpx2.SSEError: Failure(
        UpstreamBadResponse, "sent a malformed event stream: an event over 1 MB, or not an event stream at all", TROUBLE
    ),
    httpx2.LocalProtocolError: Failure(UpstreamUnavailable, "the HTTP exchange failed on this side", OURS),
    httpx2.ProtocolError: Failure(UpstreamUnavailable, "broke the HTTP protocol", TROUBLE),
    httpx2.ProxyError: Failure(
        UpstreamUnavailable, "could not be reached through the proxy {proxy} (ONLYSQ_MCP_PROXY)", NETWORK
    ),
    httpx2.UnsupportedProtocol: Failure(
        UpstreamUnavailable,
        "has an address that is not http:// or https://",
        "Check ONLYSQ_BASE_URL / YANDEX_BASE_URL.",
    ),
    httpx2.TransportError: Failure(UpstreamUnavailable, "the connection failed", NETWORK),
    httpx2.TooManyRedirects: Failure(UpstreamBadResponse, "redirected too many times", TROUBLE),
    httpx2.RequestError: Failure(UpstreamUnavailable, "the request failed", TROUBLE),
    httpx2.HTTPStatusError: Failure(UpstreamBadResponse, "answered with an error status", TROUBLE),
    httpx2.HTTPError: Failure(UpstreamUnavailable, "the HTTP call failed", TROUBLE),
    httpx2.InvalidURL: Failure(
        UpstreamUnavailable, "has an invalid address", "Check ONLYSQ_BASE_URL / YANDEX_BASE_URL."
    ),
    httpx2.CookieConflict: Failure(UpstreamBadResponse, "sent conflicting cookies", TROUBLE),
    httpx2.StreamConsumed: Failure(UpstreamBadResponse, "answered, but the answer was already read", OURS),
    httpx2.StreamClosed: Failure(UpstreamBadResponse, "answered, but the answer was closed before it was read", OURS),
    httpx2.ResponseNotRead: Failure(UpstreamBadResponse, "answered, but the answer was not read", OURS),
    httpx2.RequestNotRead: Failure(UpstreamUnavailable, "was not sent: the request body was not read", OURS),
    httpx2.StreamError: Failure(UpstreamBadResponse, "answered, but the answer could not be read", OURS),
}
# With ONLYSQ_MCP_PROXY set, the only connection opened here is to the proxy: a target the proxy cannot reach
# is a `ProxyError` (httpcore2/_async/http_proxy.py, socks_proxy.py), so these mean the proxy itself is down.
PROXY_DOWN = Failure(
    UpstreamUnavailable,
    "could not reach the proxy {proxy} (ONLYSQ_MCP_PROXY)",
    "Check that the proxy is running and reachable from here, or correct ONLYSQ_MCP_PROXY.",
    retry=True,
)
PROXY_CONNECT_ERRORS = (httpx2.ConnectError, httpx2.ConnectTimeout)
# The roots of every httpx2 exception, for `except` clauses that hand them to `Upstream.error_for`.
HTTPX2_ERRORS = (httpx2.HTTPError, httpx2.InvalidURL, httpx2.CookieConflict, httpx2.StreamError)


def failure_of(exc: Exception) -> Failure:
    for cls in type(exc).__mro__:
        if cls in HTTPX2_FAILURES:
            return HTTPX2_FAILURES[cls]
    return Failure(UpstreamError, "failed unexpectedly", TROUBLE)


@dataclass(frozen=True)
class Body:
    """A complete answer, read within its size cap."""

    status_code: int
    headers: httpx2.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Upstream:
    """One upstream service reached through the process-wide `httpx2.AsyncClient`."""

    name: str
    # Returns the shared client, once built (`http_clients.LazyClient.get`).
    client: Callable[[], Awaitable[httpx2.AsyncClient]]
    base_url: str
    policy: RetryPolicy
    read_timeout: float
    auth_hint: str
    max_body_bytes: int
    max_image_bytes: int
    redact: Redactor = NO_SECRETS
    # ONLYSQ_MCP_PROXY, which connection errors then name.
    proxy: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        on_retry: OnRetry | None = None,
        retry: bool = True,
        pacer: Pacer | None = None,
    ) -> Body:
        """Send with retries; return a 2xx answer read within ONLYSQ_MCP_MAX_RESPONSE_BYTES, or raise an `UpstreamError`."""
        response = await self.open(
            method, path, headers=headers, json_body=json_body, on_retry=on_retry, retry=retry, pacer=pacer
        )
        return await self.read(response)

    async def open(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        on_retry: OnRetry | None = None,
        retry: bool = True,
        pacer: Pacer | None = None,
        read_timeout: float | None = None,
    ) -> httpx2.Response:
        """Send with retries; return a 2xx response with its body unread, which the caller must `close()`.

        Each attempt is made inside `pacer.attempt()`, and a 429 is reported to it (`pacer.rate_limited()`).
        `read_timeout` replaces ONLYSQ_TIMEOUT as the wait for data, for a caller that bounds the wait itself.
        """
        url = self.base_url.rstrip("/") + path
        retries = self.policy.retries if retry else 0
        started = time.monotonic()
        # Time spent waiting for the pacer (for the call's other requests), which is not this request's retrying.
        paced = 0.0
        attempt = 0
        while True:
            attempt += 1
            client = await self.client()
            request = client.build_request(method, url, headers=headers, json=json_body)
            if read_timeout is not None:
                request.extensions["timeout"] = {**request.extensions["timeout"], "read": read_timeout}
            queued = time.monotonic()
            async with pacer.attempt() if pacer is not None else contextlib.nullcontext():
                paced += time.monotonic() - queued
                try:
                    response = await client.send(request, stream=True)
                except HTTPX2_ERRORS as exc:
                    if not failure_of(exc).retry:
                        raise self.error_for(exc) from None
                    failure = self.error_for(exc, advice=False)
                    retry_after = None
                else:
                    if response.is_success:
                        return response
                    body = await self.read(response, ERROR_BODY_BYTES, truncate=True)
                    if body.status_code == 429 and pacer is not None:
                        pacer.rate_limited()
                    failure = self.status_error(body)
                    if not retryable(body.status_code):
                        raise failure
                    retry_after = parse_retry_after(body.headers.get("retry-after"))

            elapsed = time.monotonic() - started
            wait = self.policy.wait_before(attempt, retry_after)
            if attempt > retries or wait > MAX_SINGLE_WAIT or elapsed - paced + wait > self.policy.deadline:
                raise self.final_error(failure, attempt, elapsed, retry_after)
            note = f"{failure}; retry {attempt} of {retries} in {wait:.1f}s"
            logger.warning("%s", note)
            if on_retry is not None:
                await on_retry(note)
            await anyio.sleep(wait)

    async def read(self, response: httpx2.Response, limit: int | None = None, *, truncate: bool = False) -> Body:
        """The decoded body, read piece by piece up to `limit` bytes (ONLYSQ_MCP_MAX_RESPONSE_BYTES by default).

        Past the limit the read stops and the response is closed, which drops the connection instead of
        draining the rest; then the body is cut at the limit (`truncate`) or the call fails.
        """
        limit = limit or self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            # The declared length is of the encoded body, which is never much larger than the decoded one.
            declared = response.headers.get("content-length", "")
            if not truncate and declared.isdigit() and int(declared) > limit:
                raise self.too_large(limit)
            async with contextlib.aclosing(response.aiter_bytes()) as parts:
                async for part in parts:
                    if size + len(part) > limit:
                        if not truncate:
                            raise self.too_large(limit)
                        chunks.append(part[: limit - size])
                        break
                    size += len(part)
                    chunks.append(part)
        except HTTPX2_ERRORS as exc:
            raise self.error_for(exc) from None
        finally:
            await self.close(response)
        return Body(response.status_code, response.headers, b"".join(chunks))

    async def close(self, response: httpx2.Response) -> None:
        """Release the connection; a half-read one is dropped. A failure to close changes nothing for the call."""
        with contextlib.suppress(*HTTPX2_ERRORS):
            await response.aclose()

    def error_for(self, exc: Exception, *, advice: bool = True) -> UpstreamError:
        """Any httpx2 exception as an `UpstreamError` saying what happened and, with `advice`, what to do."""
        failure = PROXY_DOWN if self.proxy and isinstance(exc, PROXY_CONNECT_ERRORS) else failure_of(exc)
        what = failure.what.format(
            base_url=display_url(self.base_url), timeout=self.read_timeout, proxy=display_url(self.proxy or "")
        )
        message = f"{what} ({type(exc).__name__})"
        return failure.kind(self.name, f"{message}. {failure.advice}" if advice else message)

    def too_large(self, limit: int) -> UpstreamBadResponse:
        return UpstreamBadResponse(
            self.name,
            f"sent an answer larger than {limit:,} bytes (ONLYSQ_MCP_MAX_RESPONSE_BYTES), so it was cut off "
            "unread. Ask for less (e.g. a lower max_tokens), or raise the limit.",
        )

    def status_error(self, response: Body) -> UpstreamError:
        status = response.status_code
        detail = self.error_detail(response)
        if status == 403 and MODEL_DENIED.search(detail):
            # A retired or unavailable model answers 403 (gRPC PERMISSION_DENIED, Yandex AI Studio's error
            # mapping) "Access to model … denied" with valid keys, as public clients of the live API report:
            # blaming the credentials would send the user after keys that work.
            return UpstreamRejected(
                self.name, f"the model is not available to this key or folder (HTTP 403: {detail}); pick another model."
            )
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
        if retry_after is None:
            advice = "try again in a minute, or pick another model"
        else:
            longer = ", longer than this call can wait" if retry_after > MAX_SINGLE_WAIT else ""
            # Whole seconds, never "0 s": the caller's next try is a new call anyway.
            advice = (
                f"the upstream asked to wait {retry_after:g}s{longer}: try again in {max(1, math.ceil(retry_after))} s"
            )
        message = f"{str(failure).removeprefix(self.name + ': ')}; gave up after {tries} in {elapsed:.1f}s: {advice}."
        return type(failure)(self.name, message, retry_after)

    def error_detail(self, response: Body) -> str:
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

    def parse(self, response: Body, model: type[M], field: str) -> M:
        """The body as the wire model; `field` names what a body that does not fit is missing."""
        return self.validate(self.parse_json(response), model, field)

    def validate(self, body: Any, model: type[M], field: str) -> M:
        try:
            return model.model_validate(body)
        except ValidationError:
            if message := find_error_message(body):
                # HTTP 200 with `{"error": {"message": ...}}`: the provider's words, not a format complaint.
                raise GenerationFailed(self.name, f"answered with an error: {self.upstream_words(message)}") from None
            keys = self.upstream_words(", ".join(sorted(body))) if isinstance(body, dict) else type(body).__name__
            # `files[0]` names the field `files`: present but empty or of the wrong shape is a different report.
            top = field.partition("[")[0].partition(".")[0]
            what = "an empty or malformed" if isinstance(body, dict) and top in body else "without the"
            raise UpstreamBadResponse(
                self.name, f"answered {what} `{field}` field (got: {keys or 'nothing'}); the API may have changed"
            ) from None

    def decode_base64(self, data: str) -> bytes:
        # Checked before decoding: base64 is 4 characters for every 3 bytes.
        if len(data) // 4 * 3 > self.max_image_bytes:
            raise UpstreamBadResponse(
                self.name,
                f"sent an image larger than {self.max_image_bytes:,} bytes (ONLYSQ_MCP_MAX_IMAGE_BYTES); it was "
                "not used. Try a smaller aspect ratio or another model, or raise the limit.",
            )
        # As lenient as public clients: a data-URI prefix, line breaks, the URL-safe alphabet, missing padding.
        text = "".join(data.partition(",")[2].split() if data.startswith("data:") else data.split())
        text = text.translate(URL_SAFE) + "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamBadResponse(self.name, "returned image data that is not valid base64") from None

    def parse_json(self, response: Body) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            raise UpstreamBadResponse(
                self.name,
                f"answered HTTP {response.status_code} with a body that is not JSON "
                f"({len(response.content)} bytes). The service may be having trouble; try again later.",
            ) from None


def retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


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
