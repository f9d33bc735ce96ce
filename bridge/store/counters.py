"""Counters and histograms: an append-only log of deltas, written in the caller's transaction, folded later.

Each change that a metric counts appends its deltas to `metric_deltas` in the same transaction as the change
itself, so the figures are exact (a rolled-back change counts nothing), shared by every process and host (they
live in the database) and monotonic across pruning (a prune deletes history, never these rows). A writer only
ever INSERTs (one statement per call, however many series it moves): it locks no counter row, so concurrent
writers never wait on one another and can never deadlock, whatever order they count in.

`fold` moves the deltas into `metric_counters` (one row per series), one folder at a time: it deletes a batch of
deltas (`DELETE … RETURNING`: only committed rows, so a delta committed meanwhile waits for the next fold) and
adds their sums to the series in one transaction, rows in sorted order. It runs before a scrape and from the
periodic sweeper, so a scrape reads the series plus at most the deltas of the last few seconds, whatever the
size of `events` or `zoho_calls`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import case, delete, func, insert, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from bridge.store import schema as db
from bridge.store.driver import run, run_many

LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LAG_BUCKETS_S = (1, 2, 5, 10, 30, 60, 300, 900, 3600)
FOLD_BATCH = 5000  # deltas per fold transaction: a long pause between folds never makes one huge transaction
# On PostgreSQL one folder at a time (a transaction-scoped advisory lock; a second folder skips, it has nothing to add).
_FOLD_LOCK = 0x6272696467650001

# Series names (rendered by bridge/process/metrics.py).
DELIVERIES = "deliveries"  # {source, event, answer}
EVENTS_STORED = "events_stored"  # {source, status}: goes down on finish/replay/prune (a gauge kept by deltas)
EVENTS_FINISHED = "events_finished"  # {source, status}
RETRIES = "event_retries"
ZOHO_CALLS = "zoho_calls"  # {endpoint, status, dry_run}
ZOHO_LATENCY = "zoho_latency_ms"
END_TO_END_LAG = "end_to_end_lag_seconds"

Item = tuple[str, Mapping[str, str], float]

_DELTAS = db.metric_deltas
_APPEND = insert(_DELTAS)  # executed with a list of rows: one statement (executemany / multi-row VALUES)
_ANY_DELTA = select(_DELTAS.c.id).limit(1)  # the sweeper's look, every few seconds


def labels_key(labels: Mapping[str, str] | None) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


def bump(conn: Connection, name: str, labels: Mapping[str, str] | None = None, by: float = 1.0) -> None:
    """Add `by` to one series, in the caller's transaction."""
    bump_many(conn, [(name, labels or {}, by)])


def observe(
    conn: Connection, name: str, labels: Mapping[str, str] | None, value: float, buckets: Sequence[float]
) -> None:
    """Record one observation of a histogram (its bucket, _sum and _count), in the caller's transaction."""
    bump_many(conn, histogram_items(name, labels or {}, value, buckets))


def histogram_items(name: str, labels: Mapping[str, str], value: float, buckets: Sequence[float]) -> list[Item]:
    le = next((str(b) for b in buckets if value <= b), "+Inf")
    return [
        (f"{name}_bucket", {**labels, "le": le}, 1.0),
        (f"{name}_sum", labels, float(value)),
        (f"{name}_count", labels, 1.0),
    ]


def summed(items: Iterable[Item]) -> dict[tuple[str, str], float]:
    """{(series name, labels key): total}, zeros left out."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for name, labels, by in items:
        totals[(name, labels_key(labels))] += by
    return {series: by for series, by in totals.items() if by != 0}


def delta_rows(items: Iterable[Item]) -> list[dict[str, object]]:
    """The rows `bump_many` appends: one per series moved."""
    return [{"name": name, "labels": key, "value": by} for (name, key), by in summed(items).items()]


def bump_many(conn: Connection, items: Iterable[Item]) -> None:
    """Append the deltas of `items` in the caller's transaction: one INSERT, no row of anyone else's touched."""
    rows = delta_rows(items)
    if rows:
        run_many(conn, _APPEND, rows)


def read_all(conn: Connection) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every series: its folded value plus the deltas not folded yet, {name: [(labels, value), ...]}."""
    table = db.metric_counters
    both = union_all(
        select(table.c.name, table.c.labels, table.c.value),
        select(_DELTAS.c.name, _DELTAS.c.labels, _DELTAS.c.value),
    ).subquery()
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    rows = conn.execute(select(both.c.name, both.c.labels, func.sum(both.c.value)).group_by(both.c.name, both.c.labels))
    for name, key, value in rows:
        out[name].append((json.loads(key), float(value or 0.0)))
    return out


