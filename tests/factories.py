"""The project's own webhook bodies, shaped after the real ones in ../shared/fixtures."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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


def github_repository(full_name: str = "acme/web") -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": abs(hash(full_name)) % 10**9,
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
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{repo}/issues/{number}",
        "html_url": f"https://github.com/{repo}/issues/{number}",
        "id": 444500000 + number,
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


def issues_event(action: str, **issue_kwargs: Any) -> dict[str, Any]:
    repo = issue_kwargs.get("repo", "acme/web")
    payload: dict[str, Any] = {
        "action": action,
        "issue": github_issue(**issue_kwargs),
        "repository": github_repository(repo),
        "sender": github_user(),
    }
    if action in ("labeled", "unlabeled") and issue_kwargs.get("labels"):
        payload["label"] = payload["issue"]["labels"][-1]
    if action == "edited":
        payload["changes"] = {}
    return payload


def comment_event(
    action: str, *, comment_id: int, text: str, commented: float, author: str = "hubot", **issue_kwargs: Any
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
        "repository": github_repository(repo),
        "sender": github_user(author, 2),
    }
    if action == "edited":
        payload["changes"] = {"body": {"from": "old text"}}
    return payload


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
