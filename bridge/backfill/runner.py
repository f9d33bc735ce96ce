"""The shared backfill runner: a source reader's batches -> stored events, parked for the feeder, with a
resumable cursor.

One pipeline: every event a backfill reads is stored with `store.record_delivery`, exactly like a webhook
(same normalizers, same dedup, latest-state-wins, comment-once), with two differences:

- its `origin` is `backfill:<id>` (status, metrics and progress tell the lanes apart);
- it is stored *parked* (`next_attempt_at = feeder.PARKED_AT`): the feeder (`bridge.backfill.feeder`) makes
  parked events due at the backfill's share of the Zoho budget, and only while the workers keep up.

The reader's cursor is written after each batch; a batch stored twice (a crash between its events and its
cursor) only yields duplicates, which cost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from bridge import store
from bridge.backfill.feeder import COMMENT_COST, CREATE_COST, UNLIMITED_RATE, UPDATE_COST, budget_rate
from bridge.events import NormalizedEvent
from bridge.settings import Settings
from bridge.store import backfill as backfills
from bridge.store import links
from bridge.store.backfill import PARKED_AT, Backfill
from bridge.store.clock import engine_now

RUNNING, INTERRUPTED, FAILED, READ = "running", "interrupted", "failed", "read"
UNFINISHED = (RUNNING, INTERRUPTED, FAILED)
# Zoho calls an event is expected to cost (bridge/core/apply.py): a new item one create (a lookup only
# when an earlier create is in doubt), a changed one an update, a comment one post. For the feeder's pace
# and the ETA; the shared rate limiter has the last word.


class BackfillError(Exception):
    """A backfill cannot start or continue (bad option, nothing to resume): the message says why."""


@dataclass(frozen=True)
class ReadEvent:
    event: NormalizedEvent
    dedup_key: str
    payload: dict[str, Any]  # the source's object, kept as the event's payload (like a webhook body)


@dataclass(frozen=True)
class Item:
    """One item's events (its state and its comments): stored in one slot, so they sync in one batch."""

    item_key: str
    events: list[ReadEvent]


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    cursor: dict[str, Any]  # where the reader continues after this batch
    read: int  # source items (issues, bugs, tasks) read in this batch
    total: int | None = None  # the source's total, when it says (BugHerd's meta.count)


class Reader(Protocol):
    source: str

    @property
    def source_calls(self) -> int: ...

    def scope(self) -> dict[str, Any]: ...

    def batches(self, cursor: dict[str, Any] | None) -> Iterator[Batch]: ...


@dataclass
class Progress:
    backfill_id: int | None
    items_read: int = 0
    events_stored: int = 0
    duplicates: int = 0
    source_calls: int = 0
    planned_zoho_calls: float = 0.0
    paced_until: float = 0.0
    total: int | None = None
    synced: int = 0  # events done or superseded (their state is in Zoho)
    failed: int = 0
    pending: int = 0
    eta_seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


def origin_of(backfill_id: int) -> str:
    return f"backfill:{backfill_id}"


def scope_key(scope: dict[str, Any]) -> str:
    return json.dumps(scope, sort_keys=True, separators=(",", ":"))


# -- the backfills table ------------------------------------------------------------------------------------


def _create(engine: Engine, source: str, scope: str) -> int:
    now = engine_now(engine)
    with engine.begin() as conn:
        return backfills.create(conn, source, scope, RUNNING, now)


def find_resumable(engine: Engine, source: str, scope: str) -> Backfill | None:
    with engine.connect() as conn:
        return backfills.find_resumable(conn, source, scope, UNFINISHED)


