"""Item claims: who works on an item now, fenced by a generation number and timed by the database's clock.

A claim is the item's row in `leases` (name `item:<source>:<item key>`), never deleted: each claim bumps
`generation`, and every write made under the claim runs in a transaction that starts with `fence()`, an
UPDATE that matches only while holder, generation and expiry are still ours. A worker whose claim expired
(paused, slow Zoho, a clock running ahead elsewhere) therefore cannot write anything once another worker
has claimed the item: its first fenced step raises `ClaimLost` and it stops. The row also carries the
item's back-off (`retry_at`, `failures`), so a burst of events of one failing item retries as one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent
from bridge.store import PENDING, CommentLink, Link, StoredEvent, _link, journal, steer
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run
from bridge.store.journal import OPEN, Operation
from bridge.store.links import comment_links

log = logging.getLogger("bridge.store.claims")

# The hot path never reads the raw delivery (headers, payload): only what processing needs.
_EVENT_COLUMNS = [c for c in db.events.c if c.name not in ("headers", "payload")]

# The worker's statements are built once (bound parameters, not literals): building and hashing a statement
# per call cost more CPU than SQLite's own work on it. SQLAlchemy's compiled cache then finds each at once.
_E, _L = db.events, db.leases
_OUR_ITEM = (_E.c.source == bindparam("source")) & (_E.c.item_key == bindparam("item_key"))
_DUE_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(_OUR_ITEM, _E.c.status == PENDING, _E.c.next_attempt_at <= bindparam("now"))
    .order_by(_E.c.source_ts, _E.c.id)
)
_LINK = (
    select(db.links)
    .where(db.links.c.source == bindparam("source"), db.links.c.item_key == bindparam("item_key"))
    .order_by(db.links.c.id)
    .limit(1)
)
_LATEST_EVENT = select(_E.c.event_json).where(_OUR_ITEM).order_by(_E.c.id.desc()).limit(1)
_ANY_FOUND = select(db.zoho_found.c.issue_id).limit(1)
_EVENTS_DUE_AT = select(func.min(_E.c.next_attempt_at)).where(_OUR_ITEM, _E.c.status == PENDING)
_DUE_TIMES = select(_EVENTS_DUE_AT.scalar_subquery(), journal.NEXT_DUE.scalar_subquery())
_LEASE_STATE = select(_L.c.expires_at, _L.c.retry_at).where(_L.c.name == bindparam("name"))
_FAILURES = select(_L.c.failures).where(_L.c.name == bindparam("name"))
_RELEASE = (
    update(_L)
    .where(_L.c.name == bindparam("b_name"), _L.c.generation == bindparam("b_gen"))
    .values(holder="", expires_at=0.0, retry_at=bindparam("b_retry_at"), failures=bindparam("b_failures"))
)
# The fence reads the database's clock in its own UPDATE (one statement, not two): SQLite's 'now' is one
# value within a statement; PostgreSQL's clock_timestamp() is read once, in the CTE.
_FENCE = {
    "sqlite": text(
        "UPDATE leases SET expires_at = (julianday('now') - 2440587.5) * 86400.0 + :ttl"
        " WHERE name = :name AND holder = :holder AND generation = :gen"
        " AND expires_at >= (julianday('now') - 2440587.5) * 86400.0"
        " RETURNING (julianday('now') - 2440587.5) * 86400.0"
    ),
    "postgresql": text(
        "WITH clock AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now)"
        " UPDATE leases SET expires_at = clock.now + :ttl FROM clock"
        " WHERE leases.name = :name AND leases.holder = :holder AND leases.generation = :gen"
        " AND leases.expires_at >= clock.now"
        " RETURNING clock.now"
    ),
}
# The claim: a new generation if the item is free and not backing off, the database's clock read in the same
# statement (SQLite's 'now' is one value within a statement; PostgreSQL's clock_timestamp() once, in the CTE).
_CLAIM = {
    "sqlite": text(
        "INSERT INTO leases (name, holder, expires_at, generation)"
        " VALUES (:name, :holder, (julianday('now') - 2440587.5) * 86400.0 + :ttl, 1)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
        " generation = leases.generation + 1"
        " WHERE leases.expires_at < (julianday('now') - 2440587.5) * 86400.0"
        " AND leases.retry_at <= (julianday('now') - 2440587.5) * 86400.0"
        " RETURNING holder, generation, (julianday('now') - 2440587.5) * 86400.0 AS now"
    ),
    "postgresql": text(
        "WITH clock AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now)"
        " INSERT INTO leases (name, holder, expires_at, generation) SELECT :name, :holder, clock.now + :ttl, 1"
        " FROM clock ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,"
        " generation = leases.generation + 1"
        " WHERE leases.expires_at < (SELECT now FROM clock) AND leases.retry_at <= (SELECT now FROM clock)"
        " RETURNING leases.holder, leases.generation, (SELECT now FROM clock) AS now"
    ),
}
# A refused claim: the lease's state and the clock, in one read.
_LEASE_STATE_NOW = {
    "sqlite": text(
        "SELECT expires_at, retry_at, (julianday('now') - 2440587.5) * 86400.0 AS now FROM leases WHERE name = :name"
    ),
    "postgresql": text(
        "SELECT expires_at, retry_at, EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now FROM leases"
        " WHERE name = :name"
    ),
}


RECHECK = "zoho.recheck"
# Operations that keep the item's Zoho state right: due whatever else is waiting (side work waits for them).
FORWARD_KINDS = ("zoho.create", "zoho.update", "zoho.recheck", "zoho.comment")


class ClaimLost(Exception):
    """Our claim on the item expired and another worker may hold it: stop without touching Zoho."""


def claim_name(source: str, item_key: str) -> str:
    return f"item:{source}:{item_key}"


@dataclass(frozen=True)
class Claim:
    source: str
    item_key: str
    holder: str
    generation: int
    ttl: float

    @property
    def name(self) -> str:
        return claim_name(self.source, self.item_key)


@dataclass(frozen=True)
class Batch:
    """What a claimed item has to do now, read in the claim's own transaction."""

    now: float  # database time of the read
    events: list[StoredEvent]
    link: Link | None
    unreadable: list[tuple[int, str]]  # (event id, why) rows that cannot be parsed: they go to `failed`
    latest_event: NormalizedEvent | None = None  # the item's newest event, when only operations are due
    comment_links: dict[str, CommentLink] = field(default_factory=dict)  # by source comment id
    ops: list[Operation] = field(default_factory=list)  # the journal's open operations of the item
    # Paused (`issue-bridge pause`): why the item is held ("source:github", "stopped", "mapping:<file>"), or
    # None; and the mapping files paused now (the core holds an item whose mapping is one of them).
    held: str | None = None
    paused_mappings: frozenset[str] = frozenset()
    # Zoho issues found by `links recover` or an adoption index exist (`zoho_found`): a create looks there first.
    found_any: bool = False

    def due(self, *kinds: str) -> list[Operation]:
        """Open operations of these kinds due by now (to send, or to resolve), oldest first."""
        found = [o for o in self.ops if o.kind in kinds and o.state in OPEN and o.next_at is not None]
        return sorted((o for o in found if o.next_at is not None and o.next_at <= self.now), key=_due_at)

    @property
    def recheck_due(self) -> bool:
        return bool(self.due(RECHECK))

    @property
    def work_due(self) -> bool:
        """Any operation due now (a re-check, side work, one in doubt to resolve)."""
        return any(o.state in OPEN and o.next_at is not None and o.next_at <= self.now for o in self.ops)

    @property
    def empty(self) -> bool:
        return not self.events and not self.unreadable and not self.work_due


