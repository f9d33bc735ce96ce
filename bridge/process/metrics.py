"""Prometheus metrics at /metrics, read from the shared database at scrape time.

Every process (web, workers, on every host) writes to the same store, so reading the figures from
it aggregates them across processes and hosts with no per-process registry to merge. Counters and
histograms are the series of bridge/store/counters.py: deltas appended in the transaction of the change
they count (the stored-events gauge is kept the same way), folded into one row per series before each
scrape and by the periodic sweeper; the other gauges are indexed lookups bounded by the backlog or by
small tables, never by history. A scrape therefore costs the same at a thousand stored events or at a million.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Connection, Engine

from bridge.process import ops_metrics
from bridge.store import budgets, counters
from bridge.store.clock import db_now
from bridge.store.counters import LAG_BUCKETS_S, LATENCY_BUCKETS_MS
from bridge.targets.zoho.ratelimit import block_status

__all__ = ["LAG_BUCKETS_S", "LATENCY_BUCKETS_MS", "BridgeCollector", "render"]
log = logging.getLogger("bridge.metrics")


def _histogram(series: dict, name: str, buckets) -> tuple[list[tuple[str, float]], float]:  # type: ignore[no-untyped-def]
    per_bucket = {labels.get("le"): value for labels, value in series.get(f"{name}_bucket", [])}
    running, out = 0.0, []
    for le in [*(str(b) for b in buckets), "+Inf"]:
        running += per_bucket.get(le, 0.0)
        out.append((le, running))
    total = sum(v for _labels, v in series.get(f"{name}_sum", []))
    return out, total


def zoho_block_gauges(conn: Connection) -> list[GaugeMetricFamily]:
    """The shared Zoho block (a 429, a spent daily quota): how long it still lasts and when it ends, by the
    database clock."""
    remaining, until = block_status(conn)
    wait = GaugeMetricFamily("bridge_zoho_backoff_seconds", "Seconds every worker still waits after a 429")
    wait.add_metric([], remaining)
    ends = GaugeMetricFamily("bridge_zoho_block_until_seconds", "When the shared Zoho block ends (UNIX time; 0: none)")
    ends.add_metric([], until or 0.0)
    blocked = GaugeMetricFamily(
        "bridge_zoho_blocked", "1 while every worker waits for Zoho: until when, and why", labels=["until", "reason"]
    )
    state = budgets.peek(conn, "zoho") if until else None
    if until:
        when = datetime.fromtimestamp(until, UTC).strftime("blocked until %Y-%m-%d %H:%M:%S UTC")
        blocked.add_metric([when, (state.reason if state else None) or ""], 1.0)
    return [wait, ends, blocked]


class BridgeCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator:  # type: ignore[override]
        try:
            counters.fold(self.engine)  # what accumulated since the last fold: a few seconds' worth
        except Exception:  # the deltas are read below anyway: a fold that failed only costs this scrape time
            log.warning("could not fold the metric deltas before a scrape", exc_info=True)
        with self.engine.connect() as conn:
            now = db_now(conn)  # leases and rate slots are timed by the database's clock
            series = counters.read_all(conn)
            pending, oldest_at, leases = counters.backlog_gauges(conn, now)
            block = zoho_block_gauges(conn)
            slots = budgets.used_since(conn, "zoho", now - 60.0)
            # (more gauges from other modules go here: one indexed query each, read on this connection)
            steering = ops_metrics.gauges(conn)  # budgets per system, backlog by lane, pauses (issue 23)

        received = CounterMetricFamily(
            "bridge_deliveries", "Webhook deliveries by source, event and answer", labels=["source", "event", "answer"]
        )
        for labels, value in series.get(counters.DELIVERIES, []):
            received.add_metric([labels["source"], labels["event"], labels["answer"]], value)
        yield received

        events = GaugeMetricFamily("bridge_events", "Stored events by state", labels=["source", "status"])
        for labels, value in series.get(counters.EVENTS_STORED, []):
            if value:
                events.add_metric([labels["source"], labels["status"]], value)
        yield events

        finished = CounterMetricFamily(
            "bridge_events_finished", "Events processed to an end state", labels=["source", "status"]
        )
        for labels, value in series.get(counters.EVENTS_FINISHED, []):
            finished.add_metric([labels["source"], labels["status"]], value)
        yield finished

        retried = CounterMetricFamily("bridge_event_retries", "Processing attempts that ended in a retry")
        retried.add_metric([], sum(v for _labels, v in series.get(counters.RETRIES, [])))
        yield retried

        depth = GaugeMetricFamily("bridge_queue_depth", "Events stored and not yet processed")
        depth.add_metric([], pending or 0)
        yield depth
        oldest = GaugeMetricFamily("bridge_oldest_pending_seconds", "Age of the oldest unprocessed event")
        oldest.add_metric([], max(0.0, now - oldest_at) if oldest_at else 0.0)
        yield oldest

        calls = CounterMetricFamily(
            "bridge_zoho_calls", "Zoho calls by endpoint and HTTP status", labels=["endpoint", "status", "dry_run"]
        )
        for labels, value in series.get(counters.ZOHO_CALLS, []):
            calls.add_metric([labels["endpoint"], labels["status"], labels["dry_run"]], value)
        yield calls

        buckets, total = _histogram(series, counters.ZOHO_LATENCY, LATENCY_BUCKETS_MS)
        latency = HistogramMetricFamily("bridge_zoho_latency_ms", "Zoho call latency in milliseconds")
        latency.add_metric([], buckets, total)
        yield latency

        buckets, total = _histogram(series, counters.END_TO_END_LAG, LAG_BUCKETS_S)
        lag = HistogramMetricFamily(
            "bridge_end_to_end_lag_seconds", "From the source's timestamp to the Zoho answer, per processed event"
        )
        lag.add_metric([], buckets, total)
        yield lag

        busy = GaugeMetricFamily("bridge_items_locked", "Items a worker holds the lease of right now")
        busy.add_metric([], leases or 0)
        yield busy

        yield from block
        used = GaugeMetricFamily("bridge_zoho_budget_used", "Zoho calls in the last 60 s (shared budget)")
        used.add_metric([], slots or 0)
        yield used
        yield from steering


def render(engine: Engine) -> bytes:
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(engine))
    return generate_latest(registry)
