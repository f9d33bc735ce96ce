"""`issue-bridge events replay --from-dry-run`: after going live, send Zoho what dry-run only recorded.

An event dry-run processed has Zoho calls recorded with `dry_run` set and none sent for real. Replaying puts
exactly those back in the queue; the workers then do what they do for any event: the newest state of each item
in one create-or-update (an item already created live is updated, never created again), each comment once by
its source id. The newest event replayed is remembered (`REPLAYED_KEY`), so a second replay finds nothing: an
older state that the item's newer one supersedes ends without a call of its own, and must not count as unsent.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.engine import Engine

from bridge import store
from bridge.store.pages import EventRef, dry_run_unsent

BATCH = 500
REPLAYED_KEY = "dry_run.replayed_through"  # kv: the newest event id a --from-dry-run replay put back


def dry_run_batches(engine: Engine, *, batch: int = BATCH) -> Iterator[list[EventRef]]:
    """Finished events with recorded dry-run calls and no real one, newer than the last replay's, oldest first,
    `batch` at a time (ids walk upward, so a caller may replay a batch before asking for the next)."""
    after = int(store.kv_get(engine, REPLAYED_KEY) or 0)
    while True:
        with engine.connect() as conn:
            rows = dry_run_unsent(conn, after=after, limit=batch)
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        after = rows[-1].id
