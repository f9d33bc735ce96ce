"""Counters and histograms maintained as things happen, inside the caller's transaction.

Each change that a metric counts bumps its series in the same transaction as the change itself, so the
figures are exact (a rolled-back change counts nothing), shared by every process and host (they live in
the database), monotonic across pruning (a prune deletes history, never these rows), and cheap to read:
a scrape sums a few hundred rows whatever the size of `events` or `zoho_calls`.

On PostgreSQL a writer adds to one of SHARDS rows of a series, picked at random, so concurrent intake
transactions rarely queue on one row lock; rows are always bumped in sorted order (no lock cycles).
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bridge.store import schema as db

SHARDS = 8
LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LAG_BUCKETS_S = (1, 2, 5, 10, 30, 60, 300, 900, 3600)

# Series names (rendered by bridge/process/metrics.py).
DELIVERIES = "deliveries"  # {source, event, answer}
EVENTS_STORED = "events_stored"  # {source, status}: goes down on finish/replay/prune (a gauge kept by deltas)
EVENTS_FINISHED = "events_finished"  # {source, status}
RETRIES = "event_retries"
ZOHO_CALLS = "zoho_calls"  # {endpoint, status, dry_run}
ZOHO_LATENCY = "zoho_latency_ms"
END_TO_END_LAG = "end_to_end_lag_seconds"

Item = tuple[str, Mapping[str, str], float]


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


def bump_many(conn: Connection, items: Iterable[Item]) -> None:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for name, labels, by in items:
        totals[(name, labels_key(labels))] += by
    is_pg = conn.dialect.name == "postgresql"
    insert = (postgresql if is_pg else sqlite).insert
    shard = random.randrange(SHARDS) if is_pg else 0  # noqa: S311 (spreading row locks, not security)
    table = db.metric_counters
    for (name, key), by in sorted(totals.items()):
        if by == 0:
            continue
        stmt = insert(table).values(name=name, labels=key, shard=shard, value=by)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.name, table.c.labels, table.c.shard],
                set_={"value": table.c.value + stmt.excluded.value},
            )
        )


def read_all(conn: Connection) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every series, summed over shards: {name: [(labels, value), ...]}."""
    table = db.metric_counters
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    rows = conn.execute(
        select(table.c.name, table.c.labels, func.sum(table.c.value)).group_by(table.c.name, table.c.labels)
    )
    for name, key, value in rows:
        out[name].append((json.loads(key), float(value or 0.0)))
    return out


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
    items: list[Item] = [
        (EVENTS_STORED, {"source": row.source, "status": row.status}, -1.0),
        (EVENTS_STORED, {"source": row.source, "status": status}, 1.0),
        (EVENTS_FINISHED, {"source": row.source, "status": status}, 1.0),
    ]
    if status == "done":
        items += histogram_items(END_TO_END_LAG, {}, time.time() - row.source_ts, LAG_BUCKETS_S)
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


def seed_from_history(conn: Connection) -> None:
    """Counters as if they had always been kept: run once when the table is created."""
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
    bump_many(conn, items)


def _seed_histogram(conn, items, name, column, buckets, where) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket_case(column, buckets)
    for le, n, total in conn.execute(
        select(bucket, func.count(), func.coalesce(func.sum(column), 0.0)).where(*where).group_by(bucket)
    ):
        items.append((f"{name}_bucket", {"le": le}, float(n)))
        items.append((f"{name}_sum", {}, float(total)))
        items.append((f"{name}_count", {}, float(n)))
