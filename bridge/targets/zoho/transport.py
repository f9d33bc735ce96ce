"""The Zoho transport: token, shared budget, timeouts, call log and error translation, for both dialects.

What a caller gets back is a `Response`, or one of the typed errors:
- `ZohoRateLimited`: a 429, the shared block or a spent budget: wait, never a counted attempt;
- `ZohoConfigError`: a token Zoho refuses right after it was issued (scopes, data centre), or a call refused
  for its OAuth scope: reported once, never a refresh loop;
- `ZohoTransientError`: network, 5xx: retry later;
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

from bridge import store
from bridge.settings import Settings
from bridge.targets.zoho.auth import CONFIG_HINT, TokenProvider
from bridge.targets.zoho.calls import TABLES
from bridge.targets.zoho.errors import ZohoConfigError, ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.targets.zoho.ratelimit import RateLimiter, RateLimitTimeout

log = logging.getLogger("bridge.zoho")
AUTH_TITLES = ("INVALID_OAUTHTOKEN", "6004")  # v3 answers INVALID_OAUTHTOKEN with HTTP 400 (seed 001:76-84)
SCOPE_TITLES = ("6005", "6010")  # BugTracker: "Access Denied: check OAuth scopes", "Portal Access Denied"
RATE_TITLES = ("6009", "TOO_MANY_REQUESTS")
MAX_RESET_WAIT = 86400.0  # a daily quota resets at midnight UTC at the latest


@dataclass
class Response:
    status: int
    data: Any
    text: str
    headers: dict[str, str] | None = None


def error_parts(data: Any, raw_text: str) -> tuple[str, str, str | None]:
    """(title or code, message, field) from either dialect's error body."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):  # Projects v3
        err = data["error"]
        details = err.get("details") or [{}]
        first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
        return (
            str(err.get("title") or ""),
            str(first.get("message") or err.get("title") or ""),
            first.get("field_name"),
        )
    if isinstance(data, dict) and "code" in data:  # BugTracker
        bt_details: dict[str, Any] = data["details"] if isinstance(data.get("details"), dict) else {}
        message = str(data.get("message") or "")
        if bt_details.get("error"):
            message = f"{message}: {bt_details['error']}"
        return str(data["code"]), message, bt_details.get("field") or None
    return "", raw_text[:300], None


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
        )
        self.event_id: int | None = None
        self.before_call: Callable[[str], None] | None = None  # the core's fence, given the HTTP method
        self.last_answer: tuple[int | None, str] | None = None  # (HTTP status, body) of the last call

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
        given; the call log records a multipart body as file names and sizes, never the bytes."""
        declared = TABLES[self.dialect].find(method, path)
        if declared is None:  # never sent: a call the documents do not have is a bug, not a request
            raise ZohoPermanentError(f"{method} {path}: not a declared Zoho call (bridge/targets/zoho/calls.py)")
        multipart = files is not None or form is not None
        if multipart:
            body = {"files": {k: f"{v[0]} ({len(v[1])} bytes)" for k, v in (files or {}).items()}, **(form or {})}
        if self.settings.dry_run:
            query = ("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""
            self._record(method, path + query, body, None, "dry-run: not sent", time.monotonic(), dry_run=True)
            return Response(200, None, "")
        refused = self.tokens.config_error()
        if refused:  # recorded by any process: no call (and no refresh) until the configuration is fixed
            raise ZohoConfigError(refused, status=401)
        for auth_attempt in range(2):
            token = self.tokens.get()
            try:
                self.limiter.acquire(timeout=min(30.0, self.settings.item_lease_seconds / 3))
            except RateLimitTimeout as exc:
                raise ZohoRateLimited(f"{method} {path}: {exc}", status=429, retry_after=exc.wait) from None
            if self.before_call is not None:
                self.before_call(method)
            started = time.monotonic()
            try:
                raw = self.session.request(
                    method,
                    self.settings.zoho_api_base + path,
                    json=None if multipart else body,
                    files=files,
                    data=form,
                    params=params,
                    headers={"Authorization": f"Zoho-oauthtoken {token}"},
                    # a file takes longer than a JSON body
                    timeout=self.settings.zoho_timeout_seconds * (3 if multipart else 1),
                )
            except requests.RequestException as exc:
                self._record(method, path, body, None, type(exc).__name__, started)
                raise ZohoTransientError(f"{method} {path}: network error {type(exc).__name__}") from None
            self._record(method, path, body, raw.status_code, raw.text, started)
            self._honour_headers(raw)
            try:
                data = raw.json() if raw.content else None
            except ValueError:
                data = None
            if 200 <= raw.status_code < 300:
                return Response(raw.status_code, data, raw.text, dict(raw.headers))
            title, message, field = error_parts(data, raw.text or raw.reason or "")
            if title in AUTH_TITLES or (raw.status_code == 401 and title not in SCOPE_TITLES):
                if auth_attempt == 1 or self.tokens.just_refreshed():
                    raise self.tokens.refused_fresh(f"{method} {path}: {raw.status_code} {title} {message}".strip())
                self.tokens.invalidate(token)
                continue  # an expired token is refreshed once and the call repeated
            if title in SCOPE_TITLES:
                raise ZohoConfigError(f"{method} {path}: Zoho answered {title} {message}: {CONFIG_HINT}", status=403)
            if raw.status_code == 429 or title in RATE_TITLES:
                wait, why = self._rate_wait(raw)
                self.limiter.block(wait, why)
                raise ZohoRateLimited(
                    f"{method} {path}: Zoho rate limit (429): every worker waits {wait:.0f}s ({why})",
                    status=429,
                    retry_after=wait,
                )
            if raw.status_code >= 500:
                raise ZohoTransientError(
                    f"{method} {path}: Zoho answered {raw.status_code}: {message}", status=raw.status_code
                )
            raise ZohoPermanentError(
                f"{method} {path}: Zoho answered {raw.status_code} {title}: {message}"
                + (f" (field {field})" if field else ""),
                status=raw.status_code,
                field=field,
            )
        raise AssertionError("unreachable")

    def _rate_wait(self, raw: requests.Response) -> tuple[float, str]:
        """How long everyone waits after a 429: the answer's own reset time, else the documented block."""
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
        return self.settings.zoho_rate_block_seconds, "Zoho Projects' documented block after the limit"

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
        store.record_zoho_call(
            self.engine,
            event_id=self.event_id,
            method=method,
            path=path,
            request_json=body,
            status=status,
            response_text=text,
            duration_ms=duration,
            dry_run=dry_run,
        )
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
