"""Talking back to the source, decided under the item's claim: echoes, the status guard and the conflict rule,
back-link requests, and what a change seen in Zoho asks of the source.

Every decision here runs inside the claimed item and only plans journal operations (`source.backlink`,
`source.state`, `source.comment`); `bridge/core/sidework.py` carries them out, each with its own retries, so
talking back never holds the item's state back. Nothing here trusts wording an admin may change:

- **A comment is the bridge's own** when its id is the result of one of the item's operations (a back-link,
  a copied Zoho comment), or, in the race where the source's webhook arrives before the answer to the post,
  when an operation of the item is in doubt and the comment ends with exactly the marker that operation wrote,
  where it wrote it. A person quoting a back-link (Bugzilla's Reply) is never taken for the bridge.
- **A state change is the bridge's own echo** when every field it changed is a value a `source.state`
  operation of the item wrote and whose echo is still awaited. Those echoes are then `seen`. An event showing
  a newer state that is not such an echo expires the awaited echoes it is newer than, so a person's later
  change to the same value is never swallowed (and echoes expire after ECHO_TTL_SECONDS anyway).
- **Whose status is it?** The bridge only writes to Zoho the status its forward map gives for the source's
  state, so a Zoho status equal to that is the bridge's own (or agreement) and is never sent back. One that
  differs from it and from the one last seen is a person's: its `reverse.status` actions are planned.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from bridge.core.journal import (
    SENT,
    SOURCE_BACKLINK,
    SOURCE_COMMENT,
    SOURCE_STATE,
    SOURCE_WRITES,
    ZOHO_UPDATE,
)
from bridge.events import Comment
from bridge.mapping.engine import apply_map
from bridge.mapping.model import IssueDraft, Mapping
from bridge.sources.writers import marker as writer_marker
from bridge.store import Link, StoredEvent
from bridge.store import journal as journal_rows
from bridge.store.journal import AWAITING, Operation
from bridge.targets.zoho.client import normalize_name

if TYPE_CHECKING:
    from bridge.core.acting import Acting
    from bridge.core.claim import ClaimedItem

log = logging.getLogger("bridge.reverse")
ECHO_TTL_SECONDS = 3600.0  # a source sends the webhook of a change within seconds; an hour is generous
ECHO_SKEW_SECONDS = 60.0  # the source's clock against the database's
# Fields the source bumps on its own with every change: they never make an event a person's.
NOISE = frozenset({"updated_at", "closed_at", "state_reason", "last_change_time", "updated_at_ts"})
# bridge/core/apply.py `comment_marker`: a comment the bridge itself copied into Zoho.
FORWARD_MARKER = re.compile(r"\(issue-bridge [a-z]+ comment [^)\s]+\)")
COPIED_COMMENT = "Comment in Zoho Projects:\n\n{text}"


def marker(source: str, kind: str, link: Link) -> str:
    """The marker a write of `kind` carries at the end of its text on this source (as the writers add it)."""
    return writer_marker(kind, link)


# -- what the source sends back ----------------------------------------------------------------------------


def changed_refs(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed, in the form writers record: `key=value`, or `key+=x` / `key-=x` for list fields."""
    refs: list[str] = []
    for key, new in after.items():
        if key in NOISE or before.get(key) == new:
            continue
        old = before.get(key)
        if isinstance(new, list) and isinstance(old, list):
            refs += [f"{key}+={x}" for x in new if x not in old] + [f"{key}-={x}" for x in old if x not in new]
        else:
            refs.append(f"{key}={new}")
    return refs


def apply_refs(fields: dict[str, Any] | None, refs: list[str]) -> dict[str, Any]:
    """The source's fields with what the bridge wrote there (refs as `changed_refs` spells them): the state the
    source has now, whether or not its webhook echo ever arrives."""
    out = dict(fields or {})
    for ref in refs:
        for op in ("+=", "-=", "="):
            key, sep, value = ref.partition(op)
            if sep:
                break
        old = out.get(key)
        if op == "+=":
            out[key] = [*(old if isinstance(old, list) else []), value]
        elif op == "-=":
            out[key] = [x for x in (old if isinstance(old, list) else []) if x != value]
        else:
            out[key] = int(value) if isinstance(old, int) and not isinstance(old, bool) and value.isdigit() else value
    return out


