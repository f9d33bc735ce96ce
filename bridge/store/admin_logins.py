"""The admin pages' guard rows in `kv`: failed-login throttles (per client, shared) and the session epoch.

The guard's policy (how long a client waits, what ends a session) is bridge/web/admin_guard.py's; these are the
rows it reads and writes, inside the transaction it holds.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge.store import schema as db


def read(conn: Connection, key: str, *, lock: bool = False) -> str | None:
    """The row's value (None: no row); `lock` takes the row's lock on PostgreSQL until the transaction ends."""
    query = select(db.kv.c.value).where(db.kv.c.key == key)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    raw = conn.execute(query).scalar()
    return None if raw is None else str(raw)


def write(conn: Connection, key: str, value: str, *, existed: bool) -> None:
    """Update the row read before (`existed`), or insert it (a concurrent first insert raises IntegrityError)."""
    if existed:
        conn.execute(db.kv.update().where(db.kv.c.key == key).values(value=value))
    else:
        conn.execute(db.kv.insert().values(key=key, value=value))


def forget(conn: Connection, key: str) -> None:
    conn.execute(db.kv.delete().where(db.kv.c.key == key))
