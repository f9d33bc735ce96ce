"""The backfill lane's feeder: releases parked backfill events to the workers, within the budget share, and only
while the workers keep up, so live deliveries never queue behind a backlog of backfilled work.

A backfill stores its events *parked* (`next_attempt_at = PARKED_AT`, far in the future): workers take only
due events and the stale sweeper wakes only due events, so parked ones wait. Every second while any are parked
(a chain of tasks, below, and the `backfill` command after each page) `release` makes some of them due, oldest
first, whole items at a time:

- at most `BACKFILL_BUDGET_SHARE` x the Zoho budget (calls a second) since the last release, and
- only while fewer than `IN_FLIGHT_SECONDS` of that pace (at most `MAX_IN_FLIGHT` events) are released but not
  done: when the workers fall behind (a slow Zoho, few or busy workers) nothing more is released, so the broker
  queue stays short and a live webhook's task waits behind a handful of backfilled items at most.

Everything is in the database, timed by its clock (`db_now`): a crash of the command, of a worker or of beat
loses nothing; the next release continues. A lease keeps two releasers from doubling the pace.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine

from bridge import store
from bridge.settings import Settings
from bridge.store import schema as db
from bridge.store.clock import db_now

PARKED_AT = 10_000_000_000.0  # year 2286: "not before the feeder releases it"
LEASE = "backfill:feeder"
FED_AT_KEY = "backfill.fed_at"
IN_FLIGHT_SECONDS = 2.0  # released-but-not-done work allowed, in seconds of the backfill's pace
MIN_IN_FLIGHT = 4  # events: even a tiny budget keeps a worker busy
MAX_IN_FLIGHT = 20  # events: a live task never queues behind more than this, however large the budget
MAX_GAP_SECONDS = 5.0  # allowance saved up while idle (or blocked) is capped: no burst after a pause
UNLIMITED_RATE = 200.0  # calls a second when the Zoho budget is unlimited (0): still a bounded lane
BACKFILL_ORIGIN = "backfill:%"
CREATE_COST, UPDATE_COST, COMMENT_COST = 1.0, 1.0, 1.0  # Zoho calls per backfilled create, update, comment


def budget_rate(settings: Settings) -> float | None:
    """Zoho calls a second a backfill may use; None when the Zoho budget is unlimited (0)."""
    if settings.zoho_rate_limit_per_minute <= 0 or settings.zoho_rate_window_seconds <= 0:
        return None
    return settings.backfill_budget_share * settings.zoho_rate_limit_per_minute / settings.zoho_rate_window_seconds


def lane_rate(settings: Settings) -> float:
    return budget_rate(settings) or UNLIMITED_RATE


# The feeder runs as a chain of tasks (workers.tasks.feed_backfill), one at a time: while a backfill has parked
# events it releases some every FEED_EVERY_SECONDS; when none are left it ends. The chain renews a lease at each
# link; `backfill` and the stale sweeper start a chain when none holds it (one lost with a worker expires).
CHAIN_LEASE = "backfill:feeder-chain"
FEED_EVERY_SECONDS = 1.0
CHAIN_TTL_SECONDS = 15.0


def hold_chain(engine: Engine, chain: str) -> bool:
    """Take or renew the chain's lease; False while another chain holds it."""
    return store.acquire_lease(engine, CHAIN_LEASE, chain, CHAIN_TTL_SECONDS)


def end_chain(engine: Engine, chain: str) -> None:
    store.release_lease(engine, CHAIN_LEASE, chain)


def chain_alive(engine: Engine) -> bool:
    with engine.connect() as conn:
        now = db_now(conn)
        row = conn.execute(
            select(db.leases.c.expires_at).where(db.leases.c.name == CHAIN_LEASE, db.leases.c.expires_at >= now)
        ).first()
    return row is not None


