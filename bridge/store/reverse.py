"""The reverse side's durable state: `reverse_items` (back-links, last Zoho status) and `source_writes`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Engine

from bridge.store import _upsert
from bridge.store import schema as db

ECHO_TTL_SECONDS = 24 * 3600.0  # a state write's webhook echo arrives within seconds; a day is generous


@dataclass(frozen=True)
class ReverseItem:
    source: str
    external_id: str
    backlink_state: str
    backlink_ref: str | None
    backlink_attempts: int
    backlink_next_at: float
    backlink_error: str | None
    zoho_status: str | None


def get_item(engine: Engine, source: str, external_id: str) -> ReverseItem | None:
    t = db.reverse_items
    with engine.connect() as conn:
        row = conn.execute(select(t).where(and_(t.c.source == source, t.c.external_id == external_id))).first()
    return _item(row) if row else None


def _item(row: object) -> ReverseItem:
    m = row._mapping  # type: ignore[attr-defined]
    return ReverseItem(**{k: m[k] for k in ReverseItem.__dataclass_fields__})


def ensure_item(engine: Engine, source: str, external_id: str, *, backlink: bool) -> None:
    """The item's row; a back-link is requested once (an existing row keeps its state, whatever redelivers)."""
    now = time.time()
    with engine.begin() as conn:
        stmt = _upsert(conn)(db.reverse_items).values(
            source=source,
            external_id=external_id,
            backlink_state="pending" if backlink else "none",
            backlink_attempts=0,
            backlink_next_at=0.0,
            updated_at=now,
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["source", "external_id"]))
        if backlink:  # a mapping that turned back-links on later: items linked before get one too
            t = db.reverse_items
            conn.execute(
                update(t)
                .where(and_(t.c.source == source, t.c.external_id == external_id, t.c.backlink_state == "none"))
                .values(backlink_state="pending", updated_at=now)
            )


def due_backlinks(engine: Engine, now: float, limit: int) -> list[ReverseItem]:
    t = db.reverse_items
    with engine.connect() as conn:
        rows = conn.execute(
            select(t)
            .where(and_(t.c.backlink_state.in_(("pending", "posting")), t.c.backlink_next_at <= now))
            .order_by(t.c.backlink_next_at)
            .limit(limit)
        ).all()
    return [_item(r) for r in rows]


def claim_backlink(engine: Engine, item: ReverseItem, ttl: float) -> bool:
    """Take the item's back-link for `ttl` seconds; False when another tick took it first."""
    t = db.reverse_items
    with engine.begin() as conn:
        taken = conn.execute(
            update(t)
            .where(
                and_(
                    t.c.source == item.source,
                    t.c.external_id == item.external_id,
                    t.c.backlink_state == item.backlink_state,
                    t.c.backlink_next_at == item.backlink_next_at,
                )
            )
            .values(backlink_next_at=time.time() + ttl, updated_at=time.time())
        ).rowcount
    return taken == 1


def set_backlink(engine: Engine, source: str, external_id: str, **values: object) -> None:
    t = db.reverse_items
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(and_(t.c.source == source, t.c.external_id == external_id))
            .values(**values, updated_at=time.time())
        )


def set_zoho_status(engine: Engine, source: str, external_id: str, status: str) -> None:
    ensure_item(engine, source, external_id, backlink=False)
    set_backlink(engine, source, external_id, zoho_status=status)


# -- what the bridge wrote to the source ------------------------------------------------------------------


def record_write(engine: Engine, source: str, external_id: str, kind: str, ref: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            db.source_writes.insert().values(
                source=source, external_id=external_id, kind=kind, ref=ref, created_at=time.time(), consumed=False
            )
        )


def is_own_comment(engine: Engine, source: str, comment_id: str) -> bool:
    t = db.source_writes
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.id).where(and_(t.c.source == source, t.c.kind == "comment", t.c.ref == comment_id)).limit(1)
        ).first()
    return row is not None


def consume_state_write(engine: Engine, source: str, external_id: str, value: str) -> bool:
    """True (once) when the bridge wrote `value` to the item's state recently: the event is its echo."""
    t = db.source_writes
    with engine.begin() as conn:
        row = conn.execute(
            select(t.c.id)
            .where(
                and_(
                    t.c.source == source,
                    t.c.external_id == external_id,
                    t.c.kind == "state",
                    t.c.ref == value,
                    t.c.consumed.is_(False),
                    t.c.created_at > time.time() - ECHO_TTL_SECONDS,
                )
            )
            .order_by(t.c.id)
            .limit(1)
        ).first()
        if row is None:
            return False
        conn.execute(update(t).where(t.c.id == row.id).values(consumed=True))
    return True


# A Zoho comment copied to the source: `zc_posting` (intent, written before the POST) → `zc_posted`.
def zoho_comment_state(engine: Engine, source: str, zoho_comment_id: str) -> str | None:
    t = db.source_writes
    with engine.connect() as conn:
        kinds = set(
            conn.execute(
                select(t.c.kind).where(
                    and_(t.c.source == source, t.c.kind.in_(("zc_posting", "zc_posted")), t.c.ref == zoho_comment_id)
                )
            ).scalars()
        )
    return "posted" if "zc_posted" in kinds else "posting" if kinds else None


def zoho_comment_posting(engine: Engine, source: str, external_id: str, zoho_comment_id: str) -> None:
    record_write(engine, source, external_id, "zc_posting", zoho_comment_id)


def zoho_comment_posted(engine: Engine, source: str, external_id: str, zoho_comment_id: str) -> None:
    t = db.source_writes
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(and_(t.c.source == source, t.c.kind == "zc_posting", t.c.ref == zoho_comment_id))
            .values(kind="zc_posted", consumed=True)
        )
    if zoho_comment_state(engine, source, zoho_comment_id) != "posted":
        record_write(engine, source, external_id, "zc_posted", zoho_comment_id)


def writes(engine: Engine, source: str | None = None) -> list[dict[str, object]]:
    t = db.source_writes
    query = select(t).order_by(t.c.id)
    if source:
        query = query.where(t.c.source == source)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query).all()]
