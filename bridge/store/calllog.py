"""What the bridge records to show an item's story and the budgets in pictures, beside what the core stores:

- repeated deliveries (a redelivery answered "duplicate"): one counted row per stored delivery;
- calls to a source's API made on an item's behalf, and calls per minute to each source (the charts);
- the database's heartbeat (written by the sweeper), by which `db upgrade` tells a restored backup.

Each write is one small transaction off intake's accepted path; every time is the database's.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from bridge.store import PENDING, _upsert, counters, endpoint_of
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run

log = logging.getLogger("bridge.store")
KEEP_MINUTES = 120  # call_minutes rows kept (the charts show the last hour)
PRUNE_ONE_IN = 200  # a call prunes old rows once in this many, on average
HEARTBEAT_KEY = "store.heartbeat"  # kv: the database's time at the sweeper's last run


@dataclass(frozen=True)
class SourceCall:
    at: float
    method: str
    path: str
    status: int | None
    duration_ms: float | None
    message: str | None


@dataclass(frozen=True)
class Repeat:
    event_id: int
    dedup_key: str
    count: int
    first_at: float
    last_at: float
    sender: str | None


@dataclass(frozen=True)
class ZohoCall:
    """One Zoho call as the call log keeps it (the item's story, `explain`, the budget charts; its counters feed
    /metrics). A worker holding an item writes it with the item's next fenced step (`ClaimedItem.log_call`);
    any other caller, or a worker that lost its claim, writes it in a transaction of its own. The same row as
    only writer of the row, through a statement built once."""

    event_id: int | None
    answered: float  # when the answer came, on this process's monotonic clock: the row's time is the database's
    method: str
    path: str
    request_json: Any
    status: int | None
    response_text: str | None
    duration_ms: float
    dry_run: bool


_ZOHO_CALL = insert(db.zoho_calls)  # built once; its values are bound per call


def write_zoho_calls(conn: Connection, calls: list[ZohoCall], now: float) -> None:
    """The calls' rows and their counters, in the caller's transaction. `now`: the database's time, read in this
    transaction; each row's time is that, less how long ago (this process's monotonic clock) its answer came, so
    the charts and the story count it in the database's minute whatever this host's clock says."""
    written = time.monotonic()
    for call in calls:
        endpoint = endpoint_of(call.method, call.path)
        counters.zoho_call(conn, endpoint, call.status, call.dry_run, call.duration_ms)
        run(
            conn,
            _ZOHO_CALL,
            {
                "event_id": call.event_id,
                "at": now - max(0.0, written - call.answered),
                "method": call.method,
                "endpoint": endpoint,
                "path": call.path,
                "request_json": json.dumps(call.request_json) if call.request_json is not None else None,
                "status": call.status,
                "response_text": (call.response_text or "")[:4000] or None,
                "duration_ms": call.duration_ms,
                "dry_run": call.dry_run,
            },
        )


def record_zoho_calls(engine: Engine, calls: list[ZohoCall]) -> None:
    """The calls' rows in a transaction of their own."""
    if calls:
        with engine.begin() as conn:
            write_zoho_calls(conn, calls, db_now(conn))


def record_zoho_call(
    engine: Engine,
    *,
    event_id: int | None,
    method: str,
    path: str,
    request_json: Any,
    status: int | None,
    response_text: str | None,
    duration_ms: float,
    dry_run: bool,
) -> None:
    """One call's row, answered now, in a transaction of its own."""
    call = ZohoCall(event_id, time.monotonic(), method, path, request_json, status, response_text, duration_ms, dry_run)
    record_zoho_calls(engine, [call])


# -- repeated deliveries ----------------------------------------------------------------------------------------


def delivery_repeated(
    engine: Engine, *, source: str, dedup_key: str, event_id: int, item_key: str, sender: str | None
) -> None:
    """A delivery answered "duplicate": counted on its stored delivery's row (one per stored delivery), for the
    item's story. Never raises: the sender's answer does not depend on it."""
    try:
        _repeated(engine, source, dedup_key, event_id, item_key, sender)
    except Exception:
        log.warning("could not record a repeated delivery", exc_info=True, extra={"source": source})


def _repeated(engine: Engine, source: str, dedup_key: str, event_id: int, item_key: str, sender: str | None) -> None:
    t = db.delivery_repeats
    with engine.begin() as conn:
        now = db_now(conn)
        stmt = _upsert(conn)(t).values(
            source=source,
            dedup_key=dedup_key[:255],
            event_id=event_id,
            item_key=item_key[:255],
            count=1,
            first_at=now,
            last_at=now,
            sender=(sender or "")[:255] or None,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.source, t.c.dedup_key], set_={"count": t.c.count + 1, "last_at": now}
            )
        )


def repeats(conn: Connection, source: str, item_key: str) -> list[Repeat]:
    t = db.delivery_repeats
    rows = conn.execute(select(t).where(t.c.source == source, t.c.item_key == item_key).order_by(t.c.first_at)).all()
    return [Repeat(r.event_id, r.dedup_key, r.count, r.first_at, r.last_at, r.sender) for r in rows]


# -- source calls -----------------------------------------------------------------------------------------------


