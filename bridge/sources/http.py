"""The one client discipline every source's REST client follows (GitHub, Bugzilla, BugHerd).

Every request:
1. is looked up in the system's call table (`bridge/sources/<name>/calls.py`); a call the table does not
   declare is never sent (`UndeclaredCall`);
2. spends the budgets its declaration names, through the process's shared `Budgets` (in the database, by its
   clock, shared by beat, every worker and a backfill): a spent budget or a block is waited for here up to
   the client's `hold` seconds (reported once through `on_wait`), else `SourceBusy` (a `LimitWait`: a wait,
   never an attempt) says how long;
3. is read by the system's `AnswerReader`: a throttle answer (429, GitHub's rate-limit 403s, a Bugzilla
   `Retry-After`) blocks the system's budget for every process for the time the answer names (capped by
   `Budgets.max_block`), or, when it names none, for a base wait doubling on consecutive refusals; a network
   error, a timeout or a 5xx opens the outage breaker (`Budgets.outage`), so every process waits together;
   any other refusal is the system's own `Permanent` error with the provider's reason.

Only a call declared `safe` is ever repeated after a failure to answer: a create (a comment POST) that
timed out or answered 5xx may have been done, so it raises `SourceUnavailable` and its caller's record
of "sent" makes it in doubt, looked up by its marker (the writers' `find_comment`). A throttle refusal is
repeated whatever the call: the provider refused it, so nothing was done.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from bridge.events import SourceUnavailable
from bridge.outbound.budget import Budgets, Limit
from bridge.outbound.calls import Call, CallTable
from bridge.outbound.errors import LimitWait, UndeclaredCall

log = logging.getLogger("bridge.sources.http")
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
MAX_TRIES = 4  # repeats of one request inside one `send` (safe calls after an outage, any call after a throttle)
REPORT_AFTER = 1.0  # waits at least this long are reported through `on_wait`
# How long a process may wait in place, by lane: a worker's item (enrichment, back-links, reverse writes)
# gives the budget a few seconds, then reschedules; the beat's poll a little more; a backfill, a long-running
# command, waits up to an hour (reported once per wait), then stops resumable.
HOLD_ITEM = 10.0
HOLD_POLL = 30.0
HOLD_COMMAND = 3600.0

OnWait = Callable[[float, str], None]
# The item a worker is carrying out calls for (set by the delivery core around an item): its source calls are kept
# in its story (`bridge/store/calllog.py`). Every call is also counted per minute for the budget charts.
CALLING_FOR: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("calling_for", default=None)


def item_hold(item_lease_seconds: float) -> float:
    """How long a worker's item may wait in place for a source's budget: a few seconds, never more than a
    third of the item's lease (as for Zoho's budget), then the item is rescheduled for when the wait ends."""
    return min(HOLD_ITEM, item_lease_seconds / 3)


class SourceBusy(SourceUnavailable, LimitWait):
    """A source's budget, block or throttle says wait `retry_after` seconds: a wait, never an attempt, in every
    lane (a `LimitWait` for the delivery core, a `SourceUnavailable` for the poll and the backfill)."""


@dataclass(frozen=True)
class Throttle:
    """An answer that says "wait": block budget `key` for `seconds` (None: `base`, doubling while refused)."""

    key: str
    seconds: float | None
    reason: str
    base: float = 60.0


class AnswerReader(Protocol):
    """How one system's answers are read: throttles, what every answer says about limits, and refusals."""

    system: str  # "GitHub", "Bugzilla", "BugHerd": for messages
    key: str  # the system's budget key: blocks and the outage breaker

    def throttle(self, response: requests.Response) -> Throttle | None: ...

    def after(self, response: requests.Response, budgets: Budgets) -> None: ...

    def refusal(self, response: requests.Response, method: str, path: str) -> Exception | None: ...


def retry_after(response: requests.Response) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date, measured against the answer's own `Date`)."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - provider_now(response))


def provider_now(response: requests.Response) -> float:
    """The provider's clock as its `Date` header gives it (a reset time is measured against it, so no host's
    clock skews a wait); this host's clock only when the answer has no date."""
    value = response.headers.get("Date")
    if value:
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return time.time()


