"""Budgets shared by every process and host, for every outside system, timed by the database's clock.

A call spends one or more budgets (its declaration in the system's call table names them). Kinds of limit:
- a **sliding window** of N calls per W seconds (Zoho Projects: 100 per 2 minutes, seed 001:737-739; GitHub's
  content-creating requests per minute and hour): N slots, a call takes the one used longest ago, only if that
  use is more than a window ago. Exact; any N works (the slots are made in bounded statements);
- a **rate with bursts** (BugHerd: "an average of 60 requests per minute, with bursts of up to 10", seed 002:29;
  GitHub's "one content request per second"): the generic cell rate algorithm, one row;
- a **daily quota** (Zoho BugTracker plans, seed 000:761-775), reset at midnight UTC;
- a **block**: until a time the provider named (a throttle answer, `Retry-After`, a reset header, capped at
  `max_block` seconds) or an **outage** (the breaker: consecutive failures to answer block the system for
  2, 4, 8 … up to `max_outage` seconds, so workers wait together instead of each spending an attempt).

Waiting is never failing: `take()` waits in this process up to `hold` seconds, else raises `LimitWait` with
the time left, and the caller reschedules the work (an item, a back-off, a backfill's pace) for then.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bridge.outbound.errors import LimitWait
from bridge.store import budgets as rows
from bridge.store.clock import db_now

log = logging.getLogger("bridge.outbound")
WINDOW_MARGIN = 1.0  # between taking a slot and the provider receiving the call


@dataclass(frozen=True)
class Limit:
    key: str  # "zoho", "github", "github.content", "bugherd", "bugzilla"
    count: int = 0  # calls per window; 0: no window or rate
    window: float = 60.0
    burst: int = 0  # > 0: a rate of count/window with bursts of this size (GCRA), instead of a sliding window
    daily: int = 0  # calls per UTC day; 0: none
    margin: float = WINDOW_MARGIN  # a window's slack for the time between taking a slot and the call arriving

    @property
    def interval(self) -> float:
        return self.window / self.count if self.count else 0.0


class _Wait(Exception):
    def __init__(self, wait: float, reason: str) -> None:
        super().__init__(reason)
        self.wait, self.reason = wait, reason


@dataclass(frozen=True)
class BudgetStatus:
    key: str
    blocked_until: float | None  # database time, when blocked
    reason: str | None
    used_in_window: int | None
    limit: Limit | None


class Budgets:
    """One per process, shared by every client of every system (the limits are registered by each client)."""

    def __init__(self, engine: Engine, *, max_block: float = 3600.0, max_outage: float = 60.0) -> None:
        self.engine = engine
        self.max_block = max_block
        self.max_outage = max_outage
        self.limits: dict[str, Limit] = {}
        self._sized: dict[str, int] = {}
        self._troubled: set[str] = set()  # budgets this process saw in an outage: `recovered` writes only then
        self._escalated: set[str] = set()  # budgets this process escalated: `calm` writes only then
        self.waited_seconds = 0.0

    def register(self, *limits: Limit) -> None:
        for limit in limits:
            self.limits[limit.key] = limit

    # -- taking -----------------------------------------------------------------------------------------------

    def take(self, keys: Sequence[str], *, hold: float = 0.0) -> float:
        """Spend one call of each budget in `keys`; wait here up to `hold` seconds. Returns the seconds
        waited; raises LimitWait when the wait is longer (nothing is spent then)."""
        started = time.monotonic()
        first = True
        while True:
            wait, reason = self._try(keys)
            if wait <= 0:
                waited = 0.0 if first else time.monotonic() - started
                self.waited_seconds += waited
                return waited
            if time.monotonic() - started + wait > hold:
                raise LimitWait(f"{reason}; next call possible in {wait:.1f}s", retry_after=wait)
            first = False
            time.sleep(min(wait, 0.5))

    def prepare(self, *keys: str) -> None:
        """Make the sliding windows' slots now (else the first call does), e.g. before processes race."""
        for key in keys or tuple(self.limits):
            limit = self.limits.get(key)
            if limit is not None and limit.count and not limit.burst and self._sized.get(key) != limit.count:
                with self.engine.begin() as conn:
                    rows.size_slots(conn, key, limit.count)
                self._sized[key] = limit.count

    def _try(self, keys: Sequence[str]) -> tuple[float, str]:
        limits = [self.limits.get(k) or Limit(k) for k in keys]
        if not any(limit.count or limit.daily for limit in limits):
            return self._blocked(limits)  # nothing to spend: only the shared blocks and breakers to honour
        self.prepare(*keys)
        try:
            return self._try_in(limits)
        except _Wait as wait:
            return wait.wait, wait.reason

    def _blocked(self, limits: list[Limit]) -> tuple[float, str]:
        """No window, rate or quota applies: nothing is spent, so no write transaction; one read of the blocks
        and breakers every process sets and honours (a throttle's block, an outage's pause), by the database's
        clock, as `_try_in` reads them."""
        with self.engine.connect() as conn:
            found = rows.blocks(conn, [limit.key for limit in limits])
        waits: list[tuple[float, str]] = []
        for block in found:
            if block.outages:
                self._troubled.add(block.budget)
            if block.remaining > 0:
                waits.append((block.remaining, block.reason or f"{block.budget} asked every worker to wait"))
        return max(waits) if waits else (0.0, "")

    def _try_in(self, limits: list[Limit]) -> tuple[float, str]:
        with self.engine.begin() as conn:
            now = db_now(conn)
            waits: list[tuple[float, str]] = []
            writes: list[tuple[str, dict[str, object]]] = []
            slots: list[tuple[str, int]] = []
            for limit in limits:
                locking = bool(limit.burst or limit.daily)
                state = rows.read(conn, limit.key, lock=locking)
                if state.outages:
                    self._troubled.add(limit.key)
                if state.blocked_until > now:
                    waits.append((state.blocked_until - now, state.reason or f"{limit.key} asked every worker to wait"))
                    continue
                values: dict[str, object] = {}
                if limit.daily:
                    day, midnight = rows.utc_day(now)
                    used = state.day_count if state.day == day else 0
                    if used >= limit.daily:
                        waits.append((max(1.0, midnight - now), f"{limit.key}'s daily quota of {limit.daily} is spent"))
                        continue
                    values.update(day=day, day_count=used + 1)
                if limit.count and limit.burst:
                    tau = limit.interval * (limit.burst - 1)
                    tat = max(state.tat, now)
                    if tat - now > tau:
                        waits.append((tat - now - tau, f"{limit.key} budget ({limit.count} per {limit.window:g}s)"))
                        continue
                    values["tat"] = tat + limit.interval
                elif limit.count:
                    oldest = rows.oldest_slot(conn, limit.key)
                    if oldest is None:
                        waits.append((0.05, f"{limit.key}: every slot is being taken right now"))
                        continue
                    ready = oldest[1] + limit.window + limit.margin
                    if ready > now:
                        used_up = f"{limit.key} budget ({limit.count} per {limit.window:g}s) is used up"
                        waits.append((ready - now, used_up))
                        continue
                    slots.append((limit.key, oldest[0]))
                if values:
                    writes.append((limit.key, values))
            if waits:
                raise _Wait(*max(waits))  # rolls the transaction back: nothing is spent
            for key, values in writes:
                rows.write(conn, key, now, **values)
            for key, slot in slots:
                rows.use_slot(conn, key, slot, now)
        return 0.0, ""

    # -- blocks --------------------------------------------------------------------------------------------------

    def block(self, key: str, seconds: float, reason: str) -> float:
        """Every process waits `seconds` (capped at `max_block`) from now; a longer block already set stands.
        Returns the block's end (database time)."""
        seconds = min(max(0.0, seconds), self.max_block)
        with self.engine.begin() as conn:
            now = db_now(conn)
            state = rows.read(conn, key, lock=True)
            until = now + seconds
            if state.blocked_until >= until:
                return state.blocked_until
            rows.write(conn, key, now, blocked_until=until, reason=reason)
        log.warning("%s blocked for %.0fs: %s", key, seconds, reason, extra={"budget": key})
        return until

    def unblock(self, key: str) -> bool:
        """Lift a block by hand (`issue-bridge zoho unblock`); True when one was in force."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            state = rows.read(conn, key, lock=True)
            rows.write(conn, key, now, blocked_until=0.0, outages=0, reason=None)
        self._troubled.discard(key)
        return state.blocked_until > now

    def outage(self, key: str, reason: str) -> float:
        """The system did not answer (network, 5xx): it is blocked for a doubling pause (2 s … `max_outage`),
        so every worker waits on one breaker. Returns the seconds of the pause."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            state = rows.read(conn, key, lock=True)
            outages = state.outages + 1
            pause = min(self.max_outage, 2.0 ** min(outages, 16))
            until = max(state.blocked_until, now + pause)
            rows.write(conn, key, now, outages=outages, blocked_until=until, reason=f"{reason} (outage #{outages})")
        self._troubled.add(key)
        return pause

    def recovered(self, key: str) -> None:
        """The system answered: the breaker closes (written only when this process saw it open)."""
        if key not in self._troubled:
            return
        with self.engine.begin() as conn:
            now = db_now(conn)
            state = rows.read(conn, key, lock=True)
            if state.outages:
                blocked = state.blocked_until if (state.reason or "").find("(outage #") < 0 else 0.0
                rows.write(conn, key, now, outages=0, blocked_until=blocked)
        self._troubled.discard(key)

    def escalate(self, key: str, base: float, reason: str) -> float:
        """A throttle that names no time (GitHub's secondary limit without `Retry-After`): block `key` for
        `base`, then 2x, 4x ... on consecutive refusals (capped at `max_block`), counted in the shared row
        `<key>.escalation`; `calm(key)` starts again at `base`. Returns the seconds of the block."""
        counter = f"{key}.escalation"
        with self.engine.begin() as conn:
            now = db_now(conn)
            state = rows.read(conn, counter, lock=True)
            count = state.outages + 1
            rows.write(conn, counter, now, outages=count)
        self._escalated.add(key)
        seconds = min(self.max_block, base * 2.0 ** min(count - 1, 16))
        self.block(key, seconds, f"{reason} (#{count} in a row: {seconds:.0f}s)")
        return seconds

    def calm(self, key: str) -> None:
        """A call went through after `escalate`: the next refusal starts again at the base wait."""
        if key not in self._escalated:
            return
        with self.engine.begin() as conn:
            rows.write(conn, f"{key}.escalation", db_now(conn), outages=0)
        self._escalated.discard(key)

    # -- reading ----------------------------------------------------------------------------------------------------

    def status(self) -> list[BudgetStatus]:
        return budget_status(self.engine, self.limits)


