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

On PostgreSQL a batch of several deliveries (the group commit below) takes fewer statements than one at a
time: the bindings of its identities read in one statement per source, the first deliveries' identities bound
in one more, every event row in one multi-row INSERT (`RETURNING` the key of each row stored), and the counter
deltas of the rows stored in one more, summed per series: for N deliveries 3 or 4 round trips instead of 2N or
3N. SQLite stores a batch row by row in its one transaction: its statements are cheap next to writing the rows'
pages, and the multi-row form measured no faster there, slower at 8 senders
(docs/benchmarks.md).

The SQL is compiled once per dialect (plain text, the driver's parameter style) and run on the DBAPI cursor,
skipping SQLAlchemy's per-statement machinery; the table and column names are schema.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import itertools
import json
import os
import queue
import re
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from bridge.events import NormalizedEvent
from bridge.store import counters
from bridge.store.states import PENDING

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
    "'pending', 0) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id"
)
_DELTAS = (
    "INSERT INTO metric_deltas (name, labels, value) "
    "VALUES (:n_accepted, :l_accepted, 1.0), (:n_stored, :l_stored, 1.0)"
)
# PostgreSQL: the deltas only for a row stored (none for a duplicate), in the same statement.
_INSERT_COUNTED = (
    "WITH stored AS (INSERT_EVENT), counted AS (INSERT INTO metric_deltas (name, labels, value) "
    "SELECT v.name, v.labels, 1.0 FROM stored CROSS JOIN (VALUES (CAST(:n_accepted AS VARCHAR), "
    "CAST(:l_accepted AS VARCHAR)), (CAST(:n_stored AS VARCHAR), CAST(:l_stored AS VARCHAR))) AS v (name, labels)) "
    "SELECT id FROM stored"
)
_BOUND = "SELECT item_key FROM item_identities WHERE source = :source AND identity = :identity"
# An identity's first delivery binds it to its handle, or to "<handle> (id N)" when another identity holds that
# handle (a repository renamed away and its name taken by a new one); a concurrent first delivery that bound it
# first wins (nothing returned: read it back).
_HANDLE = (  # the handle a new binding takes: the one named, or "<handle> (id N)" when another identity holds it
    "CASE WHEN EXISTS (SELECT 1 FROM item_identities WHERE source = <source> AND item_key = <item_key> "
    "AND identity <> <identity>) THEN <item_key> || ' (id ' || <identity> || ')' ELSE <item_key> END"
)
_BIND = (
    f"INSERT INTO item_identities (source, identity, item_key, created_at) SELECT <source>, <identity>, {_HANDLE}, "
    "DB_NOW WHERE 1 = 1 ON CONFLICT (source, identity) DO NOTHING RETURNING item_key"
)
# PostgreSQL: the binding read and, when absent, made, in one round trip (the rows a CTE inserts are invisible to
# the rest of its statement, hence the UNION). Nothing comes back only when a concurrent first delivery's binding
# was committed after this statement's snapshot: then it is read again (_BOUND).
_RESOLVE = (
    "WITH made AS (INSERT INTO item_identities (source, identity, item_key, created_at) "  # noqa: S608
    f"SELECT <source>, <identity>, {_HANDLE}, DB_NOW WHERE NOT EXISTS (SELECT 1 FROM item_identities "
    "WHERE source = <source> AND identity = <identity>) "
    "ON CONFLICT (source, identity) DO NOTHING RETURNING item_key) "
    "SELECT item_key FROM made UNION ALL "
    "SELECT item_key FROM item_identities WHERE source = <source> AND identity = <identity>"
)
_EXISTING = "SELECT id, item_key FROM events WHERE source = :source AND dedup_key = :dedup_key"


class NotStoredInTime(TimeoutError):
    """The writer did not store the delivery in time (the database locked or slow): the sender is told to retry.
    The row may still be committed after the answer; a redelivery then finds it (a duplicate, never a second)."""


