"""The budgets in figures, for the front page's charts, `status` and /metrics: per outside system, the calls per
minute of the last hour (live and backfill) against its limit, its block (until when, why), and the backlog of
pending events (live, backfill, paused).

Zoho's calls come from the call log (`zoho_calls`); the sources' from `call_minutes`, counted by their one client
(`bridge/sources/http.py`). Every time is the database's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from bridge.settings import Settings
from bridge.sources import SOURCES
from bridge.store import budgets, calllog, steer
from bridge.store.clock import db_now

MINUTES = 60
SYSTEMS = ("zoho", *SOURCES)


@dataclass(frozen=True)
class SystemBudget:
    system: str
    limit_per_minute: float | None  # the line on the chart; None: no fixed rate (blocks only)
    limit_text: str
    live: list[int]  # calls per minute, oldest first, the last MINUTES minutes (the current one last)
    backfill: list[int]
    errors: list[int]
    blocked_until: float | None
    block_reason: str | None

    @property
    def last_minute(self) -> int:
        return self.live[-1] + self.backfill[-1]

    @property
    def hour(self) -> int:
        return sum(self.live) + sum(self.backfill)

    @property
    def peak(self) -> int:
        return max((a + b for a, b in zip(self.live, self.backfill, strict=True)), default=0)


@dataclass
class BudgetView:
    now: float
    systems: list[SystemBudget]
    backlog: dict[str, int]  # pending events: live (due now), backfill, resync, waiting (a retry later), paused
    paused: list[steer.Pause] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)  # per pause: pending events held back
    held: dict[str, int] = field(default_factory=dict)  # held items per reason


def _limits(settings: Settings) -> dict[str, tuple[float | None, str]]:
    out: dict[str, tuple[float | None, str]] = {}
    count, window = settings.zoho_rate_limit_per_minute, settings.zoho_rate_window_seconds
    if count:
        out["zoho"] = (count * 60.0 / window, f"{count} per {window:g} s (shared by every worker)")
    else:
        out["zoho"] = (None, "no limit configured")
    for name, spec in SOURCES.items():
        out[name] = spec.rate(settings)
    return out


def view(engine: Engine, settings: Settings) -> BudgetView:
    with engine.connect() as conn:
        return read(conn, settings)


def read(conn: Connection, settings: Settings | None) -> BudgetView:
    now = db_now(conn)
    this_minute = int(now // 60)
    first = this_minute - MINUTES + 1
    zoho = calllog.zoho_minutes(conn, first * 60.0)
    sources = calllog.minutes(conn, first)
    states = {s.budget: s for s in budgets.all_states(conn)}
    limits = _limits(settings) if settings is not None else {}
    systems = []
    for system in SYSTEMS:
        per_lane = zoho if system == "zoho" else sources.get(system, {})
        series = {
            lane: [per_lane.get(lane, {}).get(m, (0, 0)) for m in range(first, this_minute + 1)]
            for lane in ("live", "backfill")
        }
        blocks = [
            s for key, s in states.items() if (key == system or key.startswith(system + ".")) and s.blocked_until > now
        ]
        block = max(blocks, key=lambda s: s.blocked_until, default=None)
        limit, text = limits.get(system, (None, ""))
        systems.append(
            SystemBudget(
                system=system,
                limit_per_minute=limit,
                limit_text=text,
                live=[c for c, _ in series["live"]],
                backfill=[c for c, _ in series["backfill"]],
                errors=[a[1] + b[1] for a, b in zip(series["live"], series["backfill"], strict=True)],
                blocked_until=block.blocked_until if block else None,
                block_reason=block.reason if block else None,
            )
        )
    waiting = steer.waiting(conn)
    return BudgetView(
        now=now,
        systems=systems,
        backlog=calllog.backlog(conn, now, waiting),
        paused=steer.pauses(conn),
        waiting=waiting,
        held=steer.held_count(conn),
    )


def lines(v: BudgetView) -> list[str]:
    """`status`'s section: one line per system, the backlog, and every pause."""
    out = []
    for s in v.systems:
        limit = f" (limit {s.limit_per_minute:g}/min: {s.limit_text})" if s.limit_per_minute else ""
        block = ""
        if s.blocked_until:
            block = f"; BLOCKED for {s.blocked_until - v.now:.0f}s more: {s.block_reason or ''}"
        backfill = f", {sum(s.backfill)} of them backfill" if sum(s.backfill) else ""
        out.append(
            f"{s.system:<8} {s.last_minute} call(s) this minute, peak {s.peak}/min, {s.hour} in the last hour"
            f"{backfill}{limit}{block}"
        )
    b = v.backlog
    out.append(
        f"backlog: {b['live']} live due, {b['backfill']} backfill, {b['resync']} resync, {b['later']} waiting for "
        f"a later try, {b['paused']} held by pauses"
    )
    return out


def pause_lines(v: BudgetView) -> list[str]:
    out = []
    for p in v.paused:
        waiting = v.waiting.get(f"{p.kind}:{p.name}", 0)
        out.append(f"{p.kind} {p.name} paused since {_t(p.since)}: {waiting} event(s) wait")
    stopped = v.held.get(steer.STOPPED, 0)
    if stopped:
        out.append(f"{stopped} item(s) stopped one by one: {v.waiting.get(steer.STOPPED, 0)} event(s) wait")
    return out or ["none"]


def _t(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