def _due_at(op: Operation) -> float:
    return op.next_at if op.next_at is not None else 0.0


@dataclass(frozen=True)
class Refused:
    """The item could not be claimed: another worker holds it (`busy`) or it is backing off until `retry_at`."""

    busy: bool
    retry_at: float | None
    now: float  # database time of the refusal


def claim_item(engine: Engine, source: str, item_key: str, holder: str, ttl: float) -> tuple[Claim, Batch] | Refused:
    """Claim the item (a new generation) if it is free and not backing off, and read its due work."""
    name = claim_name(source, item_key)
    with engine.begin() as conn:
        dialect = conn.dialect.name
        row = run(conn, _CLAIM[dialect], {"name": name, "holder": holder, "ttl": ttl}).first()
        if row is None or row.holder != holder:
            state = run(conn, _LEASE_STATE_NOW[dialect], {"name": name}).first()
            now = float(state.now) if state is not None else db_now(conn)
            busy = state is not None and state.expires_at >= now
            return Refused(busy=busy, retry_at=None if busy or state is None else state.retry_at, now=now)
        claim = Claim(source, item_key, holder, int(row.generation), ttl)
        return claim, read_batch(conn, claim, float(row.now))


def read_batch(conn: Connection, claim: Claim, now: float | None = None) -> Batch:
    """The item's due pending events (oldest source state first) and its link."""
    now = db_now(conn) if now is None else now
    item = {"source": claim.source, "item_key": claim.item_key}
    rows = run(conn, _DUE_EVENTS, {**item, "now": now}).all()
    events: list[StoredEvent] = []
    unreadable: list[tuple[int, str]] = []
    for row in rows:
        try:
            events.append(StoredEvent.from_row(row))
        except Exception as exc:  # a malformed row must end, not loop: it is failed with the reason
            unreadable.append((int(row.id), f"the stored event cannot be read: {type(exc).__name__}: {exc}"))
    link_row = run(conn, _LINK, item).first()
    link = _link(link_row) if link_row else None
    ops = journal.open_for_item(conn, claim.source, claim.item_key)
    work_due = any(o.state in OPEN and o.next_at is not None and o.next_at <= now for o in ops)
    latest: NormalizedEvent | None = None
    if work_due and not events:
        json_text = run(conn, _LATEST_EVENT, item).scalar()
        if json_text:
            latest = NormalizedEvent.from_json(json.loads(json_text))
    held, paused_mappings = steer.claim_view(conn, claim.source, claim.item_key)
    wanted = link is not None and (events or work_due)
    comments = comment_links(conn, claim.source, link.external_id) if wanted and link is not None else {}
    return Batch(
        now=now,
        events=events,
        link=link,
        unreadable=unreadable,
        latest_event=latest,
        comment_links=comments,
        ops=ops,
        held=held,
        paused_mappings=paused_mappings,
        found_any=(link is None or not link.confirmed) and run(conn, _ANY_FOUND).first() is not None,
    )


