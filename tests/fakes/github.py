"""A fake GitHub REST API on a real loopback HTTP port: repositories, issues, pull requests, comments.

Serves, as GitHub documents them:
- `GET /repos/{owner}/{repo}/issues` with `state` (open|closed|all, default open), `since` (updated at or
  after), `labels` (comma list, all must match), `sort` (created|updated), `direction`, `per_page` (max 100)
  and `page`; pull requests are in the list (with a `pull_request` key), as on GitHub.
- `GET /repos/{owner}/{repo}/issues/{number}/comments` (`per_page`, `page`).
- `GET /repos/{owner}/{repo}/issues/comments` (every issue and PR comment; `since`, `sort`, `direction`).
Pagination by a `Link` header (`rel="next"`, `rel="last"`). Auth: `Authorization: Bearer|token <token>`, else
401 `Bad credentials`; an unknown repository is 404 `Not Found`. Every answer carries `X-RateLimit-Limit`,
`-Remaining`, `-Reset`, `-Used`, `-Resource`; past `rate_limit` calls in `rate_window` seconds the answer is 403
`API rate limit exceeded` with `X-RateLimit-Remaining: 0`. `secondary_limit_next(n, retry_after)` answers the
next n requests 403 with GitHub's secondary-limit message and `Retry-After`. `hold_after(n)` makes requests
after the n-th wait for `release()`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fakes.server import FakeServer

TOKEN = "ghp_fakeBackfillToken0123456789abcdef"
BASE_TIME = 1_700_000_000.0  # issue times are BASE_TIME + offsets, so tests can reason about them
ISSUES = re.compile(r"^/repos/([^/]+/[^/]+)/issues$")
ISSUE_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/comments$")
REPO_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/comments$")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        status, body, headers = self.server.fake._handle(self.command, self.path, self.headers)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FakeGitHub(FakeServer):
    handler = _Handler

    def __init__(self, *, token: str = TOKEN, rate_limit: int = 5000, rate_window: float = 3600.0) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._lock = threading.RLock()
        self._repos: dict[str, dict[str, Any]] = {}  # full_name → {"issues": {number: issue}, "comments": [...]}
        self._next_id = 1_000_000
        self._window_start = time.time()
        self._used = 0
        self._secondary: list[float] = []
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._released.set()
        self.requests: list[dict[str, Any]] = []

    # -- data --------------------------------------------------------------------------------------------------
    def add_repo(self, full_name: str) -> None:
        with self._lock:
            self._repos.setdefault(full_name, {"issues": {}, "comments": []})

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_issue(
        self,
        repo: str,
        number: int,
        *,
        title: str = "",
        body: str | None = "",
        state: str = "open",
        labels: tuple[str, ...] = (),
        at: float = 0.0,
        pull_request: bool = False,
        user: str = "octocat",
    ) -> dict[str, Any]:
        """An issue (or a pull request) created and last updated at `BASE_TIME + at`."""
        with self._lock:
            self.add_repo(repo)
            when = iso(BASE_TIME + at)
            issue: dict[str, Any] = {
                "id": self._id(),
                "node_id": f"I_{number}",
                "url": f"https://api.github.com/repos/{repo}/issues/{number}",
                "repository_url": f"https://api.github.com/repos/{repo}",
                "html_url": f"https://github.com/{repo}/{'pull' if pull_request else 'issues'}/{number}",
                "number": number,
                "title": title or f"Issue {number}",
                "body": body,
                "state": state,
                "state_reason": "completed" if state == "closed" else None,
                "labels": [{"id": self._id(), "name": name, "color": "ededed"} for name in labels],
                "user": {"login": user, "id": 583231, "type": "User"},
                "assignee": None,
                "assignees": [],
                "milestone": None,
                "locked": False,
                "comments": 0,
                "created_at": when,
                "updated_at": when,
                "closed_at": when if state == "closed" else None,
                "author_association": "OWNER",
            }
            if pull_request:
                issue["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}"}
            self._repos[repo]["issues"][number] = issue
            return copy.deepcopy(issue)

    def edit_issue(self, repo: str, number: int, *, at: float, **changes: Any) -> dict[str, Any]:
        with self._lock:
            issue = self._repos[repo]["issues"][number]
            if "labels" in changes:
                changes["labels"] = [{"id": self._id(), "name": n, "color": "ededed"} for n in changes["labels"]]
            issue.update(changes)
            issue["updated_at"] = iso(BASE_TIME + at)
            return copy.deepcopy(issue)

    def add_comment(self, repo: str, number: int, body: str, *, at: float, user: str = "hubot") -> dict[str, Any]:
        """A comment at `BASE_TIME + at`; like GitHub, it bumps the issue's comment count and updated_at."""
        with self._lock:
            issue = self._repos[repo]["issues"][number]
            comment_id = self._id()
            when = iso(BASE_TIME + at)
            comment = {
                "id": comment_id,
                "node_id": f"IC_{comment_id}",
                "url": f"https://api.github.com/repos/{repo}/issues/comments/{comment_id}",
                "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
                "issue_url": issue["url"],
                "body": body,
                "user": {"login": user, "id": 7, "type": "User"},
                "created_at": when,
                "updated_at": when,
                "author_association": "MEMBER",
            }
            self._repos[repo]["comments"].append(comment)
            issue["comments"] += 1
            issue["updated_at"] = max(issue["updated_at"], when)
            return copy.deepcopy(comment)

    def secondary_limit_next(self, n: int, retry_after: int = 1) -> None:
        with self._lock:
            self._secondary.extend([retry_after] * n)

    def hold_after(self, n: int) -> None:
        """Requests after the n-th wait until `release()` (a slow GitHub, to interrupt a backfill mid-way)."""
        with self._lock:
            self._hold_after = n
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def calls(self, path_contains: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.requests if path_contains in r["path"]]

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _limit_headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - self._used)),
            "X-RateLimit-Reset": str(int(self._window_start + self.rate_window + 0.999)),
            "X-RateLimit-Used": str(self._used),
            "X-RateLimit-Resource": "core",
        }

    def _handle(self, method: str, target: str, headers: Any) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            held = self._hold_after is not None and len(self.requests) >= self._hold_after
        if held:
            self._released.wait(60)
        with self._lock:
            now = time.time()
            self.requests.append({"method": method, "path": path, "query": parts.query, "at": now})
            if self._secondary:
                wait = self._secondary.pop(0)
                return (
                    403,
                    {
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                        "try again.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    },
                    {"Retry-After": str(wait)},
                )
            auth = headers.get("Authorization") or ""
            if auth not in (f"Bearer {self.token}", f"token {self.token}"):
                return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, {}
            if now >= self._window_start + self.rate_window:
                self._window_start, self._used = now, 0
            if self._used >= self.rate_limit:
                return (
                    403,
                    {"message": "API rate limit exceeded for user ID 583231."},
                    self._limit_headers(now),
                )
            self._used += 1
            limits = self._limit_headers(now)
            for pattern, handler in (
                (REPO_COMMENTS, self._repo_comments),
                (ISSUE_COMMENTS, self._issue_comments),
                (ISSUES, self._issues),
            ):
                match = pattern.match(path)
                if match and method == "GET":
                    repo = self._repos.get(match.group(1))
                    if repo is None:
                        return 404, {"message": "Not Found"}, limits
                    status, items, extra = handler(match, repo, query, path)
                    return status, items, {**limits, **extra}
            return 404, {"message": "Not Found"}, limits

    def _issues(self, match, repo, query, path):
        state = (query.get("state") or ["open"])[0]
        if state not in ("open", "closed", "all"):
            return 422, {"message": "Validation Failed"}, {}
        items = [i for i in repo["issues"].values() if state == "all" or i["state"] == state]
        if query.get("since"):
            since = _parse(query["since"][0])
            items = [i for i in items if _parse(i["updated_at"]) >= since]
        if query.get("labels"):
            wanted = {w.strip() for w in query["labels"][0].split(",") if w.strip()}
            items = [i for i in items if wanted <= {lb["name"] for lb in i["labels"]}]
        sort = (query.get("sort") or ["created"])[0]
        key = "updated_at" if sort == "updated" else "created_at"
        reverse = (query.get("direction") or ["desc"])[0] == "desc"
        items.sort(key=lambda i: (i[key], i["number"]), reverse=reverse)
        return self._paged(items, query, path)

    def _issue_comments(self, match, repo, query, path):
        number = int(match.group(2))
        if number not in repo["issues"]:
            return 404, {"message": "Not Found"}, {}
        url = repo["issues"][number]["url"]
        items = [c for c in repo["comments"] if c["issue_url"] == url]
        return self._paged(items, query, path)

    def _repo_comments(self, match, repo, query, path):
        items = list(repo["comments"])
        if query.get("since"):
            since = _parse(query["since"][0])
            items = [c for c in items if _parse(c["updated_at"]) >= since]
        sort = (query.get("sort") or ["created"])[0]
        key = "updated_at" if sort == "updated" else "created_at"
        items.sort(key=lambda c: (c[key], c["id"]), reverse=(query.get("direction") or ["asc"])[0] == "desc")
        return self._paged(items, query, path)

    def _paged(self, items, query, path):
        per_page = min(100, max(1, int((query.get("per_page") or ["30"])[0])))
        page = max(1, int((query.get("page") or ["1"])[0]))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        base = {k: v[0] for k, v in query.items() if k != "page"}
        host = f"{self.base_url}{path}"
        if page < last:
            links.append(f'<{host}?{urlencode({**base, "page": page + 1})}>; rel="next"')
            links.append(f'<{host}?{urlencode({**base, "page": last})}>; rel="last"')
        if page > 1:
            links.append(f'<{host}?{urlencode({**base, "page": 1})}>; rel="first"')
            links.append(f'<{host}?{urlencode({**base, "page": page - 1})}>; rel="prev"')
        return 200, copy.deepcopy(chunk), ({"Link": ", ".join(links)} if links else {})
