"""Reading and staging the journal of outside operations in tests (bridge/store/journal.py)."""

from __future__ import annotations

import json

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bridge.store import journal
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.journal import Operation

T = db.operations


def operation(
    engine: Engine, kind: str, ref: str = "", item_key: str = "acme/web#1", source: str = "github"
) -> Operation | None:
    return journal.get(engine, source, item_key, kind, ref)


def recheck_at(engine: Engine, item_key: str = "acme/web#1", source: str = "github") -> float | None:
    """When the item's re-check is due (database time), None when none is planned."""
    op = operation(engine, "zoho.recheck", item_key=item_key, source=source)
    return op.next_at if op is not None and op.state == "planned" else None


def died_after_sending_update(engine: Engine, item_key: str = "acme/web#1", source: str = "github") -> None:
    """Stage what a worker that died holding the item right after sending an update leaves behind: its lease
    unreleased, and its update sent and never confirmed (in doubt)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE leases SET holder = 'gone', expires_at = 1")
        where = (T.c.source == source) & (T.c.item_key == item_key) & (T.c.kind == "zoho.update")
        now = db_now(conn)
        if conn.execute(select(T.c.id).where(where)).first() is None:
            journal.save(
                conn, Operation(source, item_key, "zoho.update", "", "sent", planned_at=now, sent_at=now, next_at=now)
            )
        conn.execute(update(T).where(where).values(state="sent", sent_at=now, next_at=now))


def age_create(engine: Engine, seconds: float, item_key: str = "acme/web#1", source: str = "github") -> None:
    """Move the item's create back in time: its first send (and, with `latest`, its last) `seconds` earlier."""
    with engine.begin() as conn:
        where = (T.c.source == source) & (T.c.item_key == item_key) & (T.c.kind == "zoho.create")
        row = conn.execute(select(T.c.payload).where(where)).first()
        payload = json.loads(row.payload) if row and row.payload else {}
        if "first_sent_at" in payload:
            payload["first_sent_at"] = float(payload["first_sent_at"]) - seconds
        conn.execute(update(T).where(where).values(payload=json.dumps(payload)))


def plan_recheck(engine: Engine, at: float, item_key: str = "acme/web#1", source: str = "github") -> None:
    with engine.begin() as conn:
        journal.save(conn, Operation(source, item_key, "zoho.recheck", "", "planned", next_at=at, planned_at=at))
