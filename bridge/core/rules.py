"""The mapping's rules in the delivery core: the `when:` gate, field ownership on updates, past comments when
an item starts matching, and the attachments an item's state names. `bridge/core/apply.py` calls these in
one line each (search it for `rules.`), with the `Acting`, the `ClaimedItem` and the step it applies; the
decisions themselves are the pure functions of bridge/mapping/filters.py and bridge/mapping/ownership.py.

What the rules remember lives on the item's link: `filter_matched` (the gate's last answer) and `written`
(per field, what the bridge last wrote to Zoho, kept for every item, so an ownership rule added later
protects issues synced before it). Both are queued on the claimed item and committed in its next step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from bridge import store
from bridge.core.attachments import refs_of
from bridge.core.journal import ZOHO_ATTACHMENT, ZOHO_UPDATE
from bridge.events import COMMENT_ACTIONS
from bridge.mapping import translate
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

if TYPE_CHECKING:
    from bridge.core.acting import Acting
    from bridge.core.claim import ClaimedItem

log = logging.getLogger("bridge.sync")
PROCEED = (SYNC, START)


def _synced(link: Link | None) -> bool:
    return link is not None and link.confirmed and bool(link.zoho_issue_id)


def filtered_out(item: ClaimedItem, link: Link) -> bool:
    """Whether mapping v3's `when:` filter last kept the item out."""
    return link.filter_matched is False


def written(item: ClaimedItem, mapping: Mapping, ev: StoredEvent) -> dict[str, Any] | None:
    """What the bridge last wrote to the item's Zoho issue, per field. An issue synced before this was recorded
    has it derived from the fields last applied, through the mapping (what the bridge would have sent)."""
    link = item.link
    if link is None:
        return None
    if link.written is not None:
        return dict(link.written)
    if not link.last_fields:
        return None
    try:
        return draft_values(translate(mapping, dataclasses.replace(ev.event, fields=dict(link.last_fields)), None))
    except Exception:  # an older mapping that cannot translate the old fields: nothing is known
        return None


def _remember(ap: Acting, item: ClaimedItem, **values: Any) -> None:
    """Keep gate answers and written values on the item's link (committed with its next step)."""
    if item.link is not None:
        ap.keep_link(item, item.link, **values)


# -- the filter gate -------------------------------------------------------------------------------------------


def gate(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft) -> Transition:
    """Decide from `when:` whether the state is applied; handles every case but SYNC and START itself
    (skip, unmatch -> `on_unmatch` close or comment once, still unmatched)."""
    if mapping.v3.when is None:
        return Transition(SYNC)
    link = item.link
    known = dict(link.last_fields or {}) if link else {}
    ok, reason = matches(mapping, ev.event, known)
    last = link.filter_matched if link is not None else None
    decided = transition(mapping, ok, synced=_synced(link), last_matched=last)
    if decided.kind in PROCEED:
        if decided.reason:
            ap.note(item, ev, f"{decided.reason} ({reason})")
        _remember(ap, item, filter_matched=True)  # a new item's link is made with it (apply._create)
        return decided
    ap.note(item, ev, f"{decided.reason} ({reason})")
    if decided.kind == UNMATCH:
        assert link is not None and link.zoho_issue_id is not None
        issue = link.zoho_issue_id
        if decided.action == "close":
            ap.send(item, ZOHO_UPDATE, lambda: ap.client.close_issue(draft, issue, mapping.closed_status),
                    payload={"status": mapping.closed_status})  # fmt: skip
        elif decided.action == "comment":
            text = unmatch_text(ev.event, reason)
            ap.send(item, ZOHO_UPDATE, lambda: ap.client.add_comment(link.portal, link.project, issue, text),
                    payload={"comment": "unmatched"})  # fmt: skip
    if decided.kind in (SKIP, UNMATCH, STILL_UNMATCHED):
        _remember(ap, item, filter_matched=False)
    return decided


