"""Side work: the operations that never hold an item's state back. Attachments copied to Zoho, the back-link
posted on the source, a person's Zoho comments copied to the source, status changes made on the source for a
Zoho change.

Each is a journal operation (`bridge/core/journal.py`) carried out under the item's claim, after its events,
when due, with a retry state of its own: a wait for a budget or a throttle is not an attempt; a source or
Zoho that does not answer is retried with a capped back-off until the operation is EVENT_MAX_AGE_SECONDS old;
a refusal (a missing token, a refused URL, a file Zoho will not take) fails the operation with its reason,
visible in `status`, `explain` and the admin page, and it is planned again when its cause may be gone
(settings or mappings reloaded, a resync, a replay). The item's events are done whatever happens here.

Every write to a source is marked sent in a fenced step right before its request leaves, like Zoho's: one in
doubt is looked up by the marker it carries before anything is posted again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.core import talkback
from bridge.core.attachments import AttachmentRef, AttachmentRefused, fetch_for, listed
from bridge.core.journal import (
    PLANNED,
    SENT,
    SIDE_KINDS,
    SOURCE_BACKLINK,
    SOURCE_STATE,
    ZOHO_ATTACHMENT,
    Operation,
)
from bridge.mapping import MappingRegistry
from bridge.mapping.model import Mapping
from bridge.mapping.talkback import render
from bridge.outbound.errors import ConfigError, LimitWait, Permanent, Transient
from bridge.sources import SOURCES
from bridge.sources.writers import SourceWriter, missing_credential, writer_for
from bridge.store import Link, outcomes
from bridge.store import reverse as source_writes
from bridge.store.claims import ClaimLost
from bridge.store.journal import AWAITING
from bridge.targets.zoho.attachments import ZohoAttachments

if TYPE_CHECKING:
    from bridge.core.acting import Acting
    from bridge.core.claim import ClaimedItem

log = logging.getLogger("bridge.sidework")
MAX_PER_CLAIM = 10  # side operations carried out per claim; the rest wait for the next one


def mapping_of(registry: MappingRegistry, link: Link) -> Mapping | None:
    """The mapping that routes the linked item now (by its source project), for work done without an event."""
    spec = SOURCES.get(link.source)
    project = str((link.last_fields or {}).get(spec.project_field, "")) if spec is not None else ""
    for mapping in registry.for_source(link.source):
        if mapping.accepts(project):
            return mapping
    return None


def due(item: ClaimedItem) -> list[Operation]:
    """The item's side operations due now (planned, or in doubt and due to be resolved), oldest first."""
    ops = [
        op
        for op in item.journal.of_kind(*SIDE_KINDS)
        if op.state in (PLANNED, SENT) and op.next_at is not None and op.next_at <= item.now
    ]
    return sorted(ops, key=lambda op: op.next_at or 0.0)


def run_due(ap: Acting, item: ClaimedItem, mapping: Mapping | None, *, busy: Callable[[], bool]) -> int:
    """Carry out the item's due side operations (at most MAX_PER_CLAIM); returns how many were tried. Nothing
    here raises but a lost claim: each operation's failure is recorded on the operation."""
    if ap.dry_run:
        return 0
    ops = due(item)[:MAX_PER_CLAIM]
    if ops and busy():  # forward sync first: side work spends the same budgets
        for op in ops:
            item.journal.retry_later(op.kind, op.ref, 5.0, op.last_error or "waiting for forward sync", attempt=False)
        return 0
    for op in ops:
        _run_one(ap, item, mapping, op)
    return len(ops)


