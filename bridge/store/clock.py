"""The database's clock: the one time every process and host agrees on.

Shared state (leases, rate-limit slots, back-off deadlines, coalescing waits, retry times) is timed by
the database server, never by a host's own clock, so a web or worker host whose clock is off cannot
steal a lease, spend a slot early or stretch a wait. On SQLite the "server" is the calling process
(SQLite runs in-process and the file lives on one host), so there the fences, not the clock, keep
two writers apart.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from bridge.store.driver import run

_NOW_SQL = {
    "postgresql": text("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"),
    "sqlite": text("SELECT (julianday('now') - 2440587.5) * 86400.0"),
}


def db_now(conn: Connection) -> float:
    """UNIX seconds by the database's clock, read on `conn` (inside the caller's transaction)."""
    return float(run(conn, _NOW_SQL[conn.dialect.name]).scalar_one())


def engine_now(engine: Engine) -> float:
    """UNIX seconds by the database's clock, on a connection of its own."""
    with engine.connect() as conn:
        return db_now(conn)
