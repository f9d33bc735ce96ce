"""Mapping v3 in the delivery core: the filter gate, field ownership on updates, past comments when an item
starts matching, and attachments once the issue exists. `bridge/sync.py` calls these in a few places each
(search it for `sync_v3.`); the decisions themselves are the pure functions of bridge/mapping/filters.py and
bridge/mapping/ownership.py, the copying is bridge/attachments.py.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bridge import db, store
from bridge.attachments import sync_attachments
from bridge.clock import engine_now
from bridge.events import COMMENT_ACTIONS, SourceUnavailable
from bridge.mapping.filters import SKIP, START, STILL_UNMATCHED, SYNC, UNMATCH, Transition, matches, transition
from bridge.mapping.filters import unmatch_comment as unmatch_text
from bridge.mapping.model import IssueDraft, Mapping
from bridge.mapping.ownership import (
    applied_after,
    draft_values,
    fields_to_send,
    needs_zoho_current,
    restrict_body,
    zoho_values,
)
from bridge.store import Link, StoredEvent
from bridge.zoho.attachments import ZohoAttachments
from bridge.zoho.errors import ZohoTransientError

if TYPE_CHECKING:
    from bridge.sync import SyncService

log = logging.getLogger("bridge.sync")
PROCEED = (SYNC, START)


# -- item_sync_state: the filter's last answer and the values last written ---------------------------------


def item_state(engine: Engine, source: str, external_id: str) -> tuple[bool | None, dict[str, Any] | None]:
    t = db.item_sync_state
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.last_matched, t.c.applied_values).where(t.c.source == source, t.c.external_id == external_id)
        ).first()
    if row is None:
        return None, None
    return row.last_matched, json.loads(row.applied_values) if row.applied_values else None


def save_item_state(engine: Engine, source: str, external_id: str, **values: Any) -> None:
    """Set `last_matched` and/or `applied_values` (a dict) of the item, creating its row if needed."""
    t = db.item_sync_state
    if "applied_values" in values:
        values["applied_values"] = json.dumps(values["applied_values"], sort_keys=True, default=str)
    values["updated_at"] = engine_now(engine)
    where = (t.c.source == source, t.c.external_id == external_id)
    with engine.begin() as conn:
        if conn.execute(update(t).where(*where).values(**values)).rowcount:
            return
    try:
        with engine.begin() as conn:
            conn.execute(insert(t).values(source=source, external_id=external_id, **values))
    except IntegrityError:
        with engine.begin() as conn:
            conn.execute(update(t).where(*where).values(**values))


# -- the filter gate -------------------------------------------------------------------------------------------


def gate(svc: SyncService, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, link: Link | None) -> Transition:
    """Decide from `when:` whether the state is applied; handles every case but SYNC and START itself."""
    if mapping.v3.when is None:
        return Transition(SYNC)
    known = dict(link.last_fields or {}) if link else {}
    ok, reason = matches(mapping, ev.event, known)
    synced = link is not None and link.confirmed and bool(link.zoho_issue_id)
    last, _ = item_state(svc.engine, ev.source, draft.external_id)
    decided = transition(mapping, ok, synced=synced, last_matched=last)
    if decided.kind in PROCEED:
        if decided.reason:
            store.add_note(svc.engine, ev.id, f"{decided.reason} ({reason})")
        save_item_state(svc.engine, ev.source, draft.external_id, last_matched=True)
        return decided
    store.add_note(svc.engine, ev.id, f"{decided.reason} ({reason})")
    if decided.kind == UNMATCH:
        assert link is not None and link.zoho_issue_id is not None
        if decided.action == "close":
            svc.client.close_issue(draft, link.zoho_issue_id, mapping.closed_status)
        elif decided.action == "comment":
            text = unmatch_text(ev.event, reason)
            svc.client.add_comment(link.portal, link.project, link.zoho_issue_id, text)
    if decided.kind in (SKIP, UNMATCH, STILL_UNMATCHED):
        save_item_state(svc.engine, ev.source, draft.external_id, last_matched=False)
    return decided


def comment_held(svc: SyncService, ev: StoredEvent, mapping: Mapping, link: Link | None) -> bool:
    """A comment on an item the filter keeps out: noted and kept, posted if the item starts matching."""
    if mapping.v3.when is None:
        return False
    external_id = link.external_id if link else None
    if external_id is None:
        from bridge.mapping import external_id_of

        external_id = external_id_of(mapping, ev.event.fields)
    last, _ = item_state(svc.engine, ev.source, external_id)
    synced = link is not None and link.confirmed and bool(link.zoho_issue_id)
    held = last is False or (
        not synced and not matches(mapping, ev.event, dict(link.last_fields or {}) if link else {})[0]
    )
    if held:
        store.add_note(svc.engine, ev.id, "the item does not match the mapping's `when:`: posted if it starts matching")
    return held


def past_comments(svc: SyncService, ev: StoredEvent, mapping: Mapping, link: Link) -> None:
    """An item that starts matching gets the comments the bridge held while it did not (oldest first)."""
    if not mapping.comments or not link.zoho_issue_id:
        return
    t = db.events
    with svc.engine.connect() as conn:
        ids = conn.execute(
            select(t.c.id)
            .where(t.c.source == ev.source, t.c.item_key == ev.item_key, t.c.action.in_(COMMENT_ACTIONS))
            .where(t.c.id != ev.id, t.c.status.in_(("done", "failed", "skipped")))
            .order_by(t.c.source_ts, t.c.id)
        ).scalars()
        found = list(ids)
    for event_id in found:
        past = store.get_event(svc.engine, event_id)
        if past is not None and past.event.comment is not None:
            svc._apply_comment_inner(past, mapping, link)  # keyed by comment id: never posted twice


# -- field ownership --------------------------------------------------------------------------------------------


def created(svc: SyncService, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, link: Link | None) -> None:
    """After a create: every field was sent; an item that starts matching gets its past comments."""
    if mapping.v3.sync:  # remembered only where ownership needs it
        save_item_state(svc.engine, ev.source, draft.external_id, applied_values=draft_values(draft))
    if link is not None and mapping.v3.when is not None:
        past_comments(svc, ev, mapping, link)


def send_update(svc: SyncService, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, link: Link) -> None:
    """The update, without the fields Zoho owns now (`sync: create_only | if_unchanged_in_zoho`)."""
    assert link.zoho_issue_id is not None
    if not mapping.v3.sync:
        svc.client.update_issue(draft, link.zoho_issue_id)
        return
    _, last = item_state(svc.engine, ev.source, draft.external_id)
    current = None
    if needs_zoho_current(mapping, draft, last):
        kind = "bugs" if svc.client.dialect == "bugtracker" else "issues"
        path = f"/api/v3/portal/{draft.portal}/projects/{draft.project}/{kind}/{link.zoho_issue_id}"
        data = svc.client.call("GET", path).data
        issue = (data.get("bugs") or [data])[0] if isinstance(data, dict) else {}
        current = zoho_values(issue if isinstance(issue, dict) else {}, svc.client.dialect)
    decision = fields_to_send(mapping, draft, last, current)
    for name, why in decision.held:
        store.add_note(svc.engine, ev.id, f"{name}: {why}")
    held = {name for name, _ in decision.held}
    body = restrict_body(svc.client.issue_body(draft, creating=False), svc.client.dialect, held)
    if body:
        svc.client.update_issue(draft, link.zoho_issue_id, body=body)
    save_item_state(svc.engine, ev.source, draft.external_id, applied_values=applied_after(last, draft, decision))


def updated(svc: SyncService, ev: StoredEvent, mapping: Mapping, link: Link, decided: Transition) -> None:
    if decided.kind == START:  # matches again: the comments held meanwhile
        past_comments(svc, ev, mapping, link)


# -- attachments ------------------------------------------------------------------------------------------------


def attachments(svc: SyncService, events: list[StoredEvent], mapping: Mapping, link: Link | None) -> None:
    """Copy the attachments every state event of the batch names (superseded ones too) once the issue exists."""
    if not mapping.v3.attachments or link is None or not link.confirmed or not link.zoho_issue_id:
        return
    last, _ = item_state(svc.engine, link.source, link.external_id)
    if last is False:
        return  # the filter keeps the item out
    if svc.client.dry_run:  # touch nothing, the sources included: say what would be copied
        from bridge.attachments import refs_of

        for ev in events:
            for ref in refs_of(svc.settings, ev.event):
                store.add_note(svc.engine, ev.id, f"dry-run: attachment {ref.file_name} would be copied ({ref.url})")
        return
    uploader = ZohoAttachments(svc.client)
    for ev in (e for e in events if e.action != "deleted"):
        try:
            notes = sync_attachments(
                svc.engine,
                svc.settings,
                uploader,
                ev.event,
                external_id=link.external_id,
                portal=link.portal,
                project=link.project,
                issue_id=link.zoho_issue_id,
            )
        except SourceUnavailable as exc:
            raise ZohoTransientError(f"{ev.source}: {exc.reason}", retry_after=exc.retry_after) from None
        for note in notes:
            store.add_note(svc.engine, ev.id, note)