def _run_one(ap: Acting, item: ClaimedItem, mapping: Mapping | None, op: Operation) -> None:
    settings = ap.settings
    try:
        if op.kind == ZOHO_ATTACHMENT:
            _attachment(ap, item, op)
        else:
            _source_write(ap, item, mapping, op)
    except ClaimLost:
        raise
    except LimitWait as exc:  # not sent, or answered without effect: a wait, not an attempt
        item.journal.answered(op.kind, op.ref, refused=None)
        item.journal.retry_later(op.kind, op.ref, max(1.0, exc.retry_after or 1.0), exc.reason, attempt=False)
    except (ConfigError, Permanent, AttachmentRefused) as exc:
        reason = getattr(exc, "reason", str(exc))
        item.journal.answered(op.kind, op.ref, refused=reason)
        item.journal.failed(op.kind, op.ref, reason)
        if op.kind == ZOHO_ATTACHMENT:
            _event_note(item, op, f"attachment {(op.payload or {}).get('file_name')} not copied: {reason}")
        log.warning("%s failed: %s", op.kind, reason, extra=item.describe())
    except Exception as exc:
        item.journal.not_sent()  # one that left stays sent: in doubt, looked up before anything is sent again
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        attempts = op.attempts + 1
        too_old = item.now - op.planned_at > settings.event_max_age_seconds
        unexpected = not isinstance(exc, Transient)
        if too_old or (unexpected and attempts >= settings.max_attempts):
            item.journal.failed(op.kind, op.ref, f"gave up after {attempts} attempts: {reason}")
            log.warning("%s gave up: %s", op.kind, reason, extra=item.describe())
            return
        delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
        delay *= 0.5 + 0.5 * random.random()  # noqa: S311 - jitter, not security
        item.journal.retry_later(op.kind, op.ref, delay, reason, attempt=True)
        log.info("%s retried in %.0fs: %s", op.kind, delay, reason, extra=item.describe())


def _event_note(item: ClaimedItem, op: Operation, note: str) -> None:
    event_id = (op.payload or {}).get("event_id")
    if isinstance(event_id, int):
        item.later(lambda conn, _now: outcomes.add_notes(conn, event_id, [note]))


# -- writes to the source -------------------------------------------------------------------------------------


def _writer(ap: Acting, item: ClaimedItem, mapping: Mapping | None, op: Operation) -> tuple[SourceWriter, Link]:
    link = item.link
    if link is None or not link.confirmed or not link.zoho_issue_id:
        raise Permanent("the item has no linked Zoho issue")
    via = mapping.backlink.via if mapping is not None and mapping.backlink is not None else "comment"
    writer = writer_for(link.source, ap.settings, item.engine, via=via)
    if writer is None:
        raise ConfigError(missing_credential(link.source, ap.settings) or f"no writer for {link.source}")
    return writer, link


def _send_source_write(item: ClaimedItem, op: Operation, payload: dict[str, Any]) -> None:
    """The fence before a write to the source: the operation is marked sent in a fenced step first."""
    item.journal.sending(op.kind, op.ref, payload=payload)
    item.before_call("POST")


def _source_write(ap: Acting, item: ClaimedItem, mapping: Mapping | None, op: Operation) -> None:
    writer, link = _writer(ap, item, mapping, op)
    fields = link.last_fields or {}
    payload = dict(op.payload or {})
    if op.kind == SOURCE_STATE:
        actions = payload.get("actions") or {}
        _send_source_write(item, op, payload)
        with source_writes.collecting() as wrote:  # reads the source first: only what differs is written
            done = writer.apply(link, fields, actions)
        refs = [ref for kind, ref in wrote if kind == "state"]
        comment = next((ref for kind, ref in wrote if kind == "comment"), None)  # its echo is known by its id
        item.journal.confirmed(
            op.kind, op.ref, result=comment, payload={"refs": refs, "done": done}, echo=AWAITING if refs else None
        )
        if refs:  # the source's state is what the bridge wrote now, whether or not its echo arrives
            ap.keep_link(item, link, last_fields=talkback.apply_refs(link.last_fields, refs), applied_hash=None)
        log.info("closed the loop: %s", ", ".join(done) or "source already matches", extra=item.describe())
        return
    kind = "backlink" if op.kind == SOURCE_BACKLINK else f"zoho-comment {op.ref}"
    if op.state == SENT:  # an earlier post may have landed before its answer was lost: look first
        found = writer.find_comment(link, fields, kind)
        if found:
            item.journal.confirmed(op.kind, op.ref, result=found)
            return
    if op.kind == SOURCE_BACKLINK:
        if mapping is None or mapping.backlink is None:
            item.journal.failed(op.kind, op.ref, "the item's mapping has no `backlink:` now", attempt=False)
            return
        text = _backlink_text(ap, mapping, link)
    else:
        text = str(payload.get("text") or "")
    payload.setdefault("marker", talkback.marker(link.source, kind, link))
    _send_source_write(item, op, payload)
    with source_writes.collecting():
        ref = writer.post_comment(link, fields, text, kind)
    item.journal.confirmed(op.kind, op.ref, result=ref)
    log.info("%s posted on the source", op.kind, extra=item.describe())


