"""Zoho's failures, as the outbound layer's types (`bridge/outbound/errors.py`): only transient ones are retried."""

from __future__ import annotations

from bridge.outbound.errors import ConfigError, LimitWait, OutboundError, Permanent, Transient


class ZohoError(OutboundError):
    """Anything Zoho (or the way to it) answered that is not what was asked."""

    title: str = ""  # the documented title (v3) or code (BugTracker) the answer named, when it named one


class ZohoTransientError(ZohoError, Transient):
    """Network error, timeout, 5xx: retrying later can succeed."""


class ZohoPermanentError(ZohoError, Permanent):
    """A 4xx that retrying cannot fix (validation, unknown option, missing project): goes to `failed`."""


class ResolutionError(ZohoPermanentError):
    """A mapping names a Zoho option that the project does not have."""


class ZohoRateLimited(ZohoTransientError, LimitWait):
    """Zoho's budget says wait (a throttle answer, the shared block, or no free call): never a counted attempt.

    `retry_after` is how long from now (by the database's clock) the wait lasts.
    """


class ZohoConfigError(ZohoPermanentError, ConfigError):
    """The deployment cannot work as configured (a token Zoho refuses right after a refresh: wrong scopes or
    data centre). Reported once and clearly; never retried in a loop that would burn the token budget."""
