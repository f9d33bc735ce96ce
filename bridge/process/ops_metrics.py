"""The /metrics gauges of issue 23: calls per minute to each outside system, its block, the backlog by lane, and
what is paused (with how many events wait). Read on the scrape's connection; bounded by the last hour's minutes,
the pending events' index and the small pause tables."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.engine import Connection

from bridge.core import budget_view


def gauges(conn: Connection) -> list[GaugeMetricFamily]:
    v = budget_view.read(conn, None)
    minute = GaugeMetricFamily(
        "bridge_outside_calls_last_minute", "Calls to each outside system this minute", labels=["system", "lane"]
    )
    hour = GaugeMetricFamily(
        "bridge_outside_calls_last_hour", "Calls to each outside system in the last hour", labels=["system", "lane"]
    )
    blocked = GaugeMetricFamily(
        "bridge_outside_blocked_until_seconds",
        "When the system's block ends (UNIX time, database clock; 0: not blocked)",
        labels=["system"],
    )
    for s in v.systems:
        for lane, series in (("live", s.live), ("backfill", s.backfill)):
            minute.add_metric([s.system, lane], series[-1])
            hour.add_metric([s.system, lane], sum(series))
        blocked.add_metric([s.system], s.blocked_until or 0.0)
    backlog = GaugeMetricFamily("bridge_backlog_events", "Pending events by lane", labels=["lane"])
    for lane, n in sorted(v.backlog.items()):
        backlog.add_metric([lane], n)
    paused = GaugeMetricFamily(
        "bridge_paused", "1 per paused source or mapping file (`issue-bridge pause`)", labels=["kind", "name"]
    )
    for p in v.paused:
        paused.add_metric([p.kind, p.name], 1)
    waiting = GaugeMetricFamily("bridge_paused_events", "Pending events held back by each pause", labels=["pause"])
    for name, n in sorted(v.waiting.items()):
        waiting.add_metric([name], n)
    held = GaugeMetricFamily("bridge_held_items", "Items held (stopped, or under a paused mapping)", labels=["why"])
    for why, n in sorted(v.held.items()):
        held.add_metric([why], n)
    return [minute, hour, blocked, backlog, paused, waiting, held]
