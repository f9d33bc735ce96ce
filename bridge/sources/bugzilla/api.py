"""Bugzilla's REST API (`/rest/bug…`), for what a webhook lacks and for polling installations without webhooks.

Authentication: the API key (BUGZILLA_API_KEY) in the `X-BUGZILLA-API-KEY` header (Bugzilla 5.0+ and BMO).
Errors: network failures, 5xx and 429 raise `SourceUnavailable` (the event is retried later); 401/403/404
and Bugzilla's own error bodies raise `BugzillaError`, which `enrich` turns into a note on the event.

REST times are `2014-09-23T19:12:17Z`; the fields handed to mappings use the webhook's form (no `Z`) so a
template reads the same whichever way the bug arrived.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import requests

from bridge.events import NormalizedEvent, SourceUnavailable, parse_timestamp
from bridge.settings import Settings
from bridge.sources.bugzilla import webhook as bugzilla

log = logging.getLogger("bridge.sources.bugzilla")
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
API_KEY_HEADER = "X-BUGZILLA-API-KEY"
FETCHED_NOTE = "fields fetched from Bugzilla"
# What a poll or an enrichment asks for: the fields `bug_fields` reads, nothing more.
BUG_FIELDS = (
    "id",
    "alias",
    "summary",
    "status",
    "resolution",
    "severity",
    "priority",
    "classification",
    "product",
    "component",
    "keywords",
    "whiteboard",
    "url",
    "version",
    "target_milestone",
    "type",
    "assigned_to",
    "creator",
    "qa_contact",
    "op_sys",
    "platform",
    "creation_time",
    "last_change_time",
    "is_private",
)


class BugzillaError(Exception):
    """Bugzilla answered, but not with what was asked (bad key, no such bug, an error body): not worth a retry."""


class BugzillaClient:
    def __init__(self, base_url: str, api_key: str, *, session: requests.Session | None = None) -> None:
        if not base_url or not api_key:
            raise ValueError("BUGZILLA_URL and BUGZILLA_API_KEY are both needed for the Bugzilla API")
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update({API_KEY_HEADER: api_key, "Accept": "application/json"})

    # -- requests -----------------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send("GET", path, params=params)

    def update(self, bug_id: int | str, body: dict[str, Any]) -> dict[str, Any]:
        """`PUT /rest/bug/{id}` (seed 003:1820-2176): status, resolution, see_also, a comment (`comment.body`)."""
        return self.send("PUT", f"bug/{bug_id}", body=body)

    def send(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = f"{self.base_url}/rest/{path.lstrip('/')}"
        try:
            response = self.session.request(method, url, params=params, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"Bugzilla unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise SourceUnavailable(f"Bugzilla answered {status}", retry_after=_retry_after(response))
        try:
            body = response.json()
        except ValueError:
            body = None
        if status in (401, 403):
            raise BugzillaError(f"Bugzilla refused BUGZILLA_API_KEY ({status}{_message(body)})")
        if status == 404:
            raise BugzillaError(f"not found in Bugzilla ({path}{_message(body)})")
        if status >= 400 or not isinstance(body, dict):
            raise BugzillaError(f"Bugzilla answered {status} to {path}{_message(body)}")
        if body.get("error"):
            raise BugzillaError(f"Bugzilla error{_message(body)}")
        return body

    def bug(self, bug_id: int | str, include_fields: Iterable[str] = BUG_FIELDS) -> dict[str, Any]:
        body = self.get(f"bug/{bug_id}", {"include_fields": ",".join(include_fields)})
        bugs = body.get("bugs")
        if not isinstance(bugs, list) or not bugs or not isinstance(bugs[0], dict):
            raise BugzillaError(f"bug {bug_id} not in Bugzilla's answer")
        return bugs[0]

    def comments(self, bug_id: int | str, new_since: str | None = None) -> list[dict[str, Any]]:
        """The bug's comments, oldest first (`count` 0 is the description). `new_since`: strictly newer ones."""
        params = {"new_since": new_since} if new_since else None
        body = self.get(f"bug/{bug_id}/comment", params)
        bug = (body.get("bugs") or {}).get(str(bug_id)) or {}
        comments = bug.get("comments") if isinstance(bug, dict) else None
        return [c for c in comments or [] if isinstance(c, dict)]

    def search(
        self,
        *,
        last_change_time: str,
        product: str | None = None,
        limit: int = 100,
        offset: int = 0,
        include_fields: Iterable[str] = BUG_FIELDS,
        component: str | None = None,
    ) -> list[dict[str, Any]]:
        """Bugs changed at `last_change_time` or later, oldest change first (then by id)."""
        params: dict[str, Any] = {
            "last_change_time": last_change_time,
            "include_fields": ",".join(include_fields),
            "order": "changeddate,bug_id",
            "limit": limit,
            "offset": offset,
        }
        if product:
            params["product"] = product
        if component:
            params["component"] = component
        bugs = self.get("bug", params).get("bugs")
        return [b for b in bugs or [] if isinstance(b, dict)]


