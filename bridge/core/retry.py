"""The retry policy, a pure function: what one failed attempt of an item costs and when it goes again.

Back-off is per item (the item's consecutive failures), so a burst of edits of one item retries as one
batch; attempts are per event, so each event ends `failed` after `max_attempts` or when older than
`max_age`. A wait (Zoho's rate-limit budget) is not an attempt, but the age limit still applies, so no
event stays pending for ever.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float
    max_age_seconds: float


@dataclass(frozen=True)
class Verdict:
    give_up: bool
    reason: str


def backoff(policy: RetryPolicy, failures: int, *, retry_after: float | None, jitter: float) -> float:
    """Seconds the item waits after its `failures`-th consecutive failure (>= 1). `jitter` in [0, 1)."""
    exp = policy.base_seconds * (2 ** max(0, failures - 1))
    delay = min(policy.max_seconds, exp) * (0.5 + 0.5 * jitter)
    return max(delay, retry_after or 0.0)


def after_attempt(policy: RetryPolicy, *, attempts: int, received_at: float, now: float, reason: str) -> Verdict:
    """An event's attempt failed transiently; `attempts` counts this one. Give up, or wait for a retry?"""
    if attempts >= policy.max_attempts:
        return Verdict(True, f"gave up after {attempts} attempts: {reason}")
    return after_wait(policy, received_at=received_at, now=now, reason=reason)


def after_wait(policy: RetryPolicy, *, received_at: float, now: float, reason: str) -> Verdict:
    """The event could not be tried (a wait, not an attempt): only its age can end it."""
    age = now - received_at
    if age > policy.max_age_seconds:
        return Verdict(True, f"gave up: still not synced {age:.0f}s after it was received: {reason}")
    return Verdict(False, reason)
