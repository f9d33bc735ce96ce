"""Item and comment links, written inside the delivery core's fenced transactions."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from bridge import db
from bridge.store import CommentLink, Link

DRY_RUN = "dry-run"  # a link state: what a dry-run "created"; dry-run reads it, real runs ignore it
# A link an operator forgot (`links unlink`): the item's Zoho issue may still exist, so its next create is in
# doubt and looks the issue up (by its marker, from when the forgotten link was made) instead of forking it.
UNLINKED = "unlinked"


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
                recheck_at=None,
                updated_at=now,
            )
        )
        return
    if existing is not None:  # the earliest intent counts: the lookup must reach back to the first create
        conn.execute(
            update(db.links)
            .where(db.links.c.id == existing.id)
            .values(state="creating", intent_at=func.coalesce(db.links.c.intent_at, now), updated_at=now)
        )
        return
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
            created_at=now,
            updated_at=now,
        )
    )


def write_tombstone(conn: Connection, link: Link, *, last_state_ts: float, now: float) -> None:
    """The item was deleted before anything reached Zoho: a `deleted` link without an issue, so the deletion
    stays terminal (a dry-run's row for the item is taken over)."""
    values = dict(
        external_id=link.external_id,
        portal=link.portal,
        project=link.project,
        zoho_issue_id=None,
        state="deleted",
        last_state_ts=last_state_ts,
        applied_hash="deleted",
        last_fields=None,
        recheck_at=None,
        updated_at=now,
    )
    existing = conn.execute(
        select(db.links.c.id).where(db.links.c.source == link.source, db.links.c.item_key == link.item_key)
    ).first()
    if existing is not None:
        conn.execute(update(db.links).where(db.links.c.id == existing.id).values(**values))
        return
    conn.execute(insert(db.links).values(source=link.source, item_key=link.item_key, created_at=now, **values))


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
