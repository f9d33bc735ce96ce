"""The delivery core's loop: claim an item, plan and apply its due events, and one failure boundary.

Per item: claim (one transaction that also reads the due work), then per Zoho call one fenced step, then
one fenced finish that also reads what arrived meanwhile (or releases the item). Any exception while an
item is processed lands in `_failed`: each unfinished event of the batch gets an attempt with the reason
and a masked traceback, the item backs off as one (by the database's clock), and an event past
`MAX_ATTEMPTS` or the maximum age ends `failed`. A rate-limit wait is not an attempt.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import re
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from bridge import sources
from bridge.core import retry, sidework, talkback
from bridge.core.apply import Applier, PermanentEventError
from bridge.core.claim import ClaimedItem
from bridge.core.journal import ALL_KINDS, SENT, SIDE_KINDS, ZOHO_CREATE, ZOHO_UPDATE
from bridge.core.plan import Plan, plan_batch
from bridge.events import ZOHO_ACTIONS, NormalizedEvent
from bridge.mapping import MappingRegistry
from bridge.mapping.model import Mapping
from bridge.outbound.errors import ConfigError, LimitWait, OutboundError, Permanent, Transient
from bridge.settings import Settings
from bridge.sources.http import CALLING_FOR
from bridge.store import DONE, FAILED, SUPERSEDED, StoredEvent, outcomes, steer
from bridge.store import claims as claim_rows
from bridge.store import journal as journal_rows
from bridge.store.calllog import ZohoCall
from bridge.store.claims import FORWARD_KINDS, Batch, ClaimLost, Refused
from bridge.store.clock import db_now
from bridge.store.links import DRY_RUN
from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge.sync")
NO_MAPPING = "no valid mapping for source"  # an event's reason while its source has no mapping (it waits)
CONFIG_WAIT_SECONDS = 300.0  # an item held up by a refused configuration looks again this often
MAX_ITEM_SECONDS = 60.0  # hand the item back after this long so one busy item cannot hog a worker
_SECRETS = re.compile(
    r"(?i)(oauthtoken\s+|access_token[\"'=:\s]+|refresh_token[\"'=:\s]+|client_secret[\"'=:\s]+)[^\s\"'&,]+"
)


@dataclass
class ItemOutcome:
    processed: int = 0
    busy: bool = False
    lost: bool = False  # the claim was lost mid-way: another worker has the item
    retry_at: float | None = None  # when the item has due work again (database time)
    db_now: float | None = None  # the database's time when retry_at was read, to turn it into a countdown
    statuses: dict[int, str] = field(default_factory=dict)


def mask(text: str) -> str:
    """Tracebacks are stored and shown: no token or secret goes with them."""
    return _SECRETS.sub(lambda m: m.group(1) + "***", text)


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, OutboundError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def retry_failed_side_work(engine: Engine, why: str) -> int:
    """Failed side work (back-links, copied comments, attachments) planned again: its cause may be gone (a token
    set, a mapping fixed). The sweeper wakes the items; each operation starts its attempts over."""
    with engine.begin() as conn:
        retried = journal_rows.retry_failed(conn, db_now(conn), kinds=SIDE_KINDS)
    if retried:
        log.info("%s: %s failed side operations planned again", why, retried)
    return retried


class SyncService:
    def __init__(self, settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.client = client
        self.applier = Applier(settings, client)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = settings.item_lease_seconds
        self.policy = retry.RetryPolicy(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            max_age_seconds=settings.event_max_age_seconds,
        )
        self._item: ClaimedItem | None = None
        self._mappings_seen: tuple[int, ...] | None = None  # the mappings in force when last looked at
        client.before_call = self._before_zoho_call
        client.log_call = self._log_zoho_call

    def _before_zoho_call(self, method: str = "POST") -> None:
        """The fence before every Zoho call: the write it is marked sent, what the last call achieved committed,
        or stop if the claim is lost."""
        if self._item is not None:
            self._item.before_call(method)

    def _log_zoho_call(self, call: ZohoCall) -> bool:
        """A call made for the claimed item is logged with its next fenced step (no transaction of its own)."""
        if self._item is None:
            return False
        self._item.log_call(call)
        return True

    def reload_mappings(self) -> list[tuple[str, str]]:
        """Mapping edits take effect at once; a change plans failed side work again (its cause may be gone) and
        makes the items waiting for a mapping due now. Returns those items (the caller wakes them)."""
        self.registry.reload_if_changed()
        seen = tuple(sorted(id(m) for m in self.registry.all()))
        before, self._mappings_seen = self._mappings_seen, seen
        if before == seen:
            return []
        if before is not None:  # not this process's first look
            retry_failed_side_work(self.engine, "mappings changed")
        sources = sorted({m.source for m in self.registry.all()})
        if not sources:
            return []
        with self.engine.begin() as conn:
            woken = claim_rows.wake_waiting(conn, db_now(conn), NO_MAPPING, sources)
        if woken:
            log.info("mappings changed: %s item(s) waiting for a mapping are due again", len(woken))
        return woken

    # -- entry point --------------------------------------------------------------------------------

    def process_item(self, source: str, item_key: str) -> ItemOutcome:
        outcome = ItemOutcome()
        claiming = time.monotonic()
        claimed = claim_rows.claim_item(self.engine, source, item_key, self.holder, self.lease_ttl)
        if isinstance(claimed, Refused):
            outcome.busy = claimed.busy  # the holder takes our events too; the sweeper covers a dead holder
            outcome.retry_at, outcome.db_now = claimed.retry_at, claimed.now
            return outcome
        claim, batch = claimed
        item = ClaimedItem(self.engine, claim, batch, renewed=claiming, dry_run=bool(self.client.dry_run))
        self._item = item
        started = time.monotonic()
        calling_for = CALLING_FOR.set((source, item_key))  # its source calls go in its story
        try:
            self.reload_mappings()
            while True:
                if self._held(item, outcome):
                    break  # paused: nothing is sent for the item until `issue-bridge resume`
                batch = self._wait_for_quiet(item)
                if self._idle(batch):
                    item.step(self._release)
                    break
                if not self._run_batch(item, outcome):
                    break  # failed or waiting: the item was released with its back-off
                more = time.monotonic() - started < MAX_ITEM_SECONDS
                nxt = item.step(self._read_or_release if more else self._release)
                if nxt is None:
                    break
                item.next_batch(nxt)
        except ClaimLost as exc:
            outcome.lost = True
            log.warning("%s: stopping without touching Zoho", exc, extra={"item": item_key, "source": source})
            return outcome
        finally:
            CALLING_FOR.reset(calling_for)
            self._item = None
            self.client.event_id = None
            _flush_calls(item)
        outcome.retry_at, outcome.db_now = item.next_due, item.now
        return outcome

    def _held(self, item: ClaimedItem, outcome: ItemOutcome) -> bool:
        """The item is paused (its source, its mapping file, or it alone): given back untouched, its events still
        pending. The sweeper skips held items, and `resume` wakes them. An item of a paused mapping file is
        held here, the first time a worker claims it."""
        batch, why = item.batch, item.batch.held
        if why is None and batch.paused_mappings and (batch.events or batch.work_due):
            mapping = self._mapping(batch)
            name = os.path.basename(mapping.path) if mapping is not None else ""
            if name in batch.paused_mappings:
                why = steer.MAPPING_PREFIX + name
                source, key = item.claim.source, item.claim.item_key
                item.later(lambda conn, _now: steer.hold(conn, source, key, steer.MAPPING_PREFIX + name))
        if why is None:
            return False
        item.step(self._release)
        item.next_due = None  # nothing is rescheduled: `resume` wakes it
        log.info("item paused (%s): left alone", why, extra={"item": item.claim.item_key, "source": item.claim.source})
        return True

    def _release(self, conn: Connection, now: float) -> None:
        claim = self._claim()
        claim_rows.release(conn, claim, retry_at=self._dry_run_pause(now))
        self._remember_next_due(conn, claim)

    def _idle(self, batch: Batch) -> bool:
        """Nothing to do: no events, and no re-check this run may make (dry-run leaves a real run's re-check
        to the real run: it neither calls Zoho for it nor clears it)."""
        return batch.empty or (self.client.dry_run and not batch.events and not batch.unreadable)

    def _dry_run_pause(self, now: float) -> float:
        """In dry-run an item with a real run's re-check due stays due: it is not claimed again for a while,
        so the sweeper's wake-ups cost one refused claim, never a loop."""
        assert self._item is not None
        if self.client.dry_run and self._item.batch.recheck_due:
            return now + max(1.0, self.settings.duplicate_recheck_seconds)
        return 0.0

    def _remember_next_due(self, conn: Connection, claim: claim_rows.Claim) -> None:
        assert self._item is not None
        self._item.next_due = claim_rows.next_due(conn, claim.source, claim.item_key)

    def _read_or_release(self, conn: Connection, now: float) -> Batch | None:
        """In the finishing step: what arrived meanwhile, or give the item back if nothing did. Two small reads
        (when its events and operations are due) decide; the whole batch is read only when something is due."""
        claim = self._claim()
        events_at, ops_at = claim_rows.due_times(conn, claim.source, claim.item_key)
        events_due = events_at is not None and events_at <= now
        ops_due = ops_at is not None and ops_at <= now and not self.client.dry_run  # see _idle
        if events_due or ops_due:
            batch = claim_rows.read_batch(conn, claim, now)
            if not self._idle(batch):
                return batch
        claim_rows.release(conn, claim, retry_at=self._dry_run_pause(now))
        assert self._item is not None
        self._item.next_due = claim_rows.earliest(events_at, ops_at)  # what next_due would read: same transaction
        return None

    def _claim(self) -> claim_rows.Claim:
        assert self._item is not None
        return self._item.claim

    def _wait_for_quiet(self, item: ClaimedItem) -> Batch:
        """Coalesce a burst: wait until the newest event is `coalesce_ms` old by the database's clock (bounded)."""
        window = self.settings.coalesce_ms / 1000.0
        batch = item.batch
        waited = 0.0
        while window > 0 and batch.events and waited < 4 * window:
            quiet_for = batch.now - max(e.received_at for e in batch.events)
            if quiet_for >= window:
                break
            pause = min(window - quiet_for, 4 * window - waited)
            time.sleep(pause)
            waited += pause
            with self.engine.connect() as conn:
                batch = claim_rows.read_batch(conn, item.claim)
            item.next_batch(batch)
        return batch

    # -- one batch ------------------------------------------------------------------------------------

    def _run_batch(self, item: ClaimedItem, outcome: ItemOutcome) -> bool:
        """Apply the batch; False when it failed or must wait (the item is then released with its back-off)."""
        batch = item.batch
        started = batch.now
        for event_id, why in batch.unreadable:
            item.later(functools.partial(_fail_unreadable, event_id=event_id, why=why))
            outcome.statuses[event_id] = FAILED
        plan: Plan | None = None
        try:
            mapping = self._mapping(batch)
            source = item.claim.source
            if mapping is None and not self.registry.for_source(source) and (batch.events or batch.work_due):
                # Nothing configured for the source yet (or its file refused): the deliveries wait for a mapping,
                # as /readyz says; a mapping file appearing wakes them (`reload_mappings`).
                raise ConfigError(f"{NO_MAPPING} {source!r} in {self.settings.mappings_dir}: waiting for one")
            if mapping is None:
                for op in batch.due(*ALL_KINDS):  # nothing to carry them out with: parked, never a spin
                    item.journal.failed(op.kind, op.ref, "no valid mapping for the item's source", attempt=False)
                for ev in batch.events:
                    self._end(
                        item,
                        ev,
                        FAILED,
                        outcome,
                        f"{NO_MAPPING} {ev.source!r} in {self.settings.mappings_dir}",
                    )
                return True
            self._doubts(item)
            recheck_event = batch.latest_event or (batch.events[-1].event if batch.events else None)
            if batch.recheck_due and recheck_event is not None and not self.client.dry_run:
                self.applier.recheck(item, mapping, recheck_event)
            if item.link is not None and item.link.state == DRY_RUN:  # dry-run's links are dry-run's only
                item.link = dataclasses.replace(item.link, state="linked") if self.client.dry_run else None
            events = [self._enrich(item, ev) for ev in batch.events]
            create_in_doubt = item.journal.in_doubt(ZOHO_CREATE) is not None and not self.client.dry_run
            plan = plan_batch(events, item.link, comments_enabled=mapping.comments, create_in_doubt=create_in_doubt)
            self._apply(item, plan, mapping, outcome)
            sidework.run_due(self.applier, item, mapping, busy=lambda: self._forward_busy(item))
            return True
        except ClaimLost:
            raise
        except (LimitWait, ConfigError) as exc:  # a budget, a throttle, a refused configuration: a wait
            self._waiting(item, exc, outcome)
            return False
        except Exception as exc:  # the one failure boundary: whatever went wrong is an attempt
            self._failed(item, exc, started, outcome)
            return False

    def _doubts(self, item: ClaimedItem) -> None:
        """Writes to the issue found sent and unconfirmed (an answer lost, a worker that died or lost the claim).
        An update may still land after newer ones: the issue is read again once it cannot be in flight. A create
        or a comment is resolved by its own lookup when its event is tried again. Side work resolves its own."""
        if self.client.dry_run:
            return
        # Parked ones (next_at None) have their resolution in hand already (a re-check planned by the attempt
        # that sent them); the others were left by a claim that ended without confirming (a takeover).
        for op in [o for o in item.batch.ops if o.kind in FORWARD_KINDS and o.state == SENT and o.next_at is not None]:
            if op.kind == ZOHO_UPDATE:
                window = self.settings.duplicate_recheck_seconds + self.settings.item_lease_seconds
                self.applier.recheck_later(item, max(0.0, (op.sent_at or item.now) + window - item.now))
            item.journal.park(op)

    def _forward_busy(self, item: ClaimedItem) -> bool:
        """Live deliveries of other items are due now: side work waits (forward sync goes first)."""
        return outcomes.live_due_besides(self.engine, item.claim.source, item.claim.item_key)

    def _mapping(self, batch: Batch) -> Mapping | None:
        first = batch.events[0].event if batch.events else batch.latest_event
        return self.registry.for_event(first) if first is not None else None

    def _enrich(self, item: ClaimedItem, ev: StoredEvent) -> StoredEvent:
        """Ask the source for what the delivery lacked (a private Bugzilla bug), when it can be asked."""
        if ev.event.has_state or ev.action in ZOHO_ACTIONS:
            return ev
        completed = sources.enrich(self.settings, ev.event, self.engine)
        if completed is ev.event:
            return ev
        item.later(lambda conn, _now: outcomes.replace_event(conn, ev.id, completed))
        return _with_event(ev, completed)

    def _apply(self, item: ClaimedItem, plan: Plan, mapping: Mapping, outcome: ItemOutcome) -> None:
        # Superseded events end only once the state that supersedes them is applied (or failed for good):
        # if the attempt fails and is retried, they stay in the batch and their fields with it.
        superseded = [(ev, note) for ev, status, note in plan.finish_now if status == SUPERSEDED]
        for ev, status, note in plan.finish_now:
            if status != SUPERSEDED:
                self._end(item, ev, status, outcome, note)
        state_failed: str | None = None
        if plan.state is not None:
            step = plan.state
            try:
                self.applier.apply_state(item, step, mapping)
            except ConfigError:
                raise  # a configuration problem is not this event's fault: it waits, never failed at once
            except (Permanent, PermanentEventError) as exc:
                state_failed = reason_of(exc)
                self._attempted(item, step.event, "failed", state_failed)
                self._end(item, step.event, FAILED, outcome, state_failed)
            else:
                self._attempted(item, step.event, "done")
                if step.event.event.comment is None:
                    self._end(item, step.event, DONE, outcome, None)
        for ev, note in superseded:
            self._end(item, ev, SUPERSEDED, outcome, note)
        for ev in plan.comments:
            if ev.id in item.finished:
                continue
            try:
                self.applier.apply_comment(item, ev, mapping)
            except ConfigError:
                raise
            except (Permanent, PermanentEventError) as exc:
                reason = reason_of(exc)
                if state_failed and (item.link is None or not item.link.confirmed):
                    reason = f"the item has no Zoho issue: {state_failed}"
                if plan.state is None or ev.id != plan.state.event.id:
                    self._attempted(item, ev, "failed", reason)
                self._end(item, ev, FAILED, outcome, reason)
                continue
            if plan.state is None or ev.id != plan.state.event.id:
                self._attempted(item, ev, "done")
            self._end(item, ev, DONE, outcome, None)
        for ev in plan.zoho:  # a change seen in Zoho: what the source should do is planned (side work)
            self.client.event_id = ev.id
            try:
                note = talkback.zoho_changed(self.applier, item, ev, mapping)
            except ConfigError:
                raise
            except (Permanent, PermanentEventError) as exc:
                note = f"not looked at: {reason_of(exc)}"
            self._end(item, ev, DONE, outcome, note or None)

    # -- bookkeeping -------------------------------------------------------------------------------------

    def _end(self, item: ClaimedItem, ev: StoredEvent, status: str, outcome: ItemOutcome, note: str | None) -> None:
        self.applier.finish(item, ev, status, note)
        outcome.processed += 1
        outcome.statuses[ev.id] = status
        if status == FAILED:
            log.error("event failed: %s", note, extra={"event_id": ev.id, "item": ev.item_key, "source": ev.source})

    def _attempted(self, item: ClaimedItem, ev: StoredEvent, result: str, detail: str = "") -> None:
        started = item.batch.now
        item.later(
            lambda conn, now: outcomes.count_attempt(
                conn, ev.id, started_at=started, now=now, outcome=result, detail=detail
            )
        )

    def _unfinished(self, item: ClaimedItem) -> list[StoredEvent]:
        return [ev for ev in item.batch.events if ev.id not in item.finished]

    def _failed(self, item: ClaimedItem, exc: Exception, started: float, outcome: ItemOutcome) -> None:
        reason = reason_of(exc)
        detail = mask(f"{reason}\n{traceback.format_exc()}")
        retry_after = getattr(exc, "retry_after", None)
        events = self._unfinished(item)
        policy, jitter = self.policy, random.random()  # noqa: S311 - jitter, not security
        transient = isinstance(exc, Transient)
        if not self.client.dry_run:  # an update this attempt sent and never learned the fate of may land late
            for kind, ref in item.journal.sent_now:
                op = item.journal.get(kind, ref)
                if kind == ZOHO_UPDATE and op is not None and op.state == SENT:
                    self.applier.recheck_later(item)
                    item.journal.park(op)
        recheck = next(iter(item.batch.due("zoho.recheck")), None)

        def record(conn: Connection, now: float) -> None:
            claim = item.claim
            failures = claim_rows.item_failures(conn, claim) + 1
            # A re-check that keeps failing must not spin: it ends after MAX_ATTEMPTS, or (an outage being a
            # wait) once it is as old as an event may grow.
            too_old = recheck is not None and now - recheck.planned_at > policy.max_age_seconds
            if recheck is not None and (too_old or (not transient and failures >= policy.max_attempts)):
                log.error("re-check given up after %s failures: %s", failures, reason, extra={"item": claim.item_key})
                journal_rows.give_up(conn, claim.source, claim.item_key, "zoho.recheck", f"given up: {reason}", now)
            retry_at = now + retry.backoff(policy, failures, retry_after=retry_after, jitter=jitter)
            for ev in events:
                attempts = outcomes.count_attempt(
                    conn, ev.id, started_at=started, now=now, outcome="retry", detail=detail
                )
                if transient:  # an outage is a wait: only the event's age can end it
                    verdict = retry.after_wait(policy, received_at=ev.received_at, now=now, reason=reason)
                else:
                    verdict = retry.after_attempt(
                        policy, attempts=attempts, received_at=ev.received_at, now=now, reason=reason
                    )
                if verdict.give_up:
                    outcomes.finish(conn, ev.id, FAILED, now, error=verdict.reason)
                    outcome.statuses[ev.id] = FAILED
                else:
                    outcomes.defer(conn, ev.id, at=retry_at, error=reason)
            outcomes.defer_item(conn, claim.source, claim.item_key, at=retry_at)
            claim_rows.release(conn, claim, retry_at=retry_at, failures=failures)
            self._remember_next_due(conn, claim)

        item.step(record)
        log.warning(
            "item failed, retrying later: %s", reason, extra={"item": item.claim.item_key, "source": item.claim.source}
        )

    def _waiting(self, item: ClaimedItem, exc: LimitWait | ConfigError, outcome: ItemOutcome) -> None:
        """A budget, a throttle or a refused configuration says wait: the item waits, no attempt is counted
        (an event can still grow too old). A configuration error waits CONFIG_WAIT_SECONDS, reported once
        by the client that met it, so a fixed setting is picked up without anyone replaying anything."""
        events = self._unfinished(item)
        default = CONFIG_WAIT_SECONDS if isinstance(exc, ConfigError) else 1.0
        policy, wait = self.policy, max(1.0, exc.retry_after or default)
        reason = reason_of(exc)

        def record(conn: Connection, now: float) -> None:
            claim = item.claim
            for ev in events:
                verdict = retry.after_wait(policy, received_at=ev.received_at, now=now, reason=reason)
                if verdict.give_up:
                    outcomes.finish(conn, ev.id, FAILED, now, error=verdict.reason)
                    outcome.statuses[ev.id] = FAILED
                else:  # the reason stays visible on the event while it waits (status, events list)
                    outcomes.defer(conn, ev.id, at=now + wait, error=reason)
            outcomes.defer_item(conn, claim.source, claim.item_key, at=now + wait)
            claim_rows.release(conn, claim, retry_at=now + wait, failures=claim_rows.item_failures(conn, claim))
            self._remember_next_due(conn, claim)

        item.step(record)
        log.info("item waits %.1fs: %s", wait, reason_of(exc), extra={"item": item.claim.item_key})


def _flush_calls(item: ClaimedItem) -> None:
    """Log rows of calls that no fenced step took: written on their own; a failure here must not hide why the
    item stopped (the journal holds what was sent; the log row is bookkeeping)."""
    try:
        item.flush_calls()
    except Exception:
        log.warning("could not write the Zoho call log", exc_info=True, extra=item.describe())


def _with_event(ev: StoredEvent, event: NormalizedEvent) -> StoredEvent:
    return dataclasses.replace(ev, event=event)


def describe(event: NormalizedEvent) -> str:
    return f"{event.source} {event.item_kind} {event.item_key} {event.event_name}"


__all__ = ["ItemOutcome", "SyncService", "describe", "mask"]


def _fail_unreadable(conn: Connection, now: float, *, event_id: int, why: str) -> None:
    outcomes.finish(conn, event_id, FAILED, now, error=why)
