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
`API rate limit exceeded` with `X-RateLimit-Remaining: 0`. `GET /repos/{owner}/{repo}` answers the repository
(its `id` is the one the project's webhook bodies give it, and the fake's own webhooks carry it).

Secondary limits, as "Rate limits for the REST API" describes them: `secondary_limit_next(n, retry_after,
status)` answers the next n requests 403 (or 429) with GitHub's secondary-limit message, with `Retry-After`
or without it (`retry_after=None`); more than `content_per_minute` content-creating requests (comments) in a
sliding minute are refused the same way, without `Retry-After`.

Writes that fail as real ones can: `fail_writes_next(n, status)` applies the next n writes (the comment is
made, the webhook sent) and then answers 5xx; `slow_writes_next(n, seconds)` applies them and answers only
after `seconds` (a client with a shorter read timeout sees a timeout). `hold_after(n)` makes requests after
the n-th wait for `release()`. Every request is checked against the bridge's declared GitHub calls.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from bridge.sources.github.calls import TABLE
from testkit.factories import github_issue_id, repository_id
from testkit.fakes.server import FakeServer

TOKEN = "ghp_fakeBackfillToken0123456789abcdef"
BASE_TIME = 1_700_000_000.0  # issue times are BASE_TIME + offsets, so tests can reason about them
ISSUES = re.compile(r"^/repos/([^/]+/[^/]+)/issues$")
ISSUE_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/comments$")
REPO_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/comments$")
ONE_ISSUE = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)$")
ONE_REPO = re.compile(r"^/repos/([^/]+/[^/]+)$")
ISSUE_LABELS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/labels$")
ISSUE_LABEL = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/labels/([^/]+)$")
STATE_REASONS = {"closed": ("completed", "not_planned", "duplicate"), "open": ("reopened",)}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.server.fake
        fake.declared(self.command, self.path)
        status, body, headers = fake._handle(self.command, self.path, self.headers, raw)
        delay = fake._take_write_fault(self.command, status) if status < 300 else None
        if delay is not None:
            seconds, failing = delay
            if seconds:
                time.sleep(seconds)  # done, but the answer comes after the client stopped waiting
            if failing:
                status, body, headers = failing, {"message": "Server Error"}, {}
        data = json.dumps(body).encode()
        with contextlib.suppress(OSError):  # a client that timed out has gone
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    do_POST = do_PATCH = do_DELETE = do_GET