def pending_deltas(conn: Connection) -> bool:
    return run(conn, _ANY_DELTA, {}).first() is not None


def fold(engine: Engine, *, max_batches: int = 100) -> int:
    """Move the logged deltas into the series; returns how many were folded. Cheap when there are none."""
    with engine.connect() as conn:
        if not pending_deltas(conn):
            return 0
    folded = 0
    for _ in range(max_batches):
        with engine.begin() as conn:
            n = fold_batch(conn)
        folded += n
        if n < FOLD_BATCH:
            break
    return folded


def fold_batch(conn: Connection, limit: int = FOLD_BATCH) -> int:
    """One batch of `fold`, in the caller's (write) transaction."""
    if conn.dialect.name == "postgresql" and not _fold_lock(conn):
        return 0  # another process is folding right now
    batch = select(_DELTAS.c.id).order_by(_DELTAS.c.id).limit(limit).scalar_subquery()
    taken = conn.execute(
        delete(_DELTAS).where(_DELTAS.c.id.in_(batch)).returning(_DELTAS.c.name, _DELTAS.c.labels, _DELTAS.c.value)
    ).all()
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for name, key, value in taken:
        totals[(name, key)] += float(value)
    _add_to_series(conn, totals)
    return len(taken)


def _fold_lock(conn: Connection) -> bool:
    return bool(conn.execute(select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))).scalar())


def _add_to_series(conn: Connection, totals: Mapping[tuple[str, str], float]) -> None:
    """Add to the folded series, rows in sorted order (only the folder writes them: one at a time)."""
    table = db.metric_counters
    upsert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
    for (name, key), by in sorted(totals.items()):
        if by == 0:
            continue
        stmt = upsert(table).values(name=name, labels=key, shard=0, value=by)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.name, table.c.labels, table.c.shard],
                set_={"value": table.c.value + stmt.excluded.value},
            )
        )


# -- one call per place in store.py that changes what a metric counts ------------------------------------


def delivery_stored(conn: Connection, source: str, event_name: str) -> None:
    bump_many(
        conn,
        [
            (DELIVERIES, {"source": source, "event": event_name, "answer": "accepted"}, 1.0),
            (EVENTS_STORED, {"source": source, "status": "pending"}, 1.0),
        ],
    )


def delivery_answered(conn: Connection, source: str, event: str, answer: str) -> None:
    bump(conn, DELIVERIES, {"source": source, "event": event, "answer": answer})


