"""Sample deliveries for `issue-bridge send-test`: each tracker's real webhook shape, trimmed, and correctly
authenticated (GitHub's HMAC signature, Bugzilla's header, BugHerd's URL token) from the bridge's settings.

The item is a clearly labelled test item (`issue-bridge test delivery`), stamped now so it is the newest
state of that item; sent to a live bridge it creates (then updates) one real Zoho issue.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.settings import Settings

SOURCES = ("github", "bugzilla", "bugherd")
EVENTS = {
    "github": ("issues", "issue_comment", "ping"),
    "bugzilla": ("create", "modify", "comment"),
    "bugherd": ("task_create", "task_update", "comment", "task_destroy"),
}
TITLE = "issue-bridge test delivery"
USER_AGENT = "issue-bridge-send-test"
TEXT = "Sent by `issue-bridge send-test` to check the webhook path end to end. Safe to close."


@dataclass(frozen=True)
class Delivery:
    path: str
    body: bytes
    headers: dict[str, str]
    event: str


class SampleError(Exception):
    """The sample cannot be sent as asked (unknown event, source disabled); the message says why."""


def _now(*, millis: bool = False, zone: bool = True) -> str:
    moment = datetime.now(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond // 1000:03d}" if millis else "")
    return text + ("Z" if zone else "")


def github_payload(event: str) -> dict[str, Any]:
    user = {"login": "issue-bridge", "id": 1, "type": "User", "html_url": "https://github.com/issue-bridge"}
    repo = {
        "id": 1,
        "name": "issue-bridge-test",
        "full_name": "example/issue-bridge-test",
        "private": True,
        "owner": user,
        "html_url": "https://github.com/example/issue-bridge-test",
    }
    if event == "ping":
        return {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"}, "repository": repo}
    issue = {
        "url": "https://api.github.com/repos/example/issue-bridge-test/issues/1",
        "html_url": "https://github.com/example/issue-bridge-test/issues/1",
        "id": 1,
        "number": 1,
        "title": TITLE,
        "user": user,
        "labels": [],
        "state": "open",
        "locked": False,
        "assignee": None,
        "assignees": [],
        "comments": 0,
        "created_at": _now(),
        "updated_at": _now(),
        "closed_at": None,
        "body": TEXT,
    }
    payload: dict[str, Any] = {"action": "opened", "issue": issue, "repository": repo, "sender": user}
    if event == "issue_comment":
        payload["action"] = "created"
        payload["comment"] = {
            "id": int(datetime.now(UTC).timestamp()),
            "html_url": "https://github.com/example/issue-bridge-test/issues/1#issuecomment-1",
            "user": user,
            "created_at": _now(),
            "updated_at": _now(),
            "body": TEXT,
        }
    return payload


def bugzilla_payload(event: str) -> dict[str, Any]:
    user = {"id": 1, "login": "issue-bridge@example.org", "real_name": "issue-bridge"}
    now = _now(zone=False)
    bug: dict[str, Any] = {
        "id": 999001,
        "alias": "",
        "assigned_to": "nobody@mozilla.org",
        "classification": "Client Software",
        "component": "General",
        "creation_time": now,
        "creator": user["login"],
        "flags": [],
        "is_private": False,
        "keywords": [],
        "operating_system": "Unspecified",
        "platform": "Unspecified",
        "priority": "",
        "product": "Test",
        "resolution": "",
        "severity": "--",
        "status": "NEW",
        "summary": TITLE,
        "type": "defect",
        "url": "",
        "version": "unspecified",
        "whiteboard": "",
        "last_change_time": now,
    }
    target, action = ("comment", "create") if event == "comment" else ("bug", event)
    if event == "comment":
        bug["comment"] = {"id": int(datetime.now(UTC).timestamp()), "body": TEXT, "creation_time": now, "number": 1}
    body_event: dict[str, Any] = {
        "action": action,
        "routing_key": f"{target}.{action}",
        "target": target,
        "time": now,
        "user": user,
    }
    if action == "modify":
        body_event["changes"] = [{"field": "status", "removed": "UNCONFIRMED", "added": "NEW"}]
        body_event["routing_key"] += ":status"
    return {"bug": bug, "event": body_event, "webhook_id": 1, "webhook_name": "issue-bridge send-test"}


def bugherd_payload(event: str) -> dict[str, Any]:
    now = _now(millis=True)
    task: dict[str, Any] = {
        "id": 99900001,
        "project_id": 1,
        "project_name": "issue-bridge test",
        "created_at": now,
        "updated_at": now,
        "local_task_id": 1,
        "priority_id": 3,
        "status_id": None,
        "title": None,
        "description": f"{TITLE}: {TEXT}",
        "tag_names": [],
        "external_id": None,
        "requester_email": "issue-bridge@example.org",
        "attachments": [],
        "status": "backlog",
        "priority": "normal",
        "closed_at": None,
        "admin_link": "https://www.bugherd.com/projects/1/tasks/1",
        "deleted_at": now if event == "task_destroy" else None,
        "site": "https://example.org",
        "url": "/",
        "metadata": {},
        "assignees": [],
        "assigned_to": None,
        "requester": {"id": 1, "email": "issue-bridge@example.org", "display_name": "issue-bridge"},
        "updater": None,
    }
    if event == "comment":
        return {
            "comment": {
                "id": int(datetime.now(UTC).timestamp()),
                "text": TEXT,
                "created_at": now,
                "user": {"id": 1, "email": "issue-bridge@example.org", "display_name": "issue-bridge"},
                "task": task,
            }
        }
    return {"task": task}


# GitHub names the event only in the X-GitHub-Event header; a saved body is recognised by its shape. Every event a
# repository or organization webhook can send to /webhooks/github is told apart (the endpoint syncs `issues` and
# `issue_comment`, answers `ping`, and ignores the rest): the first rule that matches wins.
SUB_ISSUE_ACTIONS = ("sub_issue_added", "sub_issue_removed", "parent_issue_added", "parent_issue_removed")
DEPENDENCY_ACTIONS = ("blocked_by_added", "blocked_by_removed", "blocking_added", "blocking_removed")
_GITHUB_SHAPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sub_issues", ("sub_issue",)),
    ("sub_issues", ("parent_issue",)),
    ("issue_dependencies", ("blocked_issue",)),
    ("issue_dependencies", ("blocking_issue",)),
    ("issue_comment", ("comment", "issue")),
    ("issues", ("issue",)),
    ("pull_request_review_comment", ("comment", "pull_request")),
    ("pull_request_review", ("review", "pull_request")),
    ("pull_request", ("pull_request",)),
    ("commit_comment", ("comment",)),
    ("discussion_comment", ("comment", "discussion")),
    ("discussion", ("discussion",)),
    ("label", ("label",)),
    ("milestone", ("milestone",)),
    ("release", ("release",)),
    ("push", ("ref", "commits")),
    ("create", ("ref", "ref_type", "master_branch")),
    ("delete", ("ref", "ref_type")),
    ("fork", ("forkee",)),
    ("member", ("member",)),
    ("projects_v2_item", ("projects_v2_item",)),
    ("workflow_run", ("workflow_run",)),
    ("workflow_job", ("workflow_job",)),
    ("check_suite", ("check_suite",)),
    ("check_run", ("check_run",)),
    ("status", ("sha", "state", "context")),
    ("star", ("starred_at",)),
)


def detect_github_event(payload: Any) -> str | None:
    """The X-GitHub-Event a body belongs to, from its shape (GitHub names it only in a header); None when the
    body looks like no event GitHub sends to this endpoint."""
    if not isinstance(payload, dict):
        return None
    if "zen" in payload and "hook_id" in payload:
        return "ping"
    action = payload.get("action")
    if action in SUB_ISSUE_ACTIONS:
        return "sub_issues"
    if action in DEPENDENCY_ACTIONS:
        return "issue_dependencies"
    if "discussion" in payload:  # a discussion comment also has `comment`: the discussion decides
        return "discussion_comment" if "comment" in payload else "discussion"
    for event, keys in _GITHUB_SHAPES:
        if all(key in payload for key in keys):
            return event
    return None


def build(settings: Settings, source: str, event: str | None = None, body: bytes | None = None) -> Delivery:
    """The request for `source`: the sample for `event` (or the file's `body`), authenticated from settings."""
    if source not in SOURCES:
        raise SampleError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
    if body is not None and source == "github" and event is None:
        try:
            event = detect_github_event(json.loads(body))
        except ValueError:
            event = None
        if event is None:
            raise SampleError("cannot tell which GitHub event this body is: give --event (issues, issue_comment, ping)")
        if event not in EVENTS[source]:  # the bridge ignores it; sending it shows exactly that answer
            return _github_delivery(settings, body, event)
    event = event or EVENTS[source][0]
    if event not in EVENTS[source]:
        raise SampleError(f"{source} has no event {event!r} (one of {', '.join(EVENTS[source])})")
    if body is None:
        payload = {"github": github_payload, "bugzilla": bugzilla_payload, "bugherd": bugherd_payload}[source](event)
        body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if source == "github":
        return _github_delivery(settings, body, event)
    if source == "bugzilla":
        if not settings.bugzilla_webhook_secret:
            raise SampleError("BUGZILLA_WEBHOOK_SECRET is not set: the bridge refuses Bugzilla deliveries")
        headers[settings.bugzilla_webhook_header] = settings.bugzilla_webhook_secret
        return Delivery("/webhooks/bugzilla", body, headers, event)
    if not settings.bugherd_webhook_token:
        raise SampleError("BUGHERD_WEBHOOK_TOKEN is not set: the bridge refuses BugHerd deliveries")
    return Delivery(f"/webhooks/bugherd/{settings.bugherd_webhook_token}/{event}", body, headers, event)


def _github_delivery(settings: Settings, body: bytes, event: str) -> Delivery:
    if not settings.github_webhook_secret:
        raise SampleError("GITHUB_WEBHOOK_SECRET is not set: the bridge refuses GitHub deliveries")
    digest = hmac.new(settings.github_webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return Delivery("/webhooks/github", body, headers, event)