class FakeGitHub(FakeServer):
    handler = _Handler
    tables = (TABLE,)

    def __init__(
        self,
        *,
        token: str = TOKEN,
        rate_limit: int = 5000,
        rate_window: float = 3600.0,
        content_per_minute: int = 80,
    ) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.content_per_minute = content_per_minute
        self._content_at: list[float] = []
        self._write_faults: list[tuple[float, int | None]] = []
        self._lock = threading.RLock()
        self._repos: dict[str, dict[str, Any]] = {}  # full_name → {"issues": {number: issue}, "comments": [...]}
        self._next_id = 1_000_000
        self._window_start = time.time()
        self._used = 0
        self._secondary: list[tuple[int | None, int]] = []
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._released.set()
        self.requests: list[dict[str, Any]] = []
        # Where the fake delivers the webhooks its writes cause, as GitHub does (None: no webhooks).
        self.webhook_url: str | None = None
        self.webhook_secret = ""
        self.token_user = "issue-bridge[bot]"

    # -- data --------------------------------------------------------------------------------------------------
    def add_repo(self, full_name: str) -> None:
        with self._lock:
            self._repos.setdefault(full_name, {"issues": {}, "comments": []})

    def repository(self, full_name: str) -> dict[str, Any]:
        """The repository as `GET /repos/{owner}/{repo}` answers it (and webhooks carry it)."""
        owner, name = full_name.split("/", 1)
        return {
            "id": repository_id(full_name),
            "node_id": f"R_{repository_id(full_name)}",
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": {"login": owner, "id": 583231, "type": "Organization"},
            "html_url": f"https://github.com/{full_name}",
            "url": f"https://api.github.com/repos/{full_name}",
        }

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
                # the id the project's webhook bodies give this issue (tests.factories): one issue, one id
                "id": github_issue_id(repo, number),
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

    def secondary_limit_next(self, n: int, retry_after: int | None = 1, status: int = 403) -> None:
        """The next n requests are refused by a secondary limit (403 or 429), with `Retry-After` or without."""
        with self._lock:
            self._secondary.extend([(retry_after, status)] * n)

    def fail_writes_next(self, n: int, status: int = 502) -> None:
        """The next n writes are applied, then answered `status` (a 5xx after the commit)."""
        with self._lock:
            self._write_faults.extend([(0.0, status)] * n)

    def slow_writes_next(self, n: int, seconds: float) -> None:
        """The next n writes are applied, then answered only after `seconds`."""
        with self._lock:
            self._write_faults.extend([(seconds, None)] * n)

    def _take_write_fault(self, method: str, status: int) -> tuple[float, int | None] | None:
        with self._lock:
            if method != "GET" and self._write_faults:
                return self._write_faults.pop(0)
            return None

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

    def _handle(self, method: str, target: str, headers: Any, raw: bytes = b"") -> tuple[int, Any, dict[str, str]]:
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
                wait, status = self._secondary.pop(0)
                return _secondary(status, wait)
            if method == "POST" and ISSUE_COMMENTS.match(path):
                self._content_at = [t for t in self._content_at if t > now - 60.0]
                if len(self._content_at) >= self.content_per_minute:
                    return _secondary(403, None)
                self._content_at.append(now)
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
            repo_match = ONE_REPO.match(path)
            if repo_match and method == "GET":
                if repo_match.group(1) not in self._repos:
                    return 404, {"message": "Not Found"}, limits
                return 200, self.repository(repo_match.group(1)), limits
            if method != "GET" or ONE_ISSUE.match(path):
                status, answer = self._write(method, path, raw)
                if method != "GET":
                    self.requests[-1]["body"] = raw.decode("utf-8", "replace")
                return status, answer, limits
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

    # -- writes (the REST calls the bridge uses to talk back), and the webhooks they cause -----------------
    # `GET/PATCH /repos/{o}/{r}/issues/{n}` (state open|closed, state_reason completed|not_planned|duplicate on
    # close, reopened on open; unknown keys are ignored as GitHub does, a bad value is 422),
    # `POST …/issues/{n}/comments` (`body` required; 201), `POST …/issues/{n}/labels` (`labels`: a list of
    # names; 200 with the issue's labels), `DELETE …/issues/{n}/labels/{name}` (404 "Label does not exist"
    # when the issue lacks it). Each change fires the `issues` / `issue_comment` webhook GitHub would send.

    def writes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.requests if r["method"] != "GET"]

    def issue(self, repo: str, number: int) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._repos[repo]["issues"][number])

    def comments_of(self, repo: str, number: int) -> list[dict[str, Any]]:
        with self._lock:
            url = self._repos[repo]["issues"][number]["url"]
            return [copy.deepcopy(c) for c in self._repos[repo]["comments"] if c["issue_url"] == url]

    def _write(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        match = ONE_ISSUE.match(path) or ISSUE_COMMENTS.match(path) or ISSUE_LABELS.match(path)
        match = match or ISSUE_LABEL.match(path)
        if match is None or match.group(1) not in self._repos:
            return 404, {"message": "Not Found"}
        repo, number = match.group(1), int(match.group(2))
        issue = self._repos[repo]["issues"].get(number)
        if issue is None:
            return 404, {"message": "Not Found"}
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"message": "Problems parsing JSON"}
        if not isinstance(body, dict):
            return 400, {"message": "Problems parsing JSON"}
        now = time.time()
        if ONE_ISSUE.match(path):
            if method == "GET":
                return 200, copy.deepcopy(issue)
            if method != "PATCH":
                return 404, {"message": "Not Found"}
            return self._patch_issue(repo, issue, body, now)
        if ISSUE_COMMENTS.match(path) and method == "POST":
            if not isinstance(body.get("body"), str) or not body["body"]:
                return 422, {"message": "Validation Failed", "errors": [{"field": "body", "code": "missing_field"}]}
            comment = self.add_comment(repo, number, body["body"], at=now - BASE_TIME, user=self.token_user)
            self.deliver("issue_comment", "created", repo, number, comment)
            return 201, comment
        if ISSUE_LABELS.match(path) and method == "POST":
            names = body.get("labels")
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                return 422, {"message": "Validation Failed", "errors": [{"field": "labels", "code": "invalid"}]}
            have = [lb["name"] for lb in issue["labels"]]
            added = [n for n in names if n not in have]
            if added:
                self.edit_issue(repo, number, at=now - BASE_TIME, labels=[*have, *added])
                for _name in added:
                    self.deliver("issues", "labeled", repo, number)
            return 200, copy.deepcopy(self._repos[repo]["issues"][number]["labels"])
        label = ISSUE_LABEL.match(path)
        if label and method == "DELETE":
            name = unquote(label.group(3))
            have = [lb["name"] for lb in issue["labels"]]
            if name not in have:
                return 404, {"message": "Label does not exist"}
            self.edit_issue(repo, number, at=now - BASE_TIME, labels=[n for n in have if n != name])
            self.deliver("issues", "unlabeled", repo, number)
            return 200, copy.deepcopy(self._repos[repo]["issues"][number]["labels"])
        return 404, {"message": "Not Found"}

    def _patch_issue(self, repo: str, issue: dict[str, Any], body: dict[str, Any], now: float) -> tuple[int, Any]:
        state = body.get("state", issue["state"])
        if state not in ("open", "closed"):
            return 422, {"message": "Validation Failed", "errors": [{"field": "state", "code": "invalid"}]}
        reason = body.get("state_reason")
        if reason is not None and reason not in STATE_REASONS[state]:
            return 422, {"message": "Validation Failed", "errors": [{"field": "state_reason", "code": "invalid"}]}
        changes: dict[str, Any] = {k: body[k] for k in ("title", "body") if k in body}
        action = None
        if state != issue["state"]:
            action = "closed" if state == "closed" else "reopened"
            changes.update(
                state=state,
                state_reason=reason or ("completed" if state == "closed" else "reopened"),
                closed_at=iso(now) if state == "closed" else None,
            )
        if changes:
            updated = self.edit_issue(repo, issue["number"], at=now - BASE_TIME, **changes)
            if action:
                self.deliver("issues", action, repo, issue["number"])
            return 200, updated
        return 200, copy.deepcopy(issue)

    def person_edits(self, repo: str, number: int, action: str, **changes: Any) -> dict[str, Any]:
        """Someone changes the issue on GitHub (e.g. `state="closed"`): the change, then its webhook."""
        with self._lock:
            changes.setdefault("updated_at", iso(time.time()))
            issue = self._repos[repo]["issues"][number]
            issue.update(changes)
            self.deliver("issues", action, repo, number, sender="octocat")
            return copy.deepcopy(issue)

    def deliver(
        self, event: str, action: str, repo: str, number: int, comment: dict | None = None, sender: str = ""
    ) -> None:
        """Send the webhook GitHub sends for a change (in a thread: GitHub does not wait for it either)."""
        if not self.webhook_url:
            return
        from testkit.factories import github_request

        payload: dict[str, Any] = {
            "action": action,
            "issue": copy.deepcopy(self._repos[repo]["issues"][number]),
            "repository": self.repository(repo),
            "sender": {"login": sender or self.token_user, "type": "User" if sender else "Bot"},
        }
        if comment is not None:
            payload["comment"] = comment
        body, headers = github_request(self.webhook_secret, event, payload)
        url = self.webhook_url

        def send() -> None:
            import requests

            # GitHub marks a failed delivery and moves on; a test sees the missing event.
            with contextlib.suppress(requests.RequestException):
                requests.post(url, data=body, headers=headers, timeout=10)

        threading.Thread(target=send, daemon=True).start()


def _secondary(status: int, retry_after: int | None) -> tuple[int, Any, dict[str, str]]:
    body = {
        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    }
    return status, body, ({"Retry-After": str(retry_after)} if retry_after is not None else {})
