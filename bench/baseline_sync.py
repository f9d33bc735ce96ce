"""The delivery core as it was before issue #11 (commit 1113dbc), kept only as the "before" of
bench/sync_db_ops.py so both are measured in one run on one machine. Not used by the bridge."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from bridge import sources, store
from bridge.events import NormalizedEvent, SourceUnavailable
from bridge.mapping import MappingRegistry, RoutingError, external_id_of, render_comment, translate
from bridge.mapping.model import IssueDraft, Mapping
from bridge.settings import Settings
from bridge.store import DONE, FAILED, SKIPPED, SUPERSEDED, Link, StoredEvent
from bridge.targets.zoho.client import ZohoClient
from bridge.targets.zoho.errors import ZohoPermanentError, ZohoTransientError

log = logging.getLogger("bridge.sync")
MAX_ITEM_SECONDS = 60.0  # hand the item back after this long so one busy item cannot hog a worker


@dataclass
class ItemOutcome:
    processed: int = 0
    busy: bool = False
    retry_at: float | None = None  # when the item has due work again (transient failure)
    statuses: dict[int, str] = field(default_factory=dict)


class LeaseLost(ZohoTransientError):
    """Our item lease expired and another worker took the item: stop before touching Zoho."""


class PermanentEventError(Exception):
    """This event cannot succeed as it is (mapping, routing or Zoho 4xx): it goes to `failed`."""


def item_lease(source: str, item_key: str) -> str:
    return f"item:{source}:{item_key}"


def comment_marker(source: str, comment_id: str) -> str:
    return f"(issue-bridge {source} comment {comment_id})"


class SyncService:
    def __init__(self, settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.client = client
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = settings.item_lease_seconds
        self._lease: str | None = None
        client.before_call = self._renew_lease

    def _renew_lease(self) -> None:
        if self._lease and not store.acquire_lease(self.engine, self._lease, self.holder, self.lease_ttl):
            raise LeaseLost(f"lost the lease on {self._lease}; another worker has the item")

    # -- entry point --------------------------------------------------------------------------------

    def process_item(self, source: str, item_key: str) -> ItemOutcome:
        outcome = ItemOutcome()
        lease = item_lease(source, item_key)
        if not store.acquire_lease(self.engine, lease, self.holder, self.lease_ttl):
            outcome.busy = True  # the holder takes our events too; the sweeper covers a dead holder
            return outcome
        started = time.monotonic()
        self._lease = lease
        try:
            self.registry.reload_if_changed()
            while time.monotonic() - started < MAX_ITEM_SECONDS:
                self._wait_for_quiet(source, item_key)
                pending = store.pending_for_item(self.engine, source, item_key, time.time())
                if not pending:
                    break
                if not self._process_batch(pending, outcome):
                    break  # transient failure: the rest waits for the retry
        finally:
            self._lease = None
            store.release_lease(self.engine, lease, self.holder)
        outcome.retry_at = store.next_due_for_item(self.engine, source, item_key)
        return outcome

    def _wait_for_quiet(self, source: str, item_key: str) -> None:
        """Coalesce a burst: wait until the newest event is `coalesce_ms` old (bounded)."""
        window = self.settings.coalesce_ms / 1000.0
        if window <= 0:
            return
        deadline = time.time() + 4 * window
        while time.time() < deadline:
            pending = store.pending_for_item(self.engine, source, item_key, time.time())
            if not pending:
                return
            newest = max(e.received_at for e in pending)
            quiet_for = time.time() - newest
            if quiet_for >= window:
                return
            time.sleep(window - quiet_for)

    # -- one batch of an item's events ------------------------------------------------------------------

    def _process_batch(self, pending: list[StoredEvent], outcome: ItemOutcome) -> bool:
        """Returns False when a transient failure stopped the batch."""
        source = pending[0].source
        mapping = self._mapping(pending[0].event)
        if mapping is None:
            for ev in pending:
                self._fail(ev, f"no valid mapping for source {source!r} in {self.settings.mappings_dir}", outcome)
            return True
        try:
            pending = [self._enrich(ev) for ev in pending]
        except SourceUnavailable as exc:
            self._defer(pending, ZohoTransientError(f"{source}: {exc.reason}", retry_after=exc.retry_after))
            return False
        state_events = [e for e in pending if e.event.has_state]
        comment_events = [e for e in pending if e.event.comment is not None]
        stateless = [e for e in pending if not e.event.has_state and e.event.comment is None]
        for ev in stateless:
            self._finish(ev, SKIPPED, outcome, note="the delivery carried none of the item's fields")

        link: Link | None = None
        if state_events:
            ordered = sorted(state_events, key=lambda e: (e.source_ts, e.id))
            latest = ordered[-1]
            try:
                link = self._apply_state(latest, mapping, older=ordered[:-1])
            except ZohoTransientError as exc:
                self._defer(state_events + comment_events, exc)
                return False
            except PermanentEventError as exc:
                self._fail(latest, str(exc), outcome)
                for ev in state_events:
                    if ev.id != latest.id and ev.event.comment is None:
                        self._finish(ev, SUPERSEDED, outcome, note=f"superseded by event {latest.id}")
                for ev in comment_events:
                    self._fail(ev, f"the item has no Zoho issue: {exc}", outcome)
                return True
            for ev in state_events:
                if ev.event.comment is None:
                    status = DONE if ev.id == latest.id else SUPERSEDED
                    self._finish(
                        ev,
                        status,
                        outcome,
                        note=None if status == DONE else f"superseded by event {latest.id}",
                    )

        latest_id = max(state_events, key=lambda e: (e.source_ts, e.id)).id if state_events else None
        for ev in sorted(comment_events, key=lambda e: (_comment_ts(e), e.id)):
            try:
                # The newest state event may be this comment's event: it was counted once already.
                self._apply_comment(ev, mapping, link, count_attempt=ev.id != latest_id)
            except ZohoTransientError as exc:
                self._defer([ev], exc)
                return False
            except PermanentEventError as exc:
                self._fail(ev, str(exc), outcome)
                continue
            self._finish(ev, DONE, outcome)
        return True

    def _enrich(self, ev: StoredEvent) -> StoredEvent:
        """Ask the source for what the delivery lacked (a private Bugzilla bug), when it can be asked."""
        if ev.event.has_state:
            return ev
        completed = sources.enrich(self.settings, ev.event, self.engine)
        if completed is ev.event:
            return ev
        store.replace_event(self.engine, ev.id, completed)
        return dataclasses.replace(ev, event=completed)

    def _mapping(self, event: NormalizedEvent) -> Mapping | None:
        """The mapping file for the event: the first of its source whose `match:` takes its source project."""
        return self.registry.for_event(event)

    def _draft(self, ev: StoredEvent, mapping: Mapping, known: dict[str, Any] | None = None) -> IssueDraft:
        try:
            return translate(mapping, ev.event, known)
        except RoutingError as exc:
            raise PermanentEventError(str(exc)) from None

    # -- state --------------------------------------------------------------------------------------------

    def _apply_state(self, ev: StoredEvent, mapping: Mapping, older: list[StoredEvent]) -> Link | None:
        """Create or update the item's Zoho issue from the newest state; returns the link."""
        self.client.event_id = ev.id
        attempt_id, _ = store.start_attempt(self.engine, ev.id)
        try:
            link = self._apply_state_inner(ev, mapping, older)
        except ZohoTransientError as exc:
            store.finish_attempt(self.engine, attempt_id, "retry", exc.reason)
            raise
        except (ZohoPermanentError, PermanentEventError) as exc:
            store.finish_attempt(self.engine, attempt_id, "failed", str(exc))
            raise PermanentEventError(str(exc)) from None
        store.finish_attempt(self.engine, attempt_id, "done")
        return link

    def _apply_state_inner(self, ev: StoredEvent, mapping: Mapping, older: list[StoredEvent]) -> Link | None:
        external_id = external_id_of(mapping, ev.event.fields)
        link = store.get_link(self.engine, ev.source, external_id)
        # Fields an event does not carry keep their last known value (a Bugzilla description arrives
        # once, as comment 0); the batch's older events count too, oldest first, if not outdated.
        known: dict[str, Any] = dict(link.last_fields or {}) if link else {}
        applied_ts = link.last_state_ts if link else 0.0
        for older_event in older:
            if older_event.source_ts >= applied_ts:
                known.update(older_event.event.fields)
        draft = self._draft(ev, mapping, known)
        for note in draft.notes:
            store.add_note(self.engine, ev.id, note)
        fields = {**known, **ev.event.fields}
        deleting = ev.action == "deleted"
        if link is not None and link.confirmed and ev.source_ts < link.last_state_ts:
            store.add_note(self.engine, ev.id, "older than the state already in Zoho: not applied")
            return link
        if deleting and (link is None or not link.confirmed):
            store.add_note(self.engine, ev.id, "deleted before it was synced: nothing to do")
            return link
        body_hash = _hash(self.client.issue_body(draft, creating=False)) if not deleting else "deleted"
        if link is None or not link.confirmed:
            self._ensure_issue(ev, draft)
            store.record_state_applied(
                self.engine,
                source=ev.source,
                external_id=draft.external_id,
                state_ts=ev.source_ts,
                applied_hash=body_hash,
                fields=fields,
            )
            return store.get_link(self.engine, ev.source, draft.external_id)
        assert link.zoho_issue_id is not None
        if deleting:
            self._apply_delete(ev, mapping, draft, link.zoho_issue_id)
            store.record_state_applied(
                self.engine,
                source=ev.source,
                external_id=draft.external_id,
                state_ts=ev.source_ts,
                applied_hash="deleted",
                state="deleted",
            )
            return link
        if body_hash != link.applied_hash:
            self.client.update_issue(draft, link.zoho_issue_id)
        else:
            store.add_note(self.engine, ev.id, "no field changed: no Zoho call")
        store.record_state_applied(
            self.engine,
            source=ev.source,
            external_id=draft.external_id,
            state_ts=ev.source_ts,
            applied_hash=body_hash,
            fields=fields,
        )
        return link

    def _ensure_issue(self, ev: StoredEvent, draft: IssueDraft) -> str:
        """Exactly one Zoho issue per item: write the intent, look the item up on Zoho, then create."""
        store.write_link_intent(
            self.engine,
            source=ev.source,
            external_id=draft.external_id,
            item_key=ev.item_key,
            portal=draft.portal,
            project=draft.project,
        )
        issue_id = self.client.find_issue(draft)  # before #11: a lookup before every create
        if issue_id is not None:
            self.client.update_issue(draft, issue_id)  # adopt it and bring it to this state
            store.add_note(self.engine, ev.id, f"found existing Zoho issue {issue_id} by its external id")
        else:
            issue_id = self.client.create_issue(draft)
        store.confirm_link(self.engine, source=ev.source, external_id=draft.external_id, zoho_issue_id=issue_id)
        return issue_id

    def _apply_delete(self, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, issue_id: str) -> None:
        if mapping.on_delete == "close":
            self.client.close_issue(draft, issue_id, mapping.closed_status)
        elif mapping.on_delete == "comment":
            self.client.add_comment(
                draft.portal, draft.project, issue_id, f"The {ev.event.item_kind} was deleted in {ev.source}."
            )
        else:
            store.add_note(self.engine, ev.id, "on_delete is ignore: nothing done")

    # -- comments -------------------------------------------------------------------------------------------

    def _apply_comment(
        self, ev: StoredEvent, mapping: Mapping, link: Link | None, *, count_attempt: bool = True
    ) -> None:
        self.client.event_id = ev.id
        comment = ev.event.comment
        assert comment is not None
        if not mapping.comments:
            store.add_note(self.engine, ev.id, "comments are off in the mapping")
            return
        link = link or store.get_link(self.engine, ev.source, external_id_of(mapping, ev.event.fields))
        if link is None or not link.confirmed or not link.zoho_issue_id:
            raise PermanentEventError("the item has no Zoho issue yet")
        attempt_id = store.start_attempt(self.engine, ev.id)[0] if count_attempt else None
        try:
            self._apply_comment_inner(ev, mapping, link)
        except ZohoTransientError as exc:
            if attempt_id is not None:
                store.finish_attempt(self.engine, attempt_id, "retry", exc.reason)
            raise
        except ZohoPermanentError as exc:
            if attempt_id is not None:
                store.finish_attempt(self.engine, attempt_id, "failed", str(exc))
            raise PermanentEventError(str(exc)) from None
        if attempt_id is not None:
            store.finish_attempt(self.engine, attempt_id, "done")

    def _apply_comment_inner(self, ev: StoredEvent, mapping: Mapping, link: Link) -> None:
        comment = ev.event.comment
        assert comment is not None and link.zoho_issue_id is not None
        portal, project, issue_id = link.portal, link.project, link.zoho_issue_id
        needle = comment_marker(ev.source, comment.id)
        text = f"{render_comment(mapping, ev.event)}\n\n{needle}"
        ts = _comment_ts(ev)
        existing = store.get_comment_link(self.engine, ev.source, link.external_id, comment.id)
        key = {"source": ev.source, "external_id": link.external_id, "comment_id": comment.id}
        if ev.action == "comment_deleted":
            if existing and existing.zoho_comment_id and existing.state != "deleted":
                self.client.delete_comment(portal, project, issue_id, existing.zoho_comment_id)
                store.save_comment_link(
                    self.engine,
                    **key,
                    zoho_comment_id=existing.zoho_comment_id,
                    state="deleted",
                    last_ts=ts,
                    body_hash=None,
                )
            else:
                store.add_note(self.engine, ev.id, "comment was never synced: nothing to delete")
            return
        body_hash = _hash(text)
        if existing and existing.state == "posted" and existing.zoho_comment_id:
            if existing.body_hash == body_hash or ts < existing.last_ts:
                store.add_note(self.engine, ev.id, "comment already in Zoho")
                return
            self.client.update_comment(portal, project, issue_id, existing.zoho_comment_id, text)
            store.save_comment_link(
                self.engine,
                **key,
                zoho_comment_id=existing.zoho_comment_id,
                state="posted",
                last_ts=ts,
                body_hash=body_hash,
            )
            return
        if existing and existing.state == "deleted":
            store.add_note(self.engine, ev.id, "comment was deleted in the source: not re-posted")
            return
        zoho_comment_id = None
        if existing is not None:  # an earlier attempt may have posted it before dying: look first
            zoho_comment_id = self.client.find_comment(portal, project, issue_id, needle)
        else:
            store.write_comment_intent(self.engine, **key)
        if zoho_comment_id is None:
            zoho_comment_id = self.client.add_comment(portal, project, issue_id, text)
        store.save_comment_link(
            self.engine,
            **key,
            zoho_comment_id=zoho_comment_id,
            state="posted",
            last_ts=ts,
            body_hash=body_hash,
        )

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _finish(self, ev: StoredEvent, status: str, outcome: ItemOutcome, note: str | None = None) -> None:
        store.finish_event(self.engine, ev.id, status)
        if note:
            store.add_note(self.engine, ev.id, note)
        outcome.processed += 1
        outcome.statuses[ev.id] = status
        log.info("event %s", status, extra={"event_id": ev.id, "item": ev.item_key, "source": ev.source})

    def _fail(self, ev: StoredEvent, reason: str, outcome: ItemOutcome) -> None:
        store.finish_event(self.engine, ev.id, FAILED, error=reason)
        outcome.processed += 1
        outcome.statuses[ev.id] = FAILED
        log.error("event failed: %s", reason, extra={"event_id": ev.id, "item": ev.item_key, "source": ev.source})

    def _defer(self, evs: list[StoredEvent], exc: ZohoTransientError) -> None:
        for ev in evs:
            fresh = store.get_event(self.engine, ev.id)
            attempts = fresh.attempts if fresh else ev.attempts
            if attempts >= self.settings.max_attempts:
                store.finish_event(self.engine, ev.id, FAILED, error=f"gave up after {attempts} attempts: {exc.reason}")
                continue
            backoff = min(
                self.settings.retry_max_seconds,
                self.settings.retry_base_seconds * (2 ** max(0, attempts - 1)),
            )
            delay = max(exc.retry_after or 0.0, backoff * random.uniform(0.5, 1.0))
            store.defer_event(self.engine, ev.id, at=time.time() + delay, error=exc.reason)
        log.warning("zoho transient failure, retrying later: %s", exc.reason, extra={"item": evs[0].item_key})


def _comment_ts(ev: StoredEvent) -> float:
    c = ev.event.comment
    ts = (c.updated_at or c.created_at) if c else None
    return ts.timestamp() if ts else ev.source_ts


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def describe(event: NormalizedEvent) -> str:
    return f"{event.source} {event.item_kind} {event.item_key} {event.event_name}"
