"""Backfill reader for GitHub: a repository's issues (pull requests skipped), then their comments.

The REST issue and comment objects are the ones GitHub's webhooks carry, so each is wrapped in the webhook's
body shape, with the repository object a webhook carries (`GET /repos/{owner}/{repo}`, once: its `id` is a
field too), and normalized by `bridge.sources.github` itself: the events are the ones a webhook of the same
state would make, so the first webhook after a backfill is not taken for a change.
Dedup keys: `backfill:issue:<issue id>:<updated_at>` and `backfill:comment:<comment id>:<updated_at>`, so an
unchanged repository backfilled again stores nothing.

Two phases, each resumable from its cursor:
1. `issues`: the issues list (oldest created first: a stable order for page links while issues change), one
   state event per issue; it notes which issues have comments and how many (the list says).
2. `comments`: whichever costs fewer GitHub calls. Per issue: one call per commented issue. The repository-wide
   listing (`/issues/comments`): ceil(all comments / 100) calls, but it holds every issue's and pull request's
   comments, so it is only chosen when the backfill covers the whole repository (`--state all`, no label, no
   since) and the counts from phase 1 (pull requests' included) make it cheaper.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine

from bridge.backfill.runner import Batch, Item, ReadEvent, latest_payload
from bridge.events import NormalizedEvent
from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.github.api import PER_PAGE, GitHubClient, GitHubError, issue_number_of
from bridge.sources.github.webhook import NAME, GitHubSource
from bridge.sources.spec import SourceReadError

STATES = ("open", "closed", "all")
ISSUES_PER_COMMENT_BATCH = 25  # per-issue mode: how many issues' comments between two cursor saves
_NORMALIZER = GitHubSource("backfill: parse only, never verifies")


class GitHubReader:
    source = NAME

    def __init__(
        self,
        client: GitHubClient,
        engine: Engine,
        repo: str,
        *,
        state: str = "open",
        since: str | None = None,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.client, self.engine, self.repo = client, engine, repo
        self.state, self.since, self.labels = state, since, tuple(labels)
        self._issues: dict[int, dict[str, Any]] = {}  # this run's issue objects, for the comment phase
        self._repository: dict[str, Any] | None = None  # the repository as a webhook carries it

    @property
    def source_calls(self) -> int:
        return self.client.calls

    def scope(self) -> dict[str, Any]:
        return {"repo": self.repo, "state": self.state, "since": self.since, "labels": list(self.labels)}

    @property
    def whole_repository(self) -> bool:
        return self.state == "all" and not self.labels and not self.since

    def batches(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        cursor = dict(cursor or {"phase": "issues", "next": None, "commented": {}, "pr_comments": 0})
        self.repository()
        if cursor["phase"] == "issues":
            yield from self._issue_phase(cursor)
        if cursor["phase"] == "comments":
            yield from self._comment_phase(cursor)

    # -- phase 1 ----------------------------------------------------------------------------------------------

    def _issue_phase(self, cursor: dict[str, Any]) -> Iterator[Batch]:
        first = True
        while first or cursor["next"]:
            page = self.client.issues_page(
                self.repo, state=self.state, since=self.since, labels=self.labels, url=cursor["next"]
            )
            first = False
            items, read = [], 0
            for issue in page.items:
                count = int(issue.get("comments") or 0)
                if "pull_request" in issue:
                    cursor["pr_comments"] += count
                    continue
                read += 1
                self._issues[int(issue["number"])] = issue
                if count:
                    cursor["commented"][str(issue["number"])] = count
                items.append(Item(self._key(issue), [self._issue_event(issue)]))
            cursor["next"] = page.next_url
            if not page.next_url:
                cursor.update(self._plan_comments(cursor))
            yield Batch(items, dict(cursor), read)

    def _plan_comments(self, cursor: dict[str, Any]) -> dict[str, Any]:
        commented = cursor["commented"]
        per_issue = len(commented)
        repo_wide = math.ceil((sum(commented.values()) + cursor["pr_comments"]) / PER_PAGE)
        mode = "repository" if self.whole_repository and repo_wide < per_issue else "per-issue"
        return {"phase": "comments", "mode": mode, "next": None, "done": 0, "estimate": min(per_issue, repo_wide)}

    # -- phase 2 ----------------------------------------------------------------------------------------------

    def _comment_phase(self, cursor: dict[str, Any]) -> Iterator[Batch]:
        if cursor["mode"] == "repository":
            yield from self._repository_comments(cursor)
        else:
            yield from self._per_issue_comments(cursor)

    def _per_issue_comments(self, cursor: dict[str, Any]) -> Iterator[Batch]:
        numbers = sorted(int(n) for n in cursor["commented"])
        while cursor["done"] < len(numbers):
            chunk = numbers[cursor["done"] : cursor["done"] + ISSUES_PER_COMMENT_BATCH]
            items = []
            for number in chunk:
                issue = self._issue(number)
                if issue is None:
                    continue
                comments = self.client.issue_comments(self.repo, number)
                events = [self._comment_event(issue, c) for c in comments]
                if events:
                    items.append(Item(self._key(issue), events))
            cursor["done"] += len(chunk)
            yield Batch(items, dict(cursor), 0)

    def _repository_comments(self, cursor: dict[str, Any]) -> Iterator[Batch]:
        wanted = set(cursor["commented"])
        first = True
        while first or cursor["next"]:
            page = self.client.repo_comments_page(self.repo, url=cursor["next"])
            first = False
            by_issue: dict[int, list[ReadEvent]] = {}
            for comment in page.items:
                number = issue_number_of(comment)
                if number is None or str(number) not in wanted:
                    continue  # a pull request's comment, or an issue outside the backfill
                issue = self._issue(number)
                if issue is not None:
                    by_issue.setdefault(number, []).append(self._comment_event(issue, comment))
            cursor["next"] = page.next_url
            items = [Item(f"{self.full_name}#{n}", events) for n, events in by_issue.items()]
            yield Batch(items, dict(cursor), 0)

    # -- normalizing ------------------------------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        return str(self.repository()["full_name"])

    def repository(self) -> dict[str, Any]:
        """The repository object a webhook carries (`GET /repos/{owner}/{repo}`, once per run): with its `id`,
        so a backfilled item's fields are the ones the first webhook after the backfill brings, not a change."""
        if self._repository is None:
            repo = self.client.repository(self.repo)
            owner = repo.get("owner") if isinstance(repo.get("owner"), dict) else {}
            self._repository = {
                "id": repo.get("id"),
                "node_id": repo.get("node_id"),
                "name": repo.get("name"),
                "full_name": repo.get("full_name") or self.repo,
                "private": repo.get("private"),
                "owner": {"login": owner.get("login"), "id": owner.get("id")},
                "html_url": repo.get("html_url"),
            }
        return self._repository

    def _issue(self, number: int) -> dict[str, Any] | None:
        """The issue object: from this run, else (resumed) from the newest stored body of the issue."""
        if number in self._issues:
            return self._issues[number]
        stored = latest_payload(self.engine, NAME, f"{self.full_name}#{number}")
        issue = stored.get("issue") if stored else None
        return issue if isinstance(issue, dict) else None

    def _key(self, issue: dict[str, Any]) -> str:
        return f"{self.full_name}#{issue['number']}"

    def _body(self, action: str, issue: dict[str, Any], comment: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "issue": issue, "repository": self.repository()}
        if comment is not None:
            body["comment"] = comment
        return body

    def _issue_event(self, issue: dict[str, Any]) -> ReadEvent:
        body = self._body("edited", issue)  # "updated": the sync creates the issue when it has no link yet
        event = _normalize(body, "issues", "backfill.issue")
        return ReadEvent(event, f"backfill:issue:{issue['id']}:{issue.get('updated_at')}", body)

    def _comment_event(self, issue: dict[str, Any], comment: dict[str, Any]) -> ReadEvent:
        body = self._body("created", issue, comment)
        event = _normalize(body, "issue_comment", "backfill.comment")
        updated = comment.get("updated_at") or comment.get("created_at")
        if updated != comment.get("created_at"):
            event = dataclasses.replace(event, action="comment_updated")
        return ReadEvent(event, f"backfill:comment:{comment['id']}:{updated}", body)


