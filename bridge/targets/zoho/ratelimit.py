"""One Zoho call budget shared by every worker process and host, arbitrated and timed by the database.

- A sliding window of `limit` slots per `window` seconds: a call takes the slot used longest ago, and only if
  that use is more than a window ago (plus a small margin for the time between taking a slot and Zoho
  receiving the call). Projects v3 documents 100 calls per 2 minutes (seed 001:737-739); BugTracker the
  plan's per-minute limit (seed 000:761-775).
- A block: after a 429 every process waits until one shared deadline. Zoho Projects documents "exceeding
  this limit restricts further requests for 30 minutes" and sends no reset header, so a header-less 429
  blocks everyone for `ZOHO_RATE_BLOCK_SECONDS`; BugTracker's `X-RateLimit-Reset` sets the deadline instead.
- A daily quota (BugTracker plans: 5,000 / 25,000 / 100,000 calls per day, reset at midnight UTC): when it is
  spent, work waits for the next day instead of failing.

Every time here is the database's clock (`bridge.store.clock.db_now`), so a host whose clock is off can neither
spend a slot early nor end the block early.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from bridge.store import schema as db
from bridge.store.clock import db_now, engine_now

BACKOFF_KEY = "zoho.backoff_until"  # the block's end, UNIX seconds by the database clock
BACKOFF_REASON_KEY = "zoho.backoff_reason"
DAY_KEY = "zoho.calls_on."  # + YYYY-MM-DD (UTC): calls made that day, for the daily quota


class RateLimitTimeout(Exception):
    def __init__(self, wait: float, reason: str = "Zoho call budget exhausted") -> None:
        super().__init__(f"{reason}; next call possible in {wait:.1f}s")
        self.wait = wait
        self.reason = reason


def _insert(conn: Connection):  # type: ignore[no-untyped-def]
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


def _kv_read(conn: Connection, key: str, *, lock: bool = False) -> str | None:
    query = select(db.kv.c.value).where(db.kv.c.key == key)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).scalar()


def _kv_write(conn: Connection, key: str, value: str) -> None:
    stmt = _insert(conn)(db.kv).values(key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": value}))


class RateLimiter:
    def __init__(
        self,
        engine: Engine,
        per_window: int,
        *,
        window: float = 60.0,
        margin: float = 1.0,
        daily_limit: int = 0,
    ) -> None:
        self._engine = engine
        self.per_minute = per_window  # the name other modules know; it is "per window"
        self.window = window
        self._span = window + margin
        self.daily_limit = daily_limit
        self._initialized = False
        self.waited_seconds = 0.0  # total time this process spent waiting (metrics)

    def _init_slots(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                _insert(conn)(db.rate_slots)
                .values([{"slot": i, "used_at": 0.0} for i in range(self.per_minute)])
                .on_conflict_do_nothing(index_elements=[db.rate_slots.c.slot])
            )
            # A lowered budget: slots beyond it must not count.
            conn.execute(db.rate_slots.delete().where(db.rate_slots.c.slot >= self.per_minute))
        self._initialized = True

    def acquire(self, timeout: float = 30.0) -> float:
        """Wait for a call slot (up to `timeout` seconds); returns the seconds waited.

        Raises RateLimitTimeout with the remaining wait when it is longer than `timeout` (a block, a spent
        daily quota, a full window): the caller reschedules the work rather than holding a worker.
        """
        if self.per_minute > 0 and not self._initialized:
            self._init_slots()
        started = time.monotonic()
        first = True
        while True:
            wait, reason = self._try_take()
            if wait <= 0:
                waited = 0.0 if first else time.monotonic() - started
                self.waited_seconds += waited
                return waited
            if time.monotonic() - started + wait > timeout:
                raise RateLimitTimeout(wait, reason)
            first = False
            time.sleep(min(wait, 0.5))

    def _try_take(self) -> tuple[float, str]:
        """(0, "") when a call may go now (its slot and its daily count taken), else (seconds to wait, why)."""
        with self._engine.begin() as conn:
            now = db_now(conn)
            until = _kv_read(conn, BACKOFF_KEY)
            if until and float(until) > now:
                reason = _kv_read(conn, BACKOFF_REASON_KEY) or "Zoho asked every worker to wait"
                return float(until) - now, reason
            if self.daily_limit > 0:
                day = datetime.fromtimestamp(now, UTC).date()
                key = DAY_KEY + day.isoformat()
                used = _kv_read(conn, key, lock=True)
                if used is None:
                    conn.execute(_insert(conn)(db.kv).values(key=key, value="0").on_conflict_do_nothing())
                    used = _kv_read(conn, key, lock=True)
                if int(used or 0) >= self.daily_limit:
                    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
                    return max(1.0, midnight - now), f"Zoho's daily quota of {self.daily_limit} calls is spent"
            if self.per_minute > 0:
                query = select(db.rate_slots.c.slot, db.rate_slots.c.used_at).order_by(db.rate_slots.c.used_at)
                query = query.limit(1)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                row = conn.execute(query).first()
                if row is None:
                    return 0.05, "every slot is being taken right now"
                ready_at = row.used_at + self._span
                if ready_at > now:
                    return ready_at - now, f"Zoho call budget ({self.per_minute} per {self.window:g}s) is used up"
                conn.execute(update(db.rate_slots).where(db.rate_slots.c.slot == row.slot).values(used_at=now))
            if self.daily_limit > 0:
                _kv_write(conn, key, str(int(used or 0) + 1))
            return 0.0, ""

    def block(self, seconds: float, reason: str) -> float:
        """Every process waits `seconds` from now (database clock); a longer block already set stands.
        Returns the block's end."""
        with self._engine.begin() as conn:
            now = db_now(conn)
            until = now + max(0.0, seconds)
            current = _kv_read(conn, BACKOFF_KEY, lock=True)
            if current is not None and float(current) >= until:
                return float(current)
            _kv_write(conn, BACKOFF_KEY, repr(until))
            _kv_write(conn, BACKOFF_REASON_KEY, reason)
            return until

    def note_remaining(self, remaining: int, reset_in: float) -> None:
        """BugTracker's `X-RateLimit-Remaining: 0`: no call before `X-RateLimit-Reset` (seed 000:777-783)."""
        if remaining <= 0 and reset_in > 0:
            self.block(reset_in, "Zoho's X-RateLimit-Remaining is 0 until X-RateLimit-Reset")


def block_status(engine_or_conn: Engine | Connection) -> tuple[float, float | None]:
    """(seconds the shared block still lasts, its end as UNIX seconds or None): for /metrics."""
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return block_status(conn)
    until = _kv_read(engine_or_conn, BACKOFF_KEY)
    now = db_now(engine_or_conn)
    if not until or float(until) <= now:
        return 0.0, None
    return float(until) - now, float(until)


def seconds_until(engine: Engine, deadline: float) -> float:
    """Seconds from now (database clock) until `deadline` (UNIX seconds by the database clock)."""
    return max(0.0, deadline - engine_now(engine))
