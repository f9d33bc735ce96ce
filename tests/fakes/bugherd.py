"""A fake BugHerd API v2 on a real loopback HTTP port: tasks and webhooks in memory.

Serves `GET /api_v2/projects/{p}/tasks/{t}.json` (`{"task": {...}}`), `GET /api_v2/webhooks.json`
(`{"webhooks": [...]}`) and `POST /api_v2/webhooks.json` (`{"project_id"?, "target_url", "event"}` →
`{"webhook": {...}}`), the lists `GET /api_v2/projects/{p}/tasks.json?page=N` (`{"tasks": [...], "meta":
{"count": n}}`, 100 a page) and `GET /api_v2/projects/{p}/tasks/{t}/comments.json?page=N` (`{"comments": [...],
"meta": {"count": n}}`). More than `rate_limit` requests in a sliding minute (0: no limit) answer 429.
Basic auth with the API key as user and `x` as password, else 401.
`fail_next(n, 429)` answers 429 with Retry-After.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeServer

API_KEY = "bhapi-9d41c7e2a05b4f68"
EVENTS = ("task_create", "task_update", "comment", "task_destroy")
TASK_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks/(\d+)\.json$")
TASKS_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks\.json$")
COMMENTS_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks/(\d+)/comments\.json$")
PAGE_SIZE = 100  # "only the first 100 records are returned": pages by the `page` parameter


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = self.server.fake._handle(self.command, self.path, self.headers, raw)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve


class FakeBugHerd(FakeServer):
    handler = _Handler

    def __init__(self, *, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self._lock = threading.RLock()
        self._tasks: dict[int, dict[str, Any]] = {}
        self._webhooks: list[dict[str, Any]] = []
        self._comments: dict[int, list[dict[str, Any]]] = {}
        self._faults: list[int] = []
        self.rate_limit = 0
        self._next_hook = 700
        self.requests: list[dict[str, Any]] = []

    # -- data --------------------------------------------------------------------------------------------------
    def put_task(self, task: dict[str, Any]) -> None:
        """A task as BugHerd's API returns it (e.g. `tests.factories_trackers.bugherd_task(...)`)."""
        with self._lock:
            self._tasks[int(task["id"])] = copy.deepcopy(task)

    def put_comment(self, task_id: int, comment: dict[str, Any]) -> None:
        """A comment as BugHerd's API lists it (e.g. `tests.factories_trackers.bugherd_comment(...)`)."""
        with self._lock:
            self._comments.setdefault(int(task_id), []).append(copy.deepcopy(comment))

    def webhooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._webhooks)

    def fail_next(self, n: int, status: int = 429) -> None:
        with self._lock:
            self._faults.extend([status] * n)

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.requests if method in (None, r["method"])]

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _handle(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = parts.path
        page = max(1, int((parse_qs(parts.query).get("page") or ["1"])[0]))
        with self._lock:
            now = time.time()
            if self.rate_limit and len([r for r in self.requests if r["at"] > now - 60.0]) >= self.rate_limit:
                self.requests.append({"method": method, "path": path, "auth": None, "at": now, "status": 429})
                return 429, {"error": "rate limit"}, {"Retry-After": "5"}
            self.requests.append({"method": method, "path": path, "auth": headers.get("Authorization"), "at": now})
            if self._faults:
                status = self._faults.pop(0)
                return status, {"error": f"injected {status}"}, ({"Retry-After": "3"} if status == 429 else {})
            expected = "Basic " + base64.b64encode(f"{self.api_key}:x".encode()).decode()
            if headers.get("Authorization") != expected:
                return 401, {"error": "HTTP Basic: Access denied."}, {}
            listing = TASKS_PATH.match(path)
            if method == "GET" and listing:
                tasks = [t for t in self._tasks.values() if str(t.get("project_id")) == listing.group(1)]
                tasks.sort(key=lambda t: int(t["id"]))
                chunk = tasks[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
                return 200, {"tasks": copy.deepcopy(chunk), "meta": {"count": len(tasks)}}, {}
            comments = COMMENTS_PATH.match(path)
            if method == "GET" and comments:
                task = self._tasks.get(int(comments.group(2)))
                if task is None or str(task.get("project_id")) != comments.group(1):
                    return 404, {"error": "not found"}, {}
                listed = self._comments.get(int(task["id"]), [])
                chunk = listed[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
                return 200, {"comments": copy.deepcopy(chunk), "meta": {"count": len(listed)}}, {}
            match = TASK_PATH.match(path)
            if method == "GET" and match:
                task = self._tasks.get(int(match.group(2)))
                if task is None or str(task.get("project_id")) != match.group(1):
                    return 404, {"error": "not found"}, {}
                return 200, {"task": copy.deepcopy(task)}, {}
            if path == "/api_v2/webhooks.json" and method == "GET":
                return 200, {"webhooks": copy.deepcopy(self._webhooks)}, {}
            if path == "/api_v2/webhooks.json" and method == "POST":
                try:
                    body = json.loads(raw)
                except ValueError:
                    return 400, {"error": "bad JSON"}, {}
                if body.get("event") not in EVENTS or not str(body.get("target_url", "")).startswith("http"):
                    return 422, {"error": "event and target_url are required"}, {}
                self._next_hook += 1
                hook = {
                    "id": self._next_hook,
                    "event": body["event"],
                    "target_url": body["target_url"],
                    "project_id": body.get("project_id"),
                }
                self._webhooks.append(hook)
                return 201, {"webhook": copy.deepcopy(hook)}, {}
            return 404, {"error": "not found"}, {}
