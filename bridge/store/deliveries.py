"""Intake's one write: a delivery stored with statements compiled once, on the driver's own cursor.

This is the hot path of every webhook, so it does only what the answer and the worker need, in as few
statements as the guarantees allow:

- the event row, carrying everything a worker reads (its item, its normalized event, the raw delivery), with
  `received_at` set by the database's clock in the same INSERT;
- its counter deltas (`counters.delivery_stored`): on PostgreSQL in the same statement (a data-modifying
  CTE), on SQLite a second statement of the same transaction;
- for a source with stable identities (GitHub), the item handle the identity is bound to: one indexed read
  when it is bound; when it is not (an item's first delivery), the binding is made first (`INSERT … ON
  CONFLICT DO NOTHING`: a concurrent first delivery that won keeps its binding, read back), so every event of
  an identity is filed under one handle before any worker can claim it. A transfer (an event naming a
  previous identity) goes through `identities.resolve`, in a transaction of its own.

The SQL is compiled once per dialect (plain text, the driver's parameter style) and run on the DBAPI cursor,
skipping SQLAlchemy's per-statement machinery; the table and column names are schema.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from bridge.events import NormalizedEvent
from bridge.store import counters

PENDING = "pending"
DB_EPOCH_SQL = {
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_VALUES = (
    "source",
    "dedup_key",
    "event_name",
    "item_key",
    "action",
    "source_ts",
    "next_attempt_at",
    "headers",
    "payload",
    "event_json",
    "notes",
    "origin",
)


class Recorded(tuple[int, bool]):
    """(event id, stored now), and the item handle the event is filed under."""

    item_key: str

    def __new__(cls, event_id: int, fresh: bool, item_key: str) -> Recorded:
        obj = super().__new__(cls, (event_id, fresh))
        obj.item_key = item_key
        return obj


# The statements, with `:name` parameters and DB_NOW for the database's clock (names as in schema.py). On
# PostgreSQL the delivery's counter deltas go in the same statement as the event (a data-modifying CTE); on
# SQLite they are a second statement of the same transaction.
_INSERT = (
    "INSERT INTO events (source, dedup_key, event_name, item_key, action, source_ts, next_attempt_at, headers, "
    "payload, event_json, notes, origin, received_at, status, attempts) VALUES (:source, :dedup_key, :event_name, "
    ":item_key, :action, :source_ts, :next_attempt_at, :headers, :payload, :event_json, :notes, :origin, DB_NOW, "
    "'pending', 0) RETURNING id"
)
_DELTAS = (
    "INSERT INTO metric_deltas (name, labels, value) "
    "VALUES (:n_accepted, :l_accepted, 1.0), (:n_stored, :l_stored, 1.0)"
)
_INSERT_COUNTED = "WITH stored AS (INSERT_EVENT), counted AS (INSERT_DELTAS) SELECT id FROM stored"
_BOUND = "SELECT item_key FROM item_identities WHERE source = :source AND identity = :identity"
# An identity's first delivery binds it to its handle, or to "<handle> (id N)" when another identity holds that
# handle (a repository renamed away and its name taken by a new one); a concurrent first delivery that bound it
# first wins (nothing returned: read it back).
_BIND = (
    "INSERT INTO item_identities (source, identity, item_key, created_at) "
    "SELECT <source>, <identity>, CASE WHEN EXISTS (SELECT 1 FROM item_identities WHERE source = <source> "
    "AND item_key = <item_key> AND identity <> <identity>) THEN <item_key> || ' (id ' || <identity> || ')' "
    "ELSE <item_key> END, DB_NOW WHERE 1 = 1 ON CONFLICT (source, identity) DO NOTHING RETURNING item_key"
)
_EXISTING = "SELECT id, item_key FROM events WHERE source = :source AND dedup_key = :dedup_key"


@dataclass(frozen=True)
class _Statements:
    """The intake statements for one dialect, in the driver's parameter style."""

    insert: str  # the event row (PostgreSQL: and its counter deltas); returns its id
    deltas: str  # SQLite: the counter deltas of a stored delivery
    bound: str  # the handle an identity is bound to
    bind: str  # bind an identity to a handle; returns the handle, or nothing if it was bound already
    existing: str  # a duplicate's first copy

    @classmethod
    def build(cls, dialect: str) -> _Statements:
        pg = dialect == "postgresql"
        insert = _INSERT_COUNTED.replace("INSERT_EVENT", _INSERT).replace("INSERT_DELTAS", _DELTAS) if pg else _INSERT
        # psycopg sends text parameters untyped: say what they are where PostgreSQL cannot infer it
        typed = "CAST(:{} AS VARCHAR)" if pg else ":{}"
        bind = _BIND
        for name in ("source", "identity", "item_key"):
            bind = bind.replace(f"<{name}>", typed.format(name))
        sql = {"insert": insert, "deltas": _DELTAS, "bound": _BOUND, "bind": bind, "existing": _EXISTING}
        sql = {name: text.replace("DB_NOW", DB_EPOCH_SQL[dialect]) for name, text in sql.items()}
        if pg:  # pyformat parameters (the `::float8` of a cast is not one)
            sql = {name: re.sub(r"(?<!:):(\w+)", r"%(\1)s", text) for name, text in sql.items()}
        return cls(**sql)


