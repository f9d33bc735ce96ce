"""A fake BugHerd API v2 on a real loopback HTTP port: tasks and webhooks in memory.

Serves `GET /api_v2/projects/{p}/tasks/{t}.json` (`{"task": {...}}`), `GET /api_v2/webhooks.json`
(`{"webhooks": [...]}`) and `POST /api_v2/webhooks.json` (`{"project_id"?, "target_url", "event"}` →
`{"webhook": {...}}`), the lists `GET /api_v2/projects/{p}/tasks.json?page=N` (`{"tasks": [...], "meta":
{"count": n}}`, 100 a page) and `GET /api_v2/projects/{p}/tasks/{t}/comments.json?page=N` (`{"comments": [...],
"meta": {"count": n}}`). More than `rate_limit` requests in a sliding minute (0: no limit) answer 429.
Basic auth with the API key as user and `x` as password, else 401.
`fail_next(n, 429)` answers 429 with Retry-After.

Writes, exactly in the documented shapes (seed 002): `POST …/tasks/{t}/comments.json` with
`{"comment": {"text", "user_id" | "email"}}` (seed 002:180-185) and `PUT …/tasks/{t}.json` with `{"task": {...}}`
(seed 002:136-164; status backlog, todo, doing, done, closed, feedback or one of the project's `columns`).
Anything else is a 422 `{"error": ...}`. Each accepted write is recorded (`writes()`) and followed by the
webhooks BugHerd sends for it (`comment`, `task_update`) to every registered webhook of that event and project.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bridge.sources.bugherd.calls import TABLE
from testkit.fakes.server import FakeServer

API_KEY = "bhapi-9d41c7e2a05b4f68"
EVENTS = ("task_create", "task_update", "comment", "task_destroy")
TASK_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks/(\d+)\.json$")
TASKS_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks\.json$")
COMMENTS_PATH = re.compile(r"^/api_v2/projects/(\d+)/tasks/(\d+)/comments\.json$")
PAGE_SIZE = 100  # "only the first 100 records are returned": pages by the `page` parameter
BURST, RATE = 10, 1.0  # 002:29: bursts of up to 10, an average of 60 a minute
SLACK = 0.5  # of a request: what network jitter between a paced client and this server may cost
STATUS_IDS = {"feedback": None, "backlog": 0, "todo": 1, "doing": 2, "done": 4, "closed": 5}  # seed 002:112
PRIORITIES = {"not set": 0, "critical": 1, "important": 2, "normal": 3, "minor": 4}
TASK_UPDATE_KEYS = {"status", "priority", "assigned_to_id", "updater_email", "description", "tag_names"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = self.server.fake._handle(self.command, self.path, self.headers, raw)
        if self.server.fake._take_drop(self.command, status):
            self.close_connection = True  # done, but the answer is lost on the way: the client sees a dropped line
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve


def _ms(t: float | None = None) -> str:
    """BugHerd's webhook time: ISO-8601 with milliseconds and Z."""
    moment = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