def fence(conn: Connection, claim: Claim) -> float:
    """First statement of every write under a claim: renew it if it is still ours, else raise ClaimLost.

    On PostgreSQL the UPDATE also row-locks the claim until commit, so no other worker can take the item
    between this check and the writes that follow it in the same transaction.
    """
    params = {"name": claim.name, "holder": claim.holder, "gen": claim.generation, "ttl": claim.ttl}
    now = run(conn, _FENCE[conn.dialect.name], params).scalar()
    if now is None:
        raise ClaimLost(f"lost the claim on {claim.name} (generation {claim.generation})")
    return float(now)


@contextmanager
def fenced(engine: Engine, claim: Claim) -> Iterator[tuple[Connection, float]]:
    """A write transaction that holds only while the claim is ours: yields (connection, database time)."""
    with engine.begin() as conn:
        now = fence(conn, claim)
        yield conn, now


def release(conn: Connection, claim: Claim, *, retry_at: float = 0.0, failures: int = 0) -> None:
    """Give the item back (inside a fenced transaction); `retry_at` > now makes it back off until then."""
    params = {"b_name": claim.name, "b_gen": claim.generation, "b_retry_at": retry_at, "b_failures": failures}
    run(conn, _RELEASE, params)


def item_failures(conn: Connection, claim: Claim) -> int:
    return int(run(conn, _FAILURES, {"name": claim.name}).scalar() or 0)


def due_times(conn: Connection, source: str, item_key: str) -> tuple[float | None, float | None]:
    """When the item's earliest pending event and its earliest open operation are due (DB time; None: none).
    One statement, two indexed reads: the finishing step asks it before it reads a whole batch."""
    row = run(conn, _DUE_TIMES, {"source": source, "item_key": item_key}).one()
    return row[0], row[1]


def next_due(conn: Connection, source: str, item_key: str) -> float | None:
    """When the item has work again: its earliest pending event or due operation (DB time)."""
    return earliest(*due_times(conn, source, item_key))


def earliest(*times: float | None) -> float | None:
    dues = [t for t in times if t is not None]
    return min(dues) if dues else None


def wake_waiting(conn: Connection, now: float, reason_prefix: str, sources: list[str]) -> list[tuple[str, str]]:
    """The pending events of `sources` waiting for a fix their reason names (`last_error` starting with
    `reason_prefix`, e.g. a missing mapping) are due now, and their items' back-off is lifted. Returns the items
    (to wake). Run when that fix may have come (a mapping file appeared or changed), not per event."""
    e = db.events.c
    waiting = (e.status == PENDING) & e.source.in_(sources)
    rows = conn.execute(
        select(e.source, e.item_key).where(waiting, e.last_error.startswith(reason_prefix, autoescape=True)).distinct()
    ).all()
    if not rows:
        return []
    conn.execute(
        update(db.events)
        .where(waiting, e.last_error.startswith(reason_prefix, autoescape=True), e.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    names = [claim_name(str(r.source), str(r.item_key)) for r in rows]
    conn.execute(update(_L).where(_L.c.name.in_(names), _L.c.retry_at > now).values(retry_at=now))
    return [(str(r.source), str(r.item_key)) for r in rows]


_STALE: dict[int, Any] = {}


def stale_items(engine: Engine, *, grace: float, limit: int = 500) -> list[tuple[str, str]]:
    """Items with work due by the database's clock that nobody picked up: pending events received more than
    `grace` seconds ago (or retried), and operations that are due (re-checks, side work, doubts to resolve).
    Side work waits while live deliveries are due: forward sync goes first in the shared budgets. Paused items
    (their source paused, or held) are left alone; the oldest items come first, so a resumed backlog drains
    in the order it arrived."""
    query = _STALE.get(limit)
    if query is None:  # built once: the sweeper asks every few seconds, mostly finding nothing
        query = _STALE.setdefault(
            limit,
            select(_E.c.source, _E.c.item_key)
            .where(
                _E.c.status == PENDING,
                _E.c.next_attempt_at <= bindparam("now"),
                or_(_E.c.received_at <= bindparam("received_by"), _E.c.attempts > 0),
                steer.not_held(_E.c.source, _E.c.item_key),
            )
            .group_by(_E.c.source, _E.c.item_key)
            .order_by(func.min(_E.c.id))
            .limit(limit),
        )
    with engine.connect() as conn:
        now = db_now(conn)
        rows = run(conn, query, {"now": now, "received_by": now - grace}).all()
        forward_due = bool(rows)
        ops = journal.due_items(conn, now, kinds=None if not forward_due else FORWARD_KINDS, limit=limit)
    seen = dict.fromkeys([(r.source, r.item_key) for r in rows] + ops)
    return list(seen)
