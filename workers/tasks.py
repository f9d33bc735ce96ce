"""Thin tasks: read ids, call the sync service, schedule what is due next. Logic lives in `bridge`.

The periodic jobs are quiet when they find nothing: Celery's own lines about them (sent, received, succeeded)
are DEBUG, and a job logs at INFO only what it did. The backfill lane's feeder is not periodic: it runs every
second while a backfill has parked events, as a chain of tasks (started by `backfill` or the stale sweeper).
"""

from __future__ import annotations

import logging
import math
import time
import uuid

from celery import shared_task
from celery.signals import worker_process_init

from bridge import store
from bridge.backfill import feeder
from bridge.events import SourceUnavailable
from bridge.process.broker import (
    QUIET_TASKS,
    TASK_FEED_BACKFILL,
    TASK_POLL_SOURCE,
    TASK_PRUNE,
    TASK_REQUEUE_STALE,
    TASK_SYNC_ITEM,
    TASK_SYNC_ITEMS,
    TASK_WAKE_ITEMS,
)
from bridge.process.runtime import get_runtime
from bridge.store import claims, counters

log = logging.getLogger("bridge.worker")


class QuietHousekeeping(logging.Filter):
    """Celery's INFO lines about a periodic job (beat sending it, the worker receiving it, its success) become
    DEBUG: emitted only when the bridge logs at DEBUG. Every other task keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        args = record.args
        if isinstance(args, dict):
            task = args.get("name")
        elif isinstance(args, tuple) and len(args) == 2:  # beat: "Sending due task %s (%s)", entry, task name
            task = args[1]
        else:
            return True
        if task not in QUIET_TASKS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class QuietSchemaCheck(logging.Filter):
    """Alembic's INFO lines when a process first looks at the schema version (and finds nothing to do) become
    DEBUG: a pool process's first task would otherwise log them in the middle of a quiet day."""

    ROUTINE = ("Context impl ", "Will assume ", "setup plugin ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(self.ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


for _name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(_name).addFilter(QuietHousekeeping())
for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).addFilter(QuietSchemaCheck())


# A burst's items go to a few tasks of several items each, not a task per item: Celery's own cost per task (the
# message, the prefork pool's pipes, its log lines: ~6 ms of CPU) was a third of a new issue's. A burst is still
# cut into at least SPREAD tasks (a worker's pool size, the Procfile's nproc = 2), so the worker processes share
# it, and a long burst into tasks of at most ITEMS_PER_TASK, so every worker of a scaled-out bridge takes some.
ITEMS_PER_TASK = 10
SPREAD = 2
TASK_SECONDS = 60.0  # a task that ran this long hands its remaining items on (far under the visibility timeout)


@worker_process_init.connect
def ready_the_pool_process(**_: object) -> None:
    """A pool process imports the periodic jobs' code when it starts, and on a local database (SQLite) also builds
    its runtime and reads its mappings, not at its first task: that one may be the sweeper's, in a quiet minute,
    which would then pay the imports and log "mapping … loaded" (an idle bridge is silent at INFO, issue #24).
    Never on a database across a network: Celery kills a pool process that is not up within 4 s, and a
    connection to an unreachable server can take longer; that runtime is built at the first task, as before."""
    import bridge.core.zoho_poll  # noqa: F401 - reverse_tick's, imported in the task body

    try:
        runtime = get_runtime()
        if runtime.settings.database_url.startswith("sqlite"):
            runtime.sync  # noqa: B018 - the engine and schema, the registry (mappings loaded), the Zoho client
    except Exception:  # the first task builds it again and reports what is wrong
        log.warning("could not prepare the pool process; its first task will", exc_info=True)


@shared_task(name=TASK_SYNC_ITEM, acks_late=True)
def sync_item(source: str, item_key: str) -> dict[str, object]:
    return _sync(source, item_key)


def _sync(source: str, item_key: str) -> dict[str, object]:
    runtime = get_runtime()
    outcome = runtime.sync.process_item(source, item_key)
    if outcome.retry_at is not None and outcome.db_now is not None and not outcome.busy and not outcome.lost:
        # Work left for later (a back-off, a wait, a duplicate re-check): wake this item again when it is
        # due. Both times are the database's, so this host's clock does not matter. The beat job
        # re-enqueues it too, so a lost message only costs time.
        countdown = max(0.0, outcome.retry_at - outcome.db_now)
        sync_item.apply_async((source, item_key), countdown=min(countdown, 240.0))
    return {"processed": outcome.processed, "busy": outcome.busy}


def shares(items: list[list[str]]) -> list[list[list[str]]]:
    """The items in order, cut into at least min(len, SPREAD) tasks of at most ITEMS_PER_TASK each."""
    if not items:
        return []
    tasks = max(min(len(items), SPREAD), math.ceil(len(items) / ITEMS_PER_TASK))
    size = math.ceil(len(items) / tasks)
    return [items[i : i + size] for i in range(0, len(items), size)]


@shared_task(name=TASK_WAKE_ITEMS)
def wake_items(items: list[list[str]]) -> int:
    """A burst of deliveries woke us once: the items go to a few tasks (`shares`), so the worker processes share
    them; this task syncs the first share itself."""
    if not items:
        return 0
    first, *others = shares(items)
    for share in others:
        sync_items.delay(share)
    return _sync_in_turn(first)


@shared_task(name=TASK_SYNC_ITEMS, acks_late=True)
def sync_items(items: list[list[str]]) -> int:
    """Sync a share of a burst, one item after the other, as `sync_item` syncs one."""
    return _sync_in_turn(items)


