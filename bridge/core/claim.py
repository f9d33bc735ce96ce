"""One claim on one item, as the delivery core holds it: the writes waiting for the next fenced step.

Writes are queued with `later()` and committed by `step()`, one transaction that starts with the fence
(`bridge.store.claims.fence`). A step runs right before an outside call (the transport's `before_call` hook)
when there is something to record (an operation about to be sent: the journal's `sent`, the link's intent
before a create) or the lease may be running out, and once at the end; in between, a claim renewed less
than half a lease ago cannot have been taken by anyone (others take it only once it expired by the
database's clock). If the fence fails, nothing queued is written and the worker stops: a worker that lost
its claim neither touches an outside system nor the events it no longer owns.

The Zoho call log's rows (bookkeeping: the journal is the record of what was sent) ride in the next step
too, instead of a transaction per call, and never make a step happen by themselves. Rows a step could not
take (the claim was lost, the worker stopped on an error) are written on their own by `flush_calls()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from bridge.core.journal import Journal
from bridge.store import CommentLink, Link
from bridge.store import claims as claim_rows
from bridge.store.calllog import ZohoCall, record_zoho_calls, write_zoho_calls
from bridge.store.claims import Batch, Claim

Write = Callable[[Connection, float], object]  # the result is ignored
T = TypeVar("T")
READS = ("GET", "HEAD")


class ClaimedItem:
    def __init__(self, engine: Engine, claim: Claim, batch: Batch, *, renewed: float, dry_run: bool = False) -> None:
        self.engine = engine
        self.claim = claim
        self.batch = batch
        self.dry_run = dry_run
        self.now = batch.now  # database time of the last read or step
        self.link: Link | None = batch.link
        self.comment_links: dict[str, CommentLink] = dict(batch.comment_links)
        self.finished: set[int] = set()  # events whose end is written (or queued)
        self.next_due: float | None = None  # when the item has work again, read when it was released
        self.journal = Journal(self, batch.ops)
        self._writes: list[Write] = []
        self._calls: list[ZohoCall] = []  # call-log rows waiting for the next step
        self._renewed = renewed  # monotonic time taken before the claim's transaction began: conservative

    def still_held(self) -> bool:
        """True while the claim is certainly ours without asking: less than half its lease has passed since
        it was last renewed (measured on this host's monotonic clock, which no skew between hosts affects)."""
        return time.monotonic() - self._renewed < self.claim.ttl / 2

    def before_call(self, method: str = "POST") -> None:
        """The fence before an outside call. A write call first records the operation it is as sent (only now,
        after any budget let it go, can it be in doubt); then a fenced step when there is something to record
        or the claim may be running out, otherwise nothing (the lease cannot have been taken yet)."""
        if method.upper() not in READS and self.journal.pending_send is not None:
            self.journal.mark_sent()
        if self._writes or not self.still_held():
            self.step()

    def log_call(self, call: ZohoCall) -> None:
        """A Zoho call made for the item: its log row goes with the next step (it does not cause one)."""
        self._calls.append(call)

    def flush_calls(self) -> None:
        """Call-log rows no step took (the claim was lost, an error stopped the item): written in a transaction
        of their own, outside the fence (a row of what was called, not the item's state)."""
        if self._calls:
            calls, self._calls = self._calls, []
            record_zoho_calls(self.engine, calls)

    def later(self, write: Write) -> None:
        self._writes.append(write)

    def forget(self, write: Write) -> None:
        """Drop a queued write that refused (its step rolled back): the others are committed by the next step."""
        self._writes = [w for w in self._writes if w is not write]

    @property
    def queued(self) -> list[Write]:
        return list(self._writes)

    def step(self, final: Callable[[Connection, float], T] | None = None) -> T | None:
        """Commit the queued writes in one fenced transaction; `final` runs last in it."""
        renewing = time.monotonic()
        with claim_rows.fenced(self.engine, self.claim) as (conn, now):
            if self._calls:
                write_zoho_calls(conn, self._calls, now)
            for write in self._writes:
                write(conn, now)
            result = final(conn, now) if final is not None else None
        self._writes.clear()
        self._calls.clear()
        self.now = now
        self._renewed = renewing
        return result

    def next_batch(self, batch: Batch) -> None:
        self.batch = batch
        self.now = batch.now
        self.link = batch.link
        self.comment_links = dict(batch.comment_links)
        self.journal = Journal(self, batch.ops)

    def describe(self) -> dict[str, Any]:
        return {"item": self.claim.item_key, "source": self.claim.source}
