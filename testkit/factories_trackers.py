"""The project's own Bugzilla and BugHerd webhook bodies, shaped after the real ones in ../shared/fixtures.

Times are offsets in seconds from BASE_TIME, so a test reads as a timeline: `updated=30` is newer
than `updated=20`. Bugzilla writes UTC without an offset; BugHerd ISO-8601 with milliseconds and Z.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from testkit.factories import BASE_TIME

BUGHERD_TOKEN = "bh-7f3c9a1e5d2b48a6b0c4e9f1a2d3c4b5"
BUGZILLA_SECRET = "zQ5rT8wX2yB6nM4kP9sV1"
BUGHERD_EVENTS = ("task_create", "task_update", "comment", "task_destroy")


# -- BugHerd ----------------------------------------------------------------------------------------------


def bugherd_ts(seconds: float, *, millis: bool = True) -> str:
    """BugHerd's webhook timestamp (`2026-03-02T09:14:05.221Z`); `millis=False` is the API docs' form."""
    moment = BASE_TIME + timedelta(seconds=seconds)
    if not millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def bugherd_user(email: str = "tom.okafor@example.org", name: str = "Tom Okafor", user_id: int = 902305) -> dict:
    return {
        "id": user_id,
        "email": email,
        "display_name": name,
        "avatar_url": "https://www.gravatar.com/avatar/000000000000000000000000000dc4a1?d=mm",
    }


# BugHerd's column ids (seed 002): null = feedback, 0 backlog, 1 todo, 2 doing, 4 done, 5 closed.
STATUS_IDS = {"feedback": None, "backlog": 0, "todo": 1, "doing": 2, "done": 4, "closed": 5}
PRIORITY_IDS = {"not set": 0, "critical": 1, "important": 2, "normal": 3, "minor": 4}


def bugherd_task(
    *,
    task_id: int = 41000217,
    project_id: int = 77120,
    project_name: str = "Storefront redesign",
    local_task_id: int = 58,
    title: str | None = None,
    description: str | None = "The 'Add to cart' button overlaps the price on narrow screens.",
    status: str | None = "feedback",
    priority: str | None = "normal",
    tags: tuple[str, ...] = (),
    assignee: str | None = None,
    updated: float = 0,
    created: float = 0,
    deleted: float | None = None,
    millis: bool = True,
    site: str = "https://shop.example.org",
    url: str = "/products/blue-kettle",
) -> dict[str, Any]:
    person = bugherd_user(assignee, assignee.split("@")[0].title()) if assignee else None
    closed = status == "closed"
    return {
        "id": task_id,
        "project_id": project_id,
        "project_name": project_name,
        "created_at": bugherd_ts(created, millis=millis),
        "updated_at": bugherd_ts(updated, millis=millis),
        "local_task_id": local_task_id,
        "priority_id": PRIORITY_IDS.get(priority or "not set"),
        # Feedback tasks come with a null status_id; custom columns with their own id.
        "status_id": STATUS_IDS.get(status or "feedback", 6),
        "title": title,
        "description": description,
        "tag_names": list(tags),
        "external_id": None,
        "requester_email": "maria.lopez@example.org",
        "attachments": [],
        "screenshot_url": f"https://bugherd-attachments.example.com/screens/{task_id}.png",
        "status": status,
        "priority": priority,
        "closed_at": bugherd_ts(updated, millis=millis) if closed else None,
        "secret_link": "https://www.bugherd.com/t/Zq3vT0aLkP7mW2xY",
        "admin_link": f"https://www.bugherd.com/projects/{project_id}/tasks/{local_task_id}",
        "deleted_at": bugherd_ts(deleted, millis=millis) if deleted is not None else None,
        "site": site,
        "url": url,
        "metadata": {},
        "screenshot_data": {"screenshot_width": 1280, "screenshot_height": 800},
        "requester_os": "Android 14",
        "requester_browser": "Chrome 128.0.6613.99",
        "selector_info": {"path": "div.product > button.add-to-cart", "version": 2},
        "due_at": None,
        "column_id": STATUS_IDS.get(status or "feedback", 6),
        "logs": None,
        "assignees": [person] if person else [],
        "assigned_to": person,
        "requester": bugherd_user("maria.lopez@example.org", "Maria Lopez", 902211),
        "updater": bugherd_user() if updated else None,
    }


def bugherd_comment(
    *,
    comment_id: int = 18800452,
    text: str = "Reproduced on Pixel 8; the button's min-width is the cause.",
    commented: float = 0,
    deleted: float | None = None,
    author: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": comment_id,
        "created_at": bugherd_ts(commented),
        "text": text,
        "deleted_at": bugherd_ts(deleted) if deleted is not None else None,
        "updated_at": bugherd_ts(commented if deleted is None else deleted),
        "user": author if author is not None else bugherd_user(),
        "task": task if task is not None else bugherd_task(updated=commented),
    }


def bugherd_event(event: str, **kwargs: Any) -> dict[str, Any]:
    """A BugHerd body for `event`: `{"task": …}`, or `{"comment": {…, "task": …}}` for `comment`.

    Task keyword arguments go to `bugherd_task`; for `comment`, `comment_id`, `text`, `commented`,
    `deleted` and `author` go to the comment and the rest to its nested task.
    """
    if event not in BUGHERD_EVENTS:
        raise ValueError(f"not a BugHerd event: {event}")
    if event == "comment":
        comment_keys = {"comment_id", "text", "commented", "deleted", "author"}
        comment_kwargs = {k: v for k, v in kwargs.items() if k in comment_keys}
        task_kwargs = {k: v for k, v in kwargs.items() if k not in comment_keys}
        task_kwargs.setdefault("updated", comment_kwargs.get("commented", 0))
        return {"comment": bugherd_comment(**comment_kwargs, task=bugherd_task(**task_kwargs))}
    if event == "task_destroy":
        kwargs.setdefault("deleted", kwargs.get("updated", 0))
    return {"task": bugherd_task(**kwargs)}


def bugherd_path(event: str, token: str = BUGHERD_TOKEN) -> str:
    return f"/webhooks/bugherd/{token}/{event}"


def encode(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


# -- Bugzilla ---------------------------------------------------------------------------------------------


def bugzilla_ts(seconds: float) -> str:
    """Bugzilla's webhook time: UTC, one-second precision, no offset (`2020-10-16T06:28:41`)."""
    return (BASE_TIME + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def bugzilla_user(login: str = "nobody@mozilla.org", real_name: str = "Nobody; OK to take it and work on it") -> dict:
    return {"id": 1, "login": login, "real_name": real_name}


def bugzilla_bug(
    *,
    bug_id: int = 1629704,
    summary: str = "Checkout button unresponsive after login",
    status: str = "NEW",
    resolution: str = "",
    severity: str = "--",
    priority: str = "",
    product: str = "Firefox",
    component: str = "Sync",
    keywords: tuple[str, ...] = (),
    bug_type: str = "defect",
    assigned_to: str = "nobody@mozilla.org",
    changed: float | None = 0,
    created: float = 0,
    private: bool = False,
) -> dict[str, Any]:
    if private:
        return {"id": bug_id, "is_private": True}
    person = bugzilla_user(assigned_to, assigned_to.split("@")[0])
    bug: dict[str, Any] = {
        "alias": "",
        "assigned_to": assigned_to,
        "assigned_to_detail": person,
        "classification": "Client Software",
        "component": component,
        "creation_time": bugzilla_ts(created),
        "creator": "reporter@example.org",
        "creator_detail": bugzilla_user("reporter@example.org", "Rita Reporter"),
        "flags": [],
        "id": bug_id,
        "is_private": False,
        "keywords": list(keywords),
        "operating_system": "Unspecified",
        "platform": "Unspecified",
        "priority": priority,
        "product": product,
        "qa_contact": "",
        "resolution": resolution,
        "severity": severity,
        "status": status,
        "summary": summary,
        "target_milestone": "---",
        "type": bug_type,
        "url": "",
        "version": "unspecified",
        "whiteboard": "",
    }
    if changed is not None:
        bug["last_change_time"] = bugzilla_ts(changed)
    return bug


def bugzilla_comment(
    *, comment_id: int = 14748073, number: int = 1, text: str = "another test comment", commented: float = 0
) -> dict[str, Any]:
    return {
        "body": text,
        "creation_time": bugzilla_ts(commented),
        "id": comment_id,
        "is_private": False,
        "number": number,
    }


def bugzilla_event(
    target: str = "bug",
    action: str = "create",
    *,
    bug: dict[str, Any] | None = None,
    changes: list[dict[str, str]] | None = None,
    at: float | None = None,
    comment: dict[str, Any] | None = None,
    attachment: dict[str, Any] | None = None,
    webhook_id: int = 23,
    user: str = "nobody@mozilla.org",
    **bug_kwargs: Any,
) -> dict[str, Any]:
    """A BMO webhook body. `at` is `event.time` (defaults to the bug's last change); the routing key
    names the changed fields on modify, as BMO does."""
    bug = dict(bug) if bug is not None else bugzilla_bug(**bug_kwargs)
    if comment is not None:
        bug["comment"] = comment
    if attachment is not None:
        bug["attachment"] = attachment
    when = at if at is not None else bug_kwargs.get("changed", 0) or 0
    routing_key = f"{target}.{action}"
    if action == "modify" and changes:
        routing_key += ":" + ",".join(c["field"] for c in changes)
    event: dict[str, Any] = {
        "action": action,
        "routing_key": routing_key,
        "target": target,
        "time": bugzilla_ts(when),
        "user": bugzilla_user(user, user.split("@")[0]),
    }
    private = bug.get("is_private") and set(bug) <= {"id", "is_private", "comment", "attachment"}
    if action == "modify" and not private:  # BMO drops the changes of a private bug
        event["changes"] = list(changes or [])
    return {"bug": bug, "event": event, "webhook_id": webhook_id, "webhook_name": f"test-{target}"}


def bugzilla_attachment(*, attachment_id: int = 9180115, at: float = 0) -> dict[str, Any]:
    return {
        "content_type": "text/plain",
        "creation_time": bugzilla_ts(at),
        "description": "test attachment",
        "file_name": "file_1629704.txt",
        "flags": [],
        "id": attachment_id,
        "is_obsolete": False,
        "is_patch": False,
        "is_private": False,
        "last_change_time": bugzilla_ts(at),
    }


def bugzilla_headers(secret: str = BUGZILLA_SECRET, header: str = "Authorization") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "Mojolicious (Perl)",
        header: secret,
    }


# -- an app for the Flask test client ----------------------------------------------------------------------


def tracker_env(tmp_path: Any, **extra: str) -> dict[str, str]:
    """Settings for `create_app` in unit tests: files under tmp_path, both trackers enabled, and a
    broker URL nothing listens on (the wake-up is best effort: the stored row is what counts)."""
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(tmp_path / "mappings"),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "BUGHERD_WEBHOOK_TOKEN": BUGHERD_TOKEN,
        "BUGZILLA_WEBHOOK_SECRET": BUGZILLA_SECRET,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}
