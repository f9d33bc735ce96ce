"""The journal's rows (`operations`): every write to an outside system on an item's behalf.

The delivery core writes them inside the item's fenced steps (`save` takes the claim's Connection); the
sweeper, `status`, the admin pages, `explain` and the CLI read them here. The states are the core's
(`bridge/core/journal.py`); this module only stores and finds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Executable

from bridge.store import schema as db
from bridge.store.driver import run
from bridge.store.sql import upsert as _upsert

PLANNED, SENT, CONFIRMED, FAILED = "planned", "sent", "confirmed", "failed"
OPEN = (PLANNED, SENT)
AWAITING = "awaiting"  # a write to a source whose webhook echo has not been seen yet
_T = db.operations
ALWAYS_LOADED = ("zoho.create", "source.backlink")  # one row per item: the core always wants to know them
# Attachments and writes to the source (bridge/core/journal.py names every kind).
SIDE_KINDS = ("zoho.attachment", "source.backlink", "source.comment", "source.state")


@dataclass(frozen=True)
class Operation:
    source: str
    item_key: str
    kind: str
    ref: str
    state: str
    payload: dict[str, Any] = field(default_factory=dict)
    result: str | None = None
    attempts: int = 0
    next_at: float | None = None
    last_error: str | None = None
    planned_at: float = 0.0
    sent_at: float | None = None
    done_at: float | None = None
    echo: str | None = None
    id: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.ref

    @property
    def in_doubt(self) -> bool:
        """Handed to the network and never confirmed: it may or may not have happened."""
        return self.state == SENT


def _op(row: Any) -> Operation:
    return Operation(
        source=row.source,
        item_key=row.item_key,
        kind=row.kind,
        ref=row.ref,
        state=row.state,
        payload=json.loads(row.payload) if row.payload else {},
        result=row.result,
        attempts=int(row.attempts or 0),
        next_at=row.next_at,
        last_error=row.last_error,
        planned_at=row.planned_at,
        sent_at=row.sent_at,
        done_at=row.done_at,
        echo=row.echo,
        id=row.id,
    )


# The worker's statements, built once (see bridge/store/claims.py).
_KEY = ("source", "item_key", "kind", "ref")
_VALUES = ("state", "payload", "result", "attempts", "next_at", "last_error", "planned_at", "sent_at", "done_at",
           "echo")  # fmt: skip
_SAVES: dict[str, Executable] = {}  # the upsert, per dialect: every column from the parameters
_ITEM = (_T.c.source == bindparam("source")) & (_T.c.item_key == bindparam("item_key"))
_OPEN_FOR_ITEM = select(_T).where(_ITEM, or_(_T.c.state.in_(OPEN), _T.c.echo == AWAITING, _T.c.kind.in_(ALWAYS_LOADED)))
NEXT_DUE = select(func.min(_T.c.next_at)).where(_ITEM, _T.c.state.in_(OPEN))  # claims.due_times too


def _save_statement(conn: Connection) -> Executable:
    stmt = _SAVES.get(conn.dialect.name)
    if stmt is None:
        ins = _upsert(conn)(_T)
        stmt = ins.on_conflict_do_update(index_elements=[_T.c[k] for k in _KEY],
                                         set_={k: ins.excluded[k] for k in _VALUES})  # fmt: skip
        _SAVES[conn.dialect.name] = stmt
    return stmt


def save(conn: Connection, op: Operation) -> None:
    """Insert or replace the operation's row (one per item, kind and ref)."""
    values = {
        "state": op.state,
        "payload": json.dumps(op.payload, sort_keys=True, default=str) if op.payload else None,
        "result": op.result,
        "attempts": op.attempts,
        "next_at": op.next_at,
        "last_error": (op.last_error or "")[:2000] or None,
        "planned_at": op.planned_at,
        "sent_at": op.sent_at,
        "done_at": op.done_at,
        "echo": op.echo,
    }
    key = {"source": op.source, "item_key": op.item_key, "kind": op.kind, "ref": op.ref}
    run(conn, _save_statement(conn), {**key, **values})


def open_for_item(conn: Connection, source: str, item_key: str) -> list[Operation]:
    """What the core must know when it claims the item: operations planned or in doubt, and writes to the
    source whose echo may still arrive."""
    rows = run(conn, _OPEN_FOR_ITEM, {"source": source, "item_key": item_key}).all()
    return [_op(r) for r in rows]


def for_item(conn: Connection, source: str, item_key: str) -> list[Operation]:
    rows = conn.execute(
        select(_T).where(_T.c.source == source, _T.c.item_key == item_key).order_by(_T.c.planned_at, _T.c.id)
    ).all()
    return [_op(r) for r in rows]


def get(engine: Engine, source: str, item_key: str, kind: str, ref: str = "") -> Operation | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(_T).where(_T.c.source == source, _T.c.item_key == item_key, _T.c.kind == kind, _T.c.ref == ref)
        ).first()
    return _op(row) if row else None


def state_of(conn: Connection, source: str, item_key: str, kind: str) -> str | None:
    """The state of the item's operation of this kind (of any ref), or None when there is none."""
    state = conn.execute(
        select(db.operations.c.state).where(
            db.operations.c.source == source,
            db.operations.c.item_key == item_key,
            db.operations.c.kind == kind,
        )
    ).scalar()
    return None if state is None else str(state)


def made_by_us(conn: Connection, source: str, item_key: str, kinds: Sequence[str], result: str) -> bool:
    """Whether the thing with this id (a source comment) is one the bridge made for the item."""
    row = run(
        conn,
        select(_T.c.id)
        .where(_T.c.source == source, _T.c.item_key == item_key, _T.c.kind.in_(kinds), _T.c.result == result)
        .limit(1),
    ).first()
    return row is not None


