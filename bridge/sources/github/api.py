"""GitHub's REST API: the backfill's reads, and the writes that talk back (back-links, closing the loop).

Authentication: GITHUB_TOKEN as `Authorization: Bearer <token>`; GITHUB_API_URL points at GitHub
Enterprise (`https://<host>/api/v3`) or a test server. Pagination follows the `Link: <…>; rel="next"`
header, never a page count computed here.

Every request goes through `bridge.sources.http.SourceHttp`: declared in `calls.py`, paced by the budgets
every process shares, read by `GitHubAnswers`:
- the primary limit: an answer with `X-RateLimit-Remaining: 0` blocks budget `github` until
  `X-RateLimit-Reset` (measured against the answer's own `Date`), and so does a 403/429 for it;
- a secondary limit (403/429 with `Retry-After`, or GitHub's "secondary rate limit" message without it)
  blocks `github` for the `Retry-After`, else 60 s doubling while refused;
- a block longer than the client's `hold` is `SourceBusy` (a wait, never an attempt); a backfill holds up to
  an hour, reported once, then stops resumable;
- network errors, timeouts and 5xx open the outage breaker; only safe calls are repeated, so a comment POST
  that timed out is never sent twice (its caller looks it up by its marker);
- 401 raises `GitHubError` naming GITHUB_TOKEN; 404 on a repository says it is unknown (or invisible to the
  token): neither is worth a retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from bridge.outbound.budget import Budgets
from bridge.outbound.errors import Permanent
from bridge.sources.github.calls import LIMITS, TABLE
from bridge.sources.http import HOLD_ITEM, TIMEOUT, OnWait, SourceHttp, Throttle, json_of, provider_now, retry_after

API_URL = "https://api.github.com"
PER_PAGE = 100  # GitHub's maximum
SECONDARY_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute" when no Retry-After is given
ACCEPT = "application/vnd.github+json"
BUDGET = "github"


class GitHubError(Permanent):
    """GitHub answered, but not with what was asked (bad token, unknown repository, a refused write).
    `detail`: GitHub's own message (": Not Found"), when it gave one."""

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(reason, status=status)
        self.detail = detail


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_url: str | None  # the `rel="next"` link, None on the last page


class GitHubAnswers:
    """How GitHub's answers are read (GitHub REST: "Rate limits for the REST API")."""

    system = "GitHub"
    key = BUDGET

    def throttle(self, response: requests.Response) -> Throttle | None:
        if response.status_code not in (403, 429):
            return None
        wait = retry_after(response)
        if wait is not None:
            return Throttle(BUDGET, wait, f"GitHub secondary rate limit ({response.status_code}, Retry-After)")
        reset = _reset_in(response)
        if reset is not None:
            return Throttle(BUDGET, reset, f"GitHub primary rate limit ({response.status_code}) until its reset")
        if response.status_code == 429 or "rate limit" in _message(response).lower():
            return Throttle(BUDGET, None, "GitHub secondary rate limit without Retry-After", SECONDARY_DEFAULT_WAIT)
        return None  # a 403 that is a permission: a refusal

    def after(self, response: requests.Response, budgets: Budgets) -> None:
        reset = _reset_in(response)
        if reset is not None:
            budgets.block(BUDGET, reset, "GitHub's X-RateLimit-Remaining is 0 until X-RateLimit-Reset")

    def refusal(self, response: requests.Response, method: str, path: str) -> Exception | None:
        status = response.status_code
        if status < 400:
            return None
        message = _message(response)
        what = f"{method} {path}"
        if status == 401:
            return GitHubError(f"GitHub refused GITHUB_TOKEN (401{message}) for {what}: has it expired?", status=401)
        if status == 404:
            reason = f"not found on GitHub: {what} (404{message}), or GITHUB_TOKEN cannot see it"
            return GitHubError(reason, status=404, detail=message)
        if status == 403:
            return GitHubError(f"GitHub refused {what} (403{message}): does GITHUB_TOKEN have access?", status=403)
        return GitHubError(f"GitHub answered {status}{message} to {what}", status=status)