def json_of(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


class SourceHttp:
    """One system's requests: declared, budgeted, read. Each source's client holds one."""

    def __init__(
        self,
        table: CallTable,
        base_url: str,
        reader: AnswerReader,
        *,
        budgets: Budgets,
        limits: Sequence[Limit] = (),
        session: requests.Session | None = None,
        hold: float = HOLD_ITEM,
        on_wait: OnWait | None = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        self.table = table
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self.reader = reader
        self.budgets = budgets
        budgets.register(*limits)
        self.session = session or requests.Session()
        self.hold = hold
        self.on_wait = on_wait
        self.timeout = timeout
        self.calls = 0  # answers received, for the backfill's cost report
        self.waited = 0.0  # seconds spent waiting for budgets and blocks

    # -- requests -------------------------------------------------------------------------------------------

    def declared(self, method: str, target: str) -> tuple[Call, str, str]:
        """(the declared call, the URL to request, its path relative to the API root); UndeclaredCall if none."""
        if target.startswith(("http://", "https://")):
            url = target
            parts = urlsplit(target)
            if (
                f"{parts.scheme}://{parts.netloc}"
                != f"{urlsplit(self.base_url).scheme}://{urlsplit(self.base_url).netloc}"
            ):
                raise UndeclaredCall(f"{method} {target}: not under {self.reader.system}'s API root {self.base_url}")
            path = parts.path[len(self._base_path) :] if parts.path.startswith(self._base_path) else parts.path
        else:
            path = "/" + target.lstrip("/")
            url = self.base_url + path
        call = self.table.find(method, path)
        if call is None:
            raise UndeclaredCall(
                f"{method} {path}: not a declared {self.reader.system} call (bridge/sources/*/calls.py): not sent"
            )
        return call, url, path

    def send(
        self,
        method: str,
        target: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One call (`target`: a path under the API root, or a full URL a `Link` header gave). Returns the
        answer when it is not a throttle, an outage or a refusal; raises `SourceBusy`, `SourceUnavailable`,
        `UndeclaredCall` or the reader's `Permanent` error otherwise."""
        call, url, path = self.declared(method, target)
        deadline = time.monotonic() + self.hold
        what = f"{method} {path}"
        tries = 0
        while True:
            self._take(call, deadline)
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, url, params=params, json=body, headers=dict(headers or {}), timeout=self.timeout
                )
            except requests.RequestException as exc:
                reason = f"{self.reader.system} did not answer {what} ({type(exc).__name__})"
                self._record(method, path, None, started, reason)
                if self._again_after_outage(call, reason, deadline, tries):
                    tries += 1
                    continue
                raise SourceUnavailable(self._not_repeated(call, reason), retry_after=self._pause()) from None
            self.calls += 1
            self._record(method, path, response.status_code, started, None if response.ok else response.text[:300])
            throttle = self.reader.throttle(response)
            if throttle is not None:
                seconds = self._block(throttle)
                if tries < MAX_TRIES and time.monotonic() + seconds <= deadline:
                    tries += 1  # refused, so nothing was done: repeated once the block ends, whatever the call
                    continue
                raise SourceBusy(
                    f"{throttle.reason} ({what}): every process waits {seconds:.0f}s",
                    retry_after=seconds,
                    status=response.status_code,
                )
            if response.status_code >= 500:
                reason = f"{self.reader.system} answered {response.status_code} to {what}"
                if self._again_after_outage(call, reason, deadline, tries):
                    tries += 1
                    continue
                raise SourceUnavailable(
                    self._not_repeated(call, reason), retry_after=self._pause(), status=response.status_code
                )
            self.budgets.recovered(self.reader.key)
            self.budgets.calm(self.reader.key)
            self.reader.after(response, self.budgets)
            refusal = self.reader.refusal(response, method, path)
            if refusal is not None:
                raise refusal
            return response

    def _record(self, method: str, path: str, status: int | None, started: float, message: str | None) -> None:
        """Counted per minute for the budget charts and, made for an item, kept in its story: never fails the call."""
        from bridge.store import calllog

        try:
            calllog.source_call(
                self.budgets.engine,
                system=self.reader.key,
                lane="backfill" if self.hold >= HOLD_COMMAND else "live",
                item=CALLING_FOR.get(),
                method=method,
                path=path.split("?", 1)[0],
                status=status,
                duration_ms=(time.monotonic() - started) * 1000.0,
                message=message,
            )
        except Exception:  # a record must never cost the call
            log.warning("could not record a %s call", self.reader.system, exc_info=True)

    # -- waits ------------------------------------------------------------------------------------------------

    def _take(self, call: Call, deadline: float) -> None:
        if not call.budgets:
            return
        try:
            self.budgets.take(call.budgets, hold=0.0)
            return
        except LimitWait as exc:
            wait, reason = exc.retry_after or 1.0, exc.reason.split(";")[0]
        left = deadline - time.monotonic()
        # A wait that would end in the hold's last second is not taken: a block capped at the hour a command holds
        # for ended just inside or just outside it by a fraction of a second (the command then waited the hour).
        if wait > left - 1.0:
            raise SourceBusy(f"{reason}; next call possible in {wait:.0f}s", retry_after=wait)
        if wait >= REPORT_AFTER:
            log.info("waiting %.1fs: %s", wait, reason, extra={"budget": self.reader.key})
            if self.on_wait is not None:
                self.on_wait(wait, reason)  # once per wait, however it is slept
        started = time.monotonic()
        try:
            self.budgets.take(call.budgets, hold=max(0.0, deadline - time.monotonic()))
        except LimitWait as exc:
            raise SourceBusy(exc.reason, retry_after=exc.retry_after) from None
        finally:
            self.waited += time.monotonic() - started

    def _block(self, throttle: Throttle) -> float:
        if throttle.seconds is None:
            return self.budgets.escalate(throttle.key, throttle.base, throttle.reason)
        seconds = min(max(1.0, throttle.seconds), self.budgets.max_block)
        self.budgets.block(throttle.key, seconds, throttle.reason)
        return seconds

    def _again_after_outage(self, call: Call, reason: str, deadline: float, tries: int) -> bool:
        """Open (or widen) the outage breaker; True when the call may be repeated here after its pause."""
        pause = self.budgets.outage(self.reader.key, reason)
        log.warning("%s (breaker: every process waits %.0fs)", reason, pause, extra={"budget": self.reader.key})
        return call.safe and tries < MAX_TRIES and time.monotonic() + pause <= deadline

    def _pause(self) -> float | None:
        from bridge.outbound.budget import blocked_until

        left, _, _ = blocked_until(self.budgets.engine, self.reader.key)
        return left or None

    @staticmethod
    def _not_repeated(call: Call, reason: str) -> str:
        if call.safe:
            return reason
        return f"{reason}: not repeated, it may have been done ({call.name} is looked up before it is sent again)"
