"""The shared upstream plumbing, without a server: Retry-After, error details, redaction."""

from __future__ import annotations

import base64
import email.utils
import inspect
import time

import httpx2
import pytest
from mcp_types import CallToolResult, ImageContent, TextContent

from onlysq_mcp.errors import UpstreamBadResponse, UpstreamError, UpstreamRateLimited, UpstreamRejected
from onlysq_mcp.redaction import Redactor, display_url
from onlysq_mcp.upstream import (
    HTTPX2_ERRORS,
    HTTPX2_FAILURES,
    MIN_RETRY_AFTER_WAIT,
    RetryPolicy,
    Upstream,
    find_error_message,
    parse_retry_after,
)
from tests.helpers import make_upstream


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("0", 0.0), ("soon", None)],
)
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(when) <= 31


def test_backoff_doubles_with_bounded_jitter():
    policy = RetryPolicy(retries=3, backoff=1.0, deadline=60)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        wait = policy.wait_before(attempt, None)
        assert base <= wait <= base * 1.5
    assert policy.wait_before(1, 7.0) == 7.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": {"message": "bad key"}}, "bad key"),
        ({"error": "quota"}, "quota"),
        ({"detail": "nope"}, "nope"),
        ({"other": 1}, None),
        ([1, 2], None),
    ],
)
def test_find_error_message(body, expected):
    assert find_error_message(body) == expected


def test_error_detail_is_redacted_and_short():
    upstream = Upstream(
        name="X",
        client=httpx2.AsyncClient,
        base_url="http://127.0.0.1:1",
        policy=RetryPolicy(0, 0, 1),
        read_timeout=1,
        auth_hint="",
        max_body_bytes=1_000_000,
        max_image_bytes=1_000_000,
        redact=Redactor(["sq-secret-key"]),
    )
    response = httpx2.Response(401, json={"error": {"message": "key sq-secret-key is invalid " + "x" * 1000}})
    detail = upstream.error_detail(response)
    assert "sq-secret" not in detail
    assert "***" in detail
    assert len(detail) <= 300
    # A key across the cut is masked whole before the cut, not shown in part.
    straddling = httpx2.Response(401, json={"error": {"message": "x" * 295 + " sq-secret-key"}})
    assert upstream.error_detail(straddling).endswith(" ***")
    html = httpx2.Response(502, text="<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"})
    assert upstream.error_detail(html) == "a non-JSON body"


def test_redactor_masks_longest_first_and_skips_short_values():
    redact = Redactor(["", "ab", "secret", "secret-plus"])
    assert redact("ab secret-plus secret") == "ab *** ***"


def test_display_url_drops_user_and_password():
    assert display_url("https://user:p%40ss@api.example:8443/v1?q=1") == "https://api.example:8443/v1?q=1"
    assert display_url("https://api.onlysq.ru/") == "https://api.onlysq.ru/"


def test_redactor_masks_every_text_of_a_result_but_not_image_data():
    redact = Redactor(["sq-secret-key"])
    result = CallToolResult(
        content=[
            TextContent(type="text", text="key sq-secret-key"),
            ImageContent(type="image", data="sq-secret-key", mime_type="image/png"),
        ],
        structured_content={"sq-secret-key": {"data": ["sq-secret-key"]}},
    )
    masked = redact.model(result)
    assert masked.content == [
        TextContent(type="text", text="key ***"),
        ImageContent(type="image", data="sq-secret-key", mime_type="image/png"),
    ]
    assert masked.structured_content == {"***": {"data": ["***"]}}


async def pieces(*parts: bytes):
    """A body sent in chunks, with no content-length."""
    for part in parts:
        yield part


def public_httpx2_exceptions() -> list[type[Exception]]:
    return [cls for _, cls in inspect.getmembers(httpx2, inspect.isclass) if issubclass(cls, Exception)]


def instance_of(cls: type[Exception]) -> Exception:
    """One instance of each class, whatever its constructor wants."""
    if cls is httpx2.HTTPStatusError:
        request = httpx2.Request("GET", "http://upstream.test")
        return cls("boom", request=request, response=httpx2.Response(500, request=request))
    try:
        return cls("boom")
    except TypeError:
        return cls()


def test_the_httpx2_exception_list_is_not_empty():
    classes = public_httpx2_exceptions()
    assert httpx2.DecodingError in classes and httpx2.WriteError in classes and len(classes) >= 25


