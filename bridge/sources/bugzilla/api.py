"""Bugzilla's REST API (`/rest/bug…`), for what a webhook lacks and for polling installations without webhooks.

Authentication: the API key (BUGZILLA_API_KEY) in the `X-BUGZILLA-API-KEY` header (Bugzilla 5.0+ and BMO).
Every request goes through `bridge.sources.http.SourceHttp` (declared in `calls.py`, budget `bugzilla`
shared by every process): 429/503 with `Retry-After` block every process for that long (capped) and are a
wait (`SourceBusy`), never an attempt; network failures and 5xx open the outage breaker (`SourceUnavailable`,
retried later; only reads are repeated in place, never a PUT); 401/403/404 and Bugzilla's own error bodies
raise `BugzillaError`, which `enrich` turns into a note on the event.

REST times are `2014-09-23T19:12:17Z`; the fields handed to mappings use the webhook's form (no `Z`) so a
template reads the same whichever way the bug arrived.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import requests

from bridge.events import NormalizedEvent, parse_timestamp
from bridge.outbound.budget import Budgets
from bridge.outbound.errors import ConfigError, Permanent
from bridge.settings import Settings
from bridge.sources.bugzilla import webhook as bugzilla
from bridge.sources.bugzilla.calls import LIMITS, TABLE
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
from bridge.sources.spec import AttachmentRef, AttachmentRefused, AttachmentTooLarge, Fetched

log = logging.getLogger("bridge.sources.bugzilla")
BUDGET = "bugzilla"
DEFAULT_WAIT = 60.0  # a 429 that names no time: a minute, doubling while refused
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


class BugzillaError(Permanent):
    """Bugzilla answered, but not with what was asked (bad key, no such bug, an error body): not worth a retry.
    `code` is Bugzilla's own error code when its body gave one (e.g. 104 for a refused status change)."""

    def __init__(self, reason: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(reason, status=status)
        self.code = code


class BugzillaAnswers:
    """How Bugzilla's answers are read: `{"error": true, "code", "message"}` bodies (with any status, even
    200) are refusals; 429/503 with `Retry-After` block every process for that long (capped)."""

    system = "Bugzilla"
    key = BUDGET

    def throttle(self, response: requests.Response) -> Throttle | None:
        wait = retry_after(response)
        if response.status_code in (429, 503) and wait is not None:
            return Throttle(BUDGET, wait, f"Bugzilla asked to wait ({response.status_code}, Retry-After)")
        if response.status_code == 429:
            return Throttle(BUDGET, None, "Bugzilla answered 429 without Retry-After", DEFAULT_WAIT)
        return None

    def after(self, response: requests.Response, budgets: Budgets) -> None:
        return None

    def refusal(self, response: requests.Response, method: str, path: str) -> Exception | None:
        status = response.status_code
        body = json_of(response)
        code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), int) else None
        if status in (401, 403):
            return BugzillaError(f"Bugzilla refused BUGZILLA_API_KEY ({status}{_message(body)})", status=status)
        if status == 404:
            return BugzillaError(f"not found in Bugzilla ({path}{_message(body)})", status=404, code=code)
        if status >= 400 or not isinstance(body, dict):
            return BugzillaError(
                f"Bugzilla answered {status} to {method} {path}{_message(body)}", status=status, code=code
            )
        if body.get("error"):
            return BugzillaError(f"Bugzilla error{_message(body)}", status=status, code=code)
        return None


class BugzillaClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        budgets: Budgets,
        session: requests.Session | None = None,
        hold: float = HOLD_ITEM,
        on_wait: OnWait | None = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        if not base_url:
            raise ValueError("BUGZILLA_URL is needed for the Bugzilla API")
        session = session or requests.Session()
        session.headers.update({"Accept": "application/json"})
        if api_key:  # without one: anonymous, public bugs only (an attachment of a public bug)
            session.headers[API_KEY_HEADER] = api_key
        self.http = SourceHttp(
            TABLE,
            base_url,
            BugzillaAnswers(),
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

    # -- requests -----------------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send("GET", path, params=params)

    def update(self, bug_id: int | str, body: dict[str, Any]) -> dict[str, Any]:
        """`PUT /rest/bug/{id}` (seed 003:1820-2176): status, resolution, see_also, a comment (`comment.body`)."""
        return self.send("PUT", f"bug/{bug_id}", body=body)

    def send(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call under `/rest/` (`path` relative to it); the answer's JSON object."""
        response = self.http.send(method, f"/rest/{path.lstrip('/')}", params=params, body=body)
        data = json_of(response)
        assert isinstance(data, dict)  # BugzillaAnswers refuses anything else
        return data

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
        """One page of the bugs changed at `last_change_time` or later (003:1498-1631).

        Only documented parameters: `limit` may be replaced by the installation's maximum (003:1563-1567) and
        the order of the results is not documented, so a caller pages until an empty page, dedupes by id and
        orders locally (`search_all`)."""
        params: dict[str, Any] = {
            "last_change_time": last_change_time,
            "include_fields": ",".join(include_fields),
            "limit": limit,
            "offset": offset,
        }
        if product:
            params["product"] = product
        if component:
            params["component"] = component
        bugs = self.get("bug", params).get("bugs")
        return [b for b in bugs or [] if isinstance(b, dict)]


def fetch_attachment(settings: Settings, budgets: Budgets, ref: AttachmentRef, max_bytes: int) -> Fetched:
    """`GET /rest/bug/attachment/{id}` through the client (declared, budgeted, Bugzilla's throttles honoured by
    every process): `{"attachments": {"<id>": {"data": base64, "file_name", "content_type", …}}}`. The size the
    webhook stated is checked before the call; Bugzilla's own maximum attachment size bounds the answer."""
    if not settings.bugzilla_url:
        raise AttachmentRefused("BUGZILLA_URL is needed to read Bugzilla attachments")
    # BUGZILLA_API_KEY when set; without it, the attachments of public bugs are read anonymously
    client = BugzillaClient(settings.bugzilla_url, settings.bugzilla_api_key, budgets=budgets)
    attachment_id = ref.key.removeprefix("attachment:")
    try:
        payload = client.get(f"bug/attachment/{attachment_id}")
    except BugzillaError as exc:
        raise AttachmentRefused(f"Bugzilla attachment {attachment_id}: {exc.reason}") from None
    try:
        item = next(iter(payload["attachments"].values()))
        data = base64.b64decode(item["data"], validate=True)
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
        raise AttachmentRefused(f"Bugzilla answered no attachment content for {ref.file_name}") from None
    if len(data) > max_bytes:
        raise AttachmentTooLarge(f"{ref.file_name} is {len(data)} bytes, over ATTACHMENT_MAX_BYTES ({max_bytes})")
    name = str(item.get("file_name") or ref.file_name)
    return Fetched(name, str(item.get("content_type") or "application/octet-stream"), data)


def client_from_settings(
    settings: Settings, budgets: Budgets, *, hold: float = HOLD_ITEM, on_wait: OnWait | None = None
) -> BugzillaClient | None:
    if not (settings.bugzilla_url and settings.bugzilla_api_key):
        return None
    return BugzillaClient(settings.bugzilla_url, settings.bugzilla_api_key, budgets=budgets, hold=hold, on_wait=on_wait)


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


def enrich(
    settings: Settings, event: NormalizedEvent, budgets: Budgets, client: BugzillaClient | None = None
) -> NormalizedEvent:
    """Fetch a bug the webhook reduced (a private bug) and return the event with its full fields.

    Without BUGZILLA_URL and BUGZILLA_API_KEY the event comes back unchanged (its notes say what is missing).
    An unknown bug adds a note and leaves the event without state (the sync skips it). A refused key (401/403:
    a bad key, or one whose user may not see this private bug) is a `ConfigError`: the change waits, with the
    reason in view, until the key is fixed.
    """
    if event.source != bugzilla.NAME or event.has_state:
        return event
    client = client or client_from_settings(settings, budgets, hold=item_hold(settings.item_lease_seconds))
    if client is None:
        return event
    try:
        bug = client.bug(event.item_key)
        description = description_of(client.comments(event.item_key))
    except BugzillaError as exc:
        if exc.status in (401, 403):
            raise ConfigError(f"{exc.reason}: the change waits until BUGZILLA_API_KEY can read the bug") from None
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


def _message(body: Any) -> str:
    if isinstance(body, dict) and body.get("message"):
        return f": {str(body['message'])[:200]}"
    return ""
