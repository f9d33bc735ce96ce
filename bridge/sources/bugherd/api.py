"""BugHerd's API v2: fetch a whole task when a webhook body lacks its fields, and manage the webhooks.

Authentication: HTTP basic with the API key (BUGHERD_API_KEY) as user and `x` as password.
Rate: BugHerd allows 60 requests a minute with bursts of 10 and answers 429 above that. Each process keeps
a token bucket per API key (10 tokens, refilled at 1 a second) and waits for a token before each request;
the bucket is per process, so several worker processes can still meet a 429: that is `SourceUnavailable`
with BugHerd's Retry-After, and the event is retried after it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import requests

from bridge.events import NormalizedEvent, SourceUnavailable, parse_timestamp
from bridge.settings import Settings
from bridge.sources.bugherd import webhook as bugherd

log = logging.getLogger("bridge.sources.bugherd")
API_URL = "https://www.bugherd.com"
TIMEOUT = (5.0, 30.0)
FETCHED_NOTE = "fields fetched from BugHerd"
RATE_PER_SECOND = 1.0  # 60 a minute
BURST = 10
MAX_WAIT = 30.0  # never wait longer than this for a token: report the source busy instead
PAGE_SIZE = 100  # BugHerd's lists return 100 records a page


class BugHerdError(Exception):
    """BugHerd answered, but not with what was asked (bad key, no such task): not worth a retry."""


class TokenBucket:
    def __init__(self, rate: float = RATE_PER_SECOND, capacity: int = BURST) -> None:
        self.rate, self.capacity = rate, float(capacity)
        self._tokens, self._at = float(capacity), time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, max_wait: float = MAX_WAIT) -> None:
        """Take a token, sleeping until one is there; SourceUnavailable if that would take over `max_wait`."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            if wait > max_wait:
                self._tokens += 1.0
                raise SourceUnavailable("BugHerd API rate limit (client side)", retry_after=wait)
        if wait > 0:
            time.sleep(wait)


_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def bucket_for(api_key: str) -> TokenBucket:
    with _buckets_lock:
        return _buckets.setdefault(api_key, TokenBucket())


class BugHerdClient:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = API_URL,
        session: requests.Session | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("BUGHERD_API_KEY is not set")
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.auth = (api_key, "x")
        self.session.headers.update({"Accept": "application/json"})
        self.limiter = limiter or bucket_for(api_key)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.limiter.acquire()
        url = f"{self.base_url}/api_v2/{path.lstrip('/')}"
        try:
            response = self.session.request(method, url, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"BugHerd unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise SourceUnavailable(f"BugHerd answered {status}", retry_after=_retry_after(response))
        if status in (401, 403):
            raise BugHerdError(f"BugHerd refused BUGHERD_API_KEY ({status})")
        if status == 404:
            raise BugHerdError(f"not found in BugHerd ({path})")
        if status >= 400:
            raise BugHerdError(f"BugHerd answered {status} to {method} {path}: {response.text[:200]}")
        try:
            data = response.json() if response.content else {}
        except ValueError:
            raise BugHerdError(f"BugHerd answered {method} {path} with something that is not JSON") from None
        if not isinstance(data, dict):
            raise BugHerdError(f"BugHerd answered {method} {path} with a JSON {type(data).__name__}")
        return data

    def task(self, project_id: int | str, task_id: int | str) -> dict[str, Any]:
        data = self.request("GET", f"projects/{project_id}/tasks/{task_id}.json")
        task = data.get("task")
        if not isinstance(task, dict):
            raise BugHerdError(f"task {task_id} not in BugHerd's answer")
        return task

    def tasks_page(self, project_id: int | str, page: int = 1) -> tuple[list[dict[str, Any]], int | None]:
        """One page (up to 100) of the project's tasks, archived ones included, and BugHerd's total count."""
        data = self.request("GET", f"projects/{project_id}/tasks.json?page={int(page)}")
        tasks = [t for t in data.get("tasks") or [] if isinstance(t, dict)]
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        count = meta.get("count")
        return tasks, int(count) if isinstance(count, int) else None

    def task_comments(self, project_id: int | str, task_id: int | str) -> list[dict[str, Any]]:
        """Every comment of a task, oldest first (the list is paginated by `page`, 100 a page)."""
        comments: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.request("GET", f"projects/{project_id}/tasks/{task_id}/comments.json?page={page}")
            batch = [c for c in data.get("comments") or [] if isinstance(c, dict)]
            comments.extend(batch)
            meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
            count = meta.get("count")
            if not batch or len(batch) < PAGE_SIZE or (isinstance(count, int) and len(comments) >= count):
                return comments
            page += 1

    def webhooks(self) -> list[dict[str, Any]]:
        hooks = self.request("GET", "webhooks.json").get("webhooks")
        return [h for h in hooks or [] if isinstance(h, dict)]

    def create_webhook(self, event: str, target_url: str, project_id: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"target_url": target_url, "event": event}
        if project_id is not None:
            body["project_id"] = project_id
        data = self.request("POST", "webhooks.json", body)
        return data.get("webhook") if isinstance(data.get("webhook"), dict) else data


def client_from_settings(settings: Settings, base_url: str = API_URL) -> BugHerdClient | None:
    return BugHerdClient(settings.bugherd_api_key, base_url=base_url) if settings.bugherd_api_key else None


def enrich(settings: Settings, event: NormalizedEvent, client: BugHerdClient | None = None) -> NormalizedEvent:
    """Fetch the whole task for an event whose body lacked its fields; unchanged without BUGHERD_API_KEY."""
    if event.source != bugherd.NAME or event.has_state:
        return event
    client = client or client_from_settings(settings)
    project_id = event.fields.get("project_id")
    if client is None or project_id in (None, ""):
        return event
    try:
        task = client.task(project_id, event.item_key)
    except BugHerdError as exc:
        log.warning("could not fetch a BugHerd task: %s", exc, extra={"item": event.item_key})
        return dataclasses.replace(event, notes=(*event.notes, f"could not fetch the task from BugHerd: {exc}"))
    fields = bugherd.task_fields({"project_id": project_id, **task})
    raw_ts = task.get("updated_at") or task.get("created_at")
    fetched_ts = parse_timestamp(raw_ts, field_name="task.updated_at") if raw_ts else event.source_ts
    notes = tuple(n for n in event.notes if n != bugherd.REDUCED_TASK_NOTE)
    return dataclasses.replace(
        event,
        fields=fields,
        has_state=True,
        source_ts=max(event.source_ts, fetched_ts),
        notes=(*notes, FETCHED_NOTE),
    )


def mask(secret: str) -> str:
    """Enough of a secret to recognise it, never the whole of it."""
    if len(secret) <= 8:
        return "***"
    return f"{secret[:4]}…{secret[-2:]}"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