def _sync_in_turn(items: list[list[str]]) -> int:
    """Each item as `sync_item` does it (its own retry and countdown). An item that raises does not stop the
    others (its events stay pending: the stale sweeper wakes it); after TASK_SECONDS the rest is handed on."""
    started = time.monotonic()
    for done, (source, item_key) in enumerate(items):
        if done and time.monotonic() - started > TASK_SECONDS:
            sync_items.delay(items[done:])
            return done
        try:
            _sync(source, item_key)
        except Exception:
            log.exception("syncing the item failed; the stale sweeper wakes it again", extra={"item": item_key})
    return len(items)


@shared_task(name=TASK_REQUEUE_STALE)
def requeue_stale() -> int:
    """Events stored but not processed after a grace period (broker down, worker killed) go again; the metric
    deltas are folded; a backfill whose feeder stopped (its chain lost with a worker) gets it back. Also the
    database's heartbeat: `db upgrade` tells a restored backup by how old its last one is."""
    from bridge.store import calllog

    runtime = get_runtime()
    calllog.heartbeat(runtime.engine)
    # a mapping file that appeared or changed: what waited for one goes now (a stat of each file when unchanged)
    for source, item_key in runtime.sync.reload_mappings():
        sync_item.delay(source, item_key)
    items = claims.stale_items(runtime.engine, grace=runtime.settings.stale_after_seconds)
    for source, item_key in items:
        sync_item.delay(source, item_key)
    if items:
        log.info("re-enqueued stale items", extra={"count": len(items)})
    counters.fold(runtime.engine)
    if feeder.anything_parked(runtime.engine) and not feeder.chain_alive(runtime.engine):
        feed_backfill.delay()
        log.info("restarted the backfill feeder")
    return len(items)


@shared_task(name=TASK_POLL_SOURCE)
def poll_source(name: str) -> int:
    """Beat job: store the changes a source's poll found (`SourceSpec.poll`, for a source without webhooks),
    then wake a worker per item that got events."""
    from bridge.sources import SOURCES

    runtime = get_runtime()
    spec = SOURCES.get(name)
    if spec is None or not spec.poll:
        return 0
    try:
        fed: set[tuple[str, str]] = spec.load(spec.poll)(runtime.engine, runtime.settings)
    except SourceUnavailable as exc:
        log.warning("%s poll failed, next tick retries: %s", name, exc.reason)
        return 0
    for source, item_key in sorted(fed):
        try:
            sync_item.delay(source, item_key)
        except Exception as exc:  # the events are stored: requeue_stale wakes them later
            log.warning("could not enqueue a polled item: %s", exc, extra={"item": item_key})
    return len(fed)


@shared_task(name=TASK_PRUNE)
def prune_history() -> dict[str, object]:
    """Beat job: retention (bridge/store/retention.py). One run at a time across hosts, a few minutes at most."""
    from bridge.store import retention

    runtime = get_runtime()
    holder = f"prune:{uuid.uuid4().hex}"
    if not store.acquire_lease(runtime.engine, retention.LEASE_KEY, holder, ttl=600.0):
        return {"skipped": "another prune is running"}
    try:
        return retention.prune_from_settings(runtime.engine, runtime.settings, max_seconds=240.0).as_dict()
    finally:
        store.release_lease(runtime.engine, retention.LEASE_KEY, holder)


@shared_task(name=TASK_FEED_BACKFILL)
def feed_backfill(chain: str = "") -> int:
    """Release parked backfill events at the backfill's budget share, while workers keep up; again in a second
    while any are parked. One chain at a time (a lease): a second start is a no-op while the first is alive."""
    runtime = get_runtime()
    chain = chain or uuid.uuid4().hex
    if not feeder.hold_chain(runtime.engine, chain):
        return 0  # another chain feeds the lane
    items = feeder.release(runtime.engine, runtime.settings)
    for source, item_key in items:
        sync_item.delay(source, item_key)
    if feeder.anything_parked(runtime.engine):
        feed_backfill.apply_async((chain,), countdown=feeder.FEED_EVERY_SECONDS)
    else:
        feeder.end_chain(runtime.engine, chain)
    return len(items)


@shared_task(name="workers.tasks.reverse_tick")
def reverse_tick() -> dict[str, int]:
    """Beat job: poll linked Zoho projects for changes (waits while forward work is due); each change is a
    nudge stored for its item, decided by a worker under the item's claim. Side work (back-links, copies)
    is not done here: the sweeper wakes items whose operations are due."""
    from bridge.core.zoho_poll import poll_zoho, polled_sources

    runtime = get_runtime()
    try:  # a mapping edit is read here (its last good copy kept in the database): a failure waits for the next tick
        sources = polled_sources(runtime.registry)
    except Exception as exc:
        log.warning("Zoho poll could not read the mappings, next tick retries: %s", exc)
        return {"failed": 1}
    if not sources:
        return {"projects": 0}  # no mapping talks back: no lease to take (two write transactions a minute)
    holder = f"reverse:{uuid.uuid4().hex}"
    if not store.acquire_lease(runtime.engine, "reverse:tick", holder, ttl=600.0):
        return {"skipped_running": 1}  # one poll at a time, across processes
    runtime.zoho.event_id = None  # these calls belong to no event
    try:
        counts, wake = poll_zoho(runtime.engine, runtime.registry, runtime.zoho, sources=sources)
    except Exception as exc:  # Zoho unavailable: the mark stays, the next tick reads the same changes
        log.warning("Zoho poll failed, next tick retries: %s", exc)
        return {"failed": 1}
    finally:
        store.release_lease(runtime.engine, "reverse:tick", holder)
    for source, item_key in sorted(wake):
        sync_item.delay(source, item_key)
    if counts.get("nudged"):
        log.info("zoho poll", extra=counts)
    return counts
