"""BugHerd's API v2: fetch a whole task when a webhook body lacks its fields, read a project's tasks and
comments (backfill, back-link lookups), write comments and status (talking back), manage the webhooks.

Authentication: HTTP basic with the API key (BUGHERD_API_KEY) as user and `x` as password; the API root is
BUGHERD_API_URL (every caller takes it from the settings: enrichment, backfill, writers, the CLI).

Rate: "an average of 60 requests per minute, with bursts of up to 10 in quick succession", else 429 (002:29).
Every request goes through `bridge.sources.http.SourceHttp` and spends budget `bugherd`, one rate with
bursts in the database shared by beat, every worker and a backfill; a 429 anyway blocks every process.

Answers: seed 002 shows the list wrappers (`{"tasks": [...], "meta": {"count": n}}`, 100 records a page,
002:81-92) and one object wrapper (`{"project": {...}}`, 002:54); it shows none for a task, the comment
list or the webhooks. The reads accept the wrapped and the bare forms, and a list is paged until an empty
page or `meta.count`, never stopped by a short page.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import requests

from bridge.events import NormalizedEvent, parse_timestamp
from bridge.outbound.budget import Budgets
from bridge.outbound.errors import ConfigError, Permanent
from bridge.settings import Settings
from bridge.sources.bugherd import webhook as bugherd
from bridge.sources.bugherd.calls import LIMITS, TABLE
from bridge.sources.http import (
    HOLD_ITEM,
    TIMEOUT,
    OnWait,
    SourceHttp,
    Throttle,
    item_hold,
    json_of,
    retry_after,
)

log = logging.getLogger("bridge.sources.bugherd")
API_URL = "https://www.bugherd.com"
FETCHED_NOTE = "fields fetched from BugHerd"
PAGE_SIZE = 100  # "only the first 100 records are returned" (002:92)
MAX_PAGES = 1000  # a guard against a server that ignores `page`
BUDGET = "bugherd"
DEFAULT_WAIT = 10.0  # a 429 without Retry-After: a burst's worth, doubling while refused


class BugHerdError(Permanent):
    """BugHerd answered, but not with what was asked (bad key, no such task): not worth a retry."""


class BugHerdAnswers:
    system = "BugHerd"
    key = BUDGET

    def throttle(self, response: requests.Response) -> Throttle | None:
        if response.status_code != 429:
            return None
        wait = retry_after(response)
        if wait is not None:
            return Throttle(BUDGET, wait, "BugHerd rate limit (429, Retry-After)")
        return Throttle(BUDGET, None, "BugHerd rate limit (429; 60 a minute, bursts of 10)", DEFAULT_WAIT)

    def after(self, response: requests.Response, budgets: Budgets) -> None:
        return None

    def refusal(self, response: requests.Response, method: str, path: str) -> Exception | None:
        status = response.status_code
        if status in (401, 403):
            return BugHerdError(f"BugHerd refused BUGHERD_API_KEY ({status})", status=status)
        if status == 404:
            return BugHerdError(f"not found in BugHerd ({path})", status=404)
        if status >= 400:
            return BugHerdError(f"BugHerd answered {status} to {method} {path}: {response.text[:200]}", status=status)
        if response.content and json_of(response) is None:
            return BugHerdError(f"BugHerd answered {method} {path} with something that is not JSON")
        return None


class BugHerdClient:
    def __init__(
        self,
        api_key: str,
        *,
        budgets: Budgets,
        base_url: str = API_URL,
        session: requests.Session | None = None,
        hold: float = HOLD_ITEM,
        on_wait: OnWait | None = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        if not api_key:
            raise ValueError("BUGHERD_API_KEY is not set")
        session = session or requests.Session()
        session.auth = (api_key, "x")
        session.headers.update({"Accept": "application/json"})
        self.http = SourceHttp(
            TABLE,
            base_url,
            BugHerdAnswers(),
            budgets=budgets,
            limits=LIMITS,
            session=session,
            hold=hold,
            on_wait=on_wait,
            timeout=timeout,
        )
        self.base_url = self.http.base_url

    @property
    def calls(self) -> int:
        return self.http.calls

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """One call under `/api_v2/` (`path` relative to it): the answer's JSON (None when it has no body)."""
        response = self.http.send(method, f"/api_v2/{path.lstrip('/')}", params=params, body=body)
        return json_of(response)

    def task(self, project_id: int | str, task_id: int | str) -> dict[str, Any]:
        data = self.request("GET", f"projects/{project_id}/tasks/{task_id}.json")
        task = _unwrap(data, "task")
        if task is None or task.get("id") is None:
            raise BugHerdError(f"task {task_id} not in BugHerd's answer")
        return task

    def tasks_page(self, project_id: int | str, page: int = 1) -> tuple[list[dict[str, Any]], int | None]:
        """One page (up to 100) of the project's tasks, archived ones included, and BugHerd's total count."""
        data = self.request("GET", f"projects/{project_id}/tasks.json", params={"page": int(page)})
        return _listed(data, "tasks")

    def task_comments(self, project_id: int | str, task_id: int | str) -> list[dict[str, Any]]:
        """Every comment of a task, oldest first: pages until an empty page or `meta.count` comments, whatever
        a page's size (a short page is not the last one when the count says more)."""
        comments: dict[str, dict[str, Any]] = {}
        for page in range(1, MAX_PAGES + 1):
            data = self.request("GET", f"projects/{project_id}/tasks/{task_id}/comments.json", params={"page": page})
            batch, count = _listed(data, "comments")
            new = 0
            for comment in batch:
                key = str(comment.get("id"))
                if key not in comments:
                    comments[key] = comment
                    new += 1
            if not batch or not new or (count is not None and len(comments) >= count):
                break
        return list(comments.values())

    def webhooks(self) -> list[dict[str, Any]]:
        hooks, _ = _listed(self.request("GET", "webhooks.json"), "webhooks")
        return hooks

    def create_webhook(self, event: str, target_url: str, project_id: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"target_url": target_url, "event": event}
        if project_id is not None:
            body["project_id"] = project_id
        return _unwrap(self.request("POST", "webhooks.json", body), "webhook") or {}


