"""Item and comment links, written inside the delivery core's fenced transactions."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from bridge.store import CommentLink, Link, _link
from bridge.store import schema as db
from bridge.store.driver import run

DRY_RUN = "dry-run"  # a link state: what a dry-run "created"; dry-run reads it, real runs ignore it
# A link an operator forgot (`links unlink`): the item's Zoho issue may still exist, so its next create is in
# doubt and looks the issue up (by its marker, from when the forgotten link was made) instead of forking it.
UNLINKED = "unlinked"


# The worker's statements, built once (see bridge/store/claims.py); an UPDATE's SET comes from its parameters.
_K = db.links
_THE_ITEM = (_K.c.source == bindparam("b_source")) & (_K.c.item_key == bindparam("b_item_key"))
_OWN_LINK = select(_K.c.id, _K.c.state).where(_THE_ITEM)
_ID_HOLDER = select(_K.c.item_key).where(_K.c.source == bindparam("b_source"), _K.c.external_id == bindparam("b_ext"))
_NEW_LINK = insert(_K)
_UPDATE_LINK = update(_K).where(_THE_ITEM)
_C = db.comment_links
_COMMENTS = select(_C).where(_C.c.source == bindparam("b_source"), _C.c.external_id == bindparam("b_ext"))
_UPDATE_COMMENT = update(_C).where(
    _C.c.source == bindparam("b_source"), _C.c.external_id == bindparam("b_ext"), _C.c.comment_id == bindparam("b_cid")
)
_NEW_COMMENT = insert(_C)


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
    """The item's link before its first create is sent (`creating`): it reserves the external id, so two items
    rendering the same one are told apart before anything reaches Zoho. Whether a create is in doubt is the
    journal's to say (`zoho.create` sent and unconfirmed), not the link's."""
    existing = run(conn, _OWN_LINK, {"b_source": source, "b_item_key": item_key}).first()
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
                written=None,
                updated_at=now,
            )
        )
        return
    if existing is not None:
        if existing.state != "creating":
            conn.execute(update(db.links).where(db.links.c.id == existing.id).values(state="creating", updated_at=now))
        return
    holder = run(conn, _ID_HOLDER, {"b_source": source, "b_ext": external_id}).scalar()
    if holder is not None:
        raise ExternalIdTaken(external_id, holder)
    run(
        conn,
        _NEW_LINK,
        {
            "source": source,
            "external_id": external_id,
            "item_key": item_key,
            "portal": portal,
            "project": project,
            "state": "creating",
            "last_state_ts": 0.0,
            "created_at": now,
            "updated_at": now,
        },
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
    """Set columns of the item's link (zoho_issue_id, state, last_state_ts, applied_hash, last_fields, written,
    filter_matched, zoho_status, project, portal, external_id)."""
    for column in ("last_fields", "written"):
        if column in values and values[column] is not None:
            values[column] = json.dumps(values[column], sort_keys=True, default=str)
    run(conn, _UPDATE_LINK, {**values, "updated_at": now, "b_source": source, "b_item_key": item_key})


def comment_links(conn: Connection, source: str, external_id: str) -> dict[str, CommentLink]:
    rows = run(conn, _COMMENTS, {"b_source": source, "b_ext": external_id}).all()
    return {r.comment_id: CommentLink(r.zoho_comment_id, r.state, r.last_ts, r.body_hash) for r in rows}


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
    result = run(conn, _UPDATE_COMMENT, {**values, "b_source": source, "b_ext": external_id, "b_cid": comment_id})
    if not result.rowcount:
        run(conn, _NEW_COMMENT, {**values, "source": source, "external_id": external_id, "comment_id": comment_id})


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
        written=json.dumps(link.written, sort_keys=True, default=str) if link.written is not None else None,
        filter_matched=link.filter_matched,
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


def rename_external_id(conn: Connection, source: str, old: str, new: str, now: float) -> None:
    """The item's comment links follow its new external id (the link itself is updated by `update_link`; the
    journal is filed by item, not by external id). A comment row already filed under the new id is kept."""
    t = db.comment_links
    clash = select(t.c.comment_id).where(t.c.source == source, t.c.external_id == new)
    conn.execute(
        update(t)
        .where(t.c.source == source, t.c.external_id == old, t.c.comment_id.not_in(clash))
        .values(external_id=new)
    )


def linked_issue_ids(conn: Connection, issue_ids: list[str]) -> set[str]:
    """Which of these Zoho issues a link (any state) names already: an existing issue is adopted only if none does."""
    rows = conn.execute(select(db.links.c.zoho_issue_id).where(db.links.c.zoho_issue_id.in_(issue_ids))).scalars()
    return set(rows)


def item_linked(conn: Connection, source: str, item_key: str) -> bool:
    """Whether the item has a link row (any state): its backfilled state costs an update, not a create."""
    row = conn.execute(
        select(db.links.c.id).where(db.links.c.source == source, db.links.c.item_key == item_key)
    ).first()
    return row is not None


def for_item(conn: Connection, source: str, item_key: str) -> Link | None:
    row = conn.execute(
        select(db.links).where(db.links.c.source == source, db.links.c.item_key == item_key).limit(1)
    ).first()
    return _link(row) if row else None


# -- relinking after a restore (`links recover`) -----------------------------------------------------------------


class LinkRef(NamedTuple):
    """What `links recover` and `links link` weigh of a link before (re)linking it (the row's id, to update that
    very row)."""

    id: int
    source: str
    item_key: str
    zoho_issue_id: str | None
    state: str
    external_id: str


def _ref(row: Any) -> LinkRef:
    return LinkRef(row.id, row.source, row.item_key, row.zoho_issue_id, row.state, row.external_id)


def projects(conn: Connection) -> list[tuple[str | None, str | None]]:
    """Every distinct (portal, project) a link is in."""
    return [(r.portal, r.project) for r in conn.execute(select(db.links.c.portal, db.links.c.project).distinct())]


def issue_linked(conn: Connection, portal: str, issue_id: str) -> bool:
    row = conn.execute(
        select(db.links.c.id).where(db.links.c.portal == portal, db.links.c.zoho_issue_id == issue_id).limit(1)
    ).first()
    return row is not None


def any_issue_linked(conn: Connection) -> bool:
    """Whether the bridge has made (or linked) any Zoho issue at all."""
    return conn.execute(select(db.links.c.id).where(db.links.c.zoho_issue_id.is_not(None)).limit(1)).first() is not None


def refs_by_external_id(conn: Connection, external_id: str) -> list[LinkRef]:
    """The links (of any source) carrying this external id."""
    rows = conn.execute(select(db.links).where(db.links.c.external_id == external_id)).all()
    return [_ref(r) for r in rows]


def relink(conn: Connection, link_id: int, issue_id: str, portal: str, project: str, now: float) -> None:
    """Link the row to the Zoho issue found carrying its marker; its state is applied again (no hash, no ts)."""
    conn.execute(
        update(db.links)
        .where(db.links.c.id == link_id)
        .values(
            zoho_issue_id=issue_id,
            state="linked",
            portal=portal,
            project=project,
            applied_hash=None,
            last_state_ts=0.0,
            updated_at=now,
        )
    )


# -- linking by hand (`links link`, `backfill --adopt-only`) -----------------------------------------------------


def ref_for_item(conn: Connection, source: str, item_key: str) -> LinkRef | None:
    row = conn.execute(select(db.links).where(db.links.c.source == source, db.links.c.item_key == item_key)).first()
    return _ref(row) if row is not None else None


def issue_holder(conn: Connection, issue_id: str) -> tuple[str, str] | None:
    """(source, item key) of a link to this Zoho issue that an operator did not forget, if any."""
    row = conn.execute(
        select(db.links.c.source, db.links.c.item_key).where(
            db.links.c.zoho_issue_id == issue_id, db.links.c.state != UNLINKED
        )
    ).first()
    return (row.source, row.item_key) if row is not None else None


def external_id_holder(conn: Connection, source: str, external_id: str) -> str | None:
    """The item key of the source's link with this external id, if any."""
    taken = conn.execute(
        select(db.links.c.item_key).where(db.links.c.source == source, db.links.c.external_id == external_id)
    ).scalar()
    return None if taken is None else str(taken)


def held_by_another(conn: Connection, source: str, item_key: str, issue_id: str, external_id: str) -> bool:
    """Whether another item's live link holds this Zoho issue, or this external id in the same source."""
    links = db.links
    row = conn.execute(
        select(links.c.item_key).where(
            links.c.state != UNLINKED,
            (links.c.zoho_issue_id == issue_id) | ((links.c.source == source) & (links.c.external_id == external_id)),
            links.c.item_key != item_key,
        )
    ).first()
    return row is not None


def write_adopted(
    conn: Connection,
    link_id: int | None,
    source: str,
    item_key: str,
    values: dict[str, Any],
    now: float,
) -> None:
    """Update the item's link row (`link_id`), or insert it (None) with `values`."""
    if link_id is not None:
        conn.execute(update(db.links).where(db.links.c.id == link_id).values(**values))
    else:
        conn.execute(insert(db.links).values(source=source, item_key=item_key, created_at=now, **values))


def clear_applied(conn: Connection, source: str, item_key: str) -> None:
    """Forget what was applied: the item's next update sends its whole state."""
    conn.execute(
        update(db.links).where(db.links.c.source == source, db.links.c.item_key == item_key).values(applied_hash=None)
    )
