"""The Zoho transport: token, shared budget, timeouts, call log and error translation, for both dialects.

Answers are read by their body, not their HTTP status alone (zoho-facts.md, "What public clients that ran
against live portals report"): an `error` object (v3) or a BugTracker error `code` is an error whatever the
status, 2xx included (a create answered so made nothing). What a caller gets back is a `Response`, or one of
the typed errors:
- `ZohoRateLimited`: a throttle (`URL_ROLLING_THROTTLES_LIMIT_EXCEEDED` in a 400, 429 or 200; a 429; BugTracker
  6009), the shared block, an open outage breaker or a spent budget: a wait for every worker, never an attempt.
  A throttle blocks every process for the minutes its message names, else `Retry-After`, else
  `X-RateLimit-Reset`, else the documented block, capped at `RATE_BLOCK_MAX_SECONDS`;
- `ZohoConfigError`: a token Zoho refuses right after it was issued, a token endpoint refusing the credentials
  (`invalid_client` / `invalid_code` / `invalid_grant`), or a call refused for its OAuth scope: reported once,
  never a refresh loop, never a failed event;
- `ZohoTransientError`: network, 5xx: the outage breaker opens (`Budgets.outage`), so every worker waits on
  one doubling pause instead of each spending its attempts; the next good answer closes it;
- `ZohoPermanentError`: any other 4xx, keyed on the documented title / code (seed 001:39-125, 000:855-880).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from sqlalchemy.engine import Engine

from bridge.outbound.budget import blocked_until
from bridge.settings import Settings
from bridge.store.calllog import ZohoCall, record_zoho_calls
from bridge.targets.zoho.auth import CONFIG_HINT, TokenProvider
from bridge.targets.zoho.calls import TABLES
from bridge.targets.zoho.errors import ZohoConfigError, ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.targets.zoho.ratelimit import BUDGET, RateLimiter, RateLimitTimeout

log = logging.getLogger("bridge.zoho")
AUTH_TITLES = ("INVALID_OAUTHTOKEN", "6004")  # v3 answers INVALID_OAUTHTOKEN with HTTP 400 (seed 001:76-84)
SCOPE_TITLES = ("6005", "6010")  # BugTracker: "Access Denied: check OAuth scopes", "Portal Access Denied"
# Live portals' throttle (zoho-facts.md), v3's documented 429 titles, BugTracker's 6009 (seed 000:866).
THROTTLE_TITLES = ("URL_ROLLING_THROTTLES_LIMIT_EXCEEDED", "6009", "TOO_MANY_REQUESTS")
RATE_TITLES = THROTTLE_TITLES  # the name other modules know
BT_ERROR_CODES = range(6001, 6011)  # seed 000:856-867
OUTAGE_AFTER = 2  # consecutive failures to answer (in one process) that open the outage breaker for every worker
MAX_RESET_WAIT = 86400.0  # a daily quota resets at midnight UTC at the latest
# "Try again after 22 minutes." (a live portal's throttle message); seconds and hours are read too.
_TRY_AGAIN = re.compile(r"try again (?:after|in)\s+(\d+(?:\.\d+)?)\s*(second|sec|minute|min|hour|hr)", re.IGNORECASE)
_UNIT = {"sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "hr": 3600.0, "hour": 3600.0}


@dataclass
class Response:
    status: int
    data: Any
    text: str
    headers: dict[str, str] | None = None


def _first_detail(details: Any) -> dict[str, Any]:
    """v3 documents `details` as a list of objects (seed 001:39-125); live portals' throttle sends one object."""
    if isinstance(details, dict):
        return details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return details[0]
    return {}


def body_error(data: Any) -> tuple[str, str, str | None, int | None] | None:
    """(title or code, message, field, the status the body names) when the body is an error, whatever the HTTP
    status: v3's `{"error": {...}}` (seed 001:39-125), BugTracker's `{"code": 6001…6010, "message"}` (000:871)."""
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        first = _first_detail(err.get("details"))
        named = str(err.get("status_code") or "")
        field = first.get("field_name")
        return (
            str(err.get("title") or ""),
            str(first.get("message") or err.get("title") or ""),
            str(field) if field else None,
            int(named) if named.isdigit() else None,
        )
    code = data.get("code")
    if isinstance(code, int | str) and str(code).isdigit() and int(code) in BT_ERROR_CODES and "message" in data:
        bt_details: dict[str, Any] = data["details"] if isinstance(data.get("details"), dict) else {}
        message = str(data.get("message") or "")
        if bt_details.get("error"):
            message = f"{message}: {bt_details['error']}"
        return str(code), message, bt_details.get("field") or None, None
    return None