def _unwrap(data: Any, name: str) -> dict[str, Any] | None:
    """`{"<name>": {...}}` or the bare object."""
    if isinstance(data, dict) and isinstance(data.get(name), dict):
        return dict(data[name])
    return dict(data) if isinstance(data, dict) and name not in data else None


def _listed(data: Any, name: str) -> tuple[list[dict[str, Any]], int | None]:
    """`{"<name>": [...], "meta": {"count": n}}` (002:48, 91), or a bare list: its records and the count."""
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)], None
    if not isinstance(data, dict):
        return [], None
    records = [d for d in data.get(name) or [] if isinstance(d, dict)]
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    count = meta.get("count")
    return records, count if isinstance(count, int) and not isinstance(count, bool) else None


def client_from_settings(
    settings: Settings, budgets: Budgets, *, hold: float = HOLD_ITEM, on_wait: OnWait | None = None
) -> BugHerdClient | None:
    """A client at BUGHERD_API_URL, or None without BUGHERD_API_KEY."""
    if not settings.bugherd_api_key:
        return None
    return BugHerdClient(
        settings.bugherd_api_key, budgets=budgets, base_url=settings.bugherd_api_url, hold=hold, on_wait=on_wait
    )


def enrich(
    settings: Settings, event: NormalizedEvent, budgets: Budgets, client: BugHerdClient | None = None
) -> NormalizedEvent:
    """Fetch the whole task for an event whose body lacked its fields; unchanged without BUGHERD_API_KEY. A
    refused key is a `ConfigError`: the change waits, with the reason in view, until the key is fixed."""
    if event.source != bugherd.NAME or event.has_state:
        return event
    client = client or client_from_settings(settings, budgets, hold=item_hold(settings.item_lease_seconds))
    project_id = event.fields.get("project_id")
    if client is None or project_id in (None, ""):
        return event
    try:
        task = client.task(project_id, event.item_key)
    except BugHerdError as exc:
        if exc.status in (401, 403):
            raise ConfigError(f"{exc.reason}: the change waits until the key is fixed") from None
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