class GitHubClient:
    def __init__(
        self,
        token: str,
        *,
        budgets: Budgets,
        base_url: str = API_URL,
        session: requests.Session | None = None,
        hold: float = HOLD_ITEM,
        on_wait: OnWait | None = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        if not token:
            raise GitHubError("GITHUB_TOKEN is not set: the GitHub API needs a token (repo or issues:read scope)")
        session = session or requests.Session()
        session.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "X-GitHub-Api-Version": "2022-11-28"}
        )
        self.http = SourceHttp(
            TABLE,
            base_url,
            GitHubAnswers(),
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
        """Requests made (answers received), for the backfill's cost report."""
        return self.http.calls

    @property
    def waited(self) -> float:
        """Seconds spent waiting for GitHub's limits and the shared budgets."""
        return self.http.waited

    # -- requests -----------------------------------------------------------------------------------------

    def get(self, url: str, params: dict[str, Any] | None = None, *, repo: str = "") -> Page:
        """One page of a list: `url` is a path (`/repos/o/r/issues`) or a `Link` URL (which carries its query)."""
        try:
            response = self.http.send("GET", url, params=params)
        except GitHubError as exc:
            if exc.status == 404 and repo:
                raise GitHubError(unknown_repository(repo, exc.detail), status=404) from None
            raise
        data = json_of(response)
        if not isinstance(data, list):
            raise GitHubError(f"GitHub answered with a JSON {type(data).__name__}, expected a list")
        next_url = (response.links.get("next") or {}).get("url")
        return Page([d for d in data if isinstance(d, dict)], next_url)

    def send(self, method: str, path: str, body: Any = None) -> Any:
        """One call that answers an object (a read of one resource, or a write)."""
        response = self.http.send(method, path, body=body)
        if not response.content:
            return None
        data = json_of(response)
        if data is None:
            raise GitHubError(f"GitHub answered {method} {path} with something that is not JSON")
        return data

    # -- resources ----------------------------------------------------------------------------------------

    def repository(self, repo: str) -> dict[str, Any]:
        """`GET /repos/{owner}/{repo}`: the repository object a webhook carries (its `id` survives a rename)."""
        try:
            data = self.send("GET", f"/repos/{repo}")
        except GitHubError as exc:
            if exc.status == 404:
                raise GitHubError(unknown_repository(repo, exc.detail), status=404) from None
            raise
        if not isinstance(data, dict):
            raise GitHubError(f"GitHub answered GET /repos/{repo} with a JSON {type(data).__name__}")
        return data

    def issues_page(
        self,
        repo: str,
        *,
        state: str = "open",
        since: str | None = None,
        labels: tuple[str, ...] = (),
        url: str | None = None,
    ) -> Page:
        """A page of the repository's issues, oldest created first (a stable order while issues change).

        Pull requests are in GitHub's list too (they carry a `pull_request` key): the caller skips them.
        `url` is a `next_url` from an earlier page (it carries the query).
        """
        if url:
            return self.get(url, repo=repo)
        params: dict[str, Any] = {"state": state, "sort": "created", "direction": "asc", "per_page": PER_PAGE}
        if since:
            params["since"] = since
        if labels:
            params["labels"] = ",".join(labels)
        return self.get(f"/repos/{repo}/issues", params, repo=repo)

    def issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Every comment of one issue, oldest first (all pages)."""
        comments: list[dict[str, Any]] = []
        page = self.get(f"/repos/{repo}/issues/{number}/comments", {"per_page": PER_PAGE}, repo=repo)
        comments.extend(page.items)
        while page.next_url:
            page = self.get(page.next_url, repo=repo)
            comments.extend(page.items)
        return comments

    def repo_comments_page(self, repo: str, *, url: str | None = None) -> Page:
        """A page of every issue and pull-request comment of the repository, oldest first."""
        if url:
            return self.get(url, repo=repo)
        params = {"sort": "created", "direction": "asc", "per_page": PER_PAGE}
        return self.get(f"/repos/{repo}/issues/comments", params, repo=repo)

    def iter_issues(self, repo: str, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every issue (pull requests left out) matching the filters, all pages."""
        page = self.issues_page(repo, **filters)
        while True:
            yield from (i for i in page.items if "pull_request" not in i)
            if not page.next_url:
                return
            page = self.issues_page(repo, url=page.next_url)

    # -- writes (talking back: back-links, closing the loop) ---------------------------------------------

    def get_issue(self, repo: str, number: int) -> dict[str, Any]:
        return dict(self.send("GET", f"/repos/{repo}/issues/{number}") or {})

    def add_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        """`POST /repos/{repo}/issues/{number}/comments`: 201 with the new comment. Never repeated after a
        timeout or a 5xx (`SourceUnavailable`): the caller looks it up by its marker first."""
        return dict(self.send("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body}) or {})

    def set_state(self, repo: str, number: int, state: str, state_reason: str | None = None) -> dict[str, Any]:
        """`PATCH` the issue: `state` open|closed, `state_reason` completed|not_planned|reopened."""
        body: dict[str, Any] = {"state": state}
        if state_reason:
            body["state_reason"] = state_reason
        return dict(self.send("PATCH", f"/repos/{repo}/issues/{number}", body) or {})

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None:
        self.send("POST", f"/repos/{repo}/issues/{number}/labels", {"labels": labels})

    def remove_label(self, repo: str, number: int, label: str) -> None:
        """A label the issue no longer has (404, "Label does not exist") is as good as removed."""
        try:
            self.send("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}")
        except GitHubError as exc:
            if exc.status != 404:
                raise


def unknown_repository(repo: str, detail: str = "") -> str:
    return f"unknown repository {repo!r} on GitHub (404{detail}), or GITHUB_TOKEN cannot see it"


def issue_number_of(comment: dict[str, Any]) -> int | None:
    """The issue a comment belongs to, from its `issue_url` (`…/issues/<number>`)."""
    url = comment.get("issue_url")
    if not isinstance(url, str):
        return None
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _reset_in(response: requests.Response) -> float | None:
    """Seconds until `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0, by GitHub's own clock; else None."""
    if (response.headers.get("X-RateLimit-Remaining") or "").strip() != "0":
        return None
    try:
        reset = float(response.headers.get("X-RateLimit-Reset") or "")
    except ValueError:
        return SECONDARY_DEFAULT_WAIT
    return max(1.0, reset - provider_now(response) + 1.0)  # a second of slack: the reset is whole seconds


def _message(response: requests.Response) -> str:
    body = json_of(response)
    if isinstance(body, dict) and body.get("message"):
        return f": {str(body['message'])[:200]}"
    return ""