@dataclass(frozen=True)
class _Statements:
    """The intake statements for one dialect, in the driver's parameter style."""

    insert: str  # the event row (PostgreSQL: and its counter deltas); returns its id, nothing for a duplicate
    deltas: str  # SQLite: the counter deltas of a stored delivery
    bound: str  # the handle an identity is bound to
    bind: str  # bind an identity to a handle; returns the handle, or nothing if it was bound already
    resolve: str  # PostgreSQL: `bound`, and `bind` when unbound, in one statement ("" on SQLite)
    existing: str  # a duplicate's first copy

    @classmethod
    def build(cls, dialect: str) -> _Statements:
        pg = dialect == "postgresql"
        insert = _INSERT_COUNTED.replace("INSERT_EVENT", _INSERT) if pg else _INSERT
        # psycopg sends text parameters untyped: say what they are where PostgreSQL cannot infer it
        typed = "CAST(:{} AS VARCHAR)" if pg else ":{}"
        bind, resolve = _BIND, _RESOLVE if pg else ""
        for name in ("source", "identity", "item_key"):
            bind = bind.replace(f"<{name}>", typed.format(name))
            resolve = resolve.replace(f"<{name}>", typed.format(name))
        sql = {"insert": insert, "deltas": _DELTAS, "bound": _BOUND, "bind": bind, "resolve": resolve}
        sql["existing"] = _EXISTING
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


@dataclass(frozen=True)
class Delivery:
    """A delivery to store: what `record` takes."""

    event: NormalizedEvent
    dedup_key: str
    headers: dict[str, str]
    payload: bytes
    next_attempt_at: float = 0.0
    origin: str = "live"


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
    """Store a delivery durably: Recorded(event id, True, item handle), or the first copy's (id, False, handle).
    `store.record_delivery` is this function. A backfill passes a future `next_attempt_at` (its paced slot) and
    its `origin` ("backfill:<id>"). The event is filed under its item's handle (its identity's binding)."""
    delivery = Delivery(event, dedup_key, headers, payload, next_attempt_at, origin)
    if event.previous_identity:
        return _record_transfer(engine, delivery)
    fairy = engine.raw_connection()
    try:
        return store_batch(engine, fairy, [delivery])[0]
    finally:
        fairy.close()  # back to the pool


def store_batch(engine: Engine, fairy: Any, batch: list[Delivery]) -> list[Recorded]:
    """Store deliveries (none a transfer) in one transaction on `fairy` (a pool connection); a duplicate is not an
    error. Errors are SQLAlchemy's (OperationalError: the database is locked or gone), the transaction rolled
    back, and a connection the driver lost invalidated."""
    dialect = engine.dialect.name
    sql = _STATEMENTS[dialect]
    cursor = fairy.cursor()
    try:
        if dialect == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        if dialect == "postgresql" and len(batch) > 1:  # a round trip per statement: a batch in a few
            with _batch_cursor(fairy) as raw:
                results = _store_all(cursor, raw, sql, dialect, batch)
        else:  # SQLite (statements are cheap next to the rows' pages: measured no faster in a batch), or one
            results = [_store(cursor, sql, dialect, delivery) for delivery in batch]
        fairy.commit()
        return results
    except engine.dialect.loaded_dbapi.Error as exc:
        _rollback(fairy)
        if engine.dialect.is_disconnect(exc, fairy, cursor):
            fairy.invalidate(exc)
        raise DBAPIError.instance("intake insert", None, exc, engine.dialect.loaded_dbapi.Error) from exc
    except BaseException:
        _rollback(fairy)
        raise
    finally:
        cursor.close()


def _rollback(fairy: Any) -> None:
    with contextlib.suppress(Exception):  # a connection already gone has nothing to roll back
        fairy.rollback()


