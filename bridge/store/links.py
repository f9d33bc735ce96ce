"""Item and comment links, written inside the delivery core's fenced transactions."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from bridge.store import CommentLink, Link
from bridge.store import schema as db

DRY_RUN = "dry-run"  # a link state: what a dry-run "created"; dry-run reads it, real runs ignore it
# A link an operator forgot (`links unlink`): the item's Zoho issue may still exist, so its next create is in
# doubt and looks the issue up (by its marker, from when the forgotten link was made) instead of forking it.
UNLINKED = "unlinked"


class ExternalIdTaken(Exception):
    """Another item's link has this external id: a create would fork nothing but collide (the mapping's
    template renders the same id for two items)."""

    def __init__(self, external_id: str, holder: str) -> None:
        super().__init__(f"external id {external_id} is item {holder}'s")
        self.external_id = external_id
        self.holder = holder


def write_intent(
    conn: Connection, *, source: str, external_id: str, item_key: str, portal: str, project: str, now: float
) -> None:
    """Record that a Zoho create is about to be sent. Seen unconfirmed by a later attempt, it means doubt."""
    existing = conn.execute(
        select(db.links.c.id, db.links.c.state).where(db.links.c.source == source, db.links.c.item_key == item_key)
    ).first()
    if existing is not None and existing.state == DRY_RUN:  # what dry-run recorded is never used for real
        conn.execute(
            update(db.links)
            .where(db.links.c.id == existing.id)
            .values(
                external_id=external_id,
                portal=portal,
                project=project,
                zoho_issue_id=None,
                state="creating",
                last_state_ts=0.0,
                applied_hash=None,
                last_fields=None,
                intent_at=now,
                create_sent_at=now,
                recheck_at=None,
                updated_at=now,
            )
        )
        return
    if existing is not None:  # the earliest intent counts: the lookup must reach back to the first create
        conn.execute(
            update(db.links)
            .where(db.links.c.id == existing.id)
            .values(
                state="creating",
                intent_at=func.coalesce(db.links.c.intent_at, now),
                create_sent_at=now,
                updated_at=now,
            )
        )
        return
    holder = conn.execute(
        select(db.links.c.item_key).where(db.links.c.source == source, db.links.c.external_id == external_id)
    ).scalar()
    if holder is not None:
        raise ExternalIdTaken(external_id, holder)
    conn.execute(
        insert(db.links).values(
            source=source,
            external_id=external_id,
            item_key=item_key,
            portal=portal,
            project=project,
            state="creating",
            last_state_ts=0.0,
            intent_at=now,
            create_sent_at=now,
            created_at=now,
            updated_at=now,
        )
    )


def write_tombstone(
    conn: Connection,
    *,
    source: str,
    external_id: str,
    item_key: str,
    portal: str,
    project: str,
    deleted_ts: float,
    now: float,
) -> None:
    """An item deleted before it reached Zoho: a `deleted` link without an issue (the deletion is terminal).
    A dry-run's row for the item is taken over (real runs treat it as no link at all)."""
    values = dict(
        external_id=external_id,
        portal=portal,
        project=project,
        zoho_issue_id=None,
        state="deleted",
        last_state_ts=deleted_ts,
        applied_hash="deleted",
        last_fields=None,
        recheck_at=None,
        updated_at=now,
    )
    own = conn.execute(
        select(db.links.c.id, db.links.c.state).where(db.links.c.source == source, db.links.c.item_key == item_key)
    ).first()
    if own is not None:
        if own.state == DRY_RUN:
            conn.execute(update(db.links).where(db.links.c.id == own.id).values(**values))
        return
    taken = conn.execute(
        select(db.links.c.id).where(db.links.c.source == source, db.links.c.external_id == external_id)
    ).first()
    if taken is not None:  # another item's id: nothing to add
        return
    conn.execute(insert(db.links).values(source=source, item_key=item_key, created_at=now, **values))


def update_link(conn: Connection, *, source: str, item_key: str, now: float, **values: Any) -> None:
    """Set columns of the item's link (zoho_issue_id, state, last_state_ts, applied_hash, last_fields,
    project, recheck_at)."""
    if "last_fields" in values and values["last_fields"] is not None:
        values["last_fields"] = json.dumps(values["last_fields"], default=str)
    conn.execute(
        update(db.links)
        .where(db.links.c.source == source, db.links.c.item_key == item_key)
        .values(updated_at=now, **values)
    )


