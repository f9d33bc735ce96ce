"""Which item a delivery belongs to: the source's never-changing identity, bound to the item's handle.

A source that renames things (GitHub: a repository rename changes `full_name`, a transfer gives the issue a
new id in another repository) sends an `identity` (GitHub's issue id) with each event. The first event of
an identity binds it to the handle the item then had (`acme/web#12`); later events of the same identity,
whatever the repository is called now, are filed under that handle, so they reach the same link, claim
and Zoho issue. A transfer names the old identity too (`previous_identity`): the new one is bound to the
old one's handle (and folds in an item its new-repository deliveries started before, while it has no link).
Runs inside intake's one transaction (`store.record_delivery`).
"""

from __future__ import annotations

import dataclasses
import json

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bridge.events import NormalizedEvent
from bridge.store import schema as db
from bridge.store.clock import db_now

_T = db.item_identities


def bound_key(conn: Connection, source: str, identity: str) -> str | None:
    return conn.execute(select(_T.c.item_key).where(_T.c.source == source, _T.c.identity == identity)).scalar()


def bind(conn: Connection, source: str, identity: str, item_key: str, now: float) -> None:
    """Bind `identity` to `item_key` unless it is bound already (a concurrent intake may have won: its
    binding stands, and the caller reads it back)."""
    from bridge.store.sql import upsert as _upsert

    stmt = _upsert(conn)(_T).values(source=source, identity=identity, item_key=item_key, created_at=now)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[_T.c.source, _T.c.identity]))


def _free_key(conn: Connection, source: str, wanted: str, identity: str) -> str:
    """`wanted` unless another identity holds it (a repository renamed away and its name taken again by a
    new one, whose issue #12 is another item): then the handle names the identity too."""
    holder = conn.execute(
        select(_T.c.identity).where(_T.c.source == source, _T.c.item_key == wanted, _T.c.identity != identity).limit(1)
    ).first()
    return wanted if holder is None else f"{wanted} (id {identity})"


def _refile(conn: Connection, source: str, stray: str, item_key: str) -> bool:
    """A transfer names an issue whose new-repository deliveries arrived first and started an item of their
    own (`stray`). While that item has no link yet (nothing was sent to Zoho for it), it is folded into
    the transferred item: its claim is revoked (a new generation: a worker holding it stops at its next
    fenced step, before any create), its identities and pending events are re-filed. Once it has a link it
    has a Zoho issue of its own, and the two are left apart (False)."""
    conn.execute(
        update(db.leases)
        .where(db.leases.c.name == f"item:{source}:{stray}")
        .values(generation=db.leases.c.generation + 1, expires_at=0.0)
    )  # first: on PostgreSQL it waits for the holder's fenced step in flight, so the link read below is final
    has_link = conn.execute(
        select(db.links.c.id).where(db.links.c.source == source, db.links.c.item_key == stray).limit(1)
    ).first()
    if has_link is not None:
        return False
    conn.execute(update(_T).where(_T.c.source == source, _T.c.item_key == stray).values(item_key=item_key))
    rows = conn.execute(
        select(db.events.c.id, db.events.c.event_json).where(
            db.events.c.source == source, db.events.c.item_key == stray, db.events.c.status == "pending"
        )
    ).all()
    for row in rows:
        data = json.loads(row.event_json)
        data["item_key"] = item_key
        conn.execute(
            update(db.events).where(db.events.c.id == row.id).values(item_key=item_key, event_json=json.dumps(data))
        )
    return True


def resolve(conn: Connection, event: NormalizedEvent) -> NormalizedEvent:
    """The event filed under its item's handle. Costs one indexed read when the identity is known."""
    if not event.identity:
        return event  # the source's item key is its identity already (Bugzilla, BugHerd)
    source = event.source
    key = bound_key(conn, source, event.identity)
    if key is None or event.previous_identity:
        now = db_now(conn)
        if event.previous_identity:
            before = bound_key(conn, source, event.previous_identity)
            stray = key is not None and before is not None and before != key
            if key is None or (stray and _refile(conn, source, str(key), str(before))):
                key = before
        if key is None:
            key = _free_key(conn, source, event.item_key, event.identity)
        bind(conn, source, event.identity, key, now)
        if event.previous_identity:
            bind(conn, source, event.previous_identity, key, now)
        key = bound_key(conn, source, event.identity) or key
    return event if key == event.item_key else dataclasses.replace(event, item_key=key)