def source_call(
    engine: Engine,
    *,
    system: str,
    lane: str,
    item: tuple[str, str] | None,
    method: str,
    path: str,
    status: int | None,
    duration_ms: float,
    message: str | None,
) -> None:
    """One call to a source's API: counted in its minute (the charts) and, made for an item, kept in its story."""
    m = db.call_minutes
    failed = 1 if status is None or status >= 400 else 0
    with engine.begin() as conn:
        now = db_now(conn)
        minute = int(now // 60)
        stmt = _upsert(conn)(m).values(system=system, minute=minute, lane=lane, calls=1, errors=failed)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[m.c.system, m.c.minute, m.c.lane],
                set_={"calls": m.c.calls + 1, "errors": m.c.errors + failed},
            )
        )
        if item is not None:
            conn.execute(
                insert(db.source_calls).values(
                    source=item[0],
                    item_key=item[1][:255],
                    at=now,
                    method=method[:8],
                    path=path[:2000],
                    status=status,
                    duration_ms=duration_ms,
                    message=(message or "")[:1000] or None,
                )
            )
        if random.randrange(PRUNE_ONE_IN) == 0:  # noqa: S311 - spreading a chore, not security
            conn.execute(delete(m).where(m.c.minute < minute - KEEP_MINUTES))


def calls_for_item(conn: Connection, source: str, item_key: str, *, limit: int = 2000) -> list[SourceCall]:
    t = db.source_calls
    rows = conn.execute(
        select(t).where(t.c.source == source, t.c.item_key == item_key).order_by(t.c.id.desc()).limit(limit)
    ).all()
    return [SourceCall(r.at, r.method, r.path, r.status, r.duration_ms, r.message) for r in reversed(rows)]


def prune_source_calls(conn: Connection, before: float) -> int:
    t = db.source_calls
    return int(conn.execute(delete(t).where(t.c.at < before)).rowcount or 0)


def minutes(conn: Connection, since_minute: int) -> dict[str, dict[str, dict[int, tuple[int, int]]]]:
    """{system: {lane: {minute: (calls, errors)}}} from `since_minute` on."""
    m = db.call_minutes
    out: dict[str, dict[str, dict[int, tuple[int, int]]]] = {}
    rows = conn.execute(select(m).where(m.c.minute >= since_minute)).all()
    for r in rows:
        out.setdefault(r.system, {}).setdefault(r.lane, {})[int(r.minute)] = (int(r.calls), int(r.errors))
    return out


def zoho_minutes(conn: Connection, since: float) -> dict[str, dict[int, tuple[int, int]]]:
    """Zoho calls per minute since `since` from the call log, by lane ("live" / "backfill": the event's origin)."""
    z, e = db.zoho_calls, db.events
    minute = func.floor(z.c.at / 60)
    origin = select(e.c.origin).where(e.c.id == z.c.event_id).scalar_subquery()  # one index probe per event
    lane = func.coalesce(origin, "live")
    failed = func.sum(case((z.c.status.is_(None), 1), (z.c.status >= 400, 1), else_=0))
    rows = conn.execute(
        select(minute.label("minute"), lane.label("lane"), func.count().label("calls"), failed.label("errors"))
        .where(z.c.at >= since, z.c.dry_run.is_(False))
        .group_by(minute, lane)
    ).all()
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for r in rows:
        name = "backfill" if str(r.lane).startswith("backfill") else "live"
        calls, errors = out.setdefault(name, {}).get(int(r.minute), (0, 0))
        out[name][int(r.minute)] = (calls + int(r.calls), errors + int(r.errors or 0))
    return out


def backlog(conn: Connection, now: float, waiting: dict[str, int]) -> dict[str, int]:
    """Pending events by lane: due now (live, backfill, resync), waiting for a later try, and held by a pause
    (`waiting`: what `steer.waiting` read, per pause)."""
    e = db.events
    lane = case(
        (e.c.origin.like("backfill:%"), "backfill"),
        (e.c.origin == "resync", "resync"),
        else_="live",
    )
    due = case((e.c.next_attempt_at <= now, "due"), else_="later")
    rows = conn.execute(
        select(lane.label("lane"), due.label("due"), func.count()).where(e.c.status == PENDING).group_by(lane, due)
    ).all()
    out = {"live": 0, "backfill": 0, "resync": 0, "later": 0, "paused": 0}
    for name, when, n in rows:
        if name == "backfill":
            out["backfill"] += int(n)  # parked for the feeder or due: the backfill's share either way
        elif when == "later":
            out["later"] += int(n)
        else:
            out[str(name)] += int(n)
    out["paused"] = sum(waiting.values())
    return out


# -- the heartbeat ----------------------------------------------------------------------------------------------


def heartbeat(engine: Engine) -> float:
    """The sweeper's mark: the database's time now, kept in the database (a restored backup carries an old one)."""
    with engine.begin() as conn:
        now = db_now(conn)
        stmt = _HEARTBEAT.get(conn.dialect.name)
        if stmt is None:  # built once per dialect: the sweeper writes it every few seconds
            new = _upsert(conn)(db.kv).values(key=HEARTBEAT_KEY, value=bindparam("value"))
            upsert = new.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": new.excluded.value})
            stmt = _HEARTBEAT.setdefault(conn.dialect.name, upsert)
        run(conn, stmt, {"value": json.dumps({"at": now})})
    return now


_HEARTBEAT: dict[str, Any] = {}


def touch_heartbeat(conn: Connection) -> None:
    """Set an existing heartbeat to the database's time now (`links recover` after a restore: no row, no change)."""
    conn.execute(update(db.kv).where(db.kv.c.key == HEARTBEAT_KEY).values(value=f'{{"at": {db_now(conn)}}}'))


def last_heartbeat(conn: Connection) -> float | None:
    value = conn.execute(select(db.kv.c.value).where(db.kv.c.key == HEARTBEAT_KEY)).scalar()
    if not value:
        return None
    try:
        data: Any = json.loads(value)
        return float(data["at"])
    except (ValueError, KeyError, TypeError):
        return None