def _normalize(body: dict[str, Any], github_event: str, event_name: str) -> NormalizedEvent:
    import json

    event = _NORMALIZER.parse(json.dumps(body).encode(), {"X-GitHub-Event": github_event})
    return dataclasses.replace(event, event_name=event_name, notes=(*event.notes, "backfilled from GitHub"))


def read_item(
    settings: Settings, engine: Engine, budgets: Budgets, item_key: str, fields: dict[str, Any], hold: float
) -> list[ReadEvent]:
    """One issue now, its state and its comments (`issue-bridge resync`): `OWNER/NAME#NUMBER`."""
    if not settings.github_token:
        raise SourceReadError("GITHUB_TOKEN is not set: the item is read through GitHub's REST API")
    repo, _, number = item_key.rpartition("#")
    repo = str(fields.get("repository") or repo)
    number = str(fields.get("number") or number)
    if not repo or not number.isdigit():
        raise SourceReadError(f"{item_key!r} is no GitHub issue (owner/name#number)")
    try:
        client = GitHubClient(settings.github_token, budgets=budgets, base_url=settings.github_api_url, hold=hold)
        reader = GitHubReader(client, engine, repo)
        issue = client.get_issue(repo, int(number))
        reads = [reader._issue_event(issue)]
        reads += [reader._comment_event(issue, c) for c in client.issue_comments(repo, int(number))]
    except GitHubError as exc:
        raise SourceReadError(str(exc)) from None
    return reads
