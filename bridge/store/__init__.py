"""Reading and writing the bridge's own rows. Plain functions over an Engine; no ORM session state.

This module keeps the engine-level helpers intake, the CLI and the admin pages use; the delivery core's
steps live beside it, split by what they store: `claims` (item claims, generations and back-off),
`outcomes` (finishing events, attempts), `links` (item and comment links). Those take a Connection, so
one fenced transaction can hold several of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Engine

from bridge.events import COMMENT_ACTIONS, ITEM_ACTIONS, Comment, NormalizedEvent
from bridge.store import counters
from bridge.store import schema as db
from bridge.store.sql import upsert
from bridge.store.states import DONE, EVENT_STATUSES, FAILED, PENDING, SKIPPED, SUPERSEDED  # noqa: F401 - the API


@dataclass(frozen=True)
class StoredEvent:
    id: int
    source: str
    dedup_key: str
    event_name: str
    item_key: str
    action: str
    source_ts: float
    received_at: float
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    notes: str | None
    event: NormalizedEvent

    @classmethod
    def from_row(cls, row: Any, *, strict: bool = True) -> StoredEvent:
        """`strict=False` (listing, showing) turns a row whose event cannot be read into a stand-in, so a
        failed poison event stays visible and replayable instead of breaking the page that lists it."""
        try:
            event = NormalizedEvent.from_json(json.loads(row.event_json))
        except Exception:
            if strict:
                raise
            event = _unreadable_event(row)
        return cls(
            id=row.id,
            source=row.source,
            dedup_key=row.dedup_key,
            event_name=row.event_name,
            item_key=row.item_key,
            action=row.action,
            source_ts=row.source_ts,
            received_at=row.received_at,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            notes=row.notes,
            event=event,
        )


def _unreadable_event(row: Any) -> NormalizedEvent:
    action = row.action if row.action in ITEM_ACTIONS + COMMENT_ACTIONS else "updated"
    comment = Comment(id="?", body="") if action in COMMENT_ACTIONS else None
    return NormalizedEvent(
        source=row.source,
        item_kind="item",
        item_key=row.item_key,
        action=action,
        event_name=row.event_name,
        source_ts=datetime.fromtimestamp(row.source_ts, UTC),
        comment=comment,
        has_state=False,
        notes=("the stored event cannot be read",),
    )


from bridge.store.deliveries import Recorded  # noqa: E402, F401 - (event id, fresh) with the item handle
from bridge.store.deliveries import record as record_delivery  # noqa: E402, F401 - intake's hot path, its own module


@dataclass(frozen=True)
class Link:
    source: str
    external_id: str
    item_key: str
    portal: str
    project: str
    zoho_issue_id: str | None
    state: str
    last_state_ts: float
    applied_hash: str | None
    last_fields: dict[str, Any] | None = None
    written: dict[str, Any] | None = None  # per field, what the bridge last wrote to the Zoho issue
    filter_matched: bool | None = None  # `when:`'s last answer (None: never filtered)
    zoho_status: str | None = None  # the Zoho status last seen or set by the bridge (talking back)

    @property
    def confirmed(self) -> bool:
        return self.state in ("linked", "deleted") and bool(self.zoho_issue_id)


# -- deliveries -------------------------------------------------------------------------------------


def get_event(engine: Engine, event_id: int) -> StoredEvent | None:
    with engine.connect() as conn:
        row = conn.execute(select(db.events).where(db.events.c.id == event_id)).first()
    return StoredEvent.from_row(row, strict=False) if row else None


def get_raw_delivery(engine: Engine, event_id: int) -> tuple[dict[str, str], bytes] | None:
    with engine.connect() as conn:
        row = conn.execute(select(db.events.c.headers, db.events.c.payload).where(db.events.c.id == event_id)).first()
    return (json.loads(row.headers), bytes(row.payload)) if row else None


def pending_for_item(engine: Engine, source: str, item_key: str, now: float) -> list[StoredEvent]:
    """Due pending events of one item, oldest source state first (received order breaks ties)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.events)
            .where(
                db.events.c.source == source,
                db.events.c.item_key == item_key,
                db.events.c.status == PENDING,
                db.events.c.next_attempt_at <= now,
            )
            .order_by(db.events.c.source_ts, db.events.c.id)
        ).all()
    return [StoredEvent.from_row(r) for r in rows]