def _save(engine: Engine, backfill_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        backfills.save(conn, backfill_id, **values)


def event_counts(engine: Engine, backfill_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return backfills.event_counts(conn, origin_of(backfill_id))


def list_backfills(engine: Engine, limit: int = 20, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Running and finished backfills, newest first, with their events' sync progress (for status/admin).

    With `settings`, `eta_seconds` is what is left at the backfill's share of the Zoho budget."""
    rate = budget_rate(settings) if settings is not None else None
    with engine.connect() as conn:
        rows = backfills.recent(conn, limit)
    result = []
    for row in rows:
        counts = event_counts(engine, row.id)
        pending = counts.get(store.PENDING, 0)
        state = row.state
        if state == READ:
            state = "syncing" if pending else "done"
        result.append(
            {
                "id": row.id,
                "source": row.source,
                "scope": json.loads(row.scope),
                "state": state,
                "items_read": row.items_read,
                "events_stored": row.events_stored,
                "duplicates": row.duplicates,
                "source_calls": row.source_calls,
                "synced": counts.get(store.DONE, 0) + counts.get(store.SUPERSEDED, 0) + counts.get(store.SKIPPED, 0),
                "failed": counts.get(store.FAILED, 0),
                "pending": pending,
                "eta_seconds": 0.0  # nothing left (an unknown `pending` means everything, in _eta)
                if not pending
                else _eta(
                    Progress(
                        row.id,
                        events_stored=row.events_stored,
                        planned_zoho_calls=row.planned_zoho_calls,
                        pending=pending,
                    ),
                    rate,
                ),
                "last_error": row.last_error,
                "started_at": row.started_at,
                "updated_at": row.updated_at,
                "finished_at": row.finished_at,
            }
        )
    return result


# -- pacing -------------------------------------------------------------------------------------------------


def _cost(engine: Engine, item: Item) -> tuple[float, dict[int, float]]:
    """Expected Zoho calls per event of the item (index → cost), judged from its link."""
    link = _link_for_item(engine, item.events[0].event.source, item.item_key)
    costs: dict[int, float] = {}
    state_cost_given = False
    for index, read in enumerate(item.events):
        ev = read.event
        if ev.comment is not None:
            costs[index] = COMMENT_COST
            continue
        if state_cost_given:
            costs[index] = 0.0  # one state per item is applied; the rest is superseded
            continue
        state_cost_given = True
        if link is None or not link.confirmed:
            costs[index] = CREATE_COST
        elif link.last_state_ts >= ev.source_ts.timestamp():
            costs[index] = 0.0
        else:
            costs[index] = UPDATE_COST
    return sum(costs.values()), costs


def _link_for_item(engine: Engine, source: str, item_key: str) -> store.Link | None:
    with engine.connect() as conn:
        return links.for_item(conn, source, item_key)


# -- running ------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    backfill_id: int | None
    progress: Progress


def run_backfill(
    engine: Engine,
    settings: Settings,
    reader: Reader,
    *,
    resume: bool = False,
    dry_run: bool = False,
    on_batch: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Read every batch and store its events, parked for the feeder. `on_batch(progress)` after each batch.

    Ctrl-C (KeyboardInterrupt) and errors leave the row `interrupted` / `failed` with its cursor; `resume`
    continues the newest unfinished backfill of the same source and scope.
    """
    scope = scope_key(reader.scope())
    rate = budget_rate(settings)
    if dry_run:
        return _dry_run(engine, reader, rate, on_batch)
    cursor: dict[str, Any] | None = None
    backfill_id: int | None = None
    progress = Progress(None)
    if resume:
        row = find_resumable(engine, reader.source, scope)
        if row is None:
            raise BackfillError(f"no interrupted {reader.source} backfill with these options to resume")
        backfill_id = row.id
        cursor = json.loads(row.cursor) if row.cursor else None
        progress = Progress(
            backfill_id,
            items_read=row.items_read,
            events_stored=row.events_stored,
            duplicates=row.duplicates,
            source_calls=row.source_calls,
            planned_zoho_calls=row.planned_zoho_calls,
            paced_until=row.paced_until,
        )
        _save(engine, backfill_id, state=RUNNING, last_error=None)
    result = RunResult(backfill_id, progress)
    calls_before = progress.source_calls
    batches = reader.batches(cursor)
    try:
        for batch in batches:
            if backfill_id is None:
                # Created with the first answer: an unknown repository or a bad token leaves no row behind.
                backfill_id = result.backfill_id = progress.backfill_id = _create(engine, reader.source, scope)
            for item in batch.items:
                _store_item(engine, item, progress, origin_of(backfill_id))
            progress.items_read += batch.read
            progress.total = batch.total if batch.total is not None else progress.total
            progress.source_calls = calls_before + reader.source_calls
            progress.paced_until = engine_now(engine) + _eta(progress, rate)
            _save(
                engine,
                backfill_id,
                cursor=json.dumps(batch.cursor),
                items_read=progress.items_read,
                events_stored=progress.events_stored,
                duplicates=progress.duplicates,
                source_calls=progress.source_calls,
                planned_zoho_calls=progress.planned_zoho_calls,
                paced_until=progress.paced_until,
            )
            if on_batch is not None:
                on_batch(refresh(engine, progress, rate))
    except KeyboardInterrupt:
        if backfill_id is not None:
            _save(engine, backfill_id, state=INTERRUPTED, last_error="interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        if backfill_id is not None:
            _save(engine, backfill_id, state=FAILED, last_error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    if backfill_id is None:
        backfill_id = result.backfill_id = progress.backfill_id = _create(engine, reader.source, scope)
    _save(engine, backfill_id, state=READ, finished_at=engine_now(engine))
    return result


def _store_item(engine: Engine, item: Item, progress: Progress, origin: str) -> None:
    _, costs = _cost(engine, item)
    for index, read in enumerate(item.events):
        body = json.dumps(read.payload, sort_keys=True, default=str).encode()
        _, new = store.record_delivery(
            engine,
            read.event,
            dedup_key=read.dedup_key[:255],
            headers={"X-Bridge-Origin": origin},
            payload=body,
            next_attempt_at=PARKED_AT,
            origin=origin,
        )
        if new:
            progress.events_stored += 1
            progress.planned_zoho_calls += costs[index]
        else:
            progress.duplicates += 1


def _eta(progress: Progress, rate: float | None) -> float:
    """Seconds until what is stored and not yet synced is through, at the backfill's share of the budget."""
    if not progress.events_stored:
        return 0.0
    waiting = progress.pending if progress.pending else progress.events_stored
    return progress.planned_zoho_calls * min(1.0, waiting / progress.events_stored) / (rate or UNLIMITED_RATE)


def refresh(engine: Engine, progress: Progress, rate: float | None) -> Progress:
    """Fill in the sync side of the progress (from the events' statuses) and the ETA from the budget."""
    if progress.backfill_id is None:
        return progress
    counts = event_counts(engine, progress.backfill_id)
    progress.statuses = counts
    progress.synced = sum(counts.get(s, 0) for s in (store.DONE, store.SUPERSEDED, store.SKIPPED))
    progress.failed = counts.get(store.FAILED, 0)
    progress.pending = counts.get(store.PENDING, 0)
    progress.eta_seconds = _eta(progress, rate) if progress.pending else 0.0
    return progress


def _dry_run(
    engine: Engine,
    reader: Reader,
    rate: float | None,
    on_batch: Callable[[Progress], None] | None,
) -> RunResult:
    """Read the source and say what would be stored and what it would cost; store nothing."""
    progress = Progress(None)
    for batch in reader.batches(None):
        for item in batch.items:
            total, _ = _cost(engine, item)
            progress.events_stored += len(item.events)
            progress.planned_zoho_calls += total
        progress.items_read += batch.read
        progress.total = batch.total if batch.total is not None else progress.total
        progress.source_calls = reader.source_calls
        progress.eta_seconds = progress.planned_zoho_calls / rate if rate else 0.0
        if on_batch is not None:
            on_batch(progress)
    return RunResult(None, progress)


def latest_payload(engine: Engine, source: str, item_key: str) -> dict[str, Any] | None:
    """The newest stored body of an item (a backfilled object or a webhook), for readers resuming mid-way."""
    with engine.connect() as conn:
        payload = backfills.latest_payload(conn, source, item_key)
    if payload is None:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