def error_parts(data: Any, raw_text: str) -> tuple[str, str, str | None]:
    """(title or code, message, field) from either dialect's error body."""
    found = body_error(data)
    if found is not None:
        return found[0], found[1], found[2]
    if isinstance(data, dict) and "code" in data:  # a BugTracker error with a code outside the documented ones
        return str(data["code"]), str(data.get("message") or ""), None
    return "", raw_text[:300], None


def throttle_seconds(message: str) -> float | None:
    """The lockout a throttle message names ("Try again after 22 minutes."), in seconds, or None."""
    found = _TRY_AGAIN.search(message or "")
    if not found:
        return None
    return float(found.group(1)) * _UNIT[found.group(2).lower()]


class Transport:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        session: requests.Session,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.session = session
        self.dialect = settings.zoho_dialect
        self.tokens = TokenProvider(settings, engine, session)
        self.limiter = limiter or RateLimiter(
            engine,
            settings.zoho_rate_limit_per_minute,
            window=settings.zoho_rate_window_seconds,
            daily_limit=settings.zoho_daily_limit,
            max_block=settings.rate_block_max_seconds,
        )
        self.event_id: int | None = None
        self.before_call: Callable[[str], None] | None = None  # the core's fence, given the HTTP method
        # The core's call log: True when it keeps the row for the item's next fenced step (no transaction here).
        self.log_call: Callable[[ZohoCall], bool] | None = None
        self.last_answer: tuple[int | None, str] | None = None  # (HTTP status, body) of the last call
        self.last_throttle: str | None = None  # how the last throttle answered ("HTTP 400 …"), for `zoho verify`
        self._failures = 0  # consecutive calls of this process that Zoho did not answer (network, 5xx)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        """One Zoho call with a JSON `body`, or multipart (`files` and/or `form` fields: attachments) when
        given; form fields are sent as multipart parts, as the documents' `--form` does (001:5195-5241). The
        call log records a multipart body as file names and sizes, never the bytes."""
        declared = TABLES[self.dialect].find(method, path)
        if declared is None:  # never sent: a call the documents do not have is a bug, not a request
            raise ZohoPermanentError(f"{method} {path}: not a declared Zoho call (bridge/targets/zoho/calls.py)")
        multipart = files is not None or form is not None
        parts: dict[str, Any] | None = None
        if multipart:
            parts = {**{k: (None, v) for k, v in (form or {}).items()}, **(files or {})}
            body = {"files": {k: f"{v[0]} ({len(v[1])} bytes)" for k, v in (files or {}).items()}, **(form or {})}
        if self.settings.dry_run:
            query = ("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""
            self._record(method, path + query, body, None, "dry-run: not sent", time.monotonic(), dry_run=True)
            return Response(200, None, "")
        refused = self.tokens.config_error()
        if refused:  # recorded by any process: no call (and no refresh) until the configuration is fixed
            raise ZohoConfigError(refused, status=401)
        for auth_attempt in range(2):
            try:
                self.limiter.acquire(timeout=min(30.0, self.settings.item_lease_seconds / 3))
            except RateLimitTimeout as exc:
                raise ZohoRateLimited(f"{method} {path}: {exc}", status=429, retry_after=exc.wait) from None
            try:
                token = self.tokens.get()
            except ZohoTransientError as exc:  # the accounts server is down: no Zoho call can work meanwhile
                if not isinstance(exc, ZohoRateLimited):
                    self._outage(exc.reason)
                raise
            if self.before_call is not None:
                self.before_call(method)
            started = time.monotonic()
            try:
                raw = self.session.request(
                    method,
                    self.settings.zoho_api_base + path,
                    json=None if multipart else body,
                    files=parts,
                    params=params,
                    headers={"Authorization": f"Zoho-oauthtoken {token}"},
                    # a file takes longer than a JSON body
                    timeout=self.settings.zoho_timeout_seconds * (3 if multipart else 1),
                )
            except requests.RequestException as exc:
                self._record(method, path, body, None, type(exc).__name__, started)
                reason = f"{method} {path}: network error {type(exc).__name__}"
                self._outage(reason)
                raise ZohoTransientError(reason) from None
            self._record(method, path, body, raw.status_code, raw.text, started)
            try:
                data = raw.json() if raw.content else None
            except ValueError:
                data = None
            error = body_error(data)
            ok = 200 <= raw.status_code < 300
            if raw.status_code < 500:  # Zoho answered: an outage is over
                self._failures = 0
                self.limiter.budgets.recovered(BUDGET)
            self._honour_headers(raw)
            if ok and error is None:
                return Response(raw.status_code, data, raw.text, dict(raw.headers))
            # The status the body names counts when the HTTP status is a 2xx (an error inside a 200).
            status = (error[3] or 400) if ok and error is not None else raw.status_code
            title, message, field = error[:3] if error is not None else error_parts(data, raw.text or raw.reason or "")
            if status == 429 or title in THROTTLE_TITLES:
                wait, why = self._rate_wait(raw, message)
                form_seen = f"HTTP {raw.status_code} {title or '(no title)'}"
                self.last_throttle = form_seen + (" with Retry-After" if raw.headers.get("Retry-After") else "")
                reason = f"Zoho throttled the bridge ({form_seen}): {message or 'no message'} [{why}]"
                self.limiter.block(wait, reason)
                left = max(min(wait, self.limiter.budgets.max_block), blocked_until(self.engine, BUDGET)[0])
                raise ZohoRateLimited(f"{method} {path}: {reason}: every worker waits", status=429, retry_after=left)
            if title in AUTH_TITLES or (status == 401 and title not in SCOPE_TITLES):
                if auth_attempt == 1 or self.tokens.just_refreshed():
                    raise self.tokens.refused_fresh(f"{method} {path}: {status} {title} {message}".strip())
                self.tokens.invalidate(token)
                continue  # an expired token is refreshed once and the call repeated
            if title in SCOPE_TITLES:
                raise ZohoConfigError(f"{method} {path}: Zoho answered {title} {message}: {CONFIG_HINT}", status=403)
            if status >= 500:
                reason = f"{method} {path}: Zoho answered {status}: {message}"
                self._outage(reason)
                raise ZohoTransientError(reason, status=status)
            permanent = ZohoPermanentError(
                f"{method} {path}: Zoho answered {status}"
                + (f" (HTTP {raw.status_code})" if status != raw.status_code else "")
                + f" {title}: {message}"
                + (f" (field {field})" if field else ""),
                status=status,
                field=field,
            )
            permanent.title = title
            raise permanent
        raise AssertionError("unreachable")

    def _outage(self, reason: str) -> None:
        """Zoho did not answer (or answered 5xx) twice in a row: every worker pauses on one breaker (2 s, 4 s …
        a minute between probes) until an answer closes it. One lost answer alone (a blip, one slow call) is
        only that call's retry."""
        self._failures += 1
        if self._failures < OUTAGE_AFTER:
            return
        pause = self.limiter.budgets.outage(BUDGET, f"Zoho did not answer: {reason}")
        log.warning("zoho outage: every worker pauses %.0fs: %s", pause, reason)

    def _rate_wait(self, raw: requests.Response, message: str) -> tuple[float, str]:
        """How long everyone waits after a throttle: the minutes its message names, the answer's own reset
        time, else the documented block (all capped at RATE_BLOCK_MAX_SECONDS by the budget)."""
        named = throttle_seconds(message)
        if named is not None:
            return max(1.0, named), "the minutes Zoho's message names"
        value = (raw.headers.get("Retry-After") or "").strip()
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return max(1.0, float(value)), "Retry-After"
        if value:
            try:
                return max(1.0, parsedate_to_datetime(value).timestamp() - time.time()), "Retry-After"
            except (TypeError, ValueError):
                pass
        reset = (raw.headers.get("X-RateLimit-Reset") or "").strip()
        if re.fullmatch(r"\d+(\.\d+)?", reset):
            return min(MAX_RESET_WAIT, max(1.0, float(reset) - time.time())), "X-RateLimit-Reset"
        if self.dialect == "bugtracker":
            return 60.0, "BugTracker's per-minute window"  # seed 000: "resets every 60 seconds"
        # Projects v3 sends no header: "restricts further requests for 30 minutes" (seed 001:737-739).
        return self.settings.zoho_rate_block_seconds, "ZOHO_RATE_BLOCK_SECONDS: Zoho Projects' documented block"

    def _honour_headers(self, raw: requests.Response) -> None:
        """BugTracker's X-RateLimit-Remaining / Reset on every answer (seed 000:777-783)."""
        remaining = (raw.headers.get("X-RateLimit-Remaining") or "").strip()
        reset = (raw.headers.get("X-RateLimit-Reset") or "").strip()
        if remaining == "0" and re.fullmatch(r"\d+(\.\d+)?", reset) and raw.status_code != 429:
            self.limiter.note_remaining(0, min(MAX_RESET_WAIT, float(reset) - time.time()))

    def _record(
        self,
        method: str,
        path: str,
        body: Any,
        status: int | None,
        text: str,
        started: float,
        *,
        dry_run: bool = False,
    ) -> None:
        duration = 0.0 if dry_run else (time.monotonic() - started) * 1000
        self.last_answer = (status, text)
        call = ZohoCall(self.event_id, time.monotonic(), method, path, body, status, text, duration, dry_run)
        if self.log_call is None or not self.log_call(call):
            record_zoho_calls(self.engine, [call])
        if not dry_run:
            log.info(
                "zoho call",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(duration, 1),
                    "event_id": self.event_id,
                },
            )
