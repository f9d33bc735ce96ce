"""An item's story, in time order, from what the bridge stores: the answer to "why is this not in Zoho?".

One screen, for `issue-bridge explain` and `/admin/items/<source>/<item key>`: a verdict line (in Zoho as which
issue, or why not), what happens next (the next try, a budget's block, a pause), then every delivery (accepted or
repeated, by which sender), what the core decided for each event and why, each attempt, each call to Zoho and to the
source, each outside operation (planned, sent = in doubt, confirmed, failed with its reason and next try), back-links,
copied comments and attachments, and what operators did. Texts pass through `mask`: no token or secret is shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from bridge.core.service import mask
from bridge.mapping import MappingRegistry
from bridge.store import FAILED, PENDING, SUPERSEDED, StoredEvent
from bridge.store import story as rows
from bridge.store.journal import CONFIRMED, PLANNED, SENT
from bridge.store.steer import MAPPING_PREFIX, SOURCE, STOPPED

# What the core decided, named from the notes it leaves on an event (bridge/core: plan, apply, rules, talkback).
DECISIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("held comment", ("posted if it starts matching",)),
    ("kept out by when:", ("does not match the mapping's `when:`", "still does not match", "stopped matching")),
    ("older than the state in Zoho", ("older than the state already in Zoho",)),
    ("the source's echo", ("the source's echo", "a comment the bridge wrote")),
    (
        "field kept by ownership",
        ("create_only:", "Zoho's value left alone", "Zoho's value kept", "Zoho's current value unknown"),
    ),
    ("superseded", ("superseded by event",)),
    ("no change", ("no field changed", "comment already in Zoho", "nothing to apply")),
    ("deleted before it was synced", ("deleted before it was synced",)),
    ("a change seen in Zoho", ("a change seen in Zoho",)),
)
# A comment delivery carries its issue's state too (GitHub's issue_comment): what the core did with the comment is
# its decision; the notes about the fields (older than Zoho's, no field changed) are detail, not the verdict.
COMMENT_DECISIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("held comment", ("posted if it starts matching",)),
    ("comments off in the mapping", ("comments are off in the mapping",)),
    ("kept out by when:", DECISIONS[1][1]),
    ("the source's echo", ("a comment the bridge wrote",)),
    ("no change", ("comment already in Zoho",)),
    ("comment found in Zoho", ("comment found in Zoho by its marker",)),
    ("comment deleted in the source", ("not re-posted", "never synced: nothing to delete")),
    ("deleted before it was synced", ("deleted before it was synced", "nothing to comment on")),
)
COMMENT_DONE = {"comment_created": "comment copied", "comment_updated": "comment edit copied",
                "comment_deleted": "comment deleted in Zoho"}  # fmt: skip
KIND_NAMES = {
    "zoho.create": "Zoho issue create",
    "zoho.update": "Zoho issue update",
    "zoho.recheck": "Zoho re-check",
    "zoho.comment": "comment posted to Zoho",
    "zoho.attachment": "attachment copied to Zoho",
    "source.backlink": "back-link on the source",
    "source.comment": "Zoho comment copied to the source",
    "source.state": "status change on the source",
}
STATE_NAMES = {PLANNED: "planned", SENT: "sent (in doubt)", CONFIRMED: "confirmed", FAILED: "failed"}


@dataclass(frozen=True)
class Entry:
    at: float
    kind: str  # delivery | repeat | decision | attempt | zoho | source | operation | action
    title: str
    detail: str = ""
    status: str = ""  # for the page's badge: done, failed, pending, superseded, accepted, duplicate …
    event_id: int | None = None
    order: int = 0  # ties at the same time: delivery, decision, attempts, calls


@dataclass(frozen=True)
class OperationView:
    kind: str
    name: str
    ref: str
    state: str
    attempts: int
    result: str | None
    last_error: str | None
    next_at: float | None
    at: float


@dataclass
class Story:
    source: str
    item_key: str
    now: float
    link: rows.Link | None
    mapping: str | None
    verdict: str
    verdict_kind: str  # synced | not-synced | waiting | paused | failed | kept-out | deleted | unknown
    next: list[str]
    entries: list[Entry]
    operations: list[OperationView]
    comments: list[tuple[str, str, str]]  # (source comment id, Zoho comment id, state)
    events_total: int
    events_shown: int
    held: str | None = None  # why the item is paused, if it is
    facts: Any = field(default=None, repr=False)


def decision_of(ev: StoredEvent) -> str:
    """The core's decision for an event, named: applied, superseded, kept out by when:, the source's echo, …"""
    notes = ev.notes or ""
    if ev.status == FAILED:
        return "failed"
    if ev.status == PENDING:
        return "waiting" if ev.last_error else "queued"
    if ev.action in COMMENT_DONE:
        for name, needles in COMMENT_DECISIONS:
            if any(n in notes for n in needles):
                return name
        if ev.status == "done":
            return COMMENT_DONE[ev.action]
    for name, needles in DECISIONS:
        if any(n in notes for n in needles):
            return name
    if ev.status == SUPERSEDED:
        return "superseded"
    return "applied" if ev.status == "done" else ev.status


def find_items(engine: Engine, text: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return rows.find_items(conn, text)


def tell(engine: Engine, source: str, item_key: str, *, registry: MappingRegistry | None = None,
         limit: int | None = 300) -> Story:  # fmt: skip
    with engine.connect() as conn:
        facts = rows.facts(conn, source, item_key, limit=limit)
    mapping = None
    if registry is not None and facts.events:
        found = registry.for_event(facts.events[-1].event)
        mapping = os.path.basename(found.path) if found is not None else None
    entries = _entries(facts)
    entries.sort(key=lambda e: (e.at, e.order))
    held = _held(facts, mapping)
    verdict_kind, verdict = _verdict(facts, held)
    ops = [
        OperationView(
            kind=op.kind,
            name=KIND_NAMES.get(op.kind, op.kind),
            ref=op.ref,
            state=op.state,
            attempts=op.attempts,
            result=op.result,
            last_error=mask(op.last_error) if op.last_error else None,
            next_at=op.next_at,
            at=op.done_at or op.sent_at or op.planned_at,
        )
        for op in facts.operations
    ]
    comments = [(cid, c.zoho_comment_id or "-", c.state) for cid, c in sorted(facts.comment_links.items())]
    return Story(
        source=source,
        item_key=item_key,
        now=facts.now,
        link=facts.link,
        mapping=mapping,
        verdict=verdict,
        verdict_kind=verdict_kind,
        next=_next(facts, held),
        entries=entries,
        operations=ops,
        comments=comments,
        events_total=facts.events_total,
        events_shown=len(facts.events),
        held=held,
        facts=facts,
    )


# -- the timeline ------------------------------------------------------------------------------------------------------


def _entries(f: rows.Facts) -> list[Entry]:
    out: list[Entry] = []
    for ev in f.events:
        origin = f.origins.get(ev.id, "live")
        sender = f.senders.get(ev.id)
        who = origin + (f", {sender}" if sender and origin == "live" else "")
        out.append(
            Entry(
                ev.received_at,
                "delivery",
                f"delivery {ev.event_name} ({ev.action}) accepted from {who}",
                status="accepted",
                event_id=ev.id,
                order=0,
            )
        )
        decision = decision_of(ev)
        if ev.status == PENDING:
            continue
        why = ev.last_error if ev.status == FAILED else ev.notes
        at = f.processed.get(ev.id, ev.received_at)
        out.append(
            Entry(
                at, "decision", f"event {ev.id}: {decision}", mask(why or ""), status=ev.status, event_id=ev.id, order=3
            )
        )
    for a in f.attempts:
        detail = mask((a.get("detail") or "").split("\nTraceback")[0])
        out.append(
            Entry(
                float(a["started_at"]),
                "attempt",
                f"attempt #{a['number']} of event {a['event_id']}: {a.get('outcome') or 'running'}",
                detail,
                status=a.get("outcome") or "",
                event_id=int(a["event_id"]),
                order=1,
            )
        )
    for c in f.zoho_calls:
        status = "would send (dry-run)" if c.get("dry_run") else (c.get("status") or "no answer")
        answer = c.get("response_text") or ""
        out.append(
            Entry(
                float(c["at"]),
                "zoho",
                f"Zoho {c['method']} {c['path']} → {status}",
                mask(answer[:400]) if (c.get("status") or 0) >= 400 or c.get("status") is None else "",
                status=_call_status(c.get("status")),
                event_id=c.get("event_id"),
                order=2,
            )
        )
    for s in f.source_calls:
        out.append(
            Entry(
                s.at,
                "source",
                f"{f.source} {s.method} {s.path} → {s.status or 'no answer'}",
                mask(s.message or ""),
                status=_call_status(s.status),
                order=2,
            )
        )
    for r in f.repeats:
        times = "once" if r.count == 1 else f"{r.count} times"
        by = f" by {r.sender}" if r.sender else ""
        out.append(
            Entry(
                r.first_at,
                "repeat",
                f"delivery of event {r.event_id} repeated {times}{by}: answered duplicate",
                f"last at {r.last_at:.0f}" if r.count > 1 else "",
                status="duplicate",
                event_id=r.event_id,
            )
        )
    for op in f.operations:
        name = KIND_NAMES.get(op.kind, op.kind) + (f" {op.ref}" if op.ref else "")
        state = STATE_NAMES.get(op.state, op.state)
        result = f" → {op.result}" if op.result else ""
        at = op.done_at or op.sent_at or op.planned_at
        out.append(
            Entry(at, "operation", f"{name}: {state}{result}", mask(op.last_error or ""), status=op.state, order=4)
        )
    for act in f.actions:
        out.append(Entry(act.at, "action", f"operator ({act.actor}): {act.action}", mask(act.detail), order=5))
    return out


def _call_status(status: int | None) -> str:
    if status is None:
        return "failed"
    return "done" if status < 400 else "failed"


# -- the verdict and what happens next ------------------------------------------------------------------------------


def _held(f: rows.Facts, mapping: str | None) -> str | None:
    if f.held is not None:
        if f.held.why == STOPPED:
            return f"stopped by an operator (since {_t(f.held.since)})"
        return f"its mapping {f.held.why.removeprefix(MAPPING_PREFIX)} is paused (since {_t(f.held.since)})"
    for p in f.pauses:
        if p.kind == SOURCE and p.name == f.source:
            return f"the {f.source} source is paused (since {_t(p.since)})"
        if p.kind == "mapping" and p.name == mapping:
            return f"its mapping {mapping} is paused (since {_t(p.since)})"
    return None


def _latest_state(f: rows.Facts) -> StoredEvent | None:
    states = [ev for ev in f.events if ev.action in ("created", "updated", "deleted")]
    return states[-1] if states else None


def _verdict(f: rows.Facts, held: str | None) -> tuple[str, str]:
    link = f.link
    pending = [ev for ev in f.events if ev.status == PENDING]
    waiting = [ev for ev in pending if ev.last_error]
    if link is not None and link.confirmed:
        where = f"In Zoho: issue {link.zoho_issue_id} (portal {link.portal}, project {link.project})"
        if link.state == "deleted":
            where += ", deleted in the source (closed or commented as on_delete says)"
        if held:
            return "paused", f"{where}; paused: {held}, {len(pending)} event(s) wait"
        if waiting:
            return "waiting", f"{where}; {len(waiting)} change(s) wait: {mask(waiting[-1].last_error or '')}"
        failed = [ev for ev in f.events if ev.status == FAILED]
        if failed and failed[-1].id == f.events[-1].id:
            return "failed", f"{where}; its newest event {failed[-1].id} failed: {mask(failed[-1].last_error or '')}"
        if link.filter_matched is False:
            return "kept-out", f"{where}; no longer matches the mapping's `when:` (on_unmatch applied)"
        return "synced", where
    if not f.events:
        return "unknown", "Nothing is stored for this item."
    if held:
        return "paused", f"Not in Zoho yet: paused: {held}; {len(pending)} event(s) wait"
    if link is not None and link.state == "deleted":
        return "deleted", "Not in Zoho: deleted in the source before it was synced (nothing to do)"
    latest = _latest_state(f)
    if latest is not None and latest.status == FAILED:
        return "failed", f"Not in Zoho: event {latest.id} failed: {mask(latest.last_error or '')}"
    kept = [ev for ev in f.events if decision_of(ev) == "kept out by when:"]
    if (link is not None and link.filter_matched is False) or (kept and latest is not None and latest in kept):
        why = kept[-1].notes if kept else "the item does not match the mapping's `when:`"
        return "kept-out", f"Not in Zoho: kept out by the mapping's `when:`: {why}"
    if waiting:
        return "waiting", f"Not in Zoho yet: waiting: {mask(waiting[-1].last_error or '')}"
    create = next((op for op in f.operations if op.kind == "zoho.create"), None)
    if create is not None and create.state == SENT:
        return "waiting", "Not in Zoho yet: a create is in doubt: looked up by its marker before any new create"
    if pending:
        return "waiting", f"Not in Zoho yet: {len(pending)} event(s) queued"
    if link is not None and link.state == "dry-run":
        return "not-synced", "Not in Zoho: processed in dry-run only (`issue-bridge events replay --from-dry-run`)"
    failed = [ev for ev in f.events if ev.status == FAILED]
    if failed:
        return "failed", f"Not in Zoho: event {failed[-1].id} failed: {mask(failed[-1].last_error or '')}"
    return "not-synced", "Not in Zoho: no event of this item asked for an issue (comments only, or ignored)"


def _next(f: rows.Facts, held: str | None) -> list[str]:
    out: list[str] = []
    now = f.now
    pending = [ev for ev in f.events if ev.status == PENDING]
    if held:
        out.append(f"paused: {held}: nothing is sent for it; {len(pending)} event(s) wait for `issue-bridge resume`")
    lease = f.lease or {}
    if lease.get("holder") and float(lease.get("expires_at") or 0) > now:
        out.append(f"a worker holds it now ({lease['holder']}), until {_t(float(lease['expires_at']))}")
    if float(lease.get("retry_at") or 0) > now:
        at = float(lease["retry_at"])
        failures = int(lease.get("failures") or 0)
        why = f"backing off after {failures} failed attempt(s)" if failures else "waiting (a wait is not an attempt)"
        out.append(f"{why}: next try at {_t(at)} ({_in(at - now)})")
    for b in f.budgets:
        if b.blocked_until > now and (b.budget.startswith("zoho") or b.budget.startswith(f.source)) and pending:
            out.append(
                f"waiting for the {b.budget} budget until {_t(b.blocked_until)} ({_in(b.blocked_until - now)}): "
                f"{mask(b.reason or 'blocked')}"
            )
    if pending and not held:
        due = min(ev.next_attempt_at for ev in pending)
        when = "now" if due <= now else f"at {_t(due)} ({_in(due - now)})"
        error = next((ev.last_error for ev in reversed(pending) if ev.last_error), None)
        out.append(f"{len(pending)} event(s) pending, next try {when}" + (f": {mask(error)}" if error else ""))
    for op in f.operations:
        if op.state in (PLANNED, SENT) and op.next_at is not None:
            name = KIND_NAMES.get(op.kind, op.kind) + (f" {op.ref}" if op.ref else "")
            state = "in doubt, looked up" if op.state == SENT else "due"
            when = "now" if op.next_at <= now else f"at {_t(op.next_at)} ({_in(op.next_at - now)})"
            reason = f" (last: {mask(op.last_error)})" if op.last_error else ""
            out.append(f"{name}: {state} {when}{reason}")
        elif op.state == FAILED:
            name = KIND_NAMES.get(op.kind, op.kind) + (f" {op.ref}" if op.ref else "")
            out.append(f"{name}: failed: {mask(op.last_error or '')} (tried again on a resync or a mappings reload)")
    failed = [ev for ev in f.events if ev.status == FAILED]
    if failed:
        ids = " ".join(str(ev.id) for ev in failed[-3:])
        out.append(f"{len(failed)} failed event(s): `issue-bridge events replay {failed[-1].id}` (newest: {ids})")
    return out or ["nothing due: the item is up to date"]


def _t(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _in(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"in {seconds}s"
    if seconds < 7200:
        return f"in {seconds // 60}m {seconds % 60:02d}s"
    return f"in {seconds // 3600}h {seconds % 3600 // 60:02d}m"


def when(ts: float | None) -> str:
    return _t(ts) if ts else "-"
