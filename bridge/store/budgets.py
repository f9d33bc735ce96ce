"""The shared call budgets' rows: one `budget_state` row per budget (its block, the outage breaker, the
GCRA clock, the day's count) and, for sliding windows, one `budget_slots` row per call of the window.

Every time is the database's (`db_now`), so no host's clock can spend a slot early or end a block early.
Functions take a Connection: `bridge.outbound.budget` runs them in one write transaction per take, which
rolls back whole when any of a call's budgets says wait (nothing is spent for a call that is not sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run
from bridge.store.sql import upsert as _upsert

CHUNK = 500  # slot rows per INSERT: far below any driver's parameter limit, whatever the budget's size


@dataclass(frozen=True)
class State:
    budget: str
    blocked_until: float
    reason: str | None
    outages: int
    tat: float
    day: str | None
    day_count: int


def _ensure(conn: Connection, budget: str, now: float) -> None:
    stmt = _upsert(conn)(db.budget_state).values(
        budget=budget, blocked_until=0.0, outages=0, tat=0.0, day_count=0, updated_at=now
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[db.budget_state.c.budget]))


# The statements a call's take runs are built once (bound parameters): see bridge/store/claims.py.
_T, _S = db.budget_state, db.budget_slots
_READ = select(_T).where(_T.c.budget == bindparam("budget"))
_READ_LOCKED = _READ.with_for_update()
_OLDEST = select(_S.c.slot, _S.c.used_at).where(_S.c.budget == bindparam("budget")).order_by(_S.c.used_at).limit(1)
_OLDEST_LOCKED = _OLDEST.with_for_update(skip_locked=True)
_USE_SLOT = (
    update(_S)
    .where(_S.c.budget == bindparam("b_budget"), _S.c.slot == bindparam("b_slot"))
    .values(used_at=bindparam("b_used_at"))
)
_WRITES: dict[tuple[str, ...], Executable] = {}  # an UPDATE per set of columns written


def read(conn: Connection, budget: str, *, lock: bool = False) -> State:
    """The budget's row (created if missing). `lock`: hold it until commit (PostgreSQL; SQLite's write
    transaction holds the whole database already)."""
    query = _READ_LOCKED if lock and conn.dialect.name == "postgresql" else _READ
    row = conn.execute(query, {"budget": budget}).first()
    if row is None:
        _ensure(conn, budget, db_now(conn))
        row = conn.execute(query, {"budget": budget}).one()
    return State(row.budget, row.blocked_until, row.reason, row.outages, row.tat, row.day, row.day_count)


# Blocks and breakers only (no limit to spend): one read, the database's clock in it, no write lock. A budget
# without a row has never been blocked.
_BLOCKS = {
    "sqlite": text(
        "SELECT budget, blocked_until - (julianday('now') - 2440587.5) * 86400.0 AS remaining, reason, outages"
        " FROM budget_state WHERE budget IN :keys"
    ).bindparams(bindparam("keys", expanding=True)),
    "postgresql": text(
        "SELECT budget, blocked_until - EXTRACT(EPOCH FROM clock_timestamp())::float8 AS remaining, reason, outages"
        " FROM budget_state WHERE budget IN :keys"
    ).bindparams(bindparam("keys", expanding=True)),
}


@dataclass(frozen=True)
class Block:
    budget: str
    remaining: float  # seconds the block still lasts by the database's clock (<= 0: none)
    reason: str | None
    outages: int


def blocks(conn: Connection, budgets: list[str]) -> list[Block]:
    """The budgets' blocks and breakers as they stand (those with a row), timed by the database's clock."""
    rows = run(conn, _BLOCKS[conn.dialect.name], {"keys": budgets}).all()
    return [Block(r.budget, float(r.remaining), r.reason, int(r.outages)) for r in rows]


def peek(conn: Connection, budget: str) -> State | None:
    t = db.budget_state
    row = conn.execute(select(t).where(t.c.budget == budget)).first()
    if row is None:
        return None
    return State(row.budget, row.blocked_until, row.reason, row.outages, row.tat, row.day, row.day_count)


def all_states(conn: Connection) -> list[State]:
    t = db.budget_state
    return [
        State(r.budget, r.blocked_until, r.reason, r.outages, r.tat, r.day, r.day_count)
        for r in conn.execute(select(t).order_by(t.c.budget)).all()
    ]


def write(conn: Connection, budget: str, now: float, **values: object) -> None:
    columns = tuple(sorted(values))
    stmt = _WRITES.get(columns)
    if stmt is None:
        sets: dict[str, Any] = {"updated_at": bindparam("v_updated_at"), **{c: bindparam(f"v_{c}") for c in columns}}
        stmt = _WRITES[columns] = update(_T).where(_T.c.budget == bindparam("b_budget")).values(**sets)
    conn.execute(stmt, {"b_budget": budget, "v_updated_at": now, **{f"v_{c}": v for c, v in values.items()}})


def size_slots(conn: Connection, budget: str, count: int) -> None:
    """Exactly `count` slots for the budget (a new budget, or a changed limit), in bounded statements."""
    t = db.budget_slots
    have = int(conn.execute(select(func.count()).where(t.c.budget == budget, t.c.slot < count)).scalar() or 0)
    conn.execute(delete(t).where(t.c.budget == budget, t.c.slot >= count))
    if have == count:
        return
    existing = set(conn.execute(select(t.c.slot).where(t.c.budget == budget)).scalars())
    missing = [i for i in range(count) if i not in existing]
    for start in range(0, len(missing), CHUNK):
        rows = [{"budget": budget, "slot": i, "used_at": 0.0} for i in missing[start : start + CHUNK]]
        conn.execute(_upsert(conn)(t).values(rows).on_conflict_do_nothing(index_elements=[t.c.budget, t.c.slot]))


def oldest_slot(conn: Connection, budget: str) -> tuple[int, float] | None:
    """The slot used longest ago, locked for this transaction (others skip it on PostgreSQL)."""
    query = _OLDEST_LOCKED if conn.dialect.name == "postgresql" else _OLDEST
    row = conn.execute(query, {"budget": budget}).first()
    return (int(row.slot), float(row.used_at)) if row else None


def use_slot(conn: Connection, budget: str, slot: int, now: float) -> None:
    conn.execute(_USE_SLOT, {"b_budget": budget, "b_slot": slot, "b_used_at": now})


def used_since(conn: Connection, budget: str, since: float) -> int:
    t = db.budget_slots
    return int(conn.execute(select(func.count()).where(t.c.budget == budget, t.c.used_at > since)).scalar() or 0)


def utc_day(now: float) -> tuple[str, float]:
    """(YYYY-MM-DD in UTC, the next UTC midnight as UNIX seconds)."""
    day = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    return day.isoformat(), midnight