_STATEMENTS = {name: _Statements.build(name) for name in DB_EPOCH_SQL}


@functools.lru_cache(maxsize=512)
def _delta_labels(source: str, event_name: str) -> tuple[str, str]:
    """The labels of a stored delivery's two counter deltas (counters.delivery_stored), built once per event name."""
    accepted = counters.labels_key({"source": source, "event": event_name, "answer": "accepted"})
    return accepted, counters.labels_key({"source": source, "status": PENDING})


def row_values(
    event: NormalizedEvent, dedup_key: str, headers: dict[str, str], payload: bytes, next_attempt_at: float, origin: str
) -> dict[str, Any]:
    accepted, stored = _delta_labels(event.source, event.event_name)
    return {
        "source": event.source,
        "dedup_key": dedup_key,
        "event_name": event.event_name,
        "item_key": event.item_key,
        "action": event.action,
        "source_ts": event.source_ts.timestamp(),
        "next_attempt_at": next_attempt_at,
        "headers": json.dumps(headers),
        "payload": payload,
        "event_json": json.dumps(event.to_json()),
        "notes": "; ".join(event.notes) or None,
        "origin": origin,
        "n_accepted": counters.DELIVERIES,
        "l_accepted": accepted,
        "n_stored": counters.EVENTS_STORED,
        "l_stored": stored,
    }


def record(
    engine: Engine,
    event: NormalizedEvent,
    *,
    dedup_key: str,
    headers: dict[str, str],
    payload: bytes,
    next_attempt_at: float = 0.0,
    origin: str = "live",
) -> Recorded:
    """Store a delivery durably: Recorded(event id, True, item handle), or the first copy's (id, False, handle)."""
    if event.previous_identity:
        return _record_transfer(engine, event, dedup_key, headers, payload, next_attempt_at, origin)
    dialect = engine.dialect.name
    sql = _STATEMENTS[dialect]
    integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
    fairy = engine.raw_connection()
    try:
        cursor = fairy.cursor()
        try:
            if dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            try:
                if event.identity:
                    event = _filed(cursor, sql, event)
                values = row_values(event, dedup_key, headers, payload, next_attempt_at, origin)
                cursor.execute(sql.insert, values)
                event_id = int(cursor.fetchone()[0])
                if dialect == "sqlite":
                    cursor.execute(sql.deltas, values)
            except integrity_error:
                fairy.rollback()
                cursor.execute(sql.existing, {"source": event.source, "dedup_key": dedup_key})
                first = cursor.fetchone()
                fairy.rollback()  # a read: ends the driver's implicit transaction (PostgreSQL)
                if first is None:
                    raise  # another constraint than the delivery's dedup key
                return Recorded(int(first[0]), False, str(first[1]))
            except BaseException:
                fairy.rollback()
                raise
            fairy.commit()
            return Recorded(event_id, True, event.item_key)
        finally:
            cursor.close()
    finally:
        fairy.close()  # back to the pool


def _filed(cursor: Any, sql: _Statements, event: NormalizedEvent) -> NormalizedEvent:
    """The event under the handle its identity is bound to, binding it now if this is its first delivery."""
    keys = {"source": event.source, "identity": event.identity, "item_key": event.item_key}
    cursor.execute(sql.bound, keys)
    row = cursor.fetchone()
    if row is None:
        cursor.execute(sql.bind, keys)
        row = cursor.fetchone()
        if row is None:  # a concurrent first delivery of the identity bound it first: its binding stands
            cursor.execute(sql.bound, keys)
            row = cursor.fetchone()
    key = str(row[0])
    return event if key == event.item_key else dataclasses.replace(event, item_key=key)


def _record_transfer(
    engine: Engine,
    event: NormalizedEvent,
    dedup_key: str,
    headers: dict[str, str],
    payload: bytes,
    next_attempt_at: float,
    origin: str,
) -> Recorded:
    """A transfer names two identities: bound (and a stray item folded in) by `identities.resolve`."""
    from sqlalchemy.exc import IntegrityError

    from bridge.store import identities

    sql = _STATEMENTS[engine.dialect.name]
    try:
        with engine.begin() as conn:
            event = identities.resolve(conn, event)
            values = row_values(event, dedup_key, headers, payload, next_attempt_at, origin)
            event_id = int(conn.exec_driver_sql(sql.insert, values).scalar_one())
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(sql.deltas, values)
            return Recorded(event_id, True, event.item_key)
    except IntegrityError:
        with engine.connect() as conn:
            first = conn.exec_driver_sql(sql.existing, {"source": event.source, "dedup_key": dedup_key}).first()
        if first is None:
            raise
        return Recorded(int(first[0]), False, str(first[1]))
