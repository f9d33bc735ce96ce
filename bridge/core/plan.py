"""Planning an item's batch, a pure function: from the link and the due events, what this batch must do.

No database, no HTTP: `plan_batch` decides which event carries the state to apply (the newest by the
source's own time; a deletion wins a tie, and once applied it is terminal), which events are superseded or
carry nothing, and in which order comments go. `apply.py` carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.events import ZOHO_ACTIONS
from bridge.store import DONE, SKIPPED, SUPERSEDED, Link, StoredEvent

StateAction = Literal["create", "update", "delete", "skip", "tombstone"]


@dataclass(frozen=True)
class StateStep:
    event: StoredEvent  # the newest state event of the batch
    action: StateAction
    known: dict[str, Any]  # fields the event does not carry keep these values (link, then older events)
    note: str | None = None  # why nothing is sent, for "skip"
    in_doubt: bool = False  # an earlier create left an unconfirmed intent: look before creating

    @property
    def fields(self) -> dict[str, Any]:
        return {**self.known, **self.event.event.fields}


@dataclass(frozen=True)
class Plan:
    state: StateStep | None
    finish_now: list[tuple[StoredEvent, str, str | None]] = field(default_factory=list)  # (event, status, note)
    comments: list[StoredEvent] = field(default_factory=list)  # in the source's comment order
    zoho: list[StoredEvent] = field(default_factory=list)  # changes seen in Zoho, for talking back

    @property
    def worked_on(self) -> list[StoredEvent]:
        """Events this batch tries (the ones a failure counts an attempt for)."""
        ids = {e.id for e, _, _ in self.finish_now}
        out = [self.state.event] if self.state else []
        return out + [c for c in self.comments if c.id not in ids and (not self.state or c.id != self.state.event.id)]


def comment_ts(ev: StoredEvent) -> float:
    c = ev.event.comment
    ts = (c.updated_at or c.created_at) if c else None
    return ts.timestamp() if ts else ev.source_ts


def state_order(ev: StoredEvent) -> tuple[bool, float, int]:
    """Newest state last, and a deletion after every other state whatever its body's timestamps say: a source's
    deletion is terminal (a BugHerd destroy carries `deleted_at: null`; a reopen cannot follow a deletion)."""
    return (ev.action == "deleted", ev.source_ts, ev.id)


def plan_batch(
    events: list[StoredEvent], link: Link | None, *, comments_enabled: bool, create_in_doubt: bool = False
) -> Plan:
    """`create_in_doubt`: the journal holds the item's create as sent and unconfirmed."""
    zoho = [e for e in events if e.action in ZOHO_ACTIONS]
    events = [e for e in events if e.action not in ZOHO_ACTIONS]
    state_events = sorted((e for e in events if e.event.has_state), key=state_order)
    comment_events = sorted((e for e in events if e.event.comment is not None), key=lambda e: (comment_ts(e), e.id))
    finish_now: list[tuple[StoredEvent, str, str | None]] = [
        (e, SKIPPED, "the delivery carried none of the item's fields")
        for e in events
        if not e.event.has_state and e.event.comment is None
    ]
    state: StateStep | None = None
    if state_events:
        latest = state_events[-1]
        known: dict[str, Any] = dict(link.last_fields or {}) if link else {}
        applied_ts = link.last_state_ts if link else 0.0
        for older in state_events[:-1]:
            if older.source_ts >= applied_ts:
                known.update(older.event.fields)
            if older.event.comment is None:
                finish_now.append((older, SUPERSEDED, f"superseded by event {latest.id}"))
        state = _state_step(latest, link, known, create_in_doubt)
    if not comments_enabled:
        for ev in comment_events:
            if state is None or ev.id != state.event.id:
                finish_now.append((ev, DONE, "comments are off in the mapping"))
        comment_events = []
    return Plan(state=state, finish_now=finish_now, comments=comment_events, zoho=zoho)


def _state_step(latest: StoredEvent, link: Link | None, known: dict[str, Any], in_doubt: bool) -> StateStep:
    confirmed = link is not None and link.confirmed
    deleting = latest.action == "deleted"
    if link is not None and link.state == "deleted":
        return StateStep(latest, "skip", known, "the item was deleted: a deletion is terminal")
    if confirmed and link is not None and latest.source_ts < link.last_state_ts and not deleting:
        # A deletion is applied whatever its body's timestamps say (BugHerd's destroy carries none of its own).
        return StateStep(latest, "skip", known, "older than the state already in Zoho: not applied")
    if deleting and in_doubt:  # an earlier create may have reached Zoho
        return StateStep(latest, "delete", known, in_doubt=True)
    if deleting and not confirmed:  # nothing to do in Zoho, but remembered: an older redelivery must not create it
        return StateStep(latest, "tombstone", known, "deleted before it was synced: nothing to do")
    if deleting:
        return StateStep(latest, "delete", known)
    if confirmed:
        return StateStep(latest, "update", known)
    return StateStep(latest, "create", known, in_doubt=in_doubt)