@functools.lru_cache(maxsize=256)
def _batch_sql(dialect: str, kind: str, rows: int) -> str:
    """A statement for `rows` rows at once, with positional parameters (names as in schema.py; nothing from a
    delivery is ever part of the text). PostgreSQL's are its own numbered placeholders ($1, $2 …), run on a raw
    cursor (`_batch_cursor`): psycopg parses a statement of more than 50 parameters in Python on every run."""
    numbers = itertools.count(1)

    def marks(count: int) -> str:
        return ", ".join(f"${next(numbers)}" if dialect == "postgresql" else "?" for _ in range(count))

    if kind == "insert":  # the event rows; returns the key of each row stored (a duplicate's is not returned)
        values = ", ".join(f"({marks(len(_VALUES))}, {DB_EPOCH_SQL[dialect]}, 'pending', 0)" for _ in range(rows))
        return (
            f"INSERT INTO events ({', '.join(_VALUES)}, received_at, status, attempts) VALUES {values}"  # noqa: S608
            " ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id, source, dedup_key"
        )
    if kind == "deltas":  # counter deltas: (name, labels, value) per row
        values = ", ".join(f"({marks(3)})" for _ in range(rows))
        return f"INSERT INTO metric_deltas (name, labels, value) VALUES {values}"  # noqa: S608
    if kind == "bind":  # PostgreSQL: first deliveries' identities of one source bound at once (as `_BIND` does each)
        source = f"CAST({marks(1)} AS VARCHAR)"
        values = ", ".join(f"(CAST({marks(1)} AS VARCHAR), CAST({marks(1)} AS VARCHAR))" for _ in range(rows))
        handle = _HANDLE.replace("<source>", source).replace("<item_key>", "v.item_key")
        handle = handle.replace("<identity>", "v.identity")
        return (
            "INSERT INTO item_identities (source, identity, item_key, created_at) "  # noqa: S608
            f"SELECT {source}, v.identity, {handle}, "
            f"{DB_EPOCH_SQL[dialect]} FROM (VALUES {values}) AS v (identity, item_key) "
            # one order for every writer: two batches binding the same identities here do not wait on each other in
            # turn (a batch left to `_filed` binds in its own order)
            "ORDER BY v.identity ON CONFLICT (source, identity) DO NOTHING RETURNING identity, item_key"
        )
    assert kind == "bound"  # the handles some identities of one source are bound to
    source = marks(1)
    return f"SELECT identity, item_key FROM item_identities WHERE source = {source} AND identity IN ({marks(rows)})"  # noqa: S608


def _batch_cursor(fairy: Any) -> Any:
    """PostgreSQL: a cursor that sends statements as written, with numbered placeholders (psycopg's RawCursor)."""
    import psycopg

    return psycopg.RawCursor(fairy.driver_connection)


def _store(cursor: Any, sql: _Statements, dialect: str, delivery: Delivery) -> Recorded:
    event = delivery.event
    if event.identity:
        event = _filed(cursor, sql, event)
    values = row_values(
        event, delivery.dedup_key, delivery.headers, delivery.payload, delivery.next_attempt_at, delivery.origin
    )
    cursor.execute(sql.insert, values)
    row = cursor.fetchone()
    if row is None:  # stored already: the first copy's id and handle
        cursor.execute(sql.existing, {"source": event.source, "dedup_key": delivery.dedup_key})
        first = cursor.fetchone()
        return Recorded(int(first[0]), False, str(first[1]))
    if dialect == "sqlite":
        cursor.execute(sql.deltas, values)
    return Recorded(int(row[0]), True, event.item_key)


def _store_all(cursor: Any, raw: Any, sql: _Statements, dialect: str, batch: list[Delivery]) -> list[Recorded]:
    """PostgreSQL: the batch's rows in as few statements as the guarantees allow: the identities' bindings read
    at once (a first delivery's made one by one, in order), every event row in one INSERT, the counter deltas of
    the rows stored in one more (summed per series). A delivery whose key is stored already, before or earlier in
    this batch, stores nothing and gets the first copy's id and handle. `raw` runs the batch statements."""
    events = _filed_all(cursor, raw, sql, dialect, [delivery.event for delivery in batch])
    rows = [
        row_values(event, d.dedup_key, d.headers, d.payload, d.next_attempt_at, d.origin)
        for event, d in zip(events, batch, strict=True)
    ]
    raw.execute(_batch_sql(dialect, "insert", len(rows)), [row[name] for row in rows for name in _VALUES])
    stored = {(str(source), str(key)): int(event_id) for event_id, source, key in raw.fetchall()}
    results: list[Recorded] = []
    deltas: dict[tuple[str, str], int] = {}
    for event, delivery, row in zip(events, batch, rows, strict=True):
        event_id = stored.pop((event.source, delivery.dedup_key), None)
        if event_id is None:  # stored already: the first copy's id and handle
            cursor.execute(sql.existing, {"source": event.source, "dedup_key": delivery.dedup_key})
            first = cursor.fetchone()
            results.append(Recorded(int(first[0]), False, str(first[1])))
            continue
        results.append(Recorded(event_id, True, event.item_key))
        for series in ((row["n_accepted"], row["l_accepted"]), (row["n_stored"], row["l_stored"])):
            deltas[series] = deltas.get(series, 0) + 1
    if deltas:
        params = [value for (name, labels), n in deltas.items() for value in (name, labels, float(n))]
        raw.execute(_batch_sql(dialect, "deltas", len(deltas)), params)
    return results