def request_recheck(conn: Connection, *, source: str, item_key: str, at: float) -> None:
    """Look at the item again at `at` (database time) unless a later look is already due. Only a link with
    a Zoho issue (or a create in doubt) has anything to look at."""
    conn.execute(
        update(db.links)
        .where(
            db.links.c.source == source,
            db.links.c.item_key == item_key,
            db.links.c.state.in_(("linked", "deleted", "creating")),
            (db.links.c.recheck_at.is_(None)) | (db.links.c.recheck_at < at),
        )
        .values(recheck_at=at)
    )


def comment_links(conn: Connection, source: str, external_id: str) -> dict[str, CommentLink]:
    rows = conn.execute(
        select(db.comment_links).where(
            db.comment_links.c.source == source, db.comment_links.c.external_id == external_id
        )
    ).all()
    return {r.comment_id: CommentLink(r.zoho_comment_id, r.state, r.last_ts, r.body_hash) for r in rows}


def write_comment_intent(conn: Connection, *, source: str, external_id: str, comment_id: str, now: float) -> None:
    exists = conn.execute(
        select(db.comment_links.c.id).where(
            db.comment_links.c.source == source,
            db.comment_links.c.external_id == external_id,
            db.comment_links.c.comment_id == comment_id,
        )
    ).first()
    if exists is None:
        conn.execute(
            insert(db.comment_links).values(
                source=source,
                external_id=external_id,
                comment_id=comment_id,
                state="posting",
                last_ts=0.0,
                updated_at=now,
            )
        )


def save_comment(
    conn: Connection,
    *,
    source: str,
    external_id: str,
    comment_id: str,
    zoho_comment_id: str | None,
    state: str,
    last_ts: float,
    body_hash: str | None,
    now: float,
) -> None:
    values = dict(zoho_comment_id=zoho_comment_id, state=state, last_ts=last_ts, body_hash=body_hash, updated_at=now)
    result = conn.execute(
        update(db.comment_links)
        .where(
            db.comment_links.c.source == source,
            db.comment_links.c.external_id == external_id,
            db.comment_links.c.comment_id == comment_id,
        )
        .values(**values)
    )
    if not result.rowcount:
        conn.execute(
            insert(db.comment_links).values(source=source, external_id=external_id, comment_id=comment_id, **values)
        )


def save_dry_run(conn: Connection, link: Link, now: float) -> None:
    """Remember what dry-run did, so dry-run's later events are updates; never overwrites a real link."""
    values = dict(
        external_id=link.external_id,
        portal=link.portal,
        project=link.project,
        zoho_issue_id=link.zoho_issue_id,
        state=DRY_RUN,
        last_state_ts=link.last_state_ts,
        applied_hash=link.applied_hash,
        last_fields=json.dumps(link.last_fields, default=str) if link.last_fields is not None else None,
        updated_at=now,
    )
    existing = conn.execute(
        select(db.links.c.id, db.links.c.state).where(
            db.links.c.source == link.source, db.links.c.item_key == link.item_key
        )
    ).first()
    if existing is None:
        conn.execute(insert(db.links).values(source=link.source, item_key=link.item_key, created_at=now, **values))
    elif existing.state == DRY_RUN:
        conn.execute(update(db.links).where(db.links.c.id == existing.id).values(**values))


# Rows filed under an item's external id besides its link: (table, the column that tells its rows apart).
_BY_EXTERNAL_ID = (
    (db.comment_links, db.comment_links.c.comment_id),
    (db.attachment_links, db.attachment_links.c.attachment_key),
    (db.source_writes, None),
    (db.item_sync_state, None),
    (db.reverse_items, None),
)


def rename_external_id(conn: Connection, source: str, old: str, new: str, now: float) -> None:
    """The item's rows follow its new external id (the link itself is updated by `update_link`). A row
    already filed under the new id (written by an older version that rendered it first) is kept; the old
    one is then dropped only where the table holds one row per item."""
    for table, key in _BY_EXTERNAL_ID:
        old_rows = (table.c.source == source) & (table.c.external_id == old)
        taken = select(table.c.external_id).where(table.c.source == source, table.c.external_id == new)
        if key is None:
            single = table.name in ("item_sync_state", "reverse_items")
            if single and conn.execute(taken.limit(1)).first() is not None:
                conn.execute(delete(table).where(old_rows))
                continue
            conn.execute(update(table).where(old_rows).values(external_id=new))
            continue
        clash = select(key).where(table.c.source == source, table.c.external_id == new)
        conn.execute(update(table).where(old_rows, key.not_in(clash)).values(external_id=new))
