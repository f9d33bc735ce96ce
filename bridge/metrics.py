"""Prometheus metrics at /metrics, computed from the shared database at scrape time.

Every process (web, workers, on every host) writes to the same store, so reading the figures from
it aggregates them across processes and hosts with no per-process registry to merge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection, Engine

from bridge import db
from bridge.zoho.ratelimit import block_status

LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LAG_BUCKETS_S = (1, 2, 5, 10, 30, 60, 300, 900, 3600)


def _histogram(conn, column, buckets, where) -> tuple[list[tuple[str, float]], float]:  # type: ignore[no-untyped-def]
    cols = [func.sum(case((column <= b, 1), else_=0)) for b in buckets]
    row = conn.execute(select(*cols, func.count(), func.coalesce(func.sum(column), 0.0)).where(where)).one()
    counts = [(str(b), float(row[i] or 0)) for i, b in enumerate(buckets)]
    counts.append(("+Inf", float(row[len(buckets)] or 0)))
    return counts, float(row[len(buckets) + 1] or 0.0)


def zoho_block_gauges(conn: Connection) -> Iterator[GaugeMetricFamily]:
    """The shared Zoho block (a 429, a spent daily quota): how long it still lasts and when it ends, by the
    database clock. A small function so a rewritten collector can call it as it is."""
    remaining, until = block_status(conn)
    wait = GaugeMetricFamily("bridge_zoho_backoff_seconds", "Seconds every worker still waits after a 429")
    wait.add_metric([], remaining)
    yield wait
    ends = GaugeMetricFamily("bridge_zoho_block_until_seconds", "When the shared Zoho block ends (UNIX time; 0: none)")
    ends.add_metric([], until or 0.0)
    yield ends


class BridgeCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator:  # type: ignore[override]
        now = time.time()
        with self.engine.connect() as conn:
            received = CounterMetricFamily(
                "bridge_deliveries",
                "Webhook deliveries by source, event and answer",
                labels=["source", "event", "answer"],
            )
            for source, event, n in conn.execute(
                select(db.events.c.source, db.events.c.event_name, func.count()).group_by(
                    db.events.c.source, db.events.c.event_name
                )
            ):
                received.add_metric([source, event, "accepted"], n)
            for row in conn.execute(select(db.intake_counters)):
                received.add_metric([row.source, row.event, row.answer], row.count)
            yield received

            events = GaugeMetricFamily("bridge_events", "Stored events by state", labels=["source", "status"])
            for source, status, n in conn.execute(
                select(db.events.c.source, db.events.c.status, func.count()).group_by(
                    db.events.c.source, db.events.c.status
                )
            ):
                events.add_metric([source, status], n)
            yield events

            retried = CounterMetricFamily("bridge_event_retries", "Processing attempts that ended in a retry")
            retried.add_metric(
                [], conn.execute(select(func.count()).where(db.attempts.c.outcome == "retry")).scalar() or 0
            )
            yield retried

            due = conn.execute(
                select(func.count(), func.min(db.events.c.received_at)).where(db.events.c.status == "pending")
            ).one()
            depth = GaugeMetricFamily("bridge_queue_depth", "Events stored and not yet processed")
            depth.add_metric([], due[0] or 0)
            yield depth
            oldest = GaugeMetricFamily("bridge_oldest_pending_seconds", "Age of the oldest unprocessed event")
            oldest.add_metric([], (now - due[1]) if due[1] else 0.0)
            yield oldest

            calls = CounterMetricFamily(
                "bridge_zoho_calls", "Zoho calls by endpoint and HTTP status", labels=["endpoint", "status", "dry_run"]
            )
            for endpoint, status, dry, n in conn.execute(
                select(
                    db.zoho_calls.c.endpoint, db.zoho_calls.c.status, db.zoho_calls.c.dry_run, func.count()
                ).group_by(db.zoho_calls.c.endpoint, db.zoho_calls.c.status, db.zoho_calls.c.dry_run)
            ):
                calls.add_metric([endpoint, "none" if status is None else str(status), str(bool(dry)).lower()], n)
            yield calls

            buckets, total = _histogram(
                conn,
                db.zoho_calls.c.duration_ms,
                LATENCY_BUCKETS_MS,
                and_(db.zoho_calls.c.dry_run.is_(False), db.zoho_calls.c.status.isnot(None)),
            )
            latency = HistogramMetricFamily("bridge_zoho_latency_ms", "Zoho call latency in milliseconds")
            latency.add_metric([], buckets, total)
            yield latency

            lag_col = db.events.c.processed_at - db.events.c.source_ts
            buckets, total = _histogram(conn, lag_col, LAG_BUCKETS_S, db.events.c.status == "done")
            lag = HistogramMetricFamily(
                "bridge_end_to_end_lag_seconds", "From the source's timestamp to the Zoho answer, per processed event"
            )
            lag.add_metric([], buckets, total)
            yield lag

            leases = conn.execute(
                select(func.count()).where(db.leases.c.name.like("item:%"), db.leases.c.expires_at > now)
            ).scalar()
            busy = GaugeMetricFamily("bridge_items_locked", "Items a worker holds the lease of right now")
            busy.add_metric([], leases or 0)
            yield busy

            yield from zoho_block_gauges(conn)
            slots = conn.execute(select(func.count()).where(db.rate_slots.c.used_at > now - 60.0)).scalar()
            used = GaugeMetricFamily("bridge_zoho_budget_used", "Zoho calls in the last 60 s (shared budget)")
            used.add_metric([], slots or 0)
            yield used


def render(engine: Engine) -> bytes:
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(engine))
    return generate_latest(registry)