def _filed_all(
    cursor: Any, raw: Any, sql: _Statements, dialect: str, events: list[NormalizedEvent]
) -> list[NormalizedEvent]:
    """Each event under the handle its identity is bound to: the bindings that exist read in one statement per
    source, the first deliveries' identities bound in one more (`_bind_firsts`) or else by `_filed` (in batch order:
    a later delivery of the same identity in the batch gets the handle the first one was bound to)."""
    wanted: dict[str, set[str]] = {}
    for event in events:
        if event.identity:
            wanted.setdefault(event.source, set()).add(event.identity)
    if not wanted:
        return events
    bound: dict[tuple[str, str], str] = {}
    for source, identities in wanted.items():
        raw.execute(_batch_sql(dialect, "bound", len(identities)), [source, *sorted(identities)])
        bound.update({(source, str(identity)): str(key) for identity, key in raw.fetchall()})
    _bind_firsts(raw, dialect, events, bound)
    out = []
    for event in events:
        if event.identity:
            key = bound.get((event.source, event.identity))
            if key is None:
                event = _filed(cursor, sql, event)
                bound[(event.source, event.identity)] = event.item_key
            elif key != event.item_key:
                event = dataclasses.replace(event, item_key=key)
        out.append(event)
    return out


def _bind_firsts(raw: Any, dialect: str, events: list[NormalizedEvent], bound: dict[tuple[str, str], str]) -> None:
    """PostgreSQL: the identities of a batch's first deliveries bound in one statement per source (into `bound`),
    each to the handle its first delivery in the batch names, as `_filed` binds one. A batch where two unbound
    identities name one handle (a repository renamed away and its name taken) is left to `_filed`, one by one."""
    firsts: dict[str, dict[str, str]] = {}  # source -> identity -> handle of its first delivery in the batch
    for event in events:
        if event.identity and (event.source, event.identity) not in bound:
            firsts.setdefault(event.source, {}).setdefault(event.identity, event.item_key)
    for source, handles in firsts.items():
        if len(handles) < 2 or len(set(handles.values())) < len(handles):
            continue
        params = [source, *(value for identity, handle in handles.items() for value in (identity, handle))]
        raw.execute(_batch_sql(dialect, "bind", len(handles)), params)
        made = {str(identity): str(key) for identity, key in raw.fetchall()}
        if len(made) < len(handles):  # bound meanwhile by a concurrent first delivery: its binding stands
            others = sorted(set(handles) - set(made))
            raw.execute(_batch_sql(dialect, "bound", len(others)), [source, *others])
            made.update({str(identity): str(key) for identity, key in raw.fetchall()})
        bound.update({(source, identity): key for identity, key in made.items()})


def _filed(cursor: Any, sql: _Statements, event: NormalizedEvent) -> NormalizedEvent:
    """The event under the handle its identity is bound to, binding it now if this is its first delivery."""
    keys = {"source": event.source, "identity": event.identity, "item_key": event.item_key}
    cursor.execute(sql.resolve or sql.bound, keys)
    row = cursor.fetchone()
    if row is None and sql.resolve:  # PostgreSQL: a concurrent first delivery's binding, committed meanwhile
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