def own_echo(item: ClaimedItem, link: Link, fields: dict[str, Any], ev: StoredEvent) -> bool:
    """True when the event only carries what the bridge itself wrote to the source (its echo): those writes
    are `seen`. Writes older than a state this event shows otherwise expire (a person changed it since)."""
    awaited = sorted(
        (op for op in item.journal.of_kind(SOURCE_STATE) if op.echo == AWAITING),
        key=lambda op: op.sent_at or op.planned_at,
    )
    fresh: list[Operation] = []
    for op in awaited:
        if item.now - (op.sent_at or op.planned_at) > ECHO_TTL_SECONDS:
            item.journal.echo(op, "expired")
        else:
            fresh.append(op)
    if not fresh:
        return False
    refs = changed_refs(link.last_fields or {}, fields)
    if not refs:  # nothing new beyond what the bridge knows, its own writes included: the echo, if it shows them
        echoes = [op for op in fresh if all(_shows(fields, ref) for ref in (op.payload or {}).get("refs", []))]
        for op in echoes:
            item.journal.echo(op, "seen")
        return bool(echoes)
    used: set[tuple[int, str]] = set()  # (which write, which of its values): each value echoes once
    matched: list[Operation] = []
    for ref in refs:
        match = next(
            (op for op in fresh if (id(op), ref) not in used and ref in (op.payload or {}).get("refs", [])), None
        )
        if match is None:
            break
        used.add((id(match), ref))
        if match not in matched:
            matched.append(match)
    else:
        for op in matched:
            item.journal.echo(op, "seen")
        return True
    for op in fresh:  # a state at least as new as the write, and not its echo: a person's change
        if ev.source_ts >= (op.sent_at or op.planned_at) - ECHO_SKEW_SECONDS:
            item.journal.echo(op, "expired")
    return False


def _shows(fields: dict[str, Any], ref: str) -> bool:
    """Whether the source's fields show a value the bridge wrote (`key=value`, `key+=x`, `key-=x`)."""
    for op in ("+=", "-=", "="):
        key, sep, value = ref.partition(op)
        if sep:
            break
    current = fields.get(key)
    if op == "+=":
        return isinstance(current, list) and value in [str(x) for x in current]
    if op == "-=":
        return not isinstance(current, list) or value not in [str(x) for x in current]
    return str(current if current is not None else "") == value


def own_comment(item: ClaimedItem, comment: Comment) -> bool:
    """Whether a comment on the source is one the bridge wrote for this item (by its id, or, while the post is
    in doubt, by the exact marker that post put at its end)."""
    claim = item.claim
    with item.engine.connect() as conn:
        if journal_rows.made_by_us(conn, claim.source, claim.item_key, SOURCE_WRITES, comment.id):
            return True
    link = item.link
    if link is None:
        return False
    body = comment.body.rstrip()
    for op in item.journal.of_kind(SOURCE_BACKLINK, SOURCE_COMMENT):
        if op.state != SENT:
            continue
        written = (op.payload or {}).get("marker")
        if written and body.endswith(written):
            item.journal.confirmed(op.kind, op.ref, result=comment.id)
            return True
    return False


# -- before a forward update --------------------------------------------------------------------------------


def forward_status(mapping: Mapping, fields: dict[str, Any] | None) -> str | None:
    """The Zoho status the forward map gives for the source's state: what the bridge itself writes."""
    status_map = mapping.value_map("status")
    return apply_map(status_map, fields or {}) if status_map and fields else None


def same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and normalize_name(a) == normalize_name(b)


def status_name(issue: dict[str, Any]) -> str | None:
    status = issue.get("status")
    if isinstance(status, dict):
        return str(status.get("name") or status.get("value") or "") or None
    return str(status) if status else None


def guard_status(ap: Acting, item: ClaimedItem, mapping: Mapping, link: Link, draft: IssueDraft) -> IssueDraft:
    """With `reverse:` on, the status is sent only when the source's state changed it, so a person's status in
    Zoho is not overwritten by an unrelated edit; when both sides changed it since the last sync, `conflict:`
    decides and is logged. Zoho's issue is read through the client (either dialect)."""
    if mapping.reverse is None or "status" not in draft.options:
        return draft
    old, new = forward_status(mapping, link.last_fields), draft.options["status"]
    without_status = dataclasses.replace(draft, options={k: v for k, v in draft.options.items() if k != "status"})
    if same(old, new):
        return without_status
    assert link.zoho_issue_id is not None
    issue = ap.client.get_issue(link.portal, link.project, link.zoho_issue_id) or {}
    in_zoho = status_name(issue)
    last_seen = link.zoho_status or old
    if in_zoho is None or same(in_zoho, last_seen) or same(in_zoho, new):
        ap.keep_link(item, link, zoho_status=new)
        return draft  # only the source changed it
    if mapping.conflict == "zoho_wins":
        log.warning(
            "conflict on status: zoho_wins, Zoho keeps %s, the source's change to %s is undone at the next poll",
            in_zoho,
            new,
            extra={"item": link.item_key, "source": link.source},
        )
        return without_status  # the next poll sees Zoho differ from the source and applies its actions
    log.warning(
        "conflict on status: source_wins, Zoho %s is replaced by %s",
        in_zoho,
        new,
        extra={"item": link.item_key, "source": link.source},
    )
    ap.keep_link(item, link, zoho_status=new)
    return draft


