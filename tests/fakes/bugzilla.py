"""A fake Bugzilla REST server (Bugzilla 5.x `/rest/bug…`) on a real loopback HTTP port, bugs in memory.

Serves `GET /rest/bug/{id}`, `GET /rest/bug/{id}/comment` (`new_since`: strictly newer) and the search
`GET /rest/bug` with `last_change_time` (modified at that time or later), `product` (repeatable), `component`,
`limit` (capped by `max_limit`; 0 means all), `offset` and `include_fields`; results are ordered by
last change, then id. The API key must come in the `X-BUGZILLA-API-KEY` header (or `api_key`); else 401.
Times are REST-style UTC with `Z`, one-second precision.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.factories import BASE_TIME
from tests.fakes.server import FakeServer

API_KEY = "bzapi-3f9c2e7a1b5d4c8e"


def rest_ts(seconds: float) -> str:
    """A Bugzilla REST time `BASE_TIME + seconds`: `2014-09-23T19:12:17Z`."""
    return (BASE_TIME + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    text = value.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1]
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        status, body, headers = self.server.fake._handle("GET", self.path, self.headers)
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)


class FakeBugzilla(FakeServer):
    handler = _Handler

    def __init__(self, *, api_key: str = API_KEY, max_limit: int = 0) -> None:
        self.api_key = api_key
        self.max_limit = max_limit  # the admin's max search limit; 0: none
        self._lock = threading.RLock()
        self._bugs: dict[int, dict[str, Any]] = {}
        self._comments: dict[int, list[dict[str, Any]]] = {}
        self._next_comment_id = 5000
        self._faults: list[int] = []
        self.requests: list[dict[str, Any]] = []

    # -- lifecycle -----------------------------------------------------------------------------------------

    # -- data --------------------------------------------------------------------------------------------------
    def put_bug(
        self,
        bug_id: int,
        *,
        changed: float,
        created: float | None = None,
        description: str | None = "Steps to reproduce: log in, click Checkout.",
        **fields: Any,
    ) -> dict[str, Any]:
        """Create or change a bug at `BASE_TIME + changed`; a new bug gets comment 0 (its description)."""
        with self._lock:
            bug = self._bugs.get(bug_id)
            if bug is None:
                created_at = rest_ts(created if created is not None else changed)
                bug = {
                    "id": bug_id,
                    "alias": [],
                    "summary": f"bug {bug_id}",
                    "status": "NEW",
                    "resolution": "",
                    "severity": "normal",
                    "priority": "--",
                    "classification": "Client Software",
                    "product": "Firefox",
                    "component": "Sync",
                    "keywords": [],
                    "whiteboard": "",
                    "url": "",
                    "version": "unspecified",
                    "target_milestone": "---",
                    "type": "defect",
                    "assigned_to": "nobody@mozilla.org",
                    "creator": "reporter@example.org",
                    "qa_contact": "",
                    "op_sys": "Unspecified",
                    "platform": "Unspecified",
                    "creation_time": created_at,
                    "is_private": False,
                    "cc": [],
                    "groups": [],
                }
                self._bugs[bug_id] = bug
                self._comments[bug_id] = []
                if description is not None:
                    self._add_comment(bug_id, description, created_at)
            bug.update(fields)
            bug["last_change_time"] = rest_ts(changed)
            return copy.deepcopy(bug)

    def add_comment(self, bug_id: int, text: str, *, at: float, private: bool = False) -> int:
        """A new comment at `BASE_TIME + at`; it changes the bug's last_change_time too, as in Bugzilla."""
        with self._lock:
            comment = self._add_comment(bug_id, text, rest_ts(at), private)
            self._bugs[bug_id]["last_change_time"] = rest_ts(at)
            return comment["id"]

    def _add_comment(self, bug_id: int, text: str, when: str, private: bool = False) -> dict[str, Any]:
        self._next_comment_id += 1
        comment = {
            "id": self._next_comment_id,
            "bug_id": bug_id,
            "attachment_id": None,
            "count": len(self._comments[bug_id]),
            "text": text,
            "creator": "commenter@example.org",
            "creation_time": when,
            "time": when,
            "is_private": private,
            "tags": [],
        }
        self._comments[bug_id].append(comment)
        return comment

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._faults.extend([status] * n)

    def calls(self, path_prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.requests if r["path"].startswith(path_prefix)]

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _handle(self, method: str, target: str, headers: Any) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        path = parts.path.rstrip("/")
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query})
            if self._faults:
                status = self._faults.pop(0)
                extra = {"Retry-After": "7"} if status == 429 else {}
                return status, {"error": True, "message": f"injected {status}"}, extra
            key = headers.get("X-BUGZILLA-API-KEY") or (query.get("api_key") or [""])[0]
            if key != self.api_key:
                return 401, {"error": True, "code": 410, "message": "You must log in before using this part."}, {}
            segments = path.split("/")[1:]  # rest, bug, ...
            if segments[:2] != ["rest", "bug"]:
                return 404, {"error": True, "code": 32614, "message": f"no such resource {path}"}, {}
            if len(segments) == 2:
                return 200, self._search(query), {}
            bug_id = int(segments[2]) if segments[2].isdigit() else -1
            if bug_id not in self._bugs:
                return 404, {"error": True, "code": 101, "message": f"Bug #{segments[2]} does not exist."}, {}
            if len(segments) == 3:
                return 200, {"faults": [], "bugs": [self._select(self._bugs[bug_id], query)]}, {}
            if len(segments) == 4 and segments[3] == "comment":
                comments = self._comments[bug_id]
                if query.get("new_since"):
                    since = _parse(query["new_since"][0])
                    comments = [c for c in comments if _parse(c["creation_time"]) > since]
                return 200, {"bugs": {str(bug_id): {"comments": copy.deepcopy(comments)}}, "comments": {}}, {}
            return 404, {"error": True, "code": 32614, "message": f"no such resource {path}"}, {}

    def _search(self, query: dict[str, list[str]]) -> dict[str, Any]:
        bugs = list(self._bugs.values())
        if query.get("last_change_time"):
            since = _parse(query["last_change_time"][0])
            bugs = [b for b in bugs if _parse(b["last_change_time"]) >= since]
        if query.get("product"):
            products = {p for value in query["product"] for p in value.split(",")}
            bugs = [b for b in bugs if b["product"] in products]
        if query.get("component"):
            components = set(query["component"])
            bugs = [b for b in bugs if b["component"] in components]
        bugs.sort(key=lambda b: (_parse(b["last_change_time"]), b["id"]))
        limit = int((query.get("limit") or ["0"])[0])
        if self.max_limit and (limit == 0 or limit > self.max_limit):
            limit = self.max_limit
        offset = int((query.get("offset") or ["0"])[0])
        bugs = bugs[offset : offset + limit] if limit else bugs[offset:]
        return {"faults": [], "bugs": [self._select(b, query) for b in bugs]}

    @staticmethod
    def _select(bug: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = {f for value in query.get("include_fields", []) for f in value.split(",") if f}
        if not wanted or "_default" in wanted or "_all" in wanted:
            return copy.deepcopy(bug)
        return {k: copy.deepcopy(v) for k, v in bug.items() if k in wanted or k == "id"}