def event_finished(conn: Connection, event_id: int, status: str, *, only_from: str | None = None) -> None:
    """Call before the UPDATE that finishes the event: reads (and on PostgreSQL locks) its current state.
    `only_from`: the UPDATE is a compare-and-set on that status; count nothing when the event is not in it."""
    query = select(db.events.c.source, db.events.c.status, db.events.c.source_ts).where(db.events.c.id == event_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None or (only_from is not None and row.status != only_from):
        return
    finished_from(conn, row.source, row.status, status, source_ts=row.source_ts)


def finished_from(conn: Connection, source: str, old_status: str, status: str, *, source_ts: float) -> None:
    """An event of `source` went from `old_status` to `status` (the caller's UPDATE said so: it returned the row)."""
    items: list[Item] = [
        (EVENTS_STORED, {"source": source, "status": old_status}, -1.0),
        (EVENTS_STORED, {"source": source, "status": status}, 1.0),
        (EVENTS_FINISHED, {"source": source, "status": status}, 1.0),
    ]
    if status == "done":
        items += histogram_items(END_TO_END_LAG, {}, time.time() - source_ts, LAG_BUCKETS_S)
    bump_many(conn, items)


def events_replayed(conn: Connection, event_ids: Sequence[int]) -> None:
    """Call before the UPDATE that puts events back to pending."""
    query = select(db.events.c.source, db.events.c.status).where(db.events.c.id.in_(list(event_ids)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    items: list[Item] = []
    for row in conn.execute(query):
        items += [
            (EVENTS_STORED, {"source": row.source, "status": row.status}, -1.0),
            (EVENTS_STORED, {"source": row.source, "status": "pending"}, 1.0),
        ]
    bump_many(conn, items)


def events_deleted(conn: Connection, rows: Iterable[tuple[str, str]]) -> None:
    """Stored events (source, status) that a prune (or a drop) deleted: the stored gauge goes down."""
    bump_many(conn, [(EVENTS_STORED, {"source": source, "status": status}, -1.0) for source, status in rows])


def attempt_finished(conn: Connection, outcome: str) -> None:
    if outcome == "retry":
        bump(conn, RETRIES)


def _call_labels(endpoint: str, status: int | None, dry_run: bool) -> dict[str, str]:
    return {"endpoint": endpoint, "status": "none" if status is None else str(status), "dry_run": str(dry_run).lower()}


def zoho_call(conn: Connection, endpoint: str, status: int | None, dry_run: bool, duration_ms: float) -> None:
    items: list[Item] = [(ZOHO_CALLS, _call_labels(endpoint, status, dry_run), 1.0)]
    if not dry_run and status is not None:
        items += histogram_items(ZOHO_LATENCY, {}, duration_ms, LATENCY_BUCKETS_MS)
    bump_many(conn, items)


# -- the starting values, from the history a database already holds (migration 0007) ---------------------


def _bucket_case(column, buckets):  # type: ignore[no-untyped-def]
    return case(*[(column <= b, str(b)) for b in buckets], else_="+Inf")


# -- gauges read at scrape time -------------------------------------------------------------------------------


def backlog_gauges(conn: Connection, now: float) -> tuple[int, float | None, int]:
    """The scrape's indexed lookups: pending events, when the oldest of them was received (None: none pending), and
    the item leases held at `now` (the database's clock)."""
    pending = conn.execute(select(func.count()).where(db.events.c.status == "pending")).scalar()
    oldest_at = conn.execute(
        select(db.events.c.received_at)
        .where(db.events.c.status == "pending")
        .order_by(db.events.c.status, db.events.c.id)
        .limit(1)
    ).scalar()
    leases = conn.execute(
        select(func.count()).where(db.leases.c.name.like("item:%"), db.leases.c.expires_at > now)
    ).scalar()
    return int(pending or 0), oldest_at, int(leases or 0)


def seed_from_history(conn: Connection) -> None:
    """Counters as if they had always been kept: run once when the table is created (or to rebuild it)."""
    e, calls = db.events, db.zoho_calls
    items: list[Item] = []
    for source, event_name, n in conn.execute(
        select(e.c.source, e.c.event_name, func.count()).group_by(e.c.source, e.c.event_name)
    ):
        items.append((DELIVERIES, {"source": source, "event": event_name, "answer": "accepted"}, float(n)))
    for row in conn.execute(select(db.intake_counters)):
        labels = {"source": row.source, "event": row.event, "answer": row.answer}
        items.append((DELIVERIES, labels, float(row._mapping["count"])))
    by_status = select(e.c.source, e.c.status, func.count()).group_by(e.c.source, e.c.status)
    for source, status, n in conn.execute(by_status):
        items.append((EVENTS_STORED, {"source": source, "status": status}, float(n)))
        if status != "pending":
            items.append((EVENTS_FINISHED, {"source": source, "status": status}, float(n)))
    retries = conn.execute(select(func.count()).where(db.attempts.c.outcome == "retry")).scalar() or 0
    items.append((RETRIES, {}, float(retries)))
    for endpoint, status, dry, n in conn.execute(
        select(calls.c.endpoint, calls.c.status, calls.c.dry_run, func.count()).group_by(
            calls.c.endpoint, calls.c.status, calls.c.dry_run
        )
    ):
        items.append((ZOHO_CALLS, _call_labels(endpoint, status, bool(dry)), float(n)))
    _seed_histogram(
        conn,
        items,
        ZOHO_LATENCY,
        calls.c.duration_ms,
        LATENCY_BUCKETS_MS,
        (calls.c.dry_run.is_(False), calls.c.status.isnot(None), calls.c.duration_ms.isnot(None)),
    )
    lag = e.c.processed_at - e.c.source_ts
    done = (e.c.status == "done", e.c.processed_at.isnot(None))
    _seed_histogram(conn, items, END_TO_END_LAG, lag, LAG_BUCKETS_S, done)
    # Straight into the folded series: this runs in migration 0007, before the delta log exists.
    _add_to_series(conn, summed(items))


def _seed_histogram(conn, items, name, column, buckets, where) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket_case(column, buckets)
    for le, n, total in conn.execute(
        select(bucket, func.count(), func.coalesce(func.sum(column), 0.0)).where(*where).group_by(bucket)
    ):
        items.append((f"{name}_bucket", {"le": le}, float(n)))
        items.append((f"{name}_sum", {}, float(total)))
        items.append((f"{name}_count", {}, float(n)))
