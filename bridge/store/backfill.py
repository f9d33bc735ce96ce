"""Backfills: their rows (`backfills`: scope, cursor, progress) and the backfill lane's parked events, which the
feeder releases to the workers (bridge/backfill/feeder.py decides how many; these are its statements).

A parked event is a pending event of a backfill's origin due at `PARKED_AT` (never, until released).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run
from bridge.store.sql import upsert
from bridge.store.states import PENDING

PARKED_AT = 10_000_000_000.0  # year 2286: "not before the feeder releases it"
BACKFILL_ORIGIN = "backfill:%"  # the origin of every backfill's events (`backfill:<id>`), as a LIKE pattern
FED_AT_KEY = "backfill.fed_at"  # kv: the feeder's token bucket, kept as one time
_B, _E = db.backfills, db.events
_ANY_PARKED = select(_E.c.id).where(_E.c.status == PENDING, _E.c.next_attempt_at >= PARKED_AT).limit(1)


@dataclass(frozen=True)
class Backfill:
    """A `backfills` row."""

    id: int
    source: str
    scope: str  # canonical JSON of the options
    state: str
    cursor: str | None
    items_read: int
    events_stored: int
    duplicates: int
    source_calls: int
    planned_zoho_calls: float
    paced_until: float
    last_error: str | None
    started_at: float
    updated_at: float
    finished_at: float | None


def _backfill(row: Any) -> Backfill:
    return Backfill(**{c.name: getattr(row, c.name) for c in _B.columns})


# -- the backfills table ------------------------------------------------------------------------------------


def create(conn: Connection, source: str, scope: str, state: str, now: float) -> int:
    result = conn.execute(
        insert(_B).values(
            source=source,
            scope=scope,
            state=state,
            items_read=0,
            events_stored=0,
            duplicates=0,
            source_calls=0,
            planned_zoho_calls=0.0,
            paced_until=0.0,
            started_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def find_resumable(conn: Connection, source: str, scope: str, states: tuple[str, ...]) -> Backfill | None:
    """The newest backfill of this source and scope in one of `states` (the unfinished ones)."""
    row = conn.execute(
        select(_B).where(_B.c.source == source, _B.c.scope == scope, _B.c.state.in_(states)).order_by(_B.c.id.desc())
    ).first()
    return _backfill(row) if row is not None else None


def save(conn: Connection, backfill_id: int, **values: Any) -> None:
    """Update the backfill's columns (`values`), stamped with the database's time."""
    conn.execute(update(_B).where(_B.c.id == backfill_id).values(updated_at=db_now(conn), **values))


def recent(conn: Connection, limit: int) -> list[Backfill]:
    """The newest `limit` backfills, newest first."""
    return [_backfill(r) for r in conn.execute(select(_B).order_by(_B.c.id.desc()).limit(limit)).all()]


def event_counts(conn: Connection, origin: str) -> dict[str, int]:
    """Events of one backfill (`origin`) per status."""
    rows = conn.execute(select(_E.c.status, func.count()).where(_E.c.origin == origin).group_by(_E.c.status)).all()
    return {s: int(n) for s, n in rows}


def latest_payload(conn: Connection, source: str, item_key: str) -> bytes | None:
    """The newest stored body of an item that is not a deletion (a backfilled object or a webhook's)."""
    row = conn.execute(
        select(_E.c.payload)
        .where(_E.c.source == source, _E.c.item_key == item_key, _E.c.action != "deleted")
        .order_by(_E.c.source_ts.desc(), _E.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else bytes(row.payload)


# -- the lane's parked events (the feeder) ------------------------------------------------------------------------


def _lane() -> ColumnElement[bool]:
    return and_(_E.c.origin.like(BACKFILL_ORIGIN), _E.c.status == PENDING)


def lease_live(conn: Connection, name: str, now: float) -> bool:
    """Whether the lease `name` is held at `now` (the database's clock)."""
    row = conn.execute(
        select(db.leases.c.expires_at).where(db.leases.c.name == name, db.leases.c.expires_at >= now)
    ).first()
    return row is not None


def fed_at(conn: Connection) -> float | None:
    """Up to when the lane's pace has been spent (None: never fed), read inside the feeder's transaction."""
    raw = conn.execute(select(db.kv.c.value).where(db.kv.c.key == FED_AT_KEY)).scalar()
    return float(raw) if raw else None


def set_fed_at(conn: Connection, value: float) -> None:
    stmt = upsert(conn)(db.kv).values(key=FED_AT_KEY, value=repr(value))
    conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": repr(value)}))


def in_flight(conn: Connection) -> int:
    """Backfill events released (due) and not done yet."""
    return int(
        conn.execute(select(func.count()).select_from(_E).where(_lane(), _E.c.next_attempt_at < PARKED_AT)).scalar_one()
    )


def parked(conn: Connection, limit: int) -> list[tuple[str, str, str]]:
    """(source, item key, event name) of the oldest parked events, `limit` of them."""
    rows = conn.execute(
        select(_E.c.source, _E.c.item_key, _E.c.event_name)
        .where(_lane(), _E.c.next_attempt_at >= PARKED_AT)
        .order_by(_E.c.id)
        .limit(limit)
    ).all()
    return [(r.source, r.item_key, r.event_name) for r in rows]


def parked_event_names(conn: Connection, source: str, item_key: str) -> list[str]:
    """The event names of one item's parked events."""
    names = conn.execute(
        select(_E.c.event_name).where(
            _lane(), _E.c.next_attempt_at >= PARKED_AT, _E.c.source == source, _E.c.item_key == item_key
        )
    ).scalars()
    return list(names)


def release(conn: Connection, items: list[tuple[str, str]], now: float) -> None:
    """Make these items' parked events due at `now`."""
    conn.execute(
        update(_E)
        .where(
            _lane(),
            _E.c.next_attempt_at >= PARKED_AT,
            or_(*(and_(_E.c.source == s, _E.c.item_key == k) for s, k in items)),
        )
        .values(next_attempt_at=now)
    )


def anything_parked(conn: Connection) -> bool:
    return run(conn, _ANY_PARKED, {}).first() is not None


def parked_count(conn: Connection, origin: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(_E)
            .where(_E.c.origin == origin, _E.c.status == PENDING, _E.c.next_attempt_at >= PARKED_AT)
        ).scalar_one()
    )
