"""Keyset-paged reads of the event history: memory and time per page independent of the table's size.

Every query here walks an index (`ix_events_status_id` or the primary key) from a known id, so the n-th
page costs what the first does (no OFFSET), and no caller ever holds more than one page of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from sqlalchemy import exists, func, select
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.store import counters
from bridge.store import schema as db

BATCH = 500


class EventRef(NamedTuple):
    id: int
    source: str
    item_key: str


def page_events(
    engine: Engine,
    *,
    status: str | None = None,
    source: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[store.StoredEvent]:
    """One page, newest first, of events older than `before_id` (the last id of the previous page)."""
    e = db.events
    query = select(e).order_by(e.c.id.desc()).limit(limit)
    if status:
        query = query.where(e.c.status == status)
    if source:
        query = query.where(e.c.source == source)
    if before_id is not None:
        query = query.where(e.c.id < before_id)
    with engine.connect() as conn:
        return [store.StoredEvent.from_row(r) for r in conn.execute(query).all()]


def iter_events(
    engine: Engine, *, status: str | None = None, source: str | None = None, batch: int = BATCH
) -> Iterator[store.StoredEvent]:
    """Every matching event, newest first, one page in memory at a time (no connection held between pages)."""
    before: int | None = None
    while True:
        page = page_events(engine, status=status, source=source, before_id=before, limit=batch)
        yield from page
        if len(page) < batch:
            return
        before = page[-1].id


def id_batches(engine: Engine, status: str, *, batch: int = BATCH) -> Iterator[list[EventRef]]:
    """(id, source, item_key) of every event in `status`, oldest first, `batch` at a time.

    Walks ids upward, so callers may change the status of a batch (replay) before asking for the next."""
    e = db.events
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(e.c.id, e.c.source, e.c.item_key)
                .where(e.c.status == status, e.c.id > after)
                .order_by(e.c.id)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield [EventRef(r.id, r.source, r.item_key) for r in rows]
        if len(rows) < batch:
            return
        after = rows[-1].id


def dry_run_unsent(conn: Connection, *, after: int, limit: int) -> list[EventRef]:
    """Finished events after id `after` with recorded dry-run calls and no real one, oldest first, `limit` of them
    (what `events replay --from-dry-run` puts back)."""
    e, calls = db.events, db.zoho_calls
    recorded = exists().where(calls.c.event_id == e.c.id, calls.c.dry_run.is_(True))
    sent = exists().where(calls.c.event_id == e.c.id, calls.c.dry_run.is_(False))
    rows = conn.execute(
        select(e.c.id, e.c.source, e.c.item_key)
        .where(e.c.id > after, e.c.status != store.PENDING, recorded, ~sent)
        .order_by(e.c.id)
        .limit(limit)
    ).all()
    return [EventRef(r.id, r.source, r.item_key) for r in rows]


def status_counts(engine: Engine) -> dict[str, int]:
    """Stored events per status: pending and failed counted from their index (the backlog), the finished
    states from the stored-events gauge in `metric_counters` (their number grows with history)."""
    e = db.events
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for name in (store.PENDING, store.FAILED):
            out[name] = int(conn.execute(select(func.count()).where(e.c.status == name)).scalar() or 0)
        for labels, value in counters.read_all(conn).get(counters.EVENTS_STORED, []):
            status = labels.get("status", "")
            if status not in (store.PENDING, store.FAILED):
                out[status] = out.get(status, 0) + int(value)
    return {status: n for status, n in out.items() if n}