def release(engine: Engine, settings: Settings) -> list[tuple[str, str]]:
    """Make the next parked backfill events due; returns their items (to wake a worker for each)."""
    if not anything_parked(engine):
        return []  # the common case, every second: one indexed lookup, no write
    holder = f"{socket.gethostname()}:{os.getpid()}"
    if not store.acquire_lease(engine, LEASE, holder, 30.0):
        return []
    try:
        return _release(engine, lane_rate(settings))
    finally:
        store.release_lease(engine, LEASE, holder)


def _release(engine: Engine, rate: float) -> list[tuple[str, str]]:
    events = db.events
    lane = and_(events.c.origin.like(BACKFILL_ORIGIN), events.c.status == store.PENDING)
    with engine.begin() as conn:
        now = db_now(conn)
        raw = conn.execute(select(db.kv.c.value).where(db.kv.c.key == FED_AT_KEY)).scalar()
        # A token bucket kept as one time: the pace has been spent up to `paid_until` (it may be ahead of now).
        paid_until = max(float(raw) if raw else now - 1.0, now - MAX_GAP_SECONDS)
        if paid_until >= now:
            return []
        in_flight = conn.execute(
            select(func.count()).select_from(events).where(lane, events.c.next_attempt_at < PARKED_AT)
        ).scalar_one()
        cap = max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, rate * IN_FLIGHT_SECONDS))
        allowance = min(rate * (now - paid_until), cap - in_flight)
        if allowance <= 0:
            _set_fed_at(conn, paid_until)  # workers behind: release nothing, save up no more than the cap
            return []
        rows = conn.execute(
            select(events.c.source, events.c.item_key, events.c.event_name)
            .where(lane, events.c.next_attempt_at >= PARKED_AT)
            .order_by(events.c.id)
            .limit(int(allowance) * 4 + 20)
        ).all()
        chosen: OrderedDict[tuple[str, str], float] = OrderedDict()
        spent = 0.0
        for row in rows:
            key = (row.source, row.item_key)
            if key in chosen:
                continue
            if chosen and spent >= allowance:
                break
            chosen[key] = _item_cost(conn, key, lane)
            spent += chosen[key]
        if not chosen:
            return []
        _set_fed_at(conn, paid_until + spent / rate)
        conn.execute(
            update(events)
            .where(
                lane,
                events.c.next_attempt_at >= PARKED_AT,
                or_(*(and_(events.c.source == s, events.c.item_key == k) for s, k in chosen)),
            )
            .values(next_attempt_at=now)
        )
    return list(chosen)


def _item_cost(conn, key: tuple[str, str], lane) -> float:  # type: ignore[no-untyped-def]
    """Expected Zoho calls of an item's parked events: its state (a create, or an update) plus one a comment."""
    source, item_key = key
    names = conn.execute(
        select(db.events.c.event_name).where(
            lane,
            db.events.c.next_attempt_at >= PARKED_AT,
            db.events.c.source == source,
            db.events.c.item_key == item_key,
        )
    ).scalars()
    comments = states = 0
    for name in names:
        if "comment" in name:
            comments += 1
        else:
            states += 1
    linked = conn.execute(
        select(db.links.c.id).where(db.links.c.source == source, db.links.c.item_key == item_key)
    ).first()
    state_cost = (UPDATE_COST if linked else CREATE_COST) if states else 0.0
    return state_cost + comments * COMMENT_COST


def anything_parked(engine: Engine) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            select(db.events.c.id)
            .where(db.events.c.status == store.PENDING, db.events.c.next_attempt_at >= PARKED_AT)
            .limit(1)
        ).first()
    return row is not None


def _set_fed_at(conn, value: float) -> None:  # type: ignore[no-untyped-def]
    stmt = store._upsert(conn)(db.kv).values(key=FED_AT_KEY, value=repr(value))
    conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": repr(value)}))


def parked_count(engine: Engine, origin: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(db.events)
                .where(
                    db.events.c.origin == origin,
                    db.events.c.status == store.PENDING,
                    db.events.c.next_attempt_at >= PARKED_AT,
                )
            ).scalar_one()
        )
