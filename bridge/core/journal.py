"""The journal of outside operations, as the delivery core holds it for one claimed item.

Every write made to an outside system on an item's behalf is an operation, one row per (item, kind, ref):

    planned ──▶ sent ──▶ confirmed
       │          │
       └──────────┴────▶ failed (with its reason; planned again when its cause may be gone)

- **planned**: decided, due at `next_at` (side work waits here for its turn; waiting for a budget is
  planned, never sent).
- **sent**: handed to the network. It is written in the fenced step the transport runs right before the
  request leaves (after the budget let it go), so only an operation actually sent can be in doubt.
- **confirmed**: the system's answer was read and recorded (`result`: the id it made).
- An operation the core finds still **sent** when it claims the item is **in doubt**: its answer was lost, the
  worker died, or the claim was taken over. Its kind's resolver checks it: a create is looked up by its marker
  (bounded by the operation's send time, however many issues were made since), an update is re-checked once a
  late copy can no longer be in flight, a comment or back-link is looked up by its marker.

Writes to a source also carry their **echo** (`awaiting` until the source's webhook shows exactly what was
written, `seen` then, `expired` once a newer state of the source was seen that is not the echo), so a person's
later change to the same value is never taken for the bridge's own.

Changes are queued on the claimed item (`ClaimedItem.later`) and committed in its next fenced step, with the
database's time filled in there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from bridge.store import journal as rows
from bridge.store.claims import Claim
from bridge.store.journal import CONFIRMED, FAILED, PLANNED, SENT, Operation


class Holder(Protocol):
    """What the journal needs of the claimed item holding it (`bridge/core/claim.py`'s `ClaimedItem`)."""

    claim: Claim
    now: float
    dry_run: bool

    def later(self, write: Callable[[Connection, float], object]) -> None: ...


ZOHO_CREATE = "zoho.create"  # the item's Zoho issue (ref "")
ZOHO_UPDATE = "zoho.update"  # the latest update, close or delete of the issue (ref "")
ZOHO_RECHECK = "zoho.recheck"  # read the issue again once a write in doubt can no longer land (ref "")
ZOHO_COMMENT = "zoho.comment"  # a source comment posted to the issue (ref: the source comment id)
ZOHO_ATTACHMENT = "zoho.attachment"  # a source attachment copied to the issue (ref: its key)
SOURCE_BACKLINK = "source.backlink"  # the note on the source item saying where it is tracked (ref "")
SOURCE_COMMENT = "source.comment"  # a person's Zoho comment copied to the source (ref: the Zoho comment id)
SOURCE_STATE = "source.state"  # a status change made on the source for a Zoho change (ref: unique per write)
SIDE_KINDS = rows.SIDE_KINDS  # attachments and writes to the source: they never hold the item's state back
SOURCE_WRITES = (SOURCE_BACKLINK, SOURCE_COMMENT, SOURCE_STATE)
ALL_KINDS = (ZOHO_CREATE, ZOHO_UPDATE, ZOHO_RECHECK, ZOHO_COMMENT, *SIDE_KINDS)
__all__ = ["CONFIRMED", "FAILED", "PLANNED", "SENT", "Journal", "Operation"]


class Journal:
    """The claimed item's operations: read when it was claimed, changed here, written at its next step."""

    def __init__(self, item: Holder, ops: Iterable[Operation]) -> None:
        self.item = item
        self.ops: dict[tuple[str, str], Operation] = {op.key: op for op in ops}
        self.pending_send: Operation | None = None  # marked sent by the transport's fence, right before it sends
        self.sent_write: Any = None  # the queued write that marked the last operation sent (to forget it)
        self.sent_now: set[tuple[str, str]] = set()  # operations this claim handed to the network

    def get(self, kind: str, ref: str = "") -> Operation | None:
        return self.ops.get((kind, ref))

    def of_kind(self, *kinds: str) -> list[Operation]:
        return [op for op in self.ops.values() if op.kind in kinds]

    def in_doubt(self, kind: str, ref: str = "") -> Operation | None:
        op = self.get(kind, ref)
        return op if op is not None and op.state == SENT else None

    def _new(self, kind: str, ref: str) -> Operation:
        claim = self.item.claim
        return Operation(claim.source, claim.item_key, kind, ref, PLANNED, planned_at=self.item.now)

    def _put(self, op: Operation, **times: str) -> Operation:
        """Keep `op` and queue its row; `times` names fields set to the step's database time
        (`sent_at="now"`), or to now plus a delay (`next_at="+12.5"`)."""
        self.ops[op.key] = op
        if self.item.dry_run:
            return op

        def write(conn: Connection, now: float) -> None:
            values: dict[str, Any] = {}
            for name, spec in times.items():
                values[name] = now if spec == "now" else now + float(spec)
            rows.save(conn, dataclasses.replace(op, **values))

        self.item.later(write)
        return op

    # -- the life of an operation -------------------------------------------------------------------------

    def plan(self, kind: str, ref: str = "", *, payload: dict[str, Any] | None = None, delay: float = 0.0) -> Operation:
        """Decide an operation, due `delay` seconds from now (its row's times by the database clock)."""
        base = self.get(kind, ref) or self._new(kind, ref)
        op = dataclasses.replace(
            base,
            state=PLANNED,
            payload=payload if payload is not None else base.payload,
            next_at=self.item.now + delay,
            done_at=None,
        )
        times = {"next_at": f"+{delay}"}
        if base.id is None and base.state == PLANNED:  # a new row: planned now
            times["planned_at"] = "now"
        return self._put(op, **times)

    def sending(self, kind: str, ref: str = "", *, payload: dict[str, Any] | None = None) -> Operation:
        """The next write call the item makes is this operation: the transport's fence marks it sent right
        before the request leaves (`ClaimedItem.before_call`), not before (a wait for a budget sends nothing)."""
        base = self.get(kind, ref) or self._new(kind, ref)
        op = dataclasses.replace(base, payload=payload if payload is not None else base.payload)
        self.ops[op.key] = op
        self.pending_send = op
        self.sent_now.discard(op.key)
        return op

    def mark_sent(self) -> None:
        """Called by the transport's fence: the pending operation is handed to the network now."""
        op = self.pending_send
        self.pending_send = None
        if op is None:
            return
        first = op.payload.get("first_sent_at") if op.payload else None
        payload = dict(op.payload or {})
        if first is None:
            payload["first_sent_at"] = self.item.now  # refined to the step's time below
        # Due for resolving a lease from now: if this claim has not confirmed it by then, its holder is gone.
        due_in = self.item.claim.ttl
        sent = dataclasses.replace(
            op, state=SENT, sent_at=self.item.now, payload=payload, next_at=self.item.now + due_in, result=None
        )
        self.ops[sent.key] = sent
        self.sent_now.add(sent.key)
        if self.item.dry_run:
            return

        def write(conn: Connection, now: float) -> None:
            data = dict(payload)
            if first is None:
                data["first_sent_at"] = now
            rows.save(conn, dataclasses.replace(sent, sent_at=now, payload=data, next_at=now + due_in))

        self.sent_write = write
        self.item.later(write)

    def not_sent(self) -> None:
        """The write call never left (a budget said wait, a refusal before sending): nothing is in doubt."""
        self.pending_send = None

    def answered(self, kind: str, ref: str, *, refused: str | None) -> None:
        """The system answered the call without doing it (a throttle, an outage breaker, a refusal): the
        operation is not in doubt. `refused`: a refusal that retrying cannot fix (it fails, with the reason);
        None: a wait (planned again)."""
        if self.pending_send is not None:  # it never left
            self.pending_send = None
            return
        op = self.get(kind, ref)
        if op is None or op.state != SENT:
            return
        if refused is not None:
            self.failed(kind, ref, refused, attempt=False)
        else:
            self._put(dataclasses.replace(op, state=PLANNED, next_at=None))

    def made(self, kind: str, ref: str, result: str) -> None:
        """The write was answered (`result` is what it made) but what depends on it is not written yet (a
        create's link): the operation stays in doubt, and the next claim takes `result` instead of looking.
        Confirmed together with what depends on it."""
        op = self.get(kind, ref)
        if op is not None and op.state == SENT:
            self._put(dataclasses.replace(op, result=result))

    def confirmed(
        self,
        kind: str,
        ref: str = "",
        *,
        result: str | None = None,
        payload: dict[str, Any] | None = None,
        echo: str | None = None,
        recheck_after: float | None = None,
    ) -> Operation:
        base = self.get(kind, ref) or self._new(kind, ref)
        merged = {**(base.payload or {}), **(payload or {})}
        op = dataclasses.replace(
            base,
            state=CONFIRMED,
            result=result if result is not None else base.result,
            payload=merged,
            next_at=None,
            last_error=None,
            echo=echo if echo is not None else base.echo,
        )
        times = {"done_at": "now"}
        if base.sent_at is None:
            times["sent_at"] = "now"
        return self._put(op, **times)

    def failed(self, kind: str, ref: str, reason: str, *, attempt: bool = True) -> Operation:
        """Failed for good (until its cause may be gone): the item's own state is not held back by it."""
        base = self.get(kind, ref) or self._new(kind, ref)
        op = dataclasses.replace(
            base, state=FAILED, last_error=reason, next_at=None, attempts=base.attempts + (1 if attempt else 0)
        )
        return self._put(op, done_at="now")

    def retry_later(self, kind: str, ref: str, delay: float, reason: str, *, attempt: bool) -> Operation:
        """Try again `delay` seconds from now. A wait (a budget, a throttle) is not an attempt; an operation in
        doubt stays sent (its resolver looks before anything is sent again)."""
        base = self.get(kind, ref) or self._new(kind, ref)
        state = SENT if base.state == SENT else PLANNED
        op = dataclasses.replace(
            base,
            state=state,
            last_error=reason,
            attempts=base.attempts + (1 if attempt else 0),
            next_at=self.item.now + delay,
        )
        return self._put(op, next_at=f"+{delay}")

    def echo(self, op: Operation, value: str) -> None:
        """The webhook echo of a write to the source was seen (`seen`), or a newer state was (`expired`)."""
        self._put(dataclasses.replace(op, echo=value))

    def park(self, op: Operation) -> None:
        """An operation in doubt whose resolution is in hand (a re-check planned, its event retried): nothing
        is due for it by itself."""
        if op.next_at is not None:
            self._put(dataclasses.replace(op, next_at=None))

    def resolve_sent(self, kind: str, ref: str = "", *, delay: float) -> None:
        """An operation in doubt whose resolver runs later (a write that may still land): due then."""
        op = self.get(kind, ref)
        if op is not None and op.state == SENT:
            self._put(dataclasses.replace(op, next_at=self.item.now + delay), next_at=f"+{delay}")
