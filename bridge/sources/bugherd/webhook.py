"""BugHerd webhooks (`task_create`, `task_update`, `comment`, `task_destroy`) → NormalizedEvent.

BugHerd signs nothing and its body does not name the event, so each event gets its own URL,
`/webhooks/bugherd/<token>/<event>`: the unguessable token is the authentication (compared in
constant time) and the last path segment is the event. There is no delivery id either: the dedup
key is the event plus a hash of the exact body, so a retried delivery is a duplicate while a real
change (its `updated_at` moves) is not.

Bodies: `{"task": {...}}` for the task events; `{"comment": {..., "task": {...the whole task...}}}`
for `comment`. Timestamps are ISO-8601 with milliseconds and `Z`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.events import BadDelivery, Comment, NormalizedEvent, Unauthorized, parse_timestamp
from bridge.sources.common import load_json_object
from bridge.sources.validate import check_id, text_field

NAME = "bugherd"
DISPLAY_NAME = "BugHerd"
# One webhook (and one URL) per event, in BugHerd's own words; the value is the normalized action.
EVENTS: dict[str, str] = {
    "task_create": "created",
    "task_update": "updated",
    "comment": "comment_created",
    "task_destroy": "deleted",
}
REDUCED_TASK_NOTE = "the task body lacked its fields; set BUGHERD_API_KEY to fetch them"
TITLE_LIMIT = 120  # a fallback title cut from the description stays readable in Zoho lists

# The fields a mapping can use (templates, `from:`), all taken from the task object.
FIELDS = frozenset(
    {
        "title",  # the task's title, else the first line of its description (BugHerd's title is often null)
        "description",
        "status",  # feedback (when BugHerd sends null), backlog, todo, doing, done, closed, or a custom column
        "status_id",
        "priority",  # "not set", critical, important, normal, minor
        "priority_id",
        "tag_names",  # a list
        "requester",  # email
        "assignee",  # email
        "assignees",  # a list of emails
        "site",
        "url",
        "page_url",  # site + url: the page the task was logged on
        "screenshot_url",
        "admin_link",
        "secret_link",
        "project_id",
        "project_name",
        "local_task_id",
        "task_id",
        "external_id",  # BugHerd's own external_id (settable through its API only)
        "created_at",
        "updated_at",
        "due_at",
    }
)


class BugHerdSource:
    name = NAME
    display_name = DISPLAY_NAME
    fields = FIELDS
    # The event names the `<event>` path segment may take; the intake answers 404 to anything else.
    path_events = tuple(EVENTS)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("BUGHERD_WEBHOOK_TOKEN is not set: the BugHerd source is disabled")
        self._token = token.encode()

    def verify(self, body: bytes, headers: Mapping[str, str], path_token: str | None = None) -> None:
        """The token from the URL path must equal BUGHERD_WEBHOOK_TOKEN (constant time)."""
        if not path_token:
            raise Unauthorized("missing BugHerd token in the webhook URL")
        if not hmac.compare_digest(self._token, path_token.encode()):
            raise Unauthorized("the BugHerd token in the webhook URL is wrong")

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent:
        event = _event_name(event_hint)
        payload = load_json_object(body)
        comment: Comment | None = None
        if event == "comment":
            raw_comment = payload.get("comment")
            if not isinstance(raw_comment, dict):
                raise BadDelivery('comment: expected an object (a comment body is {"comment": {..., "task": {...}}})')
            task = raw_comment.get("task")
            if not isinstance(task, dict):
                raise BadDelivery("comment.task: expected an object")
            comment = _comment(raw_comment, task)
            action = "comment_deleted" if raw_comment.get("deleted_at") else "comment_created"
        else:
            task = payload.get("task")
            if not isinstance(task, dict):
                raise BadDelivery(f'task: expected an object (a {event} body is {{"task": {{...}}}})')
            action = EVENTS[event]
        fields = task_fields(task)
        # A task body without its description and status carries no state worth applying (a destroy needs none).
        reduced = action not in ("deleted",) and comment is None and "description" not in task and "status" not in task
        return NormalizedEvent(
            source=NAME,
            item_kind="task",
            item_key=str(fields["task_id"]),
            action=action,
            event_name=event,
            source_ts=_task_ts(task, deleting=action == "deleted", reduced=reduced),
            fields=fields,
            comment=comment,
            # Routed by project id: it never changes, while admins rename projects.
            source_project=str(fields["project_id"]),
            has_state=not reduced,
            notes=(REDUCED_TASK_NOTE,) if reduced else (),
        )

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str:
        # No delivery id exists: the same body for the same event is the same delivery.
        return f"{event_hint or ''}:{hashlib.sha256(body).hexdigest()}"


def _event_name(event_hint: str | None) -> str:
    if event_hint not in EVENTS:
        raise BadDelivery(f"unknown BugHerd event {event_hint!r} (expected one of {', '.join(EVENTS)})")
    return event_hint


def _id(value: Any, field_name: str) -> int | str:
    return check_id(field_name, value)


def _email(person: Any) -> str:
    return text_field("email", person.get("email")) if isinstance(person, dict) else ""


def page_url(site: str, url: str) -> str:
    """Where the task was logged: BugHerd sends the site and the path separately."""
    if url.startswith(("http://", "https://")) or not site:
        return url
    if not url:
        return site
    return site.rstrip("/") + "/" + url.lstrip("/")


def fallback_title(description: str, local_task_id: Any) -> str:
    first_line = next((line.strip() for line in description.splitlines() if line.strip()), "")
    if not first_line:
        return f"BugHerd task #{local_task_id}" if local_task_id is not None else "BugHerd task"
    return first_line if len(first_line) <= TITLE_LIMIT else first_line[: TITLE_LIMIT - 1] + "…"


def task_fields(task: dict[str, Any]) -> dict[str, Any]:
    task_id = _id(task.get("id"), "task.id")
    project_id = _id(task.get("project_id"), "task.project_id")
    tags = task.get("tag_names") or []
    if not isinstance(tags, list):
        raise BadDelivery("task.tag_names: expected a list")
    description = text_field("task.description", task.get("description"))
    title = text_field("task.title", task.get("title")).strip() or fallback_title(
        description, task.get("local_task_id")
    )
    site, url = text_field("task.site", task.get("site")), text_field("task.url", task.get("url"))
    requester = _email(task.get("requester")) or text_field("task.requester_email", task.get("requester_email"))
    listed = task.get("assignees")
    assignees = [_email(a) for a in (listed if isinstance(listed, list) else []) if _email(a)]
    return {
        "title": title,
        "description": description,
        # BugHerd sends a null status (and status_id) for tasks still in the feedback panel.
        "status": text_field("task.status", task.get("status")) or "feedback",
        "status_id": task.get("status_id"),
        "priority": text_field("task.priority", task.get("priority")) or "not set",
        "priority_id": task.get("priority_id"),
        "tag_names": [text_field("task.tag_names", t) for t in tags if t is not None],
        "requester": requester,
        "assignee": _email(task.get("assigned_to")) or (assignees[0] if assignees else ""),
        "assignees": assignees,
        "site": site,
        "url": url,
        "page_url": page_url(site, url),
        "screenshot_url": text_field("task.screenshot_url", task.get("screenshot_url")),
        "admin_link": text_field("task.admin_link", task.get("admin_link")),
        "secret_link": text_field("task.secret_link", task.get("secret_link")),
        "project_id": project_id,
        "project_name": text_field("task.project_name", task.get("project_name")),
        "local_task_id": task.get("local_task_id"),
        "task_id": task_id,
        "external_id": text_field("task.external_id", task.get("external_id")),
        "created_at": task.get("created_at"),
        "updated_at": task.get("updated_at"),
        "due_at": task.get("due_at"),
    }


def _task_ts(task: dict[str, Any], *, deleting: bool, reduced: bool = False) -> datetime:
    raw = task.get("updated_at") or task.get("created_at")
    if raw is None and reduced:
        return datetime.now(UTC)  # the fetched task's updated_at replaces it
    if raw is None:
        raise BadDelivery("task.updated_at: expected an ISO-8601 timestamp, got None")
    ts = parse_timestamp(raw, field_name="task.updated_at")
    if deleting and task.get("deleted_at"):
        # A destroy must not look older than the task's last update.
        ts = max(ts, parse_timestamp(task["deleted_at"], field_name="task.deleted_at"))
    return ts


def _comment(raw: dict[str, Any], task: dict[str, Any]) -> Comment:
    comment_id = _id(raw.get("id"), "comment.id")
    user = raw.get("user") if isinstance(raw.get("user"), dict) else {}
    created = raw.get("created_at")
    updated = raw.get("deleted_at") or raw.get("updated_at") or created
    return Comment(
        id=str(comment_id),
        body=text_field("comment.text", raw.get("text")),
        author=text_field("comment.user", user.get("display_name") or user.get("email")),
        url=text_field("task.admin_link", task.get("admin_link")),
        created_at=parse_timestamp(created, field_name="comment.created_at") if created else None,
        updated_at=parse_timestamp(updated, field_name="comment.updated_at") if updated else None,
    )
