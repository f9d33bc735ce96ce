"""Mapping v3 in the delivery core: the filter gate, field ownership on updates, past comments when an item
starts matching, and attachments once the issue exists. `bridge/core/apply.py` calls these in one line
each (search it for `sync_v3.`), with the `Applier`, the `ClaimedItem` and the step it applies; the
decisions themselves are the pure functions of bridge/mapping/filters.py and bridge/mapping/ownership.py,
the copying is bridge/core/attachments.py.

Like every other write of the delivery core, notes and `item_sync_state` rows are queued on the claimed item
(`item.later`) and committed in its next fenced step; what is queued is also kept on the item
(`item.v3_state`), so the rest of the batch reads the filter's latest answer before it is committed.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.core.attachments import sync_attachments
from bridge.events import COMMENT_ACTIONS, SourceUnavailable
from bridge.mapping import external_id_of
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
from bridge.store import schema as db
from bridge.targets.zoho.attachments import ZohoAttachments
from bridge.targets.zoho.errors import ZohoTransientError

if TYPE_CHECKING:
    from bridge.core.apply import Applier
    from bridge.core.claim import ClaimedItem

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


def write_item_state(conn: Connection, now: float, source: str, external_id: str, **values: Any) -> None:
    """Set `last_matched` and/or `applied_values` (a dict) of the item in `conn`, creating its row if needed.
    Run in the claimed item's fenced step: no other worker writes this item's row meanwhile."""
    t = db.item_sync_state
    if "applied_values" in values:
        values["applied_values"] = json.dumps(values["applied_values"], sort_keys=True, default=str)
    values["updated_at"] = now
    where = (t.c.source == source, t.c.external_id == external_id)
    if not conn.execute(update(t).where(*where).values(**values)).rowcount:
        conn.execute(insert(t).values(source=source, external_id=external_id, **values))


def _state(item: ClaimedItem, source: str, external_id: str) -> tuple[bool | None, dict[str, Any] | None]:
    """The item's row as committed, with what this claim queued on top."""
    last, applied = item_state(item.engine, source, external_id)
    pending = item.v3_state.get((source, external_id), {})
    return pending.get("last_matched", last), pending.get("applied_values", applied)


def filtered_out(item: ClaimedItem, link: Link) -> bool:
    """Whether mapping v3's `when:` filter last kept the item out."""
    last, _ = _state(item, link.source, link.external_id)
    return last is False


def _save(ap: Applier, item: ClaimedItem, source: str, external_id: str, **values: Any) -> None:
    item.v3_state.setdefault((source, external_id), {}).update(values)
    if not ap.dry_run:  # dry-run keeps the answer for this batch only: real runs never see it
        item.later(lambda conn, now: write_item_state(conn, now, source, external_id, **values))


def _synced(link: Link | None) -> bool:
    return link is not None and link.confirmed and bool(link.zoho_issue_id)


# -- the filter gate -------------------------------------------------------------------------------------------


def gate(ap: Applier, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft) -> Transition:
    """Decide from `when:` whether the state is applied; handles every case but SYNC and START itself
    (skip, unmatch -> `on_unmatch` close or comment once, still unmatched)."""
    if mapping.v3.when is None:
        return Transition(SYNC)
    link = item.link
    known = dict(link.last_fields or {}) if link else {}
    ok, reason = matches(mapping, ev.event, known)
    last, _ = _state(item, ev.source, draft.external_id)
    decided = transition(mapping, ok, synced=_synced(link), last_matched=last)
    if decided.kind in PROCEED:
        if decided.reason:
            ap.note(item, ev, f"{decided.reason} ({reason})")
        _save(ap, item, ev.source, draft.external_id, last_matched=True)
        return decided
    ap.note(item, ev, f"{decided.reason} ({reason})")
    if decided.kind == UNMATCH:
        assert link is not None and link.zoho_issue_id is not None
        if decided.action == "close":
            ap.client.close_issue(draft, link.zoho_issue_id, mapping.closed_status)
        elif decided.action == "comment":
            text = unmatch_text(ev.event, reason)
            ap.client.add_comment(link.portal, link.project, link.zoho_issue_id, text)
    if decided.kind in (SKIP, UNMATCH, STILL_UNMATCHED):
        _save(ap, item, ev.source, draft.external_id, last_matched=False)
    return decided