# -- asking things of the source ----------------------------------------------------------------------------


def request_backlink(item: ClaimedItem, mapping: Mapping) -> None:
    """Once the item's Zoho issue exists: a back-link, planned once (whatever is redelivered or replayed)."""
    link = item.link
    if mapping.backlink is None or link is None or not link.confirmed or not link.zoho_issue_id:
        return
    if item.journal.get(SOURCE_BACKLINK) is not None:  # the claim always loads it
        return
    item.journal.plan(SOURCE_BACKLINK, payload={"marker": marker(link.source, "backlink", link)})


def zoho_changed(ap: Acting, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> str:
    """A change seen in Zoho (a poll's snapshot, or Zoho's webhook asking to look): decide what the source
    should do, and plan it. Returns the note for the event."""
    link = item.link
    if mapping.reverse is None:
        return "reverse sync is off in the item's mapping"
    if link is None or link.state != "linked" or not link.zoho_issue_id:
        return "the item has no linked Zoho issue"
    fields = ev.event.fields
    zoho_status = fields.get("status") if isinstance(fields.get("status"), str) else None
    issue: dict[str, Any] | None = None
    if zoho_status is None:  # Zoho's webhook only names the issue: read it
        issue = ap.client.get_issue(link.portal, link.project, link.zoho_issue_id) or {}
        zoho_status = status_name(issue)
    notes = [_status_changed(ap, item, mapping, link, zoho_status)]
    if mapping.reverse.comments:
        notes.append(_comments_changed(ap, item, link))
    return "; ".join(n for n in notes if n)


def _status_changed(ap: Acting, item: ClaimedItem, mapping: Mapping, link: Link, zoho_status: str | None) -> str:
    if not zoho_status or mapping.reverse is None:
        return ""
    forward = forward_status(mapping, link.last_fields)
    last_seen = link.zoho_status or forward
    if same(zoho_status, last_seen):
        return f"Zoho status {zoho_status}: nothing new"
    ap.keep_link(item, link, zoho_status=zoho_status)
    if same(zoho_status, forward):
        return f"Zoho status {zoho_status}: what the source's state maps to, not sent back"
    actions = mapping.reverse.actions_for(zoho_status)
    if not actions:
        return f"Zoho status {zoho_status} has no reverse action"
    ref = f"{normalize_name(zoho_status)}@{uuid.uuid4().hex[:8]}"
    item.journal.plan(SOURCE_STATE, ref, payload={"status": zoho_status, "actions": actions})
    return f"Zoho status {zoho_status}: {', '.join(sorted(actions))} planned on the source"


def _comments_changed(ap: Acting, item: ClaimedItem, link: Link) -> str:
    """Each person's Zoho comment is copied to the source once, by its Zoho id; never the bridge's forward
    copies (they carry `(issue-bridge <source> comment <id>)`)."""
    assert link.zoho_issue_id is not None
    planned = 0
    with item.engine.connect() as conn:
        copied = journal_rows.refs_of(conn, item.claim.source, item.claim.item_key, SOURCE_COMMENT)
    for zoho_id, text in ap.client.comments_of(link.portal, link.project, link.zoho_issue_id):
        if FORWARD_MARKER.search(text):
            continue
        if zoho_id in copied or item.journal.get(SOURCE_COMMENT, zoho_id) is not None:
            continue
        payload = {"text": COPIED_COMMENT.format(text=text), "marker": marker(link.source, f"zoho-comment {zoho_id}",
                                                                            link)}  # fmt: skip
        item.journal.plan(SOURCE_COMMENT, zoho_id, payload=payload)
        planned += 1
    return f"{planned} Zoho comment(s) to copy to the source" if planned else ""


__all__ = [
    "ECHO_TTL_SECONDS",
    "ZOHO_UPDATE",
    "changed_refs",
    "forward_status",
    "guard_status",
    "own_comment",
    "own_echo",
    "request_backlink",
    "zoho_changed",
]