def refs_of(conn: Connection, source: str, item_key: str, kind: str) -> set[str]:
    """The refs of the item's operations of `kind` (which Zoho comments were copied already, say)."""
    rows = conn.execute(
        select(_T.c.ref).where(_T.c.source == source, _T.c.item_key == item_key, _T.c.kind == kind)
    ).scalars()
    return set(rows)


def due_items(
    conn: Connection, now: float, *, kinds: Iterable[str] | None = None, limit: int = 500
) -> list[tuple[str, str]]:
    """Items with an operation due (to send or to resolve) by `now` (database time); paused items left out."""
    shape = (None if kinds is None else tuple(kinds), limit)
    query = _DUE_ITEMS.get(shape)
    if query is None:  # built once per shape: the sweeper asks every few seconds, mostly finding nothing
        from bridge.store.steer import not_held

        query = select(_T.c.source, _T.c.item_key).where(
            _T.c.next_at <= bindparam("now"), _T.c.state.in_(OPEN), not_held(_T.c.source, _T.c.item_key)
        )
        if shape[0] is not None:
            query = query.where(_T.c.kind.in_(shape[0]))
        query = _DUE_ITEMS.setdefault(shape, query.group_by(_T.c.source, _T.c.item_key).limit(limit))
    return [(r.source, r.item_key) for r in run(conn, query, {"now": now}).all()]


_DUE_ITEMS: dict[tuple[tuple[str, ...] | None, int], Any] = {}


def next_due(conn: Connection, source: str, item_key: str) -> float | None:
    return run(conn, NEXT_DUE, {"source": source, "item_key": item_key}).scalar()


def retry_failed(
    conn: Connection,
    now: float,
    *,
    kinds: Iterable[str] | None = None,
    source: str | None = None,
    item_key: str | None = None,
) -> int:
    """Failed operations planned again (their cause may be gone: settings or mappings reloaded, a resync, a
    replay). Their attempts start over."""
    where = [_T.c.state == FAILED]
    if kinds is not None:
        where.append(_T.c.kind.in_(list(kinds)))
    if source is not None:
        where.append(_T.c.source == source)
    if item_key is not None:
        where.append(_T.c.item_key == item_key)
    result = conn.execute(update(_T).where(and_(*where)).values(state=PLANNED, next_at=now, attempts=0, done_at=None))
    return int(result.rowcount or 0)


def give_up(conn: Connection, source: str, item_key: str, kind: str, reason: str, now: float, ref: str = "") -> None:
    """An operation that keeps failing is ended (`failed`, nothing due): it must not spin."""
    conn.execute(
        update(_T)
        .where(_T.c.source == source, _T.c.item_key == item_key, _T.c.kind == kind, _T.c.ref == ref)
        .values(state=FAILED, next_at=None, last_error=reason[:2000], done_at=now)
    )


def forget_issue(conn: Connection, source: str, item_key: str, *, since: float) -> None:
    """`links unlink`: the item's Zoho issue may still exist, so its next create is in doubt (looked up by its
    marker back to when the forgotten link was made) and each comment posted is looked up before it is posted
    again; planned re-checks of the old issue are dropped."""
    where = (_T.c.source == source) & (_T.c.item_key == item_key)
    conn.execute(delete(_T).where(where, _T.c.kind == "zoho.recheck"))
    create = conn.execute(select(_T).where(where, _T.c.kind == "zoho.create")).first()
    first = since
    if create is not None and create.payload:
        first = min(first, float(json.loads(create.payload).get("first_sent_at") or first))
    save(conn, Operation(source, item_key, "zoho.create", "", SENT, payload={"first_sent_at": first},
                         planned_at=since, sent_at=since))  # fmt: skip
    conn.execute(update(_T).where(where, _T.c.kind == "zoho.comment").values(state=SENT, next_at=None))


def counts(conn: Connection) -> dict[tuple[str, str], int]:
    """(kind, state) -> how many, for status and /metrics."""
    rows = conn.execute(select(_T.c.kind, _T.c.state, func.count()).group_by(_T.c.kind, _T.c.state)).all()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def troubled(conn: Connection, now: float, *, limit: int = 20) -> list[Operation]:
    """Operations failing, in doubt, or retrying after a failure: what `status` and the admin page list."""
    rows = conn.execute(
        select(_T)
        .where(or_(_T.c.state.in_((FAILED, SENT)), and_(_T.c.state == PLANNED, _T.c.last_error.is_not(None))))
        .order_by(_T.c.id.desc())
        .limit(limit)
    ).all()
    return [_op(r) for r in rows]


def plan_missing(
    conn: Connection, now: float, items: Iterable[tuple[str, str]], kind: str, *, ref: str = "", spread: float = 0.0
) -> int:
    """Plan one `kind` operation for each item that has none yet (e.g. back-links for items linked before
    `backlink:` was turned on); `spread` seconds between them keeps the burst inside the budget."""
    planned = 0
    for n, (source, item_key) in enumerate(items):
        stmt = _upsert(conn)(_T).values(
            source=source, item_key=item_key, kind=kind, ref=ref, state=PLANNED, attempts=0,
            next_at=now + n * spread, planned_at=now,
        )  # fmt: skip
        result = conn.execute(stmt.on_conflict_do_nothing(index_elements=[_T.c.source, _T.c.item_key, _T.c.kind,
                                                                          _T.c.ref]))  # fmt: skip
        planned += int(result.rowcount or 0)
    return planned
