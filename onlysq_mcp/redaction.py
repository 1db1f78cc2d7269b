"""The one place outgoing text loses the server's secrets.

Every text that leaves the server passes a `Redactor` built from the settings: tool results and tool
errors, resource contents, log messages sent to the client (all through `OnlySqServer` and
`tools.client_log`), and every stderr log line (the formatter `cli.py` installs). A new way out of the
server calls the same object. Upstream text that gets shortened is masked first (`Upstream.upstream_words`),
so a cut can never leave part of a key behind.

Values shorter than `MIN_SECRET_CHARS` are not masked: they match ordinary words everywhere, and are
too short to protect anything. URLs are shown through `display_url`, never with their user and password.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

MASK = "***"
MIN_SECRET_CHARS = 4
# The base64 payload of an image, audio or blob content block (the blocks that carry `mimeType`): no
# upstream's words are in it, and scanning a megabyte of image data per result would cost more than the rest.
BINARY_FIELDS = frozenset({"data", "blob"})

M = TypeVar("M", bound=BaseModel)


class Redactor:
    """Replaces every known secret in a text with `***`; built once from the settings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub(self, value: Any) -> Any:
        """Every string inside JSON-like data, keys included, masked; base64 fields left alone."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, dict):
            binary = "mimeType" in value
            return {self(k): v if binary and k in BINARY_FIELDS else self.scrub(v) for k, v in value.items()}
        return value

    def model(self, message: M) -> M:
        """A protocol message (e.g. a `CallToolResult`) with every text field masked."""
        if not self._secrets:
            return message
        return type(message).model_validate(self.scrub(message.model_dump(by_alias=True)))


# For plumbing built without settings (unit tests): nothing to mask.
NO_SECRETS = Redactor(())


def display_url(url: str) -> str:
    """`url` as it may be printed: without `user:password@`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class RedactingFormatter(logging.Formatter):
    """Masks the final text of a record: message, arguments, traceback and stack alike."""

    def __init__(self, redact: Redactor, fmt: str) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class RedactingJsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors: time, level, logger, message (traceback included).

    The text is masked before it is encoded: JSON escaping (of a quote or backslash in a secret) would
    otherwise hide a secret from the mask.
    """

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            message += "\n" + self.formatStack(record.stack_info)
        line = {
            # UTC, so that lines of replicas in different zones sort together.
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(message),
        }
        return json.dumps(line, ensure_ascii=False)