def client_from_settings(settings: Settings) -> BugzillaClient | None:
    if not (settings.bugzilla_url and settings.bugzilla_api_key):
        return None
    return BugzillaClient(settings.bugzilla_url, settings.bugzilla_api_key)


# -- turning REST objects into the source's fields ------------------------------------------------------------


def webhook_time(value: Any) -> Any:
    """`2014-09-23T19:12:17Z` → `2014-09-23T19:12:17`, the form Bugzilla's webhooks use."""
    return value[:-1] if isinstance(value, str) and value.endswith("Z") else value


def fields_of(bug: dict[str, Any], bugzilla_url: str, description: str | None = None) -> dict[str, Any]:
    bug = {**bug, "creation_time": webhook_time(bug.get("creation_time"))}
    bug["last_change_time"] = webhook_time(bug.get("last_change_time"))
    fields = bugzilla.bug_fields(bug, int(bug["id"]), bugzilla_url=bugzilla_url)
    if description is not None:
        fields["description"] = description
    return fields


def description_of(comments: list[dict[str, Any]]) -> str | None:
    """Comment 0's text (the bug's description), or None when it is not visible."""
    for comment in comments:
        if comment.get("count", comment.get("number")) == 0:
            return str(comment.get("text") or comment.get("body") or "")
    return None


def change_ts(bug: dict[str, Any]) -> datetime:
    return parse_timestamp(bug.get("last_change_time"), field_name="bug.last_change_time")


# -- enrich -----------------------------------------------------------------------------------------------------


def enrich(settings: Settings, event: NormalizedEvent, client: BugzillaClient | None = None) -> NormalizedEvent:
    """Fetch a bug the webhook reduced (a private bug) and return the event with its full fields.

    Without BUGZILLA_URL and BUGZILLA_API_KEY the event comes back unchanged (its notes say what is missing).
    A bad key or an unknown bug adds a note and leaves the event without state (the sync skips it).
    """
    if event.source != bugzilla.NAME or event.has_state:
        return event
    client = client or client_from_settings(settings)
    if client is None:
        return event
    try:
        bug = client.bug(event.item_key)
        description = description_of(client.comments(event.item_key))
    except BugzillaError as exc:
        log.warning("could not fetch a Bugzilla bug: %s", exc, extra={"item": event.item_key})
        return dataclasses.replace(event, notes=(*event.notes, f"could not fetch the bug from Bugzilla: {exc}"))
    fields = {**event.fields, **fields_of(bug, settings.bugzilla_url, description)}
    fetched_ts = change_ts(bug) if bug.get("last_change_time") else event.source_ts
    notes = tuple(n for n in event.notes if n != bugzilla.PRIVATE_BUG_NOTE)
    return dataclasses.replace(
        event,
        fields=fields,
        has_state=True,
        source_ts=max(event.source_ts, fetched_ts),
        source_project=str(fields.get("product") or event.source_project),
        notes=(*notes, FETCHED_NOTE),
    )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict) and body.get("message"):
        return f": {str(body['message'])[:200]}"
    return ""