@pytest.mark.parametrize("cls", public_httpx2_exceptions(), ids=lambda cls: cls.__name__)
def test_every_httpx2_exception_is_mapped(cls):
    # Its own entry, not an ancestor's: a class added by an httpx2 release fails here until it is described.
    assert cls in HTTPX2_FAILURES, f"httpx2.{cls.__name__} has no entry in HTTPX2_FAILURES"
    exc = instance_of(cls)
    assert isinstance(exc, HTTPX2_ERRORS), "the except clauses would not catch it"
    error = make_upstream().error_for(exc)
    assert isinstance(error, UpstreamError)
    message = str(error).removeprefix("X: ")
    assert str(error).startswith("X: ")
    assert message and message != cls.__name__ and len(message) > len(cls.__name__) + 30
    # What happened, then what to do.
    assert message.endswith(".") and ". " in message


def test_timeout_and_connection_messages_name_the_setting_and_address():
    upstream = make_upstream()
    assert "no data for 7s (ONLYSQ_TIMEOUT)" in str(upstream.error_for(httpx2.ReadTimeout("x")))
    assert "could not reach http://upstream.test" in str(upstream.error_for(httpx2.ConnectError("x")))
    assert "ONLYSQ_MCP_MAX_CONCURRENCY" in str(upstream.error_for(httpx2.PoolTimeout("x")))


def test_retry_after_zero_keeps_a_minimum_wait():
    no_backoff = RetryPolicy(retries=3, backoff=0, deadline=60)
    assert no_backoff.wait_before(1, 0.0) >= MIN_RETRY_AFTER_WAIT > 0
    assert no_backoff.wait_before(1, None) == 0  # a setting of 0 is the user's choice
    policy = RetryPolicy(retries=3, backoff=1.0, deadline=60)
    assert 1.0 <= policy.wait_before(1, 0.0) <= 1.5  # no shorter than our own backoff
    assert 4.0 <= policy.wait_before(3, 0.5) <= 6.0


@pytest.mark.anyio
async def test_final_rate_limit_error_keeps_retry_after():
    upstream = make_upstream(
        lambda request: httpx2.Response(429, json={"error": "slow down"}, headers={"retry-after": "0"}),
        policy=RetryPolicy(1, 0, 10),
    )
    started = time.monotonic()
    with pytest.raises(UpstreamRateLimited) as caught:
        await upstream.request("GET", "/x")
    assert time.monotonic() - started >= MIN_RETRY_AFTER_WAIT
    assert caught.value.retry_after == 0.0
    assert "gave up after 2 tries" in str(caught.value)


@pytest.mark.anyio
async def test_declared_length_over_the_cap_is_refused_unread():
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-length": "50000"}, content=b"{}")

    with pytest.raises(UpstreamBadResponse, match=r"larger than 10,000 bytes \(ONLYSQ_MCP_MAX_RESPONSE_BYTES\)"):
        await make_upstream(handler).request("GET", "/x")


@pytest.mark.anyio
async def test_body_over_the_cap_without_a_length_is_cut_off():
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=pieces(b"x" * 6000, b"x" * 6000))

    with pytest.raises(UpstreamBadResponse, match="larger than 10,000 bytes"):
        await make_upstream(handler).request("GET", "/x")
    under = await make_upstream(lambda request: httpx2.Response(200, content=pieces(b"y" * 6000))).request("GET", "/x")
    assert under.content == b"y" * 6000


@pytest.mark.anyio
async def test_a_huge_error_body_is_read_only_in_part():
    upstream = make_upstream(lambda request: httpx2.Response(400, content=pieces(*[b"e" * 100_000] * 50)))
    with pytest.raises(UpstreamRejected, match="HTTP 400"):
        await upstream.request("GET", "/x")


def test_image_over_the_cap_is_refused_before_decoding():
    upstream = make_upstream()
    assert upstream.decode_base64(base64.b64encode(b"i" * 3000).decode()) == b"i" * 3000
    with pytest.raises(UpstreamBadResponse, match=r"larger than 3,000 bytes \(ONLYSQ_MCP_MAX_IMAGE_BYTES\)"):
        upstream.decode_base64(base64.b64encode(b"i" * 3003).decode())


@pytest.mark.parametrize(
    "wrapped",
    [
        lambda b64: b64,
        lambda b64: "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)),  # MIME line wrapping
        lambda b64: "data:image/png;base64," + b64,
        lambda b64: b64.rstrip("="),
        lambda b64: b64.replace("+", "-").replace("/", "_"),
    ],
)
def test_image_base64_is_read_as_leniently_as_public_clients(wrapped):
    raw = bytes(range(256)) * 4 + b"ab"  # every alphabet character, and padding
    assert make_upstream().decode_base64(wrapped(base64.b64encode(raw).decode())) == raw


def test_invalid_base64_is_still_refused():
    with pytest.raises(UpstreamBadResponse, match="not valid base64"):
        make_upstream().decode_base64("not*base64!!")