def _backlink_text(ap: Acting, mapping: Mapping, link: Link) -> str:
    """The back-link's text; the issue's key (EC1-I14) is read from Zoho only when the template names it."""
    assert mapping.backlink is not None and link.zoho_issue_id is not None
    values = {
        "issue_id": link.zoho_issue_id,
        "portal": link.portal,
        "project": link.project,
        "external_id": link.external_id,
        "key": link.zoho_issue_id,
    }
    if "{key}" in mapping.backlink.template or "{key}" in mapping.backlink.url:
        issue = ap.client.get_issue(link.portal, link.project, link.zoho_issue_id) or {}
        values["key"] = str(issue.get("prefix") or issue.get("key") or link.zoho_issue_id)
    values["url"] = render(mapping.backlink.url, values)
    spec = SOURCES.get(link.source)
    see_also = spec is not None and spec.see_also and mapping.backlink.via == "see_also"
    return values["url"] if see_also else render(mapping.backlink.template, values)


# -- attachments ---------------------------------------------------------------------------------------------------


def _attachment(ap: Acting, item: ClaimedItem, op: Operation) -> None:
    """One attachment: fetched from the source's own hosts, uploaded, associated with the issue (BugTracker
    uploads onto the bug in one call). After a lost answer: an upload whose id was recorded is associated
    without a second upload, and an association (or a BugTracker upload) is looked for on the issue first."""
    link = item.link
    if link is None or not link.zoho_issue_id:
        raise Permanent("the item has no Zoho issue")
    payload = dict(op.payload or {})
    issue = link.zoho_issue_id
    uploader = ZohoAttachments(ap.client)
    ref = AttachmentRef(
        key=op.ref,
        url=str(payload.get("url") or ""),
        file_name=str(payload.get("file_name") or "attachment"),
        size=payload.get("size") if isinstance(payload.get("size"), int) else None,
        # planned before the name changed: `bugzilla_json`
        via_api=bool(payload.get("via_api", payload.get("bugzilla_json"))),
    )
    uploaded = payload.get("uploaded")
    if op.state == SENT and uploaded:
        on_issue = [i for i, _, _ in listed(uploader.on_issue(link.portal, link.project, issue))]
        if str(uploaded) in on_issue:  # associated before the answer was lost
            item.journal.confirmed(op.kind, op.ref, result=str(uploaded))
            return
    if not uploaded:
        file = fetch_for(ap.settings, link.source, payload.get("html_url"), ref, engine=item.engine)
        if op.state == SENT and not uploader.associates:  # the bug may hold the file already
            same = [
                i
                for i, name, size in listed(uploader.on_issue(link.portal, link.project, issue))
                if name == file.file_name and size in ("", str(len(file.data)))
            ]
            if same:
                item.journal.confirmed(op.kind, op.ref, result=same[0])
                _event_note(item, op, f"attachment {file.file_name} found on the Zoho bug already")
                return
        item.journal.sending(op.kind, op.ref, payload=payload)
        uploaded = uploader.upload(link.portal, link.project, issue, file)
        if not uploader.associates:
            item.journal.confirmed(op.kind, op.ref, result=str(uploaded))
            _event_note(item, op, f"attachment {file.file_name} copied to Zoho")
            return
        payload["uploaded"] = uploaded
        item.journal.sending(op.kind, op.ref, payload=payload)
        item.before_call("POST")  # the upload's id is durable before the association: never uploaded twice
    else:
        item.journal.sending(op.kind, op.ref, payload=payload)
    uploader.associate(link.portal, link.project, issue, str(uploaded))
    item.journal.confirmed(op.kind, op.ref, result=str(uploaded))
    _event_note(item, op, f"attachment {ref.file_name} copied to Zoho")
