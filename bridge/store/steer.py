"""Steering items: pauses (a source, a mapping file), held items (stopped one by one, or under a paused mapping),
and the operator's actions on an item, recorded for its story.

A held item is one the core does not claim (`claims.read_batch` reports it, the sweeper skips it): its deliveries
are still accepted and stored, and nothing is sent to Zoho or to its source for it until it is resumed. Every
time is the database's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, delete, exists, func, insert, literal, not_, select, union_all
from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.driver import run
from bridge.store.sql import upsert as _upsert
from bridge.store.states import PENDING

SOURCE, MAPPING = "source", "mapping"
STOPPED = "stopped"  # `why` of an item stopped by hand
MAPPING_PREFIX = "mapping:"  # `why` of an item held under a paused mapping file
_P, _H, _A = db.pauses, db.held_items, db.operator_actions
DUE_PROBE = 50  # "is live work due?" looks at this many due events for one that is not paused


@dataclass(frozen=True)
class Pause:
    kind: str  # "source" | "mapping"
    name: str
    since: float
    actor: str | None = None


@dataclass(frozen=True)
class Held:
    source: str
    item_key: str
    why: str
    since: float


@dataclass(frozen=True)
class Action:
    at: float
    action: str
    detail: str
    actor: str


# -- pauses -----------------------------------------------------------------------------------------------------


def pause(conn: Connection, kind: str, name: str, actor: str) -> bool:
    """Pause a source or a mapping file; False when it was paused already."""
    stmt = _upsert(conn)(_P).values(kind=kind, name=name, since=db_now(conn), actor=actor)
    result = conn.execute(stmt.on_conflict_do_nothing(index_elements=[_P.c.kind, _P.c.name]))
    return bool(result.rowcount)


def resume(conn: Connection, kind: str, name: str) -> tuple[bool, list[tuple[str, str]]]:
    """Lift a pause: (whether it was paused, the items it held, to wake)."""
    removed = conn.execute(delete(_P).where(_P.c.kind == kind, _P.c.name == name)).rowcount
    items: list[tuple[str, str]] = []
    if kind == MAPPING:
        why = MAPPING_PREFIX + name
        items = [
            (r.source, r.item_key) for r in conn.execute(select(_H.c.source, _H.c.item_key).where(_H.c.why == why))
        ]
        conn.execute(delete(_H).where(_H.c.why == why))
    return bool(removed), items


def pauses(conn: Connection) -> list[Pause]:
    rows = conn.execute(select(_P).order_by(_P.c.kind, _P.c.name)).all()
    return [Pause(r.kind, r.name, float(r.since), r.actor) for r in rows]


def paused_mappings(conn: Connection) -> set[str]:
    return set(conn.execute(select(_P.c.name).where(_P.c.kind == MAPPING)).scalars())


# -- held items -------------------------------------------------------------------------------------------------


def hold(conn: Connection, source: str, item_key: str, why: str) -> bool:
    """Hold one item (stopped by hand, or found under a paused mapping); False when it was held already."""
    stmt = _upsert(conn)(_H).values(source=source, item_key=item_key, why=why, since=db_now(conn))
    result = conn.execute(stmt.on_conflict_do_nothing(index_elements=[_H.c.source, _H.c.item_key]))
    return bool(result.rowcount)


def release(conn: Connection, source: str, item_key: str) -> Held | None:
    """Start an item again (whatever held it); the row it had, if any."""
    row = conn.execute(select(_H).where(_H.c.source == source, _H.c.item_key == item_key)).first()
    if row is None:
        return None
    conn.execute(delete(_H).where(_H.c.source == source, _H.c.item_key == item_key))
    return Held(row.source, row.item_key, row.why, float(row.since))


def why_held(conn: Connection, source: str, item_key: str) -> str | None:
    """Why the core must leave the item alone now, or None: its source paused, or the item held."""
    held = conn.execute(select(_H.c.why).where(_H.c.source == source, _H.c.item_key == item_key)).scalar()
    if held is not None:
        return str(held)
    paused = conn.execute(select(_P.c.name).where(_P.c.kind == SOURCE, _P.c.name == source)).first()
    return f"{SOURCE}:{source}" if paused is not None else None


_CLAIM_VIEW = union_all(  # built once (the claim's read runs it per item)
    select(_P.c.kind, _P.c.name),
    select(literal("held"), _H.c.why).where(_H.c.source == bindparam("source"), _H.c.item_key == bindparam("item_key")),
)


def claim_view(conn: Connection, source: str, item_key: str) -> tuple[str | None, frozenset[str]]:
    """For the claim's read, in one statement: why the item is held now (its source paused, or the item held), and
    the mapping files paused (the core holds an item of one of them when it claims it)."""
    rows = run(conn, _CLAIM_VIEW, {"source": source, "item_key": item_key}).all()
    why = next((str(name) for kind, name in rows if kind == "held"), None)
    if why is None and any(kind == SOURCE and name == source for kind, name in rows):
        why = f"{SOURCE}:{source}"
    return why, frozenset(str(name) for kind, name in rows if kind == MAPPING)


def any_free(conn: Connection, items: list[tuple[str, str]]) -> bool:
    """Whether any of these items is neither held nor of a paused source (for "live work is due" checks: a paused
    backlog must not hold back everything else). Two small reads, whatever the backlog's size."""
    if not items:
        return False
    paused = set(conn.execute(select(_P.c.name).where(_P.c.kind == SOURCE)).scalars())
    free = [(s, k) for s, k in items if s not in paused]
    if not free:
        return False
    keys = {k for _, k in free}
    held = {
        (r.source, r.item_key) for r in conn.execute(select(_H.c.source, _H.c.item_key).where(_H.c.item_key.in_(keys)))
    }
    return any(pair not in held for pair in free)