def stale_items(engine: Engine, *, older_than: float, now: float, limit: int = 500) -> list[tuple[str, str]]:
    """Items with pending events that are due and were received before `older_than`."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.events.c.source, db.events.c.item_key)
            .where(
                db.events.c.status == PENDING,
                db.events.c.next_attempt_at <= now,
                or_(db.events.c.received_at <= older_than, db.events.c.attempts > 0),
            )
            .group_by(db.events.c.source, db.events.c.item_key)
            .limit(limit)
        ).all()
    return [(r.source, r.item_key) for r in rows]


def reset_for_replay(engine: Engine, event_ids: list[int]) -> int:
    """Put events back in the queue (after a mapping fix, say). Attempts history is kept."""
    if not event_ids:
        return 0
    from bridge.store import journal
    from bridge.store.clock import db_now

    with engine.begin() as conn:
        counters.events_replayed(conn, event_ids)
        result = conn.execute(
            update(db.events)
            .where(db.events.c.id.in_(event_ids))
            .values(status=PENDING, attempts=0, next_attempt_at=0.0, last_error=None, processed_at=None)
        )
        # A replay is a sign the cause may be gone: the items' failed side work is planned again too.
        items = conn.execute(select(db.events.c.source, db.events.c.item_key).where(db.events.c.id.in_(event_ids)))
        now = db_now(conn)
        for source, item_key in set(items.all()):
            journal.retry_failed(conn, now, kinds=journal.SIDE_KINDS, source=source, item_key=item_key)
    return int(result.rowcount or 0)


def list_events(
    engine: Engine, *, status: str | None = None, source: str | None = None, limit: int = 50
) -> list[StoredEvent]:
    query = select(db.events).order_by(db.events.c.id.desc()).limit(limit)
    if status:
        query = query.where(db.events.c.status == status)
    if source:
        query = query.where(db.events.c.source == source)
    with engine.connect() as conn:
        return [StoredEvent.from_row(r, strict=False) for r in conn.execute(query).all()]


def state_events_of(engine: Engine, source: str, item_key: str, *, limit: int = 200) -> list[NormalizedEvent]:
    """The item's stored events that carry its state, newest first (at most `limit`; unreadable rows skipped)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.events.c.event_json)
            .where(db.events.c.source == source, db.events.c.item_key == item_key)
            .order_by(db.events.c.id.desc())
            .limit(limit)
        ).all()
    events = []
    for row in rows:
        try:
            event = NormalizedEvent.from_json(json.loads(row.event_json))
        except Exception:  # noqa: S112 - a malformed row is failed by the core; here it only adds nothing
            continue
        if event.has_state:
            events.append(event)
    return events


def finished_events_of(
    engine: Engine, source: str, item_key: str, actions: tuple[str, ...], *, besides: int
) -> list[StoredEvent]:
    """The item's finished events of these actions, oldest source time first (past comments of an item that
    starts matching its mapping's `when:`)."""
    t = db.events
    with engine.connect() as conn:
        rows = conn.execute(
            select(t)
            .where(t.c.source == source, t.c.item_key == item_key, t.c.action.in_(actions))
            .where(t.c.id != besides, t.c.status.in_((DONE, FAILED, SKIPPED)))
            .order_by(t.c.source_ts, t.c.id)
        ).all()
    return [StoredEvent.from_row(r, strict=False) for r in rows]


def operation_refs(engine: Engine, source: str, item_key: str, kind: str) -> set[str]:
    """The refs of the item's journal operations of `kind` (bridge/store/journal.py)."""
    from bridge.store import journal

    with engine.connect() as conn:
        return journal.refs_of(conn, source, item_key, kind)


def forward_busy(engine: Engine) -> bool:
    """Live forward events are due now (by the database's clock): reverse polling waits (it is the lower
    priority in the shared budget). A backfill's events do not hold it back."""
    from bridge.store import steer
    from bridge.store.clock import db_now

    t = db.events
    with engine.connect() as conn:
        now = db_now(conn)
        rows = conn.execute(
            select(t.c.source, t.c.item_key)
            .where(t.c.status == PENDING, t.c.origin == "live", t.c.next_attempt_at <= now)
            .limit(steer.DUE_PROBE)
        ).all()
        return steer.any_free(conn, [(r.source, r.item_key) for r in rows])  # a paused backlog holds nothing back


def count_by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(db.events.c.status, func.count()).group_by(db.events.c.status)).all()
    return {status: int(n) for status, n in rows}


# -- links ------------------------------------------------------------------------------------------