def comment_held(ap: Applier, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> bool:
    """A comment on an item the filter keeps out: noted and kept, posted if the item starts matching."""
    if mapping.v3.when is None:
        return False
    link = item.link
    external_id = link.external_id if link else external_id_of(mapping, ev.event.fields)
    last, _ = _state(item, ev.source, external_id)
    held = last is False or (
        not _synced(link) and not matches(mapping, ev.event, dict(link.last_fields or {}) if link else {})[0]
    )
    if held:
        ap.note(item, ev, "the item does not match the mapping's `when:`: posted if it starts matching")
    return held


def past_comments(ap: Applier, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> None:
    """An item that starts matching gets the comments the bridge held while it did not (oldest first)."""
    link = item.link
    if not mapping.comments or link is None or not link.zoho_issue_id:
        return
    t = db.events
    with item.engine.connect() as conn:
        found = list(
            conn.execute(
                select(t.c.id)
                .where(t.c.source == ev.source, t.c.item_key == ev.item_key, t.c.action.in_(COMMENT_ACTIONS))
                .where(t.c.id != ev.id, t.c.status.in_(("done", "failed", "skipped")))
                .order_by(t.c.source_ts, t.c.id)
            ).scalars()
        )
    for event_id in found:
        past = store.get_event(item.engine, event_id)
        if past is not None and past.event.comment is not None:
            ap.apply_comment(item, past, mapping)  # keyed by comment id: never posted twice
    ap.client.event_id = ev.id


# -- field ownership --------------------------------------------------------------------------------------------


def created(ap: Applier, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft) -> None:
    """After a create: every field was sent; an item that starts matching gets its past comments."""
    if mapping.v3.sync:  # remembered only where ownership needs it
        _save(ap, item, ev.source, draft.external_id, applied_values=draft_values(draft))
    if mapping.v3.when is not None:
        past_comments(ap, item, ev, mapping)


def send_update(
    ap: Applier,
    item: ClaimedItem,
    ev: StoredEvent,
    mapping: Mapping,
    draft: IssueDraft,
    link: Link,
    applied_tags: tuple[str, ...] | None,
) -> None:
    """The update, without the fields Zoho owns now (`sync: create_only | if_unchanged_in_zoho`)."""
    assert link.zoho_issue_id is not None
    client = ap.client
    if not mapping.v3.sync:
        client.update_issue(draft, link.zoho_issue_id, applied_tags=applied_tags)
        return
    _, last = _state(item, ev.source, draft.external_id)
    current = None
    if needs_zoho_current(mapping, draft, last):
        current = zoho_values(client.get_issue(draft.portal, draft.project, link.zoho_issue_id) or {}, client.dialect)
    decision = fields_to_send(mapping, draft, last, current)
    ap.note(item, ev, *(f"{name}: {why}" for name, why in decision.held))
    held = {name for name, _ in decision.held}
    full = client.issue_body(draft, creating=False, applied_tags=applied_tags)
    kept = restrict_body(full, client.dialect, held)
    if kept:
        client.update_issue(draft, link.zoho_issue_id, applied_tags=applied_tags, omit=set(full) - set(kept))
    _save(ap, item, ev.source, draft.external_id, applied_values=applied_after(last, draft, decision))


def updated(ap: Applier, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, decided: Transition) -> None:
    if decided.kind == START:  # matches again: the comments held meanwhile
        past_comments(ap, item, ev, mapping)


# -- attachments ------------------------------------------------------------------------------------------------


def attachments(ap: Applier, item: ClaimedItem, mapping: Mapping) -> None:
    """Copy the attachments every state event of the batch names (superseded ones too) once the issue exists."""
    link = item.link
    if not mapping.v3.attachments or link is None or not link.confirmed or not link.zoho_issue_id:
        return
    last, _ = _state(item, link.source, link.external_id)
    if last is False:
        return  # the filter keeps the item out
    events = [e for e in item.batch.events if e.event.has_state]
    if ap.dry_run:  # touch nothing, the sources included: say what would be copied
        from bridge.core.attachments import refs_of

        for ev in events:
            for ref in refs_of(ap.settings, ev.event):
                ap.note(item, ev, f"dry-run: attachment {ref.file_name} would be copied ({ref.url})")
        return
    uploader = ZohoAttachments(ap.client)
    for ev in (e for e in events if e.action != "deleted"):
        try:
            notes = sync_attachments(
                item.engine,
                ap.settings,
                uploader,
                ev.event,
                external_id=link.external_id,
                portal=link.portal,
                project=link.project,
                issue_id=link.zoho_issue_id,
                write=item.step,  # each row write fenced, like the calls between them
            )
        except SourceUnavailable as exc:
            raise ZohoTransientError(f"{ev.source}: {exc.reason}", retry_after=exc.retry_after) from None
        ap.note(item, ev, *notes)
