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

from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.settings import Settings
from bridge.store import backfill as lane
from bridge.store import links
from bridge.store.backfill import FED_AT_KEY, PARKED_AT  # noqa: F401 - the feeder's names, kept in the store
from bridge.store.clock import db_now

LEASE = "backfill:feeder"
IN_FLIGHT_SECONDS = 2.0  # released-but-not-done work allowed, in seconds of the backfill's pace
MIN_IN_FLIGHT = 4  # events: even a tiny budget keeps a worker busy
MAX_IN_FLIGHT = 20  # events: a live task never queues behind more than this, however large the budget
MAX_GAP_SECONDS = 5.0  # allowance saved up while idle (or blocked) is capped: no burst after a pause
UNLIMITED_RATE = 200.0  # calls a second when the Zoho budget is unlimited (0): still a bounded lane
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
        return lane.lease_live(conn, CHAIN_LEASE, now)


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
    with engine.begin() as conn:
        now = db_now(conn)
        fed = lane.fed_at(conn)
        # A token bucket kept as one time: the pace has been spent up to `paid_until` (it may be ahead of now).
        paid_until = max(fed if fed is not None else now - 1.0, now - MAX_GAP_SECONDS)
        if paid_until >= now:
            return []
        in_flight = lane.in_flight(conn)
        cap = max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, rate * IN_FLIGHT_SECONDS))
        allowance = min(rate * (now - paid_until), cap - in_flight)
        if allowance <= 0:
            lane.set_fed_at(conn, paid_until)  # workers behind: release nothing, save up no more than the cap
            return []
        rows = lane.parked(conn, int(allowance) * 4 + 20)
        chosen: OrderedDict[tuple[str, str], float] = OrderedDict()
        spent = 0.0
        for source, item_key, _name in rows:
            key = (source, item_key)
            if key in chosen:
                continue
            if chosen and spent >= allowance:
                break
            chosen[key] = _item_cost(conn, key)
            spent += chosen[key]
        if not chosen:
            return []
        lane.set_fed_at(conn, paid_until + spent / rate)
        lane.release(conn, list(chosen), now)
    return list(chosen)


def _item_cost(conn: Connection, key: tuple[str, str]) -> float:
    """Expected Zoho calls of an item's parked events: its state (a create, or an update) plus one a comment."""
    source, item_key = key
    names = lane.parked_event_names(conn, source, item_key)
    comments = states = 0
    for name in names:
        if "comment" in name:
            comments += 1
        else:
            states += 1
    linked = links.item_linked(conn, source, item_key)
    state_cost = (UPDATE_COST if linked else CREATE_COST) if states else 0.0
    return state_cost + comments * COMMENT_COST


def anything_parked(engine: Engine) -> bool:
    with engine.connect() as conn:
        return lane.anything_parked(conn)


def parked_count(engine: Engine, origin: str) -> int:
    with engine.connect() as conn:
        return lane.parked_count(conn, origin)
