"""How events end: finished with a status, or back in the queue after a counted attempt. Connection-level,
so the delivery core runs them inside its fenced transactions."""

from __future__ import annotations

import json

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent
from bridge.store import PENDING, counters
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run

# The worker's statements, built once (see bridge/store/claims.py): bound parameters, SET from the parameters.
_E = db.events
_THIS_EVENT = _E.c.id == bindparam("b_id")
# Compare-and-set on `pending`, returning what the counters label the change with: one statement, where a read
# (locked FOR UPDATE on PostgreSQL) and then the UPDATE were two.
_FINISH = (
    update(_E)
    .where(_THIS_EVENT, _E.c.status == PENDING)
    .values(status=bindparam("b_status"), last_error=bindparam("b_error"), processed_at=bindparam("b_now"))
    .returning(_E.c.source, _E.c.source_ts)
)
_COUNT_ATTEMPT = update(_E).where(_THIS_EVENT).values(attempts=_E.c.attempts + 1).returning(_E.c.attempts)
_ATTEMPT_ROW = insert(db.attempts)
_DEFER = (
    update(_E)
    .where(_THIS_EVENT, _E.c.status == PENDING)
    .values(next_attempt_at=bindparam("b_at"), last_error=bindparam("b_error"))
)


def finish(conn: Connection, event_id: int, status: str, now: float, *, error: str | None = None) -> bool:
    """End a pending event. Compare-and-set on `pending`: a replay reset mid-attempt is not absorbed."""
    params = {"b_id": event_id, "b_status": status, "b_error": error, "b_now": now}
    row = run(conn, _FINISH, params).first()
    if row is None:
        return False
    counters.finished_from(conn, row.source, PENDING, status, source_ts=row.source_ts)
    return True


def add_notes(conn: Connection, event_id: int, notes: list[str]) -> None:
    """Append notes to the event's, each line once: a retried attempt that notes the same thing again (a
    skipped attachment, a clamped timestamp) adds nothing."""
    if not notes:
        return
    old = conn.execute(select(db.events.c.notes).where(db.events.c.id == event_id)).scalar() or ""
    kept = f"; {old}; "
    added = []
    for note in notes:
        if note and f"; {note}; " not in kept:
            added.append(note)
            kept += f"{note}; "
    if added:
        conn.execute(
            update(db.events).where(db.events.c.id == event_id).values(notes="; ".join(n for n in (old, *added) if n))
        )


def replace_event(conn: Connection, event_id: int, event: NormalizedEvent) -> None:
    """Store a completed version of an event (fields fetched from the source's API)."""
    conn.execute(
        update(db.events)
        .where(db.events.c.id == event_id)
        .values(
            event_json=json.dumps(event.to_json()), notes="; ".join(dict.fromkeys(n for n in event.notes if n)) or None
        )
    )


def count_attempt(
    conn: Connection, event_id: int, *, started_at: float, now: float, outcome: str, detail: str = ""
) -> int:
    """Count one attempt of an event and keep its history row; returns the event's attempt count."""
    counters.attempt_finished(conn, outcome)
    number = int(run(conn, _COUNT_ATTEMPT, {"b_id": event_id}).scalar_one())  # the count, in the same UPDATE
    row = {"event_id": event_id, "number": number, "started_at": started_at, "finished_at": now, "outcome": outcome}
    run(conn, _ATTEMPT_ROW, {**row, "detail": detail[:4000]})
    return number


def defer(conn: Connection, event_id: int, *, at: float, error: str | None) -> None:
    conn.execute(_DEFER, {"b_id": event_id, "b_at": at, "b_error": error})


def defer_item(conn: Connection, source: str, item_key: str, *, at: float) -> None:
    """Every pending event of the item waits until `at`: the item backs off as one, not event by event."""
    conn.execute(
        update(db.events)
        .where(
            db.events.c.source == source,
            db.events.c.item_key == item_key,
            db.events.c.status == PENDING,
            db.events.c.next_attempt_at < at,
        )
        .values(next_attempt_at=at)
    )


def live_due_besides(engine: Engine, source: str, item_key: str) -> bool:
    """Whether live deliveries of other items are due now (by the database's clock): side work waits then."""
    from bridge.store import steer

    t = db.events
    with engine.connect() as conn:
        now = db_now(conn)
        rows = conn.execute(
            select(t.c.source, t.c.item_key)
            .where(t.c.status == PENDING, t.c.origin == "live", t.c.next_attempt_at <= now)
            .where(or_(t.c.source != source, t.c.item_key != item_key))
            .limit(steer.DUE_PROBE)
        ).all()
        return steer.any_free(conn, [(r.source, r.item_key) for r in rows])  # paused ones hold nothing back
