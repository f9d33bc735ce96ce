"""One Zoho call budget shared by every worker process and host, arbitrated by the database.

A sliding window of `per_minute` slots: a call takes the slot used longest ago, and only if that
use is more than a window ago. So no window of 60 s (plus a small margin for the time between
taking a slot and Zoho receiving the call) ever holds more than `per_minute` calls. A 429 from
Zoho sets a back-off deadline that every process honours.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from bridge import db, store

BACKOFF_KEY = "zoho.backoff_until"


class RateLimitTimeout(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"Zoho call budget exhausted; next slot in {wait:.1f}s")
        self.wait = wait


class RateLimiter:
    def __init__(self, engine: Engine, per_minute: int, *, window: float = 60.0, margin: float = 1.0) -> None:
        self._engine = engine
        self.per_minute = per_minute
        self._span = window + margin
        self._initialized = False
        self.waited_seconds = 0.0  # total time this process spent waiting (metrics)

    def _init_slots(self) -> None:
        with self._engine.begin() as conn:
            insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
            conn.execute(
                insert(db.rate_slots)
                .values([{"slot": i, "used_at": 0.0} for i in range(self.per_minute)])
                .on_conflict_do_nothing(index_elements=[db.rate_slots.c.slot])
            )
            # A lowered budget: slots beyond it must not count.
            conn.execute(db.rate_slots.delete().where(db.rate_slots.c.slot >= self.per_minute))
        self._initialized = True

    def acquire(self, timeout: float = 30.0) -> float:
        """Wait for a slot (up to `timeout`); returns the seconds waited."""
        if self.per_minute <= 0:
            # No budget configured, but a 429 still holds every process back.
            backoff = store.kv_get(self._engine, BACKOFF_KEY)
            wait = float(backoff) - time.time() if backoff else 0.0
            if wait > timeout:
                raise RateLimitTimeout(wait)
            if wait > 0:
                time.sleep(wait)
            return max(0.0, wait)
        if not self._initialized:
            self._init_slots()
        started = time.monotonic()
        while True:
            wait = self._try_take()
            if wait <= 0:
                waited = time.monotonic() - started
                self.waited_seconds += waited
                return waited
            if time.monotonic() - started + wait > timeout:
                raise RateLimitTimeout(wait)
            time.sleep(min(wait, 0.5))

    def _try_take(self) -> float:
        now = time.time()
        backoff = store.kv_get(self._engine, BACKOFF_KEY)
        if backoff and float(backoff) > now:
            return float(backoff) - now
        with self._engine.begin() as conn:
            query = select(db.rate_slots.c.slot, db.rate_slots.c.used_at).order_by(db.rate_slots.c.used_at).limit(1)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return 0.05
            ready_at = row.used_at + self._span
            if ready_at > now:
                return ready_at - now
            conn.execute(update(db.rate_slots).where(db.rate_slots.c.slot == row.slot).values(used_at=now))
            return 0.0

    def penalize(self, until: float) -> None:
        """Zoho answered 429: every process waits until `until`."""
        current = store.kv_get(self._engine, BACKOFF_KEY)
        if current is None or float(current) < until:
            store.kv_set(self._engine, BACKOFF_KEY, repr(until))