def held(conn: Connection, source: str, item_key: str) -> Held | None:
    row = conn.execute(select(_H).where(_H.c.source == source, _H.c.item_key == item_key)).first()
    return Held(row.source, row.item_key, row.why, float(row.since)) if row else None


def not_held(source: ColumnElement[str], item_key: ColumnElement[str]) -> ColumnElement[bool]:
    """A WHERE clause for queries over items (the sweeper's): the item's source is not paused and it is not held."""
    paused_sources = select(_P.c.name).where(_P.c.kind == SOURCE)
    held_here = exists().where(_H.c.source == source, _H.c.item_key == item_key)
    return and_(source.not_in(paused_sources), not_(held_here))


def waiting(conn: Connection) -> dict[str, int]:
    """Pending events held back, per pause (`source:<name>`, `mapping:<file>`, `stopped`): what `status`,
    the front page and /metrics show."""
    e = db.events
    out: dict[str, int] = {}
    for name in conn.execute(select(_P.c.name).where(_P.c.kind == SOURCE)).scalars():
        n = conn.execute(select(func.count()).where(e.c.source == name, e.c.status == PENDING)).scalar()
        out[f"{SOURCE}:{name}"] = int(n or 0)
    # From the held items (a few) to their pending events, one indexed count each: not the other way round,
    # which read every pending event of the backlog to find the held ones among them.
    pending_of_item = (
        select(func.count())
        .where(e.c.source == _H.c.source, e.c.item_key == _H.c.item_key, e.c.status == PENDING)
        .scalar_subquery()
    )
    for why, n in conn.execute(select(_H.c.why, func.sum(pending_of_item)).group_by(_H.c.why)).all():
        if n:  # a reason whose items have nothing pending is not shown (as before)
            out[str(why)] = out.get(str(why), 0) + int(n)
    for p in conn.execute(select(_P.c.name).where(_P.c.kind == MAPPING)).scalars():
        out.setdefault(MAPPING_PREFIX + p, 0)
    return out


def held_count(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(_H.c.why, func.count()).group_by(_H.c.why)).all()
    return {str(why): int(n) for why, n in rows}


# -- what pausing and resuming count and wake -----------------------------------------------------------------------


def pending_of_source(conn: Connection, source: str) -> int:
    return int(
        conn.execute(select(func.count()).where(db.events.c.source == source, db.events.c.status == PENDING)).scalar()
        or 0
    )


def pending_of_item(conn: Connection, source: str, item_key: str) -> int:
    e = db.events
    return int(
        conn.execute(
            select(func.count()).where(e.c.source == source, e.c.item_key == item_key, e.c.status == PENDING)
        ).scalar()
        or 0
    )


def newest_pending(conn: Connection, source: str) -> list[tuple[str, int]]:
    """(item key, its newest pending event's id) of every item of the source with work waiting."""
    e = db.events
    rows = conn.execute(
        select(e.c.item_key, func.max(e.c.id)).where(e.c.source == source, e.c.status == PENDING).group_by(e.c.item_key)
    ).all()
    return [(key, event_id) for key, event_id in rows]


def event_bodies(conn: Connection, event_ids: list[int]) -> list[tuple[int, str]]:
    """(id, stored event JSON) of these events."""
    e = db.events
    return [
        (event_id, body) for event_id, body in conn.execute(select(e.c.id, e.c.event_json).where(e.c.id.in_(event_ids)))
    ]


def items_to_wake(conn: Connection, source: str, limit: int) -> list[str]:
    """Keys of the source's items with work waiting and not held, oldest work first, `limit` of them."""
    e = db.events
    rows = conn.execute(
        select(e.c.item_key)
        .where(e.c.source == source, e.c.status == PENDING, not_held(e.c.source, e.c.item_key))
        .group_by(e.c.item_key)
        .order_by(func.min(e.c.id))
        .limit(limit)
    ).all()
    return [str(r.item_key) for r in rows]


def store_resync(
    conn: Connection,
    *,
    source: str,
    item_key: str,
    dedup_key: str,
    event_name: str,
    event: NormalizedEvent,
    payload: bytes,
    now: float,
) -> None:
    """Store an item's state or comment read from its source by `resync --from-source`, due now like a delivery."""
    conn.execute(
        insert(db.events).values(
            source=source,
            dedup_key=dedup_key,
            event_name=event_name,
            item_key=item_key,
            action=event.action,
            source_ts=event.source_ts.timestamp(),
            received_at=now,
            status=PENDING,
            attempts=0,
            next_attempt_at=0.0,
            headers=json.dumps({"X-Issue-Bridge": "resync --from-source"}),
            payload=payload,
            event_json=json.dumps(event.to_json()),
            notes="; ".join(event.notes) or None,
            origin="resync",
        )
    )


# -- the operator's actions ----------------------------------------------------------------------------------------


def record(conn: Connection, source: str, item_key: str, action: str, detail: str, actor: str) -> None:
    conn.execute(
        insert(_A).values(
            source=source, item_key=item_key, at=db_now(conn), action=action, detail=detail[:2000], actor=actor
        )
    )


def record_action(engine: Engine, source: str, item_key: str, action: str, detail: str, actor: str) -> None:
    with engine.begin() as conn:
        record(conn, source, item_key, action, detail, actor)


def actions(conn: Connection, source: str, item_key: str, *, limit: int = 500) -> list[Action]:
    rows = conn.execute(
        select(_A).where(_A.c.source == source, _A.c.item_key == item_key).order_by(_A.c.id.desc()).limit(limit)
    ).all()
    return [Action(float(r.at), r.action, r.detail or "", r.actor) for r in reversed(rows)]
