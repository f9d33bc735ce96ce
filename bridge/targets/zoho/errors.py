"""Transient vs permanent Zoho failures are types: only transient ones are retried."""

from __future__ import annotations


class ZohoError(Exception):
    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ZohoTransientError(ZohoError):
    """Network error, timeout, 5xx or 429: retrying later can succeed."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class ZohoPermanentError(ZohoError):
    """A 4xx that retrying cannot fix (validation, unknown option, missing project): goes to `failed`."""

    def __init__(self, reason: str, *, status: int | None = None, field: str | None = None) -> None:
        super().__init__(reason, status=status)
        self.field = field


class ResolutionError(ZohoPermanentError):
    """A mapping names a Zoho option that the project does not have."""


class ZohoRateLimited(ZohoTransientError):
    """Zoho's budget says wait (a 429, the shared block, or no free slot): a wait, never a counted attempt.

    `retry_after` is how long from now (by the database's clock) the wait lasts.
    """


class ZohoConfigError(ZohoPermanentError):
    """The deployment cannot work as configured (a token Zoho refuses right after a refresh: wrong scopes or
    data centre). Reported once and clearly; never retried in a loop that would burn the token budget."""
