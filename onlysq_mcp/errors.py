"""What can go wrong when calling an upstream, as one hierarchy.

Every message is written for the person or model that reads the tool error: what happened, at which
upstream, and what to do about it. Messages never carry credentials (see `redaction`).
"""

from __future__ import annotations


class UpstreamError(Exception):
    """An upstream call failed; `str(error)` is safe to show to the caller.

    `retry_after` is the wait in seconds the upstream asked for (`Retry-After`), when it named one.
    """

    def __init__(self, upstream: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.retry_after = retry_after


class UpstreamAuthError(UpstreamError):
    """The upstream refused the credentials (401/403)."""


class UpstreamRateLimited(UpstreamError):
    """The upstream asked us to slow down (429) and kept doing so through every retry."""


class UpstreamRejected(UpstreamError):
    """The upstream found the request itself wrong (400, 404, 422): retrying will not help."""


class UpstreamUnavailable(UpstreamError):
    """The upstream failed on its side (5xx) or could not be reached."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""


class UpstreamBadResponse(UpstreamError):
    """The upstream answered, but not in the documented format."""


class GenerationFailed(UpstreamError):
    """The upstream reported that the generation itself failed (e.g. `finish_reason: error`)."""


class ProviderNotConfigured(Exception):
    """A model belongs to a provider this server has no credentials for; `str(error)` says which to set."""
