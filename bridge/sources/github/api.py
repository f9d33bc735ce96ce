"""GitHub's REST API, for backfilling the issues (and their comments) that existed before the webhook.

Authentication: GITHUB_TOKEN as `Authorization: Bearer <token>`; GITHUB_API_URL points at GitHub
Enterprise (`https://<host>/api/v3`) or a test server. Pagination follows the `Link: <…>; rel="next"`
header, never a page count computed here.

Limits: GitHub's answers carry `X-RateLimit-Remaining` / `X-RateLimit-Reset`. When the remaining count
reaches 0 the client sleeps until the reset before its next call; a 403/429 for the primary limit waits
for the reset too, and a secondary limit (403/429 with `Retry-After`, or GitHub's "secondary rate limit"
message without it) waits as told (a minute when not told), then repeats the request. Waiting, not failing,
is the point: a backfill of a large repository must finish on its own. A wait longer than `max_wait`
raises `SourceUnavailable` instead (the backfill stops resumable). Network errors and 5xx are retried a
few times, then `SourceUnavailable`.

401 raises `GitHubError` naming GITHUB_TOKEN; 404 on a repository raises `GitHubError` saying it is unknown
(or invisible to the token): both are not worth a retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from bridge.events import SourceUnavailable

log = logging.getLogger("bridge.sources.github_api")
API_URL = "https://api.github.com"
TIMEOUT = (5.0, 30.0)
PER_PAGE = 100  # GitHub's maximum
SECONDARY_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute" when no Retry-After is given
MAX_TRANSIENT_RETRIES = 4
ACCEPT = "application/vnd.github+json"


class GitHubError(Exception):
    """GitHub answered, but not with what was asked (bad token, unknown repository): not worth a retry."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_url: str | None  # the `rel="next"` link, None on the last page


