"""Zoho's call budget, shared by every worker process and host: budget `zoho` of `bridge.outbound.budget`.

- Projects v3 documents 100 calls per 2 minutes (seed 001:737-739) and a 30-minute block once exceeded; live
  portals answer the block as HTTP 400 (or even 200) `URL_ROLLING_THROTTLES_LIMIT_EXCEEDED` naming the minutes
  (zoho-facts.md). BugTracker documents the plan's per-minute limit and a daily quota (seed 000:761-775), and
  `X-RateLimit-Remaining` / `-Reset` headers (000:777-783).
- A block stops every call of every process until it ends (by the database's clock); `issue-bridge zoho unblock`
  lifts it by hand. A spent daily quota waits for midnight UTC instead of failing.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from bridge.outbound.budget import WINDOW_MARGIN, Budgets, Limit, blocked_until, shared_budgets
from bridge.outbound.errors import LimitWait
from bridge.store import budgets as rows
from bridge.store.clock import db_now

BUDGET = "zoho"


class RateLimitTimeout(Exception):
    def __init__(self, wait: float, reason: str = "Zoho call budget exhausted") -> None:
        super().__init__(f"{reason}; next call possible in {wait:.1f}s")
        self.wait = wait
        self.reason = reason


class RateLimiter:
    """Zoho's budget as the transport uses it: take a call (or learn how long to wait), block, unblock."""

    def __init__(
        self,
        engine: Engine,
        per_window: int,
        *,
        window: float = 60.0,
        margin: float = WINDOW_MARGIN,
        daily_limit: int = 0,
        budgets: Budgets | None = None,
        max_block: float = 3600.0,
    ) -> None:
        # The process's one set of budgets (every system's), whose blocks RATE_BLOCK_MAX_SECONDS caps.
        self.budgets = budgets or shared_budgets(engine)
        self.budgets.max_block = max_block
        self.limit = Limit(BUDGET, count=per_window, window=window, daily=daily_limit, margin=margin)
        self.budgets.register(self.limit)
        self.per_minute = per_window  # the name other modules know; it is "per window"
        self.window = window
        self.daily_limit = daily_limit

    def prepare(self) -> None:
        self.budgets.prepare(BUDGET)

    @property
    def waited_seconds(self) -> float:
        return self.budgets.waited_seconds

    def acquire(self, timeout: float = 30.0) -> float:
        """Wait for a call (up to `timeout` seconds); returns the seconds waited. RateLimitTimeout with the
        remaining wait when it is longer (a block, a spent quota, a full window): the caller reschedules."""
        try:
            return self.budgets.take([BUDGET], hold=timeout)
        except LimitWait as exc:
            raise RateLimitTimeout(exc.retry_after or 1.0, exc.reason.split(";")[0]) from None

    def block(self, seconds: float, reason: str) -> float:
        """Every process waits `seconds` (capped) from now; a longer block already set stands. Returns its end."""
        return self.budgets.block(BUDGET, seconds, reason)

    def unblock(self) -> bool:
        return self.budgets.unblock(BUDGET)

    def note_remaining(self, remaining: int, reset_in: float) -> None:
        """BugTracker's `X-RateLimit-Remaining: 0`: no call before `X-RateLimit-Reset` (seed 000:777-783)."""
        if remaining <= 0 and reset_in > 0:
            self.block(reset_in, "Zoho's X-RateLimit-Remaining is 0 until X-RateLimit-Reset")


def block_status(engine_or_conn: Engine | Connection) -> tuple[float, float | None]:
    """(seconds Zoho's block still lasts, its end as UNIX seconds or None): for /metrics and status."""
    if isinstance(engine_or_conn, Engine):
        remaining, until, _ = blocked_until(engine_or_conn, BUDGET)
        return remaining, until
    now = db_now(engine_or_conn)
    state = rows.peek(engine_or_conn, BUDGET)
    if state is None or state.blocked_until <= now:
        return 0.0, None
    return state.blocked_until - now, state.blocked_until
