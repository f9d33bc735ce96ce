"""Retention: storage bounded by RETENTION_DAYS and RETENTION_PAYLOAD_DAYS, not by how long the bridge has run.

Pruned, oldest first, in small batches (each its own short transaction, with a pause between them so
intake's inserts never wait long for SQLite's write lock or a PostgreSQL row):

1. finished events (done, superseded, skipped) after RETENTION_DAYS, with their attempts and Zoho calls;
2. Zoho call records made outside any event (lookups, option reads) after RETENTION_DAYS;
3. the raw body and headers of the finished events that remain, after RETENTION_PAYLOAD_DAYS:
   processing and replay read the normalized event (`event_json`), never the raw body again;
4. item leases that expired a day ago (a killed worker's leftovers);
5. finished journal operations whose row no decision needs any more (updates, re-checks, confirmed creates
   and comment posts, status writes whose echo is settled) after RETENTION_DAYS. Kept whatever their age: an
   operation planned, in doubt or failed, and a confirmed back-link, copied Zoho comment or attachment (their
   row is what keeps them from being made twice).

Kept whatever their age: pending and failed events (a failed event stays, with its body, attempts and
Zoho answers, until it is replayed and done, or dropped), links and comment links (every future event of
an item needs them), kv, OAuth tokens and the rate-limit slots (a fixed ring of ZOHO_RATE_LIMIT_PER_MINUTE
rows, bounded by design). The metric counters are never touched: pruning changes no counter; only the
stored-events gauge goes down by what was deleted.

Step 1 deletes what it reads, so each batch starts where the last ended; step 3 walks `processed_at` from a
high-water mark kept in kv, so rows already stripped are not read again. Both use the index
`ix_events_processed (processed_at, status)`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.settings import Settings
from bridge.store import counters
from bridge.store import schema as db
from bridge.store.clock import db_now, engine_now

log = logging.getLogger("bridge.retention")

DAY = 86400.0
FINISHED = (store.DONE, store.SUPERSEDED, store.SKIPPED)
PAYLOAD_MARK_KEY = "retention:payload-mark"  # "processed_at id" of the last stripped event
LEASE_KEY = "retention"
BATCH = 200  # rows per transaction to start with; on SQLite adjusted so one holds the write lock ~HOLD
MIN_BATCH, MAX_BATCH = 50, 2000
HOLD_SECONDS = 0.015
PAUSE_SECONDS = 0.02  # at least this between batches (and at least the last hold): intake's turn


@dataclass
class PruneReport:
    payloads: int = 0  # raw bodies dropped
    payload_bytes: int = 0  # their size (body + headers)
    events: int = 0
    attempts: int = 0
    zoho_calls: int = 0
    leases: int = 0
    operations: int = 0
    batches: int = 0
    payload_cutoff: float | None = None
    event_cutoff: float | None = None
    dry_run: bool = False
    complete: bool = True  # False when max_seconds stopped it (the next run continues)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _read_mark(conn: Connection) -> tuple[float, int]:
    raw = conn.execute(select(db.kv.c.value).where(db.kv.c.key == PAYLOAD_MARK_KEY)).scalar()
    if not raw:
        return (-1.0, 0)
    at, event_id = raw.split()
    return float(at), int(event_id)


def _write_mark(conn: Connection, mark: tuple[float, int]) -> None:
    value = f"{mark[0]!r} {mark[1]}"
    stmt = store._upsert(conn)(db.kv).values(key=PAYLOAD_MARK_KEY, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": value}))


def _after_mark(mark: tuple[float, int], cutoff: float):  # type: ignore[no-untyped-def]
    e = db.events
    return and_(
        e.c.processed_at < cutoff,
        or_(e.c.processed_at > mark[0], and_(e.c.processed_at == mark[0], e.c.id > mark[1])),
        e.c.status.in_(FINISHED),
    )


def prune(
    engine: Engine,
    *,
    retention_days: float,
    payload_days: float,
    dry_run: bool = False,
    batch: int = BATCH,
    pause: float = PAUSE_SECONDS,
    max_seconds: float | None = None,
) -> PruneReport:
    """Prune what is past its age (see the module's docstring). Safe beside live intake and workers."""
    now = engine_now(engine)
    report = PruneReport(dry_run=dry_run)
    report.payload_cutoff = now - payload_days * DAY if payload_days > 0 else None
    report.event_cutoff = now - retention_days * DAY if retention_days > 0 else None
    deadline = time.monotonic() + max_seconds if max_seconds else None
    if dry_run:
        return _count(engine, report)

    def more_time() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            report.complete = False
            return False
        return True

    pacer = _Pacer(engine, batch, pause)
    # Old events go first, so the bodies stripped next are only those of events that stay.
    if report.event_cutoff is not None:
        cutoff = report.event_cutoff
        while more_time() and pacer.step(lambda n: _delete_events(pacer, report, cutoff, n)):
            pass
        while more_time() and pacer.step(lambda n: _delete_loose_calls(pacer, report, cutoff, n)):
            pass
        with pacer.txn() as conn:  # the items' source calls and operator actions (issue 23), by their time index
            conn.execute(delete(db.source_calls).where(db.source_calls.c.at < cutoff))
            conn.execute(delete(db.operator_actions).where(db.operator_actions.c.at < cutoff))
    if report.payload_cutoff is not None:
        start, cutoff = report.event_cutoff, report.payload_cutoff
        while more_time() and pacer.step(lambda n: _strip_payloads(pacer, report, start, cutoff, n)):
            pass
        while more_time() and pacer.step(lambda n: _delete_operations(pacer, report, cutoff, n)):
            pass
    with engine.begin() as conn:
        expired = conn.execute(delete(db.leases).where(db.leases.c.expires_at < db_now(conn) - DAY))
        report.leases = int(expired.rowcount or 0)
    log.info("retention prune", extra=report.as_dict())
    return report


class _Pacer:
    """Runs one batch at a time with a pause after each. The batch size follows the time the last one held
    its transaction open (on SQLite, the write lock of the whole file) and the pause is at least as long, so
    a delivery arriving meanwhile waits one short batch at most and the prune takes half the time (and disk)
    at most."""

    def __init__(self, engine: Engine, batch: int, pause: float) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.batch = batch
        self.pause = pause
        self.held = 0.0

    @contextlib.contextmanager
    def txn(self) -> Iterator[Connection]:
        """One batch's transaction; times how long it held the lock (from BEGIN granted to COMMIT done)."""
        with self.engine.begin() as conn:
            started = time.perf_counter()
            yield conn
        self.held = time.perf_counter() - started

    def step(self, run) -> bool:  # type: ignore[no-untyped-def]
        self.held = 0.0
        more = bool(run(self.batch))
        held = self.held
        if self.sqlite:
            self._checkpoint()
        if held > HOLD_SECONDS and self.batch > MIN_BATCH:
            self.batch = max(MIN_BATCH, self.batch // 2)
        elif held < HOLD_SECONDS / 3:
            self.batch = min(MAX_BATCH, self.batch * 2)
        if more:
            time.sleep(max(self.pause, held))
        return more

    def _checkpoint(self) -> None:
        # Copy what this batch wrote out of the WAL now, on our own connection: otherwise the commit of some
        # delivery crosses the auto-checkpoint threshold and that delivery waits for our pages to be copied.
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            raw.close()


def _strip_payloads(pacer: _Pacer, report: PruneReport, start: float | None, cutoff: float, batch: int) -> bool:
    e = db.events
    with pacer.txn() as conn:
        mark = _read_mark(conn)
        if start is not None and mark[0] < start:
            mark = (start, 0)  # older events were deleted (or are failed, and keep their body)
        query = (
            select(e.c.id, e.c.processed_at, func.length(e.c.payload) + func.length(e.c.headers))
            .where(_after_mark(mark, cutoff))
            .order_by(e.c.processed_at, e.c.id)
            .limit(batch)
        )
        rows = conn.execute(query).all()
        if not rows:
            return False
        ids = [r[0] for r in rows]
        conn.execute(
            update(e)
            .where(e.c.id.in_(ids), e.c.status.in_(FINISHED))  # a replayed one keeps its body
            .values(payload=b"", headers="{}")
        )
        _write_mark(conn, (float(rows[-1][1]), int(rows[-1][0])))
    report.payloads += len(ids)
    report.payload_bytes += sum(int(r[2] or 0) for r in rows)
    report.batches += 1
    return len(rows) == batch


def _delete_events(pacer: _Pacer, report: PruneReport, cutoff: float, batch: int) -> bool:
    e = db.events
    with pacer.txn() as conn:
        query = (
            select(e.c.id, e.c.source, e.c.status)
            .where(e.c.processed_at < cutoff, e.c.status.in_(FINISHED))
            .order_by(e.c.processed_at)
            .limit(batch)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # a worker replaying one of them wins
        rows = conn.execute(query).all()
        if not rows:
            return False
        ids = [r.id for r in rows]
        report.attempts += int(conn.execute(delete(db.attempts).where(db.attempts.c.event_id.in_(ids))).rowcount or 0)
        calls = conn.execute(delete(db.zoho_calls).where(db.zoho_calls.c.event_id.in_(ids)))
        report.zoho_calls += int(calls.rowcount or 0)
        conn.execute(delete(db.delivery_repeats).where(db.delivery_repeats.c.event_id.in_(ids)))  # their redeliveries
        conn.execute(delete(e).where(e.c.id.in_(ids)))
        counters.events_deleted(conn, [(r.source, r.status) for r in rows])
    report.events += len(ids)
    report.batches += 1
    return len(rows) == batch


# Kinds whose confirmed row no decision reads once old (the mapping tables and the link keep what matters).
PRUNABLE_KINDS = ("zoho.update", "zoho.recheck", "zoho.create", "zoho.comment", "source.state")


def _delete_operations(pacer: _Pacer, report: PruneReport, cutoff: float, batch: int) -> bool:
    t = db.operations
    with pacer.txn() as conn:
        ids = list(
            conn.execute(
                select(t.c.id)
                .where(t.c.state == "confirmed", t.c.kind.in_(PRUNABLE_KINDS), t.c.done_at < cutoff)
                .where(or_(t.c.echo.is_(None), t.c.echo != "awaiting"))
                .limit(batch)
            ).scalars()
        )
        if ids:
            conn.execute(delete(t).where(t.c.id.in_(ids)))
    report.operations += len(ids)
    report.batches += 1 if ids else 0
    return len(ids) == batch


def _delete_loose_calls(pacer: _Pacer, report: PruneReport, cutoff: float, batch: int) -> bool:
    calls = db.zoho_calls
    with pacer.txn() as conn:
        ids = (
            conn.execute(
                select(calls.c.id)
                .where(calls.c.at < cutoff, calls.c.event_id.is_(None))
                .order_by(calls.c.at)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not ids:
            return False
        conn.execute(delete(calls).where(calls.c.id.in_(ids)))
    report.zoho_calls += len(ids)
    report.batches += 1
    return len(ids) == batch


def _count(engine: Engine, report: PruneReport) -> PruneReport:
    """What a prune would remove now (index range counts; nothing is changed)."""
    e = db.events
    with engine.connect() as conn:
        if report.payload_cutoff is not None:
            mark = _read_mark(conn)
            if report.event_cutoff is not None and mark[0] < report.event_cutoff:
                mark = (report.event_cutoff, 0)
            n, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(func.length(e.c.payload) + func.length(e.c.headers)), 0))
                .where(_after_mark(mark, report.payload_cutoff))
                .where(func.length(e.c.payload) > 0)
            ).one()
            report.payloads, report.payload_bytes = int(n), int(size)
        if report.event_cutoff is not None:
            old = select(e.c.id).where(e.c.processed_at < report.event_cutoff, e.c.status.in_(FINISHED))
            report.events = int(conn.execute(select(func.count()).select_from(old.subquery())).scalar() or 0)
            report.attempts = int(
                conn.execute(select(func.count()).where(db.attempts.c.event_id.in_(old))).scalar() or 0
            )
            calls = db.zoho_calls
            of_old = conn.execute(select(func.count()).where(calls.c.event_id.in_(old))).scalar() or 0
            loose = conn.execute(
                select(func.count()).where(calls.c.at < report.event_cutoff, calls.c.event_id.is_(None))
            ).scalar()
            report.zoho_calls = int(of_old) + int(loose or 0)
        report.leases = int(
            conn.execute(select(func.count()).where(db.leases.c.expires_at < db_now(conn) - DAY)).scalar() or 0
        )
    return report


def prune_from_settings(
    engine: Engine, settings: Settings, *, dry_run: bool = False, max_seconds: float | None = None
) -> PruneReport:
    return prune(
        engine,
        retention_days=settings.retention_days,
        payload_days=settings.retention_payload_days,
        dry_run=dry_run,
        max_seconds=max_seconds,
    )