def _link(row: Any) -> Link:
    return Link(
        source=row.source,
        external_id=row.external_id,
        item_key=row.item_key,
        portal=row.portal,
        project=row.project,
        zoho_issue_id=row.zoho_issue_id,
        state=row.state,
        last_state_ts=row.last_state_ts,
        applied_hash=row.applied_hash,
        last_fields=json.loads(row.last_fields) if row.last_fields else None,
        written=json.loads(row.written) if row.written else None,
        filter_matched=row.filter_matched,
        zoho_status=row.zoho_status,
    )


def get_link(engine: Engine, source: str, external_id: str) -> Link | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(db.links).where(db.links.c.source == source, db.links.c.external_id == external_id)
        ).first()
    return _link(row) if row else None


def list_links(engine: Engine, *, source: str | None = None, limit: int = 100) -> list[Link]:
    # A link an operator forgot (`links unlink`, state "unlinked") is kept only as the next create's doubt.
    query = select(db.links).where(db.links.c.state != "unlinked").order_by(db.links.c.id.desc()).limit(limit)
    if source:
        query = query.where(db.links.c.source == source)
    with engine.connect() as conn:
        return [_link(r) for r in conn.execute(query).all()]


# -- comment links ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentLink:
    zoho_comment_id: str | None
    state: str
    last_ts: float
    body_hash: str | None


# -- Zoho calls ---------------------------------------------------------------------------------------


_ENDPOINTS = (
    (r"/bugs/defaultfields/?$", "GET", "options"),
    (r"/settings/fields$", "GET", "fields"),
    (r"/(issues|bugs)(/search)?$", "GET", "issue.lookup"),
    (r"/(issues|bugs)$", "POST", "issue.create"),
    (r"/(issues|bugs)/[^/]+$", "PATCH", "issue.update"),
    (r"/(issues|bugs)/[^/]+$", "PUT", "issue.update"),
    (r"/comments$", "POST", "comment.create"),
    (r"/comments$", "GET", "comment.list"),
    (r"/comments/[^/]+$", "PATCH", "comment.update"),
    (r"/comments/[^/]+$", "PUT", "comment.update"),
    (r"/comments/[^/]+$", "DELETE", "comment.delete"),
)


def endpoint_of(method: str, path: str) -> str:
    """A low-cardinality name for a Zoho call, for metrics."""
    bare = path.split("?", 1)[0]
    for pattern, verb, name in _ENDPOINTS:
        if verb == method and re.search(pattern, bare):
            return name
    return "other"


def count_answer(engine: Engine, *, source: str, event: str, answer: str) -> None:
    """Count a delivery answered without storing it (ignored, duplicate, refused)."""
    with engine.begin() as conn:
        counters.delivery_answered(conn, source, event[:64], answer)
        stmt = _upsert(conn)(db.intake_counters).values(source=source, event=event[:64], answer=answer, count=1)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[db.intake_counters.c.source, db.intake_counters.c.event, db.intake_counters.c.answer],
                set_={"count": db.intake_counters.c.count + 1},
            )
        )


def calls_for_event(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.zoho_calls).where(db.zoho_calls.c.event_id == event_id).order_by(db.zoho_calls.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


def attempts_for_event(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.attempts).where(db.attempts.c.event_id == event_id).order_by(db.attempts.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


# -- leases -------------------------------------------------------------------------------------------


_upsert = upsert  # the name the store's older functions use


def acquire_lease(engine: Engine, name: str, holder: str, ttl: float) -> bool:
    """Take (or renew) a lease; the database arbitrates (and its clock times it), across processes and hosts."""
    from bridge.store.clock import db_now

    with engine.begin() as conn:
        now = db_now(conn)
        ins = _upsert(conn)(db.leases).values(name=name, holder=holder, expires_at=now + ttl)
        stmt = ins.on_conflict_do_update(
            index_elements=[db.leases.c.name],
            set_={"holder": holder, "expires_at": now + ttl},
            where=or_(db.leases.c.expires_at < now, db.leases.c.holder == holder),
        ).returning(db.leases.c.holder)
        row = conn.execute(stmt).first()
    return row is not None and row.holder == holder


def release_lease(engine: Engine, name: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(db.leases).where(and_(db.leases.c.name == name, db.leases.c.holder == holder)))


# -- kv -----------------------------------------------------------------------------------------------


def kv_get(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(db.kv.c.value).where(db.kv.c.key == key)).scalar()


def kv_set(engine: Engine, key: str, value: str) -> None:
    with engine.begin() as conn:
        stmt = _upsert(conn)(db.kv).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": value}))
