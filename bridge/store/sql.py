"""Statements both databases spell differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def upsert(conn: Connection) -> Any:
    """The dialect's `insert` with `on_conflict_do_nothing` / `on_conflict_do_update` (PostgreSQL, SQLite)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
