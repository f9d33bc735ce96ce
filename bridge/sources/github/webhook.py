"""GitHub `issues` / `issue_comment` / `ping` webhooks → NormalizedEvent.

Signature: `X-Hub-Signature-256` = "sha256=" + hex(HMAC-SHA256(secret, raw body)), compared in
constant time over the bytes as received. Dedup key: `X-GitHub-Delivery` (kept on redelivery).

Identity: an issue is known by `issue.id`, GitHub's database id, unique across every repository of the
instance and kept when the repository is renamed (its `full_name` changes, `repository.id` does not). A
transfer gives the issue a new id in the new repository: `issues.transferred` (sent by the old repository,
`changes.new_issue` / `changes.new_repository`) and the new repository's `issues.opened` (with
`changes.old_issue` / `changes.old_repository`) both name the old id, so either one moves the item on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from bridge.events import BadDelivery, Comment, IgnoredEvent, NormalizedEvent, Unauthorized, parse_timestamp
from bridge.sources.common import load_json_object
from bridge.sources.validate import check_id, check_text, text_field

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
        "repository_id",
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
        if event == "issues" and action == "transferred":
            return _transferred(payload, issue)
        if event == "issues":
            if action not in ISSUE_ACTIONS:
                raise IgnoredEvent(f"issues.{action} is not synced")
            normalized_action, comment = ISSUE_ACTIONS[action], None
        else:
            if action not in COMMENT_ACTIONS:
                raise IgnoredEvent(f"issue_comment.{action} is not synced")
            normalized_action, comment = COMMENT_ACTIONS[action], _comment(payload.get("comment"))
        fields = issue_fields(issue, payload.get("repository"))
        previous = ""
        changes = payload.get("changes")
        if event == "issues" and action == "opened" and isinstance(changes, dict):
            previous = _identity(changes.get("old_issue"), "changes.old_issue.id")  # opened by a transfer
        return NormalizedEvent(
            source=NAME,
            item_kind="issue",
            item_key=item_key(fields),
            action=normalized_action,
            event_name=f"{event}.{action}",
            source_ts=parse_timestamp(issue.get("updated_at"), field_name="issue.updated_at"),
            fields=fields,
            comment=comment,
            source_project=fields["repository"],
            identity=_identity(issue, "issue.id"),
            previous_identity=previous,
        )

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str:
        delivery = headers.get("X-GitHub-Delivery", "").strip()
        return delivery[:200] if delivery else "sha256:" + hashlib.sha256(body).hexdigest()


def item_key(fields: dict[str, Any]) -> str:
    """The readable handle of a new item: `acme/web#12`."""
    return f"{fields['repository']}#{fields['number']}"


def identity_of(issue_id: Any) -> str:
    """The item's identity from GitHub's issue id; "" when the body did not carry one (a trimmed sample)."""
    return str(issue_id) if issue_id not in (None, "") else ""


def _identity(issue: Any, name: str) -> str:
    if not isinstance(issue, dict) or issue.get("id") is None:
        return ""
    return identity_of(check_id(name, issue.get("id"), allow_text=False))


def _transferred(payload: dict[str, Any], old_issue: dict[str, Any]) -> NormalizedEvent:
    """`issues.transferred`: the old repository tells where its issue went. The event carries the new
    issue's fields under the new identity, and the old identity, whose link the item keeps."""
    changes = payload.get("changes")
    new_issue = changes.get("new_issue") if isinstance(changes, dict) else None
    new_repository = changes.get("new_repository") if isinstance(changes, dict) else None
    if not isinstance(new_issue, dict) or not isinstance(new_repository, dict):
        raise BadDelivery("changes.new_issue, changes.new_repository: expected objects")
    identity = _identity(new_issue, "changes.new_issue.id")
    previous = _identity(old_issue, "issue.id")
    if not identity or not previous:
        raise IgnoredEvent("issues.transferred without the issues' ids: nothing to follow")
    fields = issue_fields(new_issue, new_repository)
    # The new issue's own time may be older than the old one's last edit (GitHub copies it): the transfer
    # is the newest state of the item either way.
    times = [
        parse_timestamp(i.get("updated_at"), field_name=f"{n}.updated_at")
        for n, i in (("issue", old_issue), ("changes.new_issue", new_issue))
        if i.get("updated_at")
    ]
    if not times:
        raise BadDelivery("issue.updated_at: expected an ISO-8601 timestamp")
    return NormalizedEvent(
        source=NAME,
        item_kind="issue",
        item_key=item_key(fields),
        action="updated",
        event_name="issues.transferred",
        source_ts=max(times),
        fields=fields,
        source_project=fields["repository"],
        identity=identity,
        previous_identity=previous,
    )


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
    people = issue.get("assignees") or []
    if not isinstance(people, list):
        raise BadDelivery("issue.assignees: expected a list")
    assignees = [text_field("issue.assignees.login", a.get("login")) for a in people if isinstance(a, dict)]
    assignee = issue.get("assignee") if isinstance(issue.get("assignee"), dict) else None
    milestone = issue.get("milestone") if isinstance(issue.get("milestone"), dict) else None
    user = issue.get("user") if isinstance(issue.get("user"), dict) else {}
    return {
        "title": text_field("issue.title", issue.get("title")),
        "body": text_field("issue.body", issue.get("body")),  # null on an issue opened without a description
        "state": text_field("issue.state", issue.get("state")),
        "state_reason": _optional_text("issue.state_reason", issue.get("state_reason")),  # absent before 2022
        "labels": [_label(lb) for lb in labels],
        "repository": repository["full_name"],
        "number": number,
        "html_url": text_field("issue.html_url", issue.get("html_url")),
        "user": text_field("issue.user.login", user.get("login")),
        "assignees": assignees,
        "assignee": text_field("issue.assignee.login", assignee.get("login")) if assignee else "",
        "milestone": text_field("issue.milestone.title", milestone.get("title")) if milestone else "",
        "created_at": issue.get("created_at"),
        "updated_at": issue.get("updated_at"),
        "closed_at": issue.get("closed_at"),
        "issue_id": issue.get("id"),
        "repository_id": repository.get("id") if isinstance(repository.get("id"), int) else None,
    }


def _label(label: Any) -> str:
    """A label object's name (a bare name in some trimmed samples)."""
    if isinstance(label, dict):
        return text_field("issue.labels.name", label.get("name"))
    return text_field("issue.labels", label)


def _optional_text(name: str, value: Any) -> str | None:
    return None if value is None else text_field(name, value)


def _comment(raw: Any) -> Comment:
    if not isinstance(raw, dict) or raw.get("id") is None:
        raise BadDelivery("comment: expected an object with an id")
    comment_id = check_id("comment.id", raw["id"])
    user = raw.get("user") if isinstance(raw.get("user"), dict) else {}
    created = raw.get("created_at")
    updated = raw.get("updated_at") or created
    return Comment(
        id=str(comment_id),
        body=text_field("comment.body", raw.get("body")),
        author=text_field("comment.user.login", user.get("login")),
        url=text_field("comment.html_url", raw.get("html_url")),
        created_at=parse_timestamp(created, field_name="comment.created_at") if created else None,
        updated_at=parse_timestamp(updated, field_name="comment.updated_at") if updated else None,
    )
