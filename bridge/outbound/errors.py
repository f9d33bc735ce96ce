"""What an outside call can end in, as types every lane reads the same way.

- `Transient`: the system did not answer usefully (network error, timeout, 5xx): try again later. The
  delivery core waits with a capped back-off until the event's maximum age; an outage is a wait.
- `LimitWait` (a `Transient`): a budget or the provider's throttle says wait until `until` (database time):
  never an attempt, never a failure, in any lane.
- `Permanent`: the system refused what was asked (a 4xx that retrying cannot fix): it fails what it
  concerns, with the reason, visibly and replayably.
- `ConfigError` (a `Permanent`): the deployment cannot work as configured (credentials, scopes, data centre):
  reported once, never retried in a loop.
- `UndeclaredCall`: a call that the system's call table does not declare is never sent.

Every system's own errors (Zoho's, GitHub's, Bugzilla's, BugHerd's) are subclasses, so the core needs
to know none of them.
"""

from __future__ import annotations


class OutboundError(Exception):
    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after  # seconds from now, when the system (or a budget) said how long
        self.field = field  # the refused field, when the answer names one


class Transient(OutboundError):
    """Network error, timeout, 5xx: the same request may succeed later."""


class LimitWait(Transient):
    """A budget or the provider's throttle: wait `retry_after` seconds (a wait, never an attempt)."""


class Permanent(OutboundError):
    """A refusal that retrying cannot fix: fails what it concerns."""


class ConfigError(Permanent):
    """The deployment is misconfigured (credentials, scopes, data centre): reported once, not per item."""


class UndeclaredCall(Permanent):
    """The call is not in its system's call table: not sent."""
