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

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent
from bridge.store import PENDING, CommentLink, Link, StoredEvent, _link, journal, steer
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.journal import OPEN, Operation
from bridge.store.links import comment_links
from bridge.store.sql import upsert as _upsert

log = logging.getLogger("bridge.store.claims")

# The hot path never reads the raw delivery (headers, payload): only what processing needs.
_EVENT_COLUMNS = [c for c in db.events.c if c.name not in ("headers", "payload")]


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
        now = db_now(conn)
        ins = _upsert(conn)(db.leases).values(name=name, holder=holder, expires_at=now + ttl, generation=1)
        stmt = ins.on_conflict_do_update(
            index_elements=[db.leases.c.name],
            set_={"holder": holder, "expires_at": now + ttl, "generation": db.leases.c.generation + 1},
            where=(db.leases.c.expires_at < now) & (db.leases.c.retry_at <= now),
        ).returning(db.leases.c.holder, db.leases.c.generation)
        row = conn.execute(stmt).first()
        if row is None or row.holder != holder:
            state = conn.execute(
                select(db.leases.c.expires_at, db.leases.c.retry_at).where(db.leases.c.name == name)
            ).first()
            busy = state is not None and state.expires_at >= now
            return Refused(busy=busy, retry_at=None if busy or state is None else state.retry_at, now=now)
        claim = Claim(source, item_key, holder, int(row.generation), ttl)
        return claim, read_batch(conn, claim, now)


def read_batch(conn: Connection, claim: Claim, now: float | None = None) -> Batch:
    """The item's due pending events (oldest source state first) and its link."""
    now = db_now(conn) if now is None else now
    rows = conn.execute(
        select(*_EVENT_COLUMNS)
        .where(
            db.events.c.source == claim.source,
            db.events.c.item_key == claim.item_key,
            db.events.c.status == PENDING,
            db.events.c.next_attempt_at <= now,
        )
        .order_by(db.events.c.source_ts, db.events.c.id)
    ).all()
    events: list[StoredEvent] = []
    unreadable: list[tuple[int, str]] = []
    for row in rows:
        try:
            events.append(StoredEvent.from_row(row))
        except Exception as exc:  # a malformed row must end, not loop: it is failed with the reason
            unreadable.append((int(row.id), f"the stored event cannot be read: {type(exc).__name__}: {exc}"))
    link_row = conn.execute(
        select(db.links)
        .where(db.links.c.source == claim.source, db.links.c.item_key == claim.item_key)
        .order_by(db.links.c.id)
    ).first()
    link = _link(link_row) if link_row else None
    ops = journal.open_for_item(conn, claim.source, claim.item_key)
    work_due = any(o.state in OPEN and o.next_at is not None and o.next_at <= now for o in ops)
    latest: NormalizedEvent | None = None
    if work_due and not events:
        json_text = conn.execute(
            select(db.events.c.event_json)
            .where(db.events.c.source == claim.source, db.events.c.item_key == claim.item_key)
            .order_by(db.events.c.id.desc())
            .limit(1)
        ).scalar()
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
        found_any=(link is None or not link.confirmed)
        and conn.execute(select(db.zoho_found.c.issue_id).limit(1)).first() is not None,
    )


def fence(conn: Connection, claim: Claim) -> float:
    """First statement of every write under a claim: renew it if it is still ours, else raise ClaimLost.

    On PostgreSQL the UPDATE also row-locks the claim until commit, so no other worker can take the item
    between this check and the writes that follow it in the same transaction.
    """
    now = db_now(conn)
    result = conn.execute(
        update(db.leases)
        .where(
            db.leases.c.name == claim.name,
            db.leases.c.holder == claim.holder,
            db.leases.c.generation == claim.generation,
            db.leases.c.expires_at >= now,
        )
        .values(expires_at=now + claim.ttl)
    )
    if result.rowcount != 1:
        raise ClaimLost(f"lost the claim on {claim.name} (generation {claim.generation})")
    return now


@contextmanager
def fenced(engine: Engine, claim: Claim) -> Iterator[tuple[Connection, float]]:
    """A write transaction that holds only while the claim is ours: yields (connection, database time)."""
    with engine.begin() as conn:
        now = fence(conn, claim)
        yield conn, now


def release(conn: Connection, claim: Claim, *, retry_at: float = 0.0, failures: int = 0) -> None:
    """Give the item back (inside a fenced transaction); `retry_at` > now makes it back off until then."""
    conn.execute(
        update(db.leases)
        .where(db.leases.c.name == claim.name, db.leases.c.generation == claim.generation)
        .values(holder="", expires_at=0.0, retry_at=retry_at, failures=failures)
    )


def item_failures(conn: Connection, claim: Claim) -> int:
    return int(conn.execute(select(db.leases.c.failures).where(db.leases.c.name == claim.name)).scalar() or 0)


def next_due(conn: Connection, source: str, item_key: str) -> float | None:
    """When the item has work again: its earliest pending event or due operation (DB time)."""
    event_due = conn.execute(
        select(func.min(db.events.c.next_attempt_at)).where(
            db.events.c.source == source, db.events.c.item_key == item_key, db.events.c.status == PENDING
        )
    ).scalar()
    op_due = journal.next_due(conn, source, item_key)
    dues = [t for t in (event_due, op_due) if t is not None]
    return min(dues) if dues else None


def stale_items(engine: Engine, *, grace: float, limit: int = 500) -> list[tuple[str, str]]:
    """Items with work due by the database's clock that nobody picked up: pending events received more than
    `grace` seconds ago (or retried), and operations that are due (re-checks, side work, doubts to resolve).
    Side work waits while live deliveries are due: forward sync goes first in the shared budgets. Paused items
    (their source paused, or held) are left alone; the oldest items come first, so a resumed backlog drains
    in the order it arrived."""
    with engine.connect() as conn:
        now = db_now(conn)
        rows = conn.execute(
            select(db.events.c.source, db.events.c.item_key)
            .where(
                db.events.c.status == PENDING,
                db.events.c.next_attempt_at <= now,
                or_(db.events.c.received_at <= now - grace, db.events.c.attempts > 0),
                steer.not_held(db.events.c.source, db.events.c.item_key),
            )
            .group_by(db.events.c.source, db.events.c.item_key)
            .order_by(func.min(db.events.c.id))
            .limit(limit)
        ).all()
        forward_due = bool(rows)
        ops = journal.due_items(conn, now, kinds=None if not forward_due else FORWARD_KINDS, limit=limit)
    seen = dict.fromkeys([(r.source, r.item_key) for r in rows] + ops)
    return list(seen)