class GitHubClient:
    def __init__(
        self,
        token: str,
        *,
        base_url: str = API_URL,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 3600.0,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> None:
        if not token:
            raise GitHubError("GITHUB_TOKEN is not set: the GitHub API needs a token (repo or issues:read scope)")
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "X-GitHub-Api-Version": "2022-11-28"}
        )
        self.sleep = sleep
        self.max_wait = max_wait
        self.on_wait = on_wait
        self.calls = 0  # requests made (answers received), for the backfill's cost report
        self.waited = 0.0  # seconds spent waiting for GitHub's limits
        self._reset_at: float | None = None  # set when the last answer said no calls remain

    # -- requests -----------------------------------------------------------------------------------------

    def get(self, url: str, params: dict[str, Any] | None = None, *, repo: str = "") -> Page:
        """One page: `url` is a path (`/repos/o/r/issues`) or a `Link` URL (which carries its own query)."""
        full = url if url.startswith(("http://", "https://")) else f"{self.base_url}/{url.lstrip('/')}"
        transient = 0
        while True:
            self._wait_for_reset()
            try:
                response = self.session.get(full, params=params, timeout=TIMEOUT)
            except requests.RequestException as exc:
                transient += 1
                if transient > MAX_TRANSIENT_RETRIES:
                    raise SourceUnavailable(f"GitHub unreachable: {type(exc).__name__}") from None
                self._wait(min(30.0, 2.0**transient), f"GitHub unreachable ({type(exc).__name__})")
                continue
            self.calls += 1
            self._note_limits(response)
            status = response.status_code
            if status in (403, 429):
                wait = self._limit_wait(response)
                if wait is not None:
                    self._reset_at = None  # this wait already runs to the reset
                    self._wait(wait, f"GitHub rate limit ({status})")
                    continue
            if status >= 500:
                transient += 1
                if transient > MAX_TRANSIENT_RETRIES:
                    raise SourceUnavailable(f"GitHub answered {status}")
                self._wait(min(30.0, 2.0**transient), f"GitHub answered {status}")
                continue
            return self._page(response, repo)

    def _page(self, response: requests.Response, repo: str) -> Page:
        status = response.status_code
        message = _message(response)
        if status == 401:
            raise GitHubError(f"GitHub refused GITHUB_TOKEN (401{message}): check the token, has it expired?")
        if status == 404:
            what = f"repository {repo!r}" if repo else response.url
            raise GitHubError(f"unknown {what} on GitHub (404{message}), or GITHUB_TOKEN cannot see it")
        if status == 403:
            raise GitHubError(f"GitHub refused the request (403{message}): does GITHUB_TOKEN have access?")
        if status >= 400:
            raise GitHubError(f"GitHub answered {status}{message}")
        try:
            data = response.json()
        except ValueError:
            raise GitHubError("GitHub answered with something that is not JSON") from None
        if not isinstance(data, list):
            raise GitHubError(f"GitHub answered with a JSON {type(data).__name__}, expected a list")
        next_url = (response.links.get("next") or {}).get("url")
        return Page([d for d in data if isinstance(d, dict)], next_url)

    # -- limits -------------------------------------------------------------------------------------------

    def _note_limits(self, response: requests.Response) -> None:
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset = response.headers.get("X-RateLimit-Reset")
        self._reset_at = None
        if remaining is not None and reset is not None and remaining.strip() == "0":
            try:
                self._reset_at = float(reset)
            except ValueError:
                self._reset_at = None

    def _wait_for_reset(self) -> None:
        """The last answer said no calls remain: sleep until the window resets (GitHub's epoch seconds)."""
        if self._reset_at is None:
            return
        wait = self._reset_at - time.time() + 1.0  # a second of slack against clock skew
        self._reset_at = None
        if wait > 0:
            self._wait(wait, "GitHub rate limit used up until its reset")

    def _limit_wait(self, response: requests.Response) -> float | None:
        """How long to wait before repeating a 403/429 that is a rate limit; None when it is not one."""
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            try:
                return max(1.0, float(retry_after))
            except ValueError:
                return SECONDARY_DEFAULT_WAIT
        if response.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            reset = response.headers.get("X-RateLimit-Reset")
            try:
                return max(1.0, float(reset or 0) - time.time() + 1.0)
            except ValueError:
                return SECONDARY_DEFAULT_WAIT
        if "rate limit" in _message(response).lower():
            return SECONDARY_DEFAULT_WAIT
        return None

    def _wait(self, seconds: float, why: str) -> None:
        if seconds > self.max_wait:
            raise SourceUnavailable(f"{why}: would wait {seconds:.0f}s (over {self.max_wait:.0f}s)", seconds)
        if self.on_wait is not None:  # the caller reports the wait itself (the CLI prints it): once is enough
            self.on_wait(seconds, why)
        else:
            log.warning("waiting %.1fs: %s", seconds, why)
        self.waited += seconds
        self.sleep(seconds)

    # -- resources ----------------------------------------------------------------------------------------

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

    def send(self, method: str, path: str, body: Any = None, *, repo: str = "") -> Any:
        """One write (or a single-object read), with the same limit waits and retries as `get`."""
        full = f"{self.base_url}/{path.lstrip('/')}"
        transient = 0
        while True:
            self._wait_for_reset()
            try:
                response = self.session.request(method, full, json=body, timeout=TIMEOUT)
            except requests.RequestException as exc:
                transient += 1
                if transient > MAX_TRANSIENT_RETRIES:
                    raise SourceUnavailable(f"GitHub unreachable: {type(exc).__name__}") from None
                self._wait(min(30.0, 2.0**transient), f"GitHub unreachable ({type(exc).__name__})")
                continue
            self.calls += 1
            self._note_limits(response)
            status = response.status_code
            if status in (403, 429):
                wait = self._limit_wait(response)
                if wait is not None:
                    self._wait(wait, f"GitHub rate limit ({status})")
                    continue
            if status >= 500:
                transient += 1
                if transient > MAX_TRANSIENT_RETRIES:
                    raise SourceUnavailable(f"GitHub answered {status}")
                self._wait(min(30.0, 2.0**transient), f"GitHub answered {status}")
                continue
            if status >= 400:
                what = f"{method} {path}"
                if status == 401:
                    raise GitHubError(f"GitHub refused GITHUB_TOKEN (401{_message(response)}) for {what}")
                raise GitHubError(f"GitHub answered {status}{_message(response)} to {what}")
            try:
                return response.json() if response.content else None
            except ValueError:
                raise GitHubError("GitHub answered with something that is not JSON") from None

    def get_issue(self, repo: str, number: int) -> dict[str, Any]:
        return dict(self.send("GET", f"/repos/{repo}/issues/{number}", repo=repo) or {})

    def add_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        """`POST /repos/{repo}/issues/{number}/comments`: 201 with the new comment."""
        return dict(self.send("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body}, repo=repo) or {})

    def set_state(self, repo: str, number: int, state: str, state_reason: str | None = None) -> dict[str, Any]:
        """`PATCH` the issue: `state` open|closed, `state_reason` completed|not_planned|reopened."""
        body: dict[str, Any] = {"state": state}
        if state_reason:
            body["state_reason"] = state_reason
        return dict(self.send("PATCH", f"/repos/{repo}/issues/{number}", body, repo=repo) or {})

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None:
        self.send("POST", f"/repos/{repo}/issues/{number}/labels", {"labels": labels}, repo=repo)

    def remove_label(self, repo: str, number: int, label: str) -> None:
        from urllib.parse import quote

        self.send("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}", repo=repo)


def issue_number_of(comment: dict[str, Any]) -> int | None:
    """The issue a comment belongs to, from its `issue_url` (`…/issues/<number>`)."""
    url = comment.get("issue_url")
    if not isinstance(url, str):
        return None
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("message"):
        return f": {str(body['message'])[:200]}"
    return ""
