"""The OAuth access tokens every process shares (`oauth_tokens`, one row per credentials key).

When to refresh, and who may, is bridge/targets/zoho/auth.py's; these are its rows.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge.store import schema as db
from bridge.store.sql import upsert

_T = db.oauth_tokens


def read(conn: Connection, key: str) -> tuple[str, float] | None:
    """The stored (access token, when it expires), or None."""
    row = conn.execute(select(_T.c.access_token, _T.c.expires_at).where(_T.c.key == key)).first()
    return (row.access_token, row.expires_at) if row else None


def expire(conn: Connection, key: str, token: str) -> None:
    """Expire `token` for everyone, unless another process already replaced it (then nothing changes)."""
    conn.execute(_T.update().where(_T.c.key == key, _T.c.access_token == token).values(expires_at=0.0))


def save(conn: Connection, key: str, token: str, expires_at: float, now: float) -> None:
    """Store a fresh token (`now`: the database's clock, when it was refreshed)."""
    stmt = upsert(conn)(_T).values(key=key, access_token=token, expires_at=expires_at, refreshed_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_T.c.key],
            set_={"access_token": token, "expires_at": expires_at, "refreshed_at": now},
        )
    )