def _record_transfer(engine: Engine, delivery: Delivery) -> Recorded:
    """A transfer names two identities: bound (and a stray item folded in) by `identities.resolve`."""
    from bridge.store import identities

    sql = _STATEMENTS[engine.dialect.name]
    with engine.begin() as conn:
        event = identities.resolve(conn, delivery.event)
        values = row_values(
            event, delivery.dedup_key, delivery.headers, delivery.payload, delivery.next_attempt_at, delivery.origin
        )
        row = conn.exec_driver_sql(sql.insert, values).first()
        if row is None:
            first = conn.exec_driver_sql(sql.existing, {"source": event.source, "dedup_key": delivery.dedup_key}).one()
            return Recorded(int(first[0]), False, str(first[1]))
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(sql.deltas, values)
        return Recorded(int(row[0]), True, event.item_key)


# -- group commit: intake's writer --------------------------------------------------------------------------


class _Job:
    """A delivery handed to the writer; `done` is a lock held until the writer has its outcome (one lock, where an
    Event builds a Condition and a lock per wait)."""

    __slots__ = ("delivery", "done", "error", "result")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Recorded | None = None
        self.error: BaseException | None = None


class GroupWriter:
    """Intake's writes in one web process: request threads hand their delivery over and wait; one writer thread
    stores everything queued meanwhile in one transaction (a group commit), then answers each of them.

    Every delivery is still committed before its sender gets an answer; under load a commit (and, on SQLite,
    the write lock) serves many deliveries instead of one, and request threads no longer queue on a lock each.
    On SQLite the writer also takes an advisory lock on a file beside the database, so the writers of several
    web processes take turns at once instead of sleeping in SQLite's busy handler (1, 2, 5, 10 … ms). A batch
    that fails is stored again one delivery at a time, so a bad delivery fails alone. The thread holds its
    pool connection while busy and lets go of both after `idle_seconds` without work.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 64, idle_seconds: float = 30.0) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.batches = 0

    def record(self, delivery: Delivery, *, timeout: float = 60.0) -> Recorded:
        if delivery.event.previous_identity:
            return _record_transfer(self.engine, delivery)
        job = _Job(delivery)
        self._queue.put(job)
        self._ensure_thread()
        if not job.done.acquire(timeout=timeout):
            raise NotStoredInTime(f"the delivery was not stored within {timeout:g} s")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked (gunicorn workers): the parent's thread is not here
                self._pid, self._thread = os.getpid(), None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        fairy: Any = None
        lock_fd = _lock_file(self.engine)
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self.idle_seconds)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                jobs = [first]
                while len(jobs) < self.max_batch:
                    try:
                        jobs.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                fairy = self._write(fairy, lock_fd, jobs)
        finally:
            if fairy is not None:
                with contextlib.suppress(Exception):
                    fairy.close()
            if lock_fd is not None:
                os.close(lock_fd)

    def _write(self, fairy: Any, lock_fd: int | None, jobs: list[_Job]) -> Any:
        """Store `jobs` in one transaction, or one at a time if that fails; returns the connection to keep."""
        try:
            return self._store(fairy, lock_fd, jobs)
        except BaseException as exc:
            fairy = _keep(fairy, exc)
            if len(jobs) == 1:
                jobs[0].error = exc
                jobs[0].done.release()
                return fairy
        for job in jobs:  # only a bad delivery fails
            try:
                fairy = self._store(fairy, lock_fd, [job])
            except BaseException as exc:
                fairy = _keep(fairy, exc)
                job.error = exc
                job.done.release()
        return fairy

    def _store(self, fairy: Any, lock_fd: int | None, jobs: list[_Job]) -> Any:
        if fairy is None:
            fairy = self.engine.raw_connection()
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            results = store_batch(self.engine, fairy, [job.delivery for job in jobs])
        finally:
            if lock_fd is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
        self.batches += 1
        for job, result in zip(jobs, results, strict=True):
            job.result = result
            job.done.release()
        return fairy


def _keep(fairy: Any, exc: BaseException) -> Any:
    """The connection, unless the failure lost it (then it goes back to the pool, which opens a new one)."""
    if fairy is not None and getattr(exc, "connection_invalidated", False):
        with contextlib.suppress(Exception):
            fairy.close()
        return None
    return fairy


def _lock_file(engine: Engine) -> int | None:
    """SQLite: a file beside the database whose lock intake's writers of every process take turns on."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return os.open(f"{database}.intake.lock", os.O_RDWR | os.O_CREAT, 0o600)
