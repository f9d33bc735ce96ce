"""What operators do by hand: forget a link, apply an item's state again, and the one-screen status.

Small SQLAlchemy Core functions on `bridge.store.schema`'s tables, beside `bridge.store` (whose functions serve the
delivery core); the CLI and, later, the admin pages call them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bridge.store import FAILED, PENDING, Link, StoredEvent, _link, budgets, counters, journal, steer
from bridge.store import schema as db
from bridge.store.clock import db_now, engine_now
from bridge.store.links import UNLINKED

RESYNC_PREFIX = "resync:"
SOURCES = ("github", "bugzilla", "bugherd")


def _as_link(row: Any) -> Link:
    return _link(row)


def item_history(conn: Connection, source: str, item_key: str, *, limit: int = 200) -> list[StoredEvent]:
    """An item's events, newest first; an event that cannot be read is shown as a stand-in (the lookup page)."""
    e = db.events
    rows = conn.execute(
        select(e).where(e.c.source == source, e.c.item_key == item_key).order_by(e.c.id.desc()).limit(limit)
    ).all()
    return [StoredEvent.from_row(r, strict=False) for r in rows]


def live_link(conn: Connection, source: str, item_key: str) -> Link | None:
    """The item's link unless an operator forgot it (`links unlink`)."""
    row = conn.execute(
        select(db.links).where(
            db.links.c.source == source, db.links.c.item_key == item_key, db.links.c.state != UNLINKED
        )
    ).first()
    return _link(row) if row is not None else None


def link_by_issue(engine: Engine, zoho_issue_id: str) -> Link | None:
    with engine.connect() as conn:
        row = conn.execute(select(db.links).where(db.links.c.zoho_issue_id == zoho_issue_id).limit(1)).first()
    return _as_link(row) if row else None


def linked_items(engine: Engine, sources: list[str]) -> list[Link]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.links).where(db.links.c.source.in_(sources), db.links.c.state == "linked").order_by(db.links.c.id)
        ).all()
    return [_link(r) for r in rows]


def linked_projects(engine: Engine, sources: list[str]) -> list[tuple[str, str]]:
    t = db.links
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.portal, t.c.project).where(t.c.source.in_(sources), t.c.state == "linked").distinct()
        ).all()
    return [(r.portal, r.project) for r in rows]


class NotFound(Exception):
    """No link or event matches what the operator named."""


def find_links(engine: Engine, external_id: str, source: str | None = None) -> list[Link]:
    """Links whose external id (`github:acme/web#5`) or item key (`acme/web#5`) is `external_id`."""
    query = select(db.links).where(
        or_(db.links.c.external_id == external_id, db.links.c.item_key == external_id), db.links.c.state != UNLINKED
    )
    if source:
        query = query.where(db.links.c.source == source)
    with engine.connect() as conn:
        return [_as_link(row) for row in conn.execute(query).all()]


def unlink(
    engine: Engine, external_id: str, source: str | None = None, *, actor: str = "cli"
) -> tuple[list[Link], int]:
    """Forget the link(s) and their comment links; the item's next event re-finds or creates its Zoho issue.

    Returns (links removed, comment links removed). The Zoho issue itself is left alone: finding it by its
    external id is how the next event adopts it again, if it still exists.
    """
    found = find_links(engine, external_id, source)
    if not found:
        raise NotFound(f"no link for {external_id!r}" + (f" in {source}" if source else ""))
    comments = 0
    with engine.begin() as conn:
        for link in found:
            comments += (
                conn.execute(
                    delete(db.comment_links).where(
                        db.comment_links.c.source == link.source, db.comment_links.c.external_id == link.external_id
                    )
                ).rowcount
                or 0
            )
            conn.execute(
                update(db.links)
                .where(db.links.c.source == link.source, db.links.c.external_id == link.external_id)
                .values(state=UNLINKED, zoho_issue_id=None, applied_hash=None, last_state_ts=0.0, written=None)
            )
            journal.forget_issue(conn, link.source, link.item_key, since=link_created_at(conn, link))
            steer.record(conn, link.source, link.item_key, "unlink", f"forgot Zoho issue {link.zoho_issue_id}", actor)
    return found, comments


def link_created_at(conn: Any, link: Link) -> float:
    at = conn.execute(
        select(db.links.c.created_at).where(db.links.c.source == link.source, db.links.c.item_key == link.item_key)
    ).scalar()
    return float(at or 0.0)


@dataclass(frozen=True)
class Resync:
    event_id: int
    source: str
    item_key: str
    copied_from: int


