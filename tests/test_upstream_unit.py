"""The shared upstream plumbing, without a server: Retry-After, error details, redaction."""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest

from onlysq_mcp.errors import redact
from onlysq_mcp.upstream import RetryPolicy, Upstream, find_error_message, parse_retry_after


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
        client=httpx2.AsyncClient(),
        base_url="http://127.0.0.1:1",
        policy=RetryPolicy(0, 0, 1),
        read_timeout=1,
        auth_hint="",
        max_body_bytes=1_000_000,
        max_image_bytes=1_000_000,
        secrets=("sq-secret",),
    )
    response = httpx2.Response(401, json={"error": {"message": "key sq-secret is invalid " + "x" * 1000}})
    detail = upstream.error_detail(response)
    assert "sq-secret" not in detail
    assert "***" in detail
    assert len(detail) <= 300
    html = httpx2.Response(502, text="<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"})
    assert upstream.error_detail(html) == "a non-JSON body"


def test_redact_ignores_empty_secrets():
    assert redact("abc", ["", "b"]) == "a***c"