_shared: weakref.WeakKeyDictionary[Engine, Budgets] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_budgets(engine: Engine) -> Budgets:
    """The process's one `Budgets` for this database: every client of every system in the process spends
    through it (its limits are registered by each client), so nothing in a process keeps a budget of its own."""
    with _shared_lock:
        budgets = _shared.get(engine)
        if budgets is None:
            budgets = _shared[engine] = Budgets(engine)
        return budgets


def budget_status(engine: Engine, limits: dict[str, Limit] | None = None) -> list[BudgetStatus]:
    """Every budget's block and use (for `status`, /metrics and the front page): those with a row, and the
    registered ones."""
    limits = limits or {}
    with engine.connect() as conn:
        now = db_now(conn)
        states = {s.budget: s for s in rows.all_states(conn)}
        out = []
        for key in sorted(set(states) | set(limits)):
            state, limit = states.get(key), limits.get(key)
            blocked = state.blocked_until if state and state.blocked_until > now else None
            used = None
            if limit and limit.count and not limit.burst:
                used = rows.used_since(conn, key, now - limit.window)
            out.append(BudgetStatus(key, blocked, state.reason if blocked and state else None, used, limit))
    return out


def blocked_until(engine: Engine, key: str) -> tuple[float, float | None, str | None]:
    """(seconds the block on `key` still lasts, its end in database time or None, its reason)."""
    with engine.connect() as conn:
        now = db_now(conn)
        state = rows.peek(conn, key)
    if state is None or state.blocked_until <= now:
        return 0.0, None, None
    return state.blocked_until - now, state.blocked_until, state.reason