def resync(engine: Engine, external_id: str, source: str | None = None, *, actor: str = "cli") -> Resync:
    """Apply the item's latest known state again: a new pending event, a copy of its newest state event.

    The link's applied-body hash is cleared so the update is sent even if nothing changed on our side (the
    point is usually an edit made by hand in Zoho, or a Zoho issue that was fixed up). An item without a link
    (never synced, or unlinked) is created, or found on Zoho by its external id, as on any event.
    """
    links = find_links(engine, external_id, source)
    keys = {(link.source, link.item_key) for link in links}
    if not keys:  # not linked (never synced, or unlinked): find the item by its key among the events
        wanted, key = source, external_id
        prefix, _, rest = external_id.partition(":")
        if rest and prefix in SOURCES and source in (None, prefix):
            wanted, key = prefix, rest  # the shipped mappings' external ids are `<source>:<item key>`
        with engine.connect() as conn:
            query = select(db.events.c.source, db.events.c.item_key).where(db.events.c.item_key.in_({key, external_id}))
            if wanted:
                query = query.where(db.events.c.source == wanted)
            keys = {(row.source, row.item_key) for row in conn.execute(query.distinct()).all()}
    if not keys:
        raise NotFound(f"no link and no event for {external_id!r}" + (f" in {source}" if source else ""))
    if len(keys) > 1:
        names = ", ".join(f"{s} {k}" for s, k in sorted(keys))
        raise NotFound(f"{external_id!r} names more than one item ({names}): give --source")
    item_source, item_key = keys.pop()
    with engine.begin() as conn:
        latest = conn.execute(
            select(db.events)
            .where(
                db.events.c.source == item_source,
                db.events.c.item_key == item_key,
                db.events.c.action.in_(("created", "updated", "deleted")),
            )
            .order_by(db.events.c.source_ts.desc(), db.events.c.id.desc())
            .limit(1)
        ).first()
        if latest is None:
            raise NotFound(f"no state event is stored for {item_source} {item_key}: nothing to apply again")
        event = json.loads(latest.event_json)
        if not event.get("has_state", True):
            raise NotFound(f"event {latest.id}, the newest for {item_key}, carried none of its fields")
        result = conn.execute(
            insert(db.events).values(
                source=item_source,
                dedup_key=f"{RESYNC_PREFIX}{uuid.uuid4().hex}",
                event_name=latest.event_name,
                item_key=item_key,
                action=latest.action,
                source_ts=latest.source_ts,
                received_at=db_now(conn),
                status=PENDING,
                attempts=0,
                next_attempt_at=0.0,
                headers=json.dumps({"X-Issue-Bridge": "resync"}),
                payload=latest.payload,
                event_json=latest.event_json,
                notes=f"resync: a copy of event {latest.id}, applied again by an operator",
            )
        )
        counters.delivery_stored(conn, item_source, latest.event_name)
        conn.execute(
            update(db.links)
            .where(db.links.c.source == item_source, db.links.c.item_key == item_key)
            .values(applied_hash=None)
        )
        journal.retry_failed(conn, db_now(conn), kinds=journal.SIDE_KINDS, source=item_source, item_key=item_key)
        inserted = result.inserted_primary_key
        assert inserted is not None
        steer.record(
            conn, item_source, item_key, "resync", f"event {inserted[0]} queued (a copy of {latest.id})", actor
        )
    assert inserted is not None
    return Resync(int(inserted[0]), item_source, item_key, int(latest.id))


# -- status ----------------------------------------------------------------------------------------------


@dataclass
class Status:
    now: float
    counts: dict[str, int]
    oldest_pending_at: float | None
    due_now: int
    failing: list[dict[str, Any]]
    zoho_calls_last_minute: int
    zoho_failed_last_hour: int
    backoff_until: float | None
    last_event_at: float | None
    backoff_reason: str | None = None  # why Zoho's block is in force (a throttle's message, an outage)
    extra_sections: list[tuple[str, list[str]]] = field(default_factory=list)  # e.g. backfills (#15)


def status(engine: Engine, *, failing_limit: int = 10) -> Status:
    now = engine_now(engine)
    events = db.events.c
    with engine.connect() as conn:
        counts = {s: int(n) for s, n in conn.execute(select(events.status, func.count()).group_by(events.status))}
        oldest = conn.execute(select(func.min(events.received_at)).where(events.status == PENDING)).scalar()
        due = conn.execute(
            select(func.count()).where(events.status == PENDING, events.next_attempt_at <= now)
        ).scalar_one()
        last = conn.execute(select(func.max(events.received_at))).scalar()
        failing = [
            {
                "event_id": row.id,
                "source": row.source,
                "item": row.item_key,
                "event": row.event_name,
                "at": row.processed_at or row.received_at,
                "reason": row.last_error or "",
                "status": row.status,
            }
            for row in conn.execute(
                select(events.id, events.source, events.item_key, events.event_name)
                .add_columns(events.processed_at, events.received_at, events.last_error, events.status)
                .where(or_(events.status == FAILED, (events.status == PENDING) & events.last_error.is_not(None)))
                .order_by(events.id.desc())
                .limit(failing_limit)
            )
        ]
        calls = db.zoho_calls.c
        recent = conn.execute(select(func.count()).where(calls.at >= now - 60, calls.dry_run.is_(False))).scalar_one()
        refused = conn.execute(
            select(func.count()).where(calls.at >= now - 3600, calls.status >= 400, calls.dry_run.is_(False))
        ).scalar_one()
        zoho = budgets.peek(conn, "zoho")
    backoff_until = zoho.blocked_until if zoho is not None and zoho.blocked_until > now else None
    return Status(
        now=now,
        counts=counts,
        oldest_pending_at=float(oldest) if oldest is not None else None,
        due_now=int(due),
        failing=failing,
        zoho_calls_last_minute=int(recent),
        zoho_failed_last_hour=int(refused),
        backoff_until=backoff_until,
        last_event_at=float(last) if last is not None else None,
        backoff_reason=zoho.reason if backoff_until is not None and zoho is not None else None,
    )
