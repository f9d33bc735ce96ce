"""Zoho issues found carrying a marker or naming a source URL (`zoho_found`): what `links recover` and the adoption
index read from Zoho, so a create can adopt an existing issue by a database lookup, without asking Zoho again.

Also each project's index progress (kv `adopt.index:<portal>:<project>`): how far the project's issue list has been
read, newest first, so later reads only look at issues created since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge.store import _upsert
from bridge.store import schema as db
from bridge.store.clock import db_now

_F = db.zoho_found
INDEX_KEY = "adopt.index:"


@dataclass(frozen=True)
class Found:
    portal: str
    project: str
    issue_id: str
    issue_key: str | None
    title: str | None
    created_at: float | None
    external_id: str | None
    urls: tuple[str, ...]
    via: str


def _found(row: Any) -> Found:
    try:
        urls = tuple(json.loads(row.urls)) if row.urls else ()
    except ValueError:
        urls = ()
    return Found(
        row.portal, row.project, row.issue_id, row.issue_key, row.title, row.created_at, row.external_id, urls, row.via
    )


def save(conn: Connection, found: Found) -> None:
    values = {
        "project": found.project,
        "issue_key": found.issue_key,
        "title": (found.title or "")[:2000] or None,
        "created_at": found.created_at,
        "external_id": found.external_id,
        "urls": json.dumps(list(found.urls)) if found.urls else None,
        "via": found.via,
        "seen_at": db_now(conn),
    }
    stmt = _upsert(conn)(_F).values(portal=found.portal, issue_id=found.issue_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[_F.c.portal, _F.c.issue_id], set_=values))


def known_ids(conn: Connection, portal: str, issue_ids: list[str]) -> set[str]:
    """Which of these issues are read already (the index) or linked to an item (their marker is known)."""
    if not issue_ids:
        return set()
    seen = set(conn.execute(select(_F.c.issue_id).where(_F.c.portal == portal, _F.c.issue_id.in_(issue_ids))).scalars())
    linked = set(
        conn.execute(
            select(db.links.c.zoho_issue_id).where(db.links.c.portal == portal, db.links.c.zoho_issue_id.in_(issue_ids))
        ).scalars()
    )
    return seen | {str(i) for i in linked if i}


def by_external_id(conn: Connection, portal: str, project: str, external_id: str) -> list[Found]:
    """Issues carrying this external id in the project, oldest first."""
    rows = conn.execute(
        select(_F).where(_F.c.portal == portal, _F.c.project == project, _F.c.external_id == external_id)
    ).all()
    return sorted((_found(r) for r in rows), key=lambda f: (f.created_at or 0.0, f.issue_id))


def by_url(conn: Connection, portal: str, project: str, url: str) -> list[Found]:
    """Issues whose description names this URL, in the project, oldest first."""
    needle = json.dumps(url)
    rows = conn.execute(
        select(_F).where(_F.c.portal == portal, _F.c.project == project, _F.c.urls.contains(needle, autoescape=True))
    ).all()
    hits = [f for f in (_found(r) for r in rows) if url in f.urls]
    return sorted(hits, key=lambda f: (f.created_at or 0.0, f.issue_id))


def issue_id_by_key(conn: Connection, portal: str, issue_key: str) -> str | None:
    """The id of an issue seen with this key (`EX-12`) in the portal, if any."""
    found = conn.execute(
        select(db.zoho_found.c.issue_id).where(db.zoho_found.c.portal == portal, db.zoho_found.c.issue_key == issue_key)
    ).scalar()
    return None if found is None else str(found)


def forget(conn: Connection, portal: str, issue_id: str) -> None:
    conn.execute(_F.delete().where(_F.c.portal == portal, _F.c.issue_id == issue_id))


def index_state(conn: Connection, portal: str, project: str) -> dict[str, Any]:
    value = conn.execute(select(db.kv.c.value).where(db.kv.c.key == f"{INDEX_KEY}{portal}:{project}")).scalar()
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def save_index_state(conn: Connection, portal: str, project: str, state: dict[str, Any]) -> None:
    key, value = f"{INDEX_KEY}{portal}:{project}", json.dumps(state, sort_keys=True)
    stmt = _upsert(conn)(db.kv).values(key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[db.kv.c.key], set_={"value": value}))
