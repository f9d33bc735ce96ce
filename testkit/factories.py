"""The project's own webhook bodies, shaped after the real ones in ../shared/fixtures."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.events import NormalizedEvent

BASE_TIME = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    """GitHub's timestamp format (one-second precision, Z) at BASE_TIME + seconds."""
    return (BASE_TIME + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def github_user(login: str = "octocat", user_id: int = 583231, kind: str = "User") -> dict[str, Any]:
    return {
        "login": login,
        "id": user_id,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "html_url": f"https://github.com/{login}",
        "type": kind,
        "site_admin": False,
    }


def repository_id(full_name: str) -> int:
    """A repository id that is the same in every process (`hash()` of a str is salted per process)."""
    return zlib.crc32(full_name.encode()) % 10**9


def github_issue_id(repo: str = "acme/web", number: int = 1) -> int:
    """GitHub's issue id: unique across repositories (acme/web#1 and acme/api#1 are two issues)."""
    offset = 0 if repo == "acme/web" else (zlib.crc32(repo.encode()) % 9000 + 1) * 10000
    return 444500000 + offset + number


def github_repository(full_name: str = "acme/web", repo_id: int | None = None) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": repository_id(full_name) if repo_id is None else repo_id,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMzU0OTMyMzM=",
        "name": name,
        "full_name": full_name,
        "private": False,
        "owner": github_user(owner, 1),
        "html_url": f"https://github.com/{full_name}",
    }


def github_issue(
    *,
    repo: str = "acme/web",
    number: int = 1,
    title: str = "Login button does nothing",
    body: str | None = "Clicking it on Safari 17 has no effect.",
    labels: tuple[str, ...] = (),
    state: str = "open",
    updated: float = 0,
    pull_request: bool = False,
    assignee: str | None = None,
    issue_id: int | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{repo}/issues/{number}",
        "html_url": f"https://github.com/{repo}/issues/{number}",
        "id": github_issue_id(repo, number) if issue_id is None else issue_id,
        "node_id": "MDU6SXNzdWU0NDQ1MDAwNDE=",
        "number": number,
        "title": title,
        "user": github_user(),
        "labels": [
            {
                "id": 1362934389 + i,
                "node_id": "MDU6TGFiZWwxMzYyOTM0Mzg5",
                "name": name,
                "color": "d73a4a",
                "default": False,
                "description": "",
            }
            for i, name in enumerate(labels)
        ],
        "state": state,
        "locked": False,
        "assignee": github_user(assignee) if assignee else None,
        "assignees": [github_user(assignee)] if assignee else [],
        "milestone": None,
        "comments": 0,
        "created_at": ts(0),
        "updated_at": ts(updated),
        "closed_at": ts(updated) if state == "closed" else None,
        "author_association": "OWNER",
        "body": body,
    }
    if state == "closed":
        issue["state_reason"] = "completed"
    if pull_request:
        issue["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}"}
    return issue


def issues_event(action: str, *, repo_id: int | None = None, **issue_kwargs: Any) -> dict[str, Any]:
    """`repo_id` keeps a repository's id across a rename (`repo="acme/site", repo_id=repository_id("acme/web")`)."""
    repo = issue_kwargs.get("repo", "acme/web")
    payload: dict[str, Any] = {
        "action": action,
        "issue": github_issue(**issue_kwargs),
        "repository": github_repository(repo, repo_id),
        "sender": github_user(),
    }
    if action in ("labeled", "unlabeled") and issue_kwargs.get("labels"):
        payload["label"] = payload["issue"]["labels"][-1]
    if action == "edited":
        payload["changes"] = {}
    return payload


def comment_event(
    action: str,
    *,
    comment_id: int,
    text: str,
    commented: float,
    author: str = "hubot",
    repo_id: int | None = None,
    **issue_kwargs: Any,
) -> dict[str, Any]:
    repo = issue_kwargs.get("repo", "acme/web")
    number = issue_kwargs.get("number", 1)
    issue_kwargs.setdefault("updated", commented)
    payload = {
        "action": action,
        "issue": github_issue(**issue_kwargs),
        "comment": {
            "url": f"https://api.github.com/repos/{repo}/issues/comments/{comment_id}",
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment_id}",
            "issue_url": f"https://api.github.com/repos/{repo}/issues/{number}",
            "id": comment_id,
            "node_id": "MDEyOklzc3VlQ29tbWVudDQ5MjcwMDQwMA==",
            "user": github_user(author, 2),
            "created_at": ts(commented),
            "updated_at": ts(commented),
            "author_association": "NONE",
            "body": text,
        },
        "repository": github_repository(repo, repo_id),
        "sender": github_user(author, 2),
    }
    if action == "edited":
        payload["changes"] = {"body": {"from": "old text"}}
    return payload


def transfer_events(
    *, old_repo: str = "acme/web", old_number: int = 1, new_repo: str, new_number: int, updated: float, **issue: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A transfer as GitHub sends it (shaped after ../shared/fixtures/github/issues.transferred.json and
    issues.opened.via-transfer.json): the old repository's `issues.transferred` naming `changes.new_issue`
    and `changes.new_repository`, and the new repository's `issues.opened` naming `changes.old_issue` and
    `changes.old_repository`."""
    old = github_issue(repo=old_repo, number=old_number, updated=updated, **issue)
    new = github_issue(repo=new_repo, number=new_number, updated=updated, **issue)
    transferred = {
        "action": "transferred",
        "issue": old,
        "changes": {"new_issue": new, "new_repository": github_repository(new_repo)},
        "repository": github_repository(old_repo),
        "sender": github_user(),
    }
    opened = {
        "action": "opened",
        "changes": {"old_issue": old, "old_repository": github_repository(old_repo)},
        "issue": new,
        "repository": github_repository(new_repo),
        "sender": github_user(),
    }
    return transferred, opened


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_request(
    secret: str, event: str, payload: dict[str, Any] | bytes, *, delivery: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": sign(secret, body),
    }
    return body, headers


def bug_event(n: int) -> NormalizedEvent:
    """A parsed Bugzilla bug creation (no identity to bind): what the store's tests hand intake's writer."""
    from bridge.events import NormalizedEvent

    return NormalizedEvent(
        source="bugzilla",
        item_kind="bug",
        item_key=str(n),
        action="created",
        event_name="bug.create",
        source_ts=datetime.now(UTC),
        fields={"summary": f"bug {n}"},
    )