def comment_held(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> bool:
    """A comment on an item the filter keeps out: noted and kept, posted if the item starts matching."""
    if mapping.v3.when is None:
        return False
    link = item.link
    held = (link is not None and link.filter_matched is False) or (
        not _synced(link) and not matches(mapping, ev.event, dict(link.last_fields or {}) if link else {})[0]
    )
    if held:
        ap.note(item, ev, "the item does not match the mapping's `when:`: posted if it starts matching")
    return held


def past_comments(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> None:
    """An item that starts matching gets the comments the bridge held while it did not (oldest first)."""
    link = item.link
    if not mapping.comments or link is None or not link.zoho_issue_id:
        return
    for past in store.finished_events_of(item.engine, ev.source, ev.item_key, COMMENT_ACTIONS, besides=ev.id):
        if past.event.comment is not None:
            ap.apply_comment(item, past, mapping)  # keyed by comment id: never posted twice
    ap.client.event_id = ev.id


# -- field ownership --------------------------------------------------------------------------------------------


def created(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft) -> None:
    """After a create: every field was sent (recorded for every item); an item that starts matching gets its
    past comments."""
    values: dict[str, Any] = {"written": draft_values(draft)}
    if mapping.v3.when is not None:
        values["filter_matched"] = True
    _remember(ap, item, **values)
    if mapping.v3.when is not None:
        past_comments(ap, item, ev, mapping)


def send_update(
    ap: Acting,
    item: ClaimedItem,
    ev: StoredEvent,
    mapping: Mapping,
    draft: IssueDraft,
    link: Link,
    applied_tags: tuple[str, ...] | None,
) -> None:
    """The update, without the fields Zoho owns now (`sync: create_only | if_unchanged_in_zoho`)."""
    assert link.zoho_issue_id is not None
    client, issue_id = ap.client, link.zoho_issue_id
    last = written(item, mapping, ev)
    if not mapping.v3.sync:
        ap.send(item, ZOHO_UPDATE, lambda: client.update_issue(draft, issue_id, applied_tags=applied_tags),
                payload={"fields": sorted(draft_values(draft))})  # fmt: skip
        _remember(ap, item, written=draft_values(draft))
        return
    current = None
    if needs_zoho_current(mapping, draft, last):
        current = zoho_values(client.get_issue(draft.portal, draft.project, issue_id) or {}, client.dialect)
    decision = fields_to_send(mapping, draft, last, current)
    ap.note(item, ev, *(f"{name}: {why}" for name, why in decision.held))
    held = {name for name, _ in decision.held}
    full = client.issue_body(draft, creating=False, applied_tags=applied_tags)
    kept = restrict_body(full, client.dialect, held)
    if kept:
        omit = set(full) - set(kept)
        ap.send(item, ZOHO_UPDATE, lambda: client.update_issue(draft, issue_id, applied_tags=applied_tags, omit=omit),
                payload={"fields": sorted(kept)})  # fmt: skip
    _remember(ap, item, written=applied_after(last, draft, decision))


def updated(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, decided: Transition) -> None:
    if decided.kind == START:  # matches again: the comments held meanwhile
        past_comments(ap, item, ev, mapping)


# -- attachments ------------------------------------------------------------------------------------------------


def plan_attachments(ap: Acting, item: ClaimedItem, mapping: Mapping) -> None:
    """Each attachment a state event of the batch names (superseded ones too) becomes a `zoho.attachment`
    operation once the issue exists: side work, copied by `bridge/core/sidework.py` with its own retries, so a
    file that cannot be fetched never holds the item's state back."""
    link = item.link
    if not mapping.v3.attachments or link is None or not link.confirmed or not link.zoho_issue_id:
        return
    if link.filter_matched is False:
        return  # the filter keeps the item out
    known_keys: set[str] | None = None
    for ev in (e for e in item.batch.events if e.event.has_state and e.action != "deleted"):
        for ref in refs_of(ap.settings, ev.event):
            if ap.dry_run:  # touch nothing, the sources included: say what would be copied
                ap.note(item, ev, f"dry-run: attachment {ref.file_name} would be copied ({ref.url})")
                continue
            if known_keys is None:  # once per batch: which attachments the item has an operation for already
                known_keys = store.operation_refs(item.engine, item.claim.source, item.claim.item_key, ZOHO_ATTACHMENT)
            if ref.key in known_keys or item.journal.get(ZOHO_ATTACHMENT, ref.key) is not None:
                continue  # copied, refused, planned or in doubt already: each attachment is one operation
            payload = {
                "url": ref.url,
                "file_name": ref.file_name,
                "size": ref.size,
                "via_api": ref.via_api,
                "event_id": ev.id,
                "html_url": ev.event.fields.get("html_url"),
            }
            item.journal.plan(ZOHO_ATTACHMENT, ref.key, payload=payload)
            ap.note(item, ev, f"attachment {ref.file_name}: to be copied (side work)")
