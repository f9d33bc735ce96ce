"""GitHub `issues` / `issue_comment` / `ping` webhooks → NormalizedEvent.

Signature: `X-Hub-Signature-256` = "sha256=" + hex(HMAC-SHA256(secret, raw body)), compared in
constant time over the bytes as received. Dedup key: `X-GitHub-Delivery` (kept on redelivery).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from bridge.events import BadDelivery, Comment, IgnoredEvent, NormalizedEvent, Unauthorized, parse_timestamp
from bridge.sources.common import load_json_object
from bridge.sources.validate import check_id, check_text

# A GUID in practice; longer ids are refused rather than cut (two cut ids sharing a prefix would collide).
DELIVERY_ID_LIMIT = 200

NAME = "github"
# The fields a mapping can use (templates, `from:`), all taken from the issue object.
FIELDS = frozenset(
    {
        "title",
        "body",
        "state",
        "state_reason",
        "labels",
        "repository",
        "number",
        "html_url",
        "user",
        "assignees",
        "assignee",
        "milestone",
        "created_at",
        "updated_at",
        "closed_at",
        "issue_id",
    }
)

ISSUE_ACTIONS = {
    "opened": "created",
    "edited": "updated",
    "closed": "updated",
    "reopened": "updated",
    "labeled": "updated",
    "unlabeled": "updated",
    # Not in the minimum list, but they change fields admins map (assignee, milestone).
    "assigned": "updated",
    "unassigned": "updated",
    "milestoned": "updated",
    "demilestoned": "updated",
    "deleted": "deleted",
}
COMMENT_ACTIONS = {"created": "comment_created", "edited": "comment_updated", "deleted": "comment_deleted"}


class GitHubSource:
    name = NAME
    fields = FIELDS

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("GITHUB_WEBHOOK_SECRET is not set: the GitHub source is disabled")
        self._key = secret.encode()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        signature = headers.get("X-Hub-Signature-256", "")
        if not signature:
            raise Unauthorized("missing X-Hub-Signature-256")
        expected = "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise Unauthorized("X-Hub-Signature-256 does not match the body")

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent:
        event = headers.get("X-GitHub-Event", "").strip()
        if not event:
            raise BadDelivery("missing X-GitHub-Event header")
        delivery = headers.get("X-GitHub-Delivery", "").strip()
        if delivery and not (delivery.isascii() and len(delivery) <= DELIVERY_ID_LIMIT):
            raise BadDelivery(f"X-GitHub-Delivery: expected at most {DELIVERY_ID_LIMIT} ASCII characters")
        payload = _payload(body, headers)
        if event == "ping":
            raise IgnoredEvent("ping: the webhook is set up")
        if event not in ("issues", "issue_comment"):
            raise IgnoredEvent(f"event {event!r} is not synced")
        action = payload.get("action")
        if not isinstance(action, str):
            raise BadDelivery("action: expected a string")
        issue = payload.get("issue")
        if not isinstance(issue, dict):
            raise BadDelivery("issue: expected an object")
        if "pull_request" in issue:
            raise IgnoredEvent(f"{event}.{action} on a pull request")
        if event == "issues":
            if action not in ISSUE_ACTIONS:
                raise IgnoredEvent(f"issues.{action} is not synced")
            normalized_action, comment = ISSUE_ACTIONS[action], None
        else:
            if action not in COMMENT_ACTIONS:
                raise IgnoredEvent(f"issue_comment.{action} is not synced")
            normalized_action, comment = COMMENT_ACTIONS[action], _comment(payload.get("comment"))
        fields = issue_fields(issue, payload.get("repository"))
        return NormalizedEvent(
            source=NAME,
            item_kind="issue",
            item_key=f"{fields['repository']}#{fields['number']}",
            action=normalized_action,
            event_name=f"{event}.{action}",
            source_ts=parse_timestamp(issue.get("updated_at"), field_name="issue.updated_at"),
            fields=fields,
            comment=comment,
            source_project=fields["repository"],
        )

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str:
        delivery = headers.get("X-GitHub-Delivery", "").strip()
        return delivery[:200] if delivery else "sha256:" + hashlib.sha256(body).hexdigest()


def _payload(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    # A hook created with content type application/x-www-form-urlencoded sends the JSON in `payload`.
    # Media types are case-insensitive (RFC 9110 8.3.1).
    if headers.get("Content-Type", "").strip().lower().startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", errors="replace"))
        if "payload" not in form:
            raise BadDelivery("form body without a payload field")
        return load_json_object(form["payload"][0].encode())
    return load_json_object(body)


def issue_fields(issue: dict[str, Any], repository: Any) -> dict[str, Any]:
    if not isinstance(repository, dict) or not isinstance(repository.get("full_name"), str):
        raise BadDelivery("repository.full_name: expected a string")
    check_text("repository.full_name", repository["full_name"])
    number = check_id("issue.number", issue.get("number"), allow_text=False)
    if issue.get("id") is not None:
        check_id("issue.id", issue.get("id"), allow_text=False)
    labels = issue.get("labels") or []
    if not isinstance(labels, list):
        raise BadDelivery("issue.labels: expected a list")
    assignees = [a.get("login", "") for a in issue.get("assignees") or [] if isinstance(a, dict)]
    assignee = issue.get("assignee") if isinstance(issue.get("assignee"), dict) else None
    milestone = issue.get("milestone") if isinstance(issue.get("milestone"), dict) else None
    user = issue.get("user") if isinstance(issue.get("user"), dict) else {}
    return {
        "title": str(issue.get("title") or ""),
        "body": issue.get("body") or "",  # null on an issue opened without a description
        "state": str(issue.get("state") or ""),
        "state_reason": issue.get("state_reason"),  # absent before 2022: treat as null
        "labels": [lb.get("name", "") if isinstance(lb, dict) else str(lb) for lb in labels],
        "repository": repository["full_name"],
        "number": number,
        "html_url": str(issue.get("html_url") or ""),
        "user": str(user.get("login") or ""),
        "assignees": assignees,
        "assignee": assignee.get("login", "") if assignee else "",
        "milestone": milestone.get("title", "") if milestone else "",
        "created_at": issue.get("created_at"),
        "updated_at": issue.get("updated_at"),
        "closed_at": issue.get("closed_at"),
        "issue_id": issue.get("id"),
    }


def _comment(raw: Any) -> Comment:
    if not isinstance(raw, dict) or raw.get("id") is None:
        raise BadDelivery("comment: expected an object with an id")
    comment_id = check_id("comment.id", raw["id"])
    user = raw.get("user") if isinstance(raw.get("user"), dict) else {}
    created = raw.get("created_at")
    updated = raw.get("updated_at") or created
    return Comment(
        id=str(comment_id),
        body=str(raw.get("body") or ""),
        author=str(user.get("login") or ""),
        url=str(raw.get("html_url") or ""),
        created_at=parse_timestamp(created, field_name="comment.created_at") if created else None,
        updated_at=parse_timestamp(updated, field_name="comment.updated_at") if updated else None,
    )