class FakeBugHerd(FakeServer):
    handler = _Handler
    tables = (TABLE,)

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        burst: bool = True,
        retry_after: int | None = None,
        shapes: str = "wrapped",
        comment_page_size: int = PAGE_SIZE,
    ) -> None:
        if shapes not in ("wrapped", "bare"):
            raise ValueError(f"shapes: wrapped or bare, not {shapes!r}")
        self.api_key = api_key
        self.burst = burst
        self.retry_after = retry_after
        self.shapes = shapes
        self.comment_page_size = comment_page_size
        self._bucket, self._bucket_at = float(BURST), time.monotonic()
        self.refused: list[dict[str, Any]] = []  # requests the burst model answered 429
        self._lock = threading.RLock()
        self._tasks: dict[int, dict[str, Any]] = {}
        self._webhooks: list[dict[str, Any]] = []
        self._comments: dict[int, list[dict[str, Any]]] = {}
        self._faults: list[int] = []
        self.rate_limit = 0
        self._next_hook = 700
        self._next_comment = 18900000
        self.requests: list[dict[str, Any]] = []
        self._writes: list[dict[str, Any]] = []
        self.columns: dict[int, tuple[str, ...]] = {}  # a project's custom columns, by project id
        self.members = {"bridge@example.org": 902400}  # project members: email -> user id
        self.delivered: list[dict[str, Any]] = []
        self._drop_writes = 0

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

    def writes(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._writes)

    def drop_next_write_answers(self, n: int = 1) -> None:
        """The next n accepted writes are applied, but their answers never reach the client (a cut line)."""
        with self._lock:
            self._drop_writes += n

    def _take_drop(self, method: str, status: int) -> bool:
        with self._lock:
            if method in ("POST", "PUT") and status < 300 and self._drop_writes:
                self._drop_writes -= 1
                return True
            return False

    def person_comments(self, task_id: int, text: str, email: str = "tom.okafor@example.org") -> dict[str, Any]:
        """Someone comments on the task in BugHerd: the comment, then its `comment` webhook."""
        with self._lock:
            task = self._tasks[int(task_id)]
            self._next_comment += 1
            now = _ms()
            user = {"id": 902305, "email": email, "display_name": email.split("@")[0]}
            new = {"id": self._next_comment, "created_at": now, "text": text, "deleted_at": None}
            new.update(updated_at=now, user=user)
            self._comments.setdefault(int(task_id), []).append(new)
            self._deliver("comment", task, {"comment": {**copy.deepcopy(new), "task": copy.deepcopy(task)}})
            return copy.deepcopy(new)

    def task(self, task_id: int) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._tasks[int(task_id)])

    def comments(self, task_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._comments.get(int(task_id), []))

    def add_webhook(self, event: str, target_url: str, project_id: int | None = None) -> None:
        with self._lock:
            self._next_hook += 1
            self._webhooks.append(
                {"id": self._next_hook, "event": event, "target_url": target_url, "project_id": project_id}
            )

    # -- writes ----------------------------------------------------------------------------------------------
    def _create_comment(self, task: dict[str, Any], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, {"error": "bad JSON"}, {}
        comment = body.get("comment") if isinstance(body, dict) and set(body) == {"comment"} else None
        if not isinstance(comment, dict) or not isinstance(comment.get("text"), str) or not comment["text"].strip():
            return 422, {"error": 'expected {"comment": {"text": ..., "user_id" or "email": ...}}'}, {}
        author = set(comment) - {"text"}
        if author not in ({"user_id"}, {"email"}):  # the seed's two forms: text with user_id, or with email
            return 422, {"error": "a comment takes text and one of user_id or email"}, {}
        if "email" in comment and comment["email"] not in self.members:
            return 422, {"error": f"{comment['email']} is not a member of this project"}, {}
        if "user_id" in comment and comment["user_id"] not in self.members.values():
            return 422, {"error": f"no user {comment['user_id']}"}, {}
        email = comment.get("email") or next(e for e, i in self.members.items() if i == comment["user_id"])
        self._next_comment += 1
        now = _ms()
        user = {"id": self.members[email], "email": email, "display_name": email.split("@")[0]}
        new = {"id": self._next_comment, "created_at": now, "text": comment["text"], "deleted_at": None}
        new.update(updated_at=now, user=user)
        self._comments.setdefault(int(task["id"]), []).append(new)
        self._writes.append({"method": "POST", "path": f"tasks/{task['id']}/comments", "json": body})
        self._deliver("comment", task, {"comment": {**copy.deepcopy(new), "task": copy.deepcopy(task)}})
        return 201, self._object("comment", new), {}

    def _update_task(self, task: dict[str, Any], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, {"error": "bad JSON"}, {}
        changes = body.get("task") if isinstance(body, dict) and set(body) == {"task"} else None
        if not isinstance(changes, dict) or not changes or set(changes) - TASK_UPDATE_KEYS:
            return (
                422,
                {"error": f'expected {{"task": {{...}}}} with some of {", ".join(sorted(TASK_UPDATE_KEYS))}'},
                {},
            )
        columns = self.columns.get(int(task["project_id"]), ())
        if "status" in changes:
            status = changes["status"]
            if status is not None and status not in STATUS_IDS and status not in columns:
                return 422, {"error": f"unknown status {status!r}"}, {}
        if "priority" in changes and changes["priority"] not in PRIORITIES:
            return 422, {"error": f"unknown priority {changes['priority']!r}"}, {}
        self._writes.append({"method": "PUT", "path": f"tasks/{task['id']}", "json": body})
        now = _ms()
        if "status" in changes:
            status = changes["status"] or "feedback"
            task["status"] = None if status == "feedback" else status
            column = STATUS_IDS.get(status, 6 + (columns.index(status) if status in columns else 0))
            task["status_id"] = task["column_id"] = column
            task["closed_at"] = now if status == "closed" else None
        if "priority" in changes:
            task["priority"], task["priority_id"] = changes["priority"], PRIORITIES[changes["priority"]]
        for key in ("description", "tag_names"):
            if key in changes:
                task[key] = changes[key]
        task["updated_at"] = now
        self._deliver("task_update", task, {"task": copy.deepcopy(task)})
        return 200, self._object("task", task), {}

    def deliver(self, event: str, task_id: int) -> None:
        """The webhook for a change a person made (e.g. `put_task` then `deliver("task_create", id)`)."""
        with self._lock:
            task = self._tasks[int(task_id)]
            self._deliver(event, task, {"task": copy.deepcopy(task)})

    def _deliver(self, event: str, task: dict[str, Any], body: dict[str, Any]) -> None:
        """BugHerd posts the event to each webhook of that event for the task's project (or all projects)."""
        urls = [
            h["target_url"]
            for h in self._webhooks
            if h["event"] == event and h.get("project_id") in (None, task.get("project_id"))
        ]
        if not urls:
            return
        self.delivered.append({"event": event, **copy.deepcopy(body)})
        raw = json.dumps(body).encode()

        def send() -> None:
            import requests

            for url in urls:
                with contextlib.suppress(requests.RequestException):
                    requests.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=10)

        threading.Thread(target=send, daemon=True).start()

    def _object(self, name: str, record: dict[str, Any]) -> Any:
        return copy.deepcopy(record) if self.shapes == "bare" else {name: copy.deepcopy(record)}

    def _list(self, name: str, records: list[dict[str, Any]], count: int) -> Any:
        if self.shapes == "bare":
            return copy.deepcopy(records)
        return {name: copy.deepcopy(records), "meta": {"count": count}}

    def _spend(self) -> bool:
        """The burst model: a bucket of 10 refilled at one a second; False when this request is one too many."""
        now = time.monotonic()
        self._bucket = min(float(BURST), self._bucket + (now - self._bucket_at) * RATE)
        self._bucket_at = now
        if self._bucket < 1.0 - SLACK:
            return False
        self._bucket -= 1.0
        return True

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _handle(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = parts.path
        page = max(1, int((parse_qs(parts.query).get("page") or ["1"])[0]))
        self.declared(method, target)
        with self._lock:
            now = time.time()
            limited = self.rate_limit and len([r for r in self.requests if r["at"] > now - 60.0]) >= self.rate_limit
            if limited or (self.burst and not self._spend()):
                entry = {"method": method, "path": path, "auth": None, "at": now, "status": 429}
                self.requests.append(entry)
                self.refused.append(entry)
                extra = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
                return 429, {"error": "rate limit"}, extra
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
                return 200, self._list("tasks", chunk, len(tasks)), {}
            comments = COMMENTS_PATH.match(path)
            if method == "POST" and comments:
                task = self._tasks.get(int(comments.group(2)))
                if task is None or str(task.get("project_id")) != comments.group(1):
                    return 404, {"error": "not found"}, {}
                return self._create_comment(task, raw)
            if method == "GET" and comments:
                task = self._tasks.get(int(comments.group(2)))
                if task is None or str(task.get("project_id")) != comments.group(1):
                    return 404, {"error": "not found"}, {}
                listed = self._comments.get(int(task["id"]), [])
                size = self.comment_page_size
                chunk = listed[(page - 1) * size : page * size]
                return 200, self._list("comments", chunk, len(listed)), {}
            match = TASK_PATH.match(path)
            if method == "PUT" and match:
                task = self._tasks.get(int(match.group(2)))
                if task is None or str(task.get("project_id")) != match.group(1):
                    return 404, {"error": "not found"}, {}
                return self._update_task(task, raw)
            if method == "GET" and match:
                task = self._tasks.get(int(match.group(2)))
                if task is None or str(task.get("project_id")) != match.group(1):
                    return 404, {"error": "not found"}, {}
                return 200, self._object("task", task), {}
            if path == "/api_v2/webhooks.json" and method == "GET":
                hooks = copy.deepcopy(self._webhooks)
                return 200, (hooks if self.shapes == "bare" else {"webhooks": hooks}), {}
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
                return 201, self._object("webhook", hook), {}
            return 404, {"error": "not found"}, {}
