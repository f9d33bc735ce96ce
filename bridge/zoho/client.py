"""The one Zoho client: session, auth, budget, timeouts, error translation, and the domain verbs.

Two dialects share every guarantee and differ only in paths and bodies:
- `projects` (Zoho Projects API v3): `POST/PATCH …/issues`, option fields as `{"id": …}` resolved from
  `…/bugs/defaultfields/`, the external id in a custom field, looked up with a `filter` criterion.
- `bugtracker` (Zoho BugTracker API): `POST/PUT …/bugs`, fields by name, comments with `content`,
  error bodies with `code` 6001-6010; the external id travels as a marker line in the description.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from sqlalchemy.engine import Engine

from bridge import store
from bridge.mapping.model import BT_FLAGS, V3_FLAGS, IssueDraft
from bridge.settings import Settings
from bridge.zoho.auth import TokenProvider
from bridge.zoho.errors import ResolutionError, ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.zoho.ratelimit import RateLimiter, RateLimitTimeout

log = logging.getLogger("bridge.zoho")
OPTIONS_TTL = 600.0
# defaultfields keys per option field: (list key, id key, name key)
DEFAULTFIELDS = {
    "status": ("status_details", "status_id", "status_name"),
    "severity": ("severity_details", "severity_id", "severity_name"),
    "classification": ("classification_details", "classification_id", "classification_name"),
    "module": ("module_details", "module_id", "module_name"),
    "priority": ("priority_details", "priority_id", "priority_name"),
}
# Option fields the v3 issue body accepts (priority is not one: see the seed's create parameters).
V3_OPTION_FIELDS = ("status", "severity", "classification", "module")
# Zoho's limits (seed 001): an issue name holds at most 65000 characters (create parameters), a single-line
# custom field 200 (custom field formats). Longer text is cut, with a visible marker, never refused by Zoho.
NAME_MAX = 65000
SINGLELINE_MAX = 200
TRUNCATED = "…(truncated)"
USERS_TTL = OPTIONS_TTL
USERS_REFRESH_AFTER = 60.0  # an unknown email re-reads the project's users at most this often


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut shown by a trailing "…(truncated)"."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def normalize_name(name: str) -> str:
    """Names match case- and whitespace-insensitively: " in  progress " == "In Progress"."""
    return " ".join(name.split()).casefold()


def marker(external_id: str) -> str:
    return f"[issue-bridge:{external_id}]"


@dataclass
class Response:
    status: int
    data: Any
    text: str


class ZohoClient:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        session: requests.Session | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.dry_run = settings.dry_run
        self.dialect = settings.zoho_dialect
        self.session = session or requests.Session()
        self.tokens = TokenProvider(settings, engine, self.session)
        self.limiter = limiter or RateLimiter(
            engine, settings.zoho_rate_limit_per_minute, window=settings.zoho_rate_window_seconds
        )
        self._options: dict[tuple[str, str], tuple[float, dict[str, dict[str, tuple[str, str]]]]] = {}
        self._options_lock = threading.Lock()
        self._users: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}  # -> {normalized email: zpuid}
        self.event_id: int | None = None  # the event the calls are made for (recorded with each call)
        # Called before every Zoho call; the sync service renews its item lease there.
        self.before_call: Callable[[], None] | None = None

    # -- transport ----------------------------------------------------------------------------------

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Response:
        if self.dry_run:
            store.record_zoho_call(
                self.engine,
                event_id=self.event_id,
                method=method,
                path=path + (("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""),
                request_json=body,
                status=None,
                response_text="dry-run: not sent",
                duration_ms=0.0,
                dry_run=True,
            )
            return Response(200, None, "")
        for auth_attempt in range(2):
            token = self.tokens.get()
            try:
                self.limiter.acquire(timeout=min(30.0, self.settings.item_lease_seconds / 3))
            except RateLimitTimeout as exc:
                raise ZohoRateLimited(str(exc), retry_after=exc.wait) from None
            if self.before_call is not None:
                self.before_call()
            started = time.monotonic()
            try:
                raw = self.session.request(
                    method,
                    self.settings.zoho_api_base + path,
                    json=body,
                    params=params,
                    headers={"Authorization": f"Zoho-oauthtoken {token}"},
                    timeout=self.settings.zoho_timeout_seconds,
                )
            except requests.RequestException as exc:
                self._record(method, path, body, None, f"{type(exc).__name__}", started)
                raise ZohoTransientError(f"{method} {path}: network error {type(exc).__name__}") from None
            self._record(method, path, body, raw.status_code, raw.text, started)
            try:
                data = raw.json() if raw.content else None
            except ValueError:
                data = None
            if 200 <= raw.status_code < 300:
                return Response(raw.status_code, data, raw.text)
            title, message, field = self._error(data, raw)
            if raw.status_code == 401 or title in ("INVALID_OAUTHTOKEN", "6004"):
                self.tokens.invalidate(token)
                if auth_attempt == 0:
                    continue  # an expired token is refreshed once and the call repeated
                raise ZohoPermanentError(f"{method} {path}: Zoho rejected a fresh token: {message}", status=401)
            if raw.status_code == 429 or title in ("6009", "TOO_MANY_REQUESTS"):
                retry_after = _retry_after(raw)
                self.limiter.penalize(time.time() + retry_after)
                raise ZohoRateLimited(
                    f"{method} {path}: Zoho rate limit (429), retry in {retry_after:.0f}s",
                    status=429,
                    retry_after=retry_after,
                )
            if raw.status_code >= 500:
                raise ZohoTransientError(
                    f"{method} {path}: Zoho answered {raw.status_code}: {message}", status=raw.status_code
                )
            raise ZohoPermanentError(
                f"{method} {path}: Zoho answered {raw.status_code} {title}: {message}"
                + (f" (field {field})" if field else ""),
                status=raw.status_code,
                field=field,
            )
        raise AssertionError("unreachable")

    def _record(self, method: str, path: str, body: Any, status: int | None, text: str, started: float) -> None:
        duration = (time.monotonic() - started) * 1000
        store.record_zoho_call(
            self.engine,
            event_id=self.event_id,
            method=method,
            path=path,
            request_json=body,
            status=status,
            response_text=text,
            duration_ms=duration,
            dry_run=False,
        )
        log.info(
            "zoho call",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "ms": round(duration, 1),
                "event_id": self.event_id,
            },
        )

    @staticmethod
    def _error(data: Any, raw: requests.Response) -> tuple[str, str, str | None]:
        """(title or code, message, field) from either dialect's error body."""
        if isinstance(data, dict) and isinstance(data.get("error"), dict):  # Projects v3
            err = data["error"]
            details = err.get("details") or [{}]
            first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
            return (
                str(err.get("title") or ""),
                str(first.get("message") or err.get("title") or ""),
                first.get("field_name"),
            )
        if isinstance(data, dict) and "code" in data:  # BugTracker
            details = data.get("details") if isinstance(data.get("details"), dict) else {}
            message = str(data.get("message") or "")
            if details.get("error"):
                message = f"{message}: {details['error']}"
            return str(data["code"]), message, details.get("field")
        return "", raw.text[:300] or raw.reason, None

    # -- option names → ids (projects dialect) ----------------------------------------------------------

    def options(self, portal: str, project: str, *, refresh: bool = False) -> dict[str, dict[str, tuple[str, str]]]:
        """{field: {normalized name: (id, display name)}} from the project's issue field metadata."""
        key = (portal, project)
        with self._options_lock:
            cached = self._options.get(key)
            if cached and not refresh and time.time() - cached[0] < OPTIONS_TTL:
                return cached[1]
        resp = self.call("GET", f"/restapi/portal/{portal}/projects/{project}/bugs/defaultfields/")
        fields = (resp.data or {}).get("defaultfields", {}) if isinstance(resp.data, dict) else {}
        table: dict[str, dict[str, tuple[str, str]]] = {}
        for field, (list_key, id_key, name_key) in DEFAULTFIELDS.items():
            entries = fields.get(list_key) or []
            table[field] = {
                normalize_name(str(e[name_key])): (str(e[id_key]), str(e[name_key]))
                for e in entries
                if isinstance(e, dict) and name_key in e and id_key in e
            }
        with self._options_lock:
            self._options[key] = (time.time(), table)
        return table

    def custom_fields(self, portal: str) -> list[dict[str, Any]]:
        """The issue custom fields (API name, display name, type), for `bridge zoho fields`."""
        resp = self.call(
            "GET",
            f"/api/v3/portal/{portal}/settings/fields",
            params={"module": "Issues", "page": "1", "per_page": "100"},
        )
        fields = (resp.data or {}).get("fields", []) if isinstance(resp.data, dict) else []
        return [f for f in fields if isinstance(f, dict) and not f.get("is_default")]

    def portals(self) -> list[dict[str, Any]]:
        resp = self.call("GET", "/api/v3/portals")
        return [p for p in resp.data or [] if isinstance(p, dict)] if isinstance(resp.data, list) else []

    def projects(self, portal: str) -> list[dict[str, Any]]:
        resp = self.call("GET", f"/api/v3/portal/{portal}/projects", params={"page": "1", "per_page": "200"})
        return (resp.data or {}).get("projects", []) if isinstance(resp.data, dict) else []

    def resolve(self, portal: str, project: str, field: str, name: str) -> str:
        if self.dry_run:
            return f"<id of {field} {name!r}>"
        table = self.options(portal, project).get(field, {})
        found = table.get(normalize_name(name))
        if found is None:  # someone may have renamed or added an option: look once more
            table = self.options(portal, project, refresh=True).get(field, {})
            found = table.get(normalize_name(name))
        if found is None:
            valid = ", ".join(sorted(v[1] for v in table.values())) or "(none)"
            raise ResolutionError(
                f"unknown Zoho {field} {name!r} in project {project}; valid names: {valid}", field=field
            )
        return found[0]

    # -- users (assignees by email) ----------------------------------------------------------------------

    def users(self, portal: str, project: str, *, refresh: bool = False) -> dict[str, str]:
        """{normalized email: zpuid} of the project's users (`GET …/projects/{project}/users`), cached."""
        key = (portal, project)
        with self._options_lock:
            cached = self._users.get(key)
            if cached and not refresh and time.time() - cached[0] < USERS_TTL:
                return cached[1]
        resp = self.call("GET", f"/api/v3/portal/{portal}/projects/{project}/users")
        users = (resp.data or {}).get("users", []) if isinstance(resp.data, dict) else []
        table = {
            normalize_name(str(u["email"])): str(u["zpuid"])
            for u in users
            if isinstance(u, dict) and u.get("email") and u.get("zpuid")
        }
        with self._options_lock:
            self._users[key] = (time.time(), table)
        return table

    def user_id(self, portal: str, project: str, email: str) -> str | None:
        """The zpuid of the project's user with this email (case-insensitive), or None."""
        if self.dry_run:
            return f"<zpuid of {email!r}>"
        found = self.users(portal, project).get(normalize_name(email))
        if found is None:  # a user added since: look once more, at most once a minute
            with self._options_lock:
                age = time.time() - self._users.get((portal, project), (0.0, {}))[0]
            if age >= USERS_REFRESH_AFTER:
                found = self.users(portal, project, refresh=True).get(normalize_name(email))
        return found

    def _assignee(self, draft: IssueDraft) -> str | None:
        """The assignee's zpuid: the draft's email, else its fallback; an unknown email is a note, not a failure."""
        for email in (draft.assignee_email, draft.assignee_fallback):
            if not email:
                continue
            zpuid = self.user_id(draft.portal, draft.project, email)
            if zpuid is not None:
                return zpuid
            log.warning(
                "assignee %s is not a user of Zoho project %s: %s",
                email,
                draft.project,
                "trying the fallback" if email != draft.assignee_fallback and draft.assignee_fallback else "left unset",
            )
        return None

    # -- bodies ---------------------------------------------------------------------------------------

    def issue_body(self, draft: IssueDraft, *, creating: bool) -> dict[str, Any]:
        title = truncate(draft.title, NAME_MAX)
        if self.dialect == "bugtracker":
            body: dict[str, Any] = {
                "title": title,
                "description": _with_marker(draft.description, draft.external_id),
            }
            body.update({f: v for f, v in draft.options.items()})
            self._extras(body, draft, BT_FLAGS)
            body.update(draft.custom_fields)
            return body
        body = {"name": title, "description": draft.description}
        for field in V3_OPTION_FIELDS:
            if field in draft.options:
                body[field] = {"id": self.resolve(draft.portal, draft.project, field, draft.options[field])}
        self._extras(body, draft, V3_FLAGS)
        if draft.tags:
            body["tags"] = [{"id": tag} for tag in draft.tags]
        body.update(
            {k: truncate(v, SINGLELINE_MAX) if isinstance(v, str) else v for k, v in draft.custom_fields.items()}
        )
        if draft.external_id_field:
            if len(draft.external_id) > SINGLELINE_MAX:
                # The external id is the item's identity: cutting it would merge items, so it is refused.
                raise ZohoPermanentError(
                    f"external id {draft.external_id[:60]!r}… is {len(draft.external_id)} characters; Zoho's "
                    f"single-line field {draft.external_id_field} holds {SINGLELINE_MAX}: shorten the mapping's "
                    "external_id template"
                )
            body[draft.external_id_field] = draft.external_id
        return body

    def _extras(self, body: dict[str, Any], draft: IssueDraft, flags: tuple[str, ...]) -> None:
        """assignee, flag and due date: the same keys in both dialects (v3 wraps the assignee)."""
        if draft.assignee_email or draft.assignee_fallback:
            zpuid = self._assignee(draft)
            if zpuid is not None:
                body["assignee"] = zpuid if self.dialect == "bugtracker" else {"zpuid": zpuid}
        if draft.flag:
            if draft.flag in flags:
                body["flag"] = draft.flag
            else:
                log.warning("flag %s is not one of %s in the %s dialect: left out", draft.flag, flags, self.dialect)
        if draft.due_date:
            body["due_date"] = draft.due_date

    def _issues_path(self, portal: str, project: str) -> str:
        kind = "bugs" if self.dialect == "bugtracker" else "issues"
        return f"/api/v3/portal/{portal}/projects/{project}/{kind}"

    # -- domain verbs ---------------------------------------------------------------------------------

    def find_issue(self, draft: IssueDraft, *, created_after: float | None = None) -> str | None:
        """Look an item up on Zoho by its external-id marker (after a crash, or a lost link table)."""
        base = self._issues_path(draft.portal, draft.project)
        if self.dialect == "bugtracker":
            resp = self.call("GET", f"{base}/search", params={"search_text": marker(draft.external_id)})
            bugs = (resp.data or {}).get("bugs", []) if isinstance(resp.data, dict) else []
            for bug in bugs:
                if marker(draft.external_id) in str(bug.get("description") or ""):
                    return str(bug["id"])
            return None
        if not draft.external_id_field:
            return None
        criteria = {
            "criteria": [
                {
                    "api_name": draft.external_id_field,
                    "criteria_condition": "is",
                    "value": [draft.external_id],
                }
            ],
            "pattern": "1",
        }
        resp = self.call("GET", base, params={"page": "1", "per_page": "10", "filter": json.dumps(criteria)})
        issues = (resp.data or {}).get("issues", []) if isinstance(resp.data, dict) else []
        for issue in issues:
            if str(issue.get(draft.external_id_field)) == draft.external_id:
                return str(issue["id"])
        return None

    def create_issue(self, draft: IssueDraft) -> str:
        path = self._issues_path(draft.portal, draft.project)
        resp = self._with_fresh_options(
            draft, lambda: self.call("POST", path, body=self.issue_body(draft, creating=True))
        )
        if self.dry_run:
            return "dry-run-" + hashlib.sha1(draft.external_id.encode()).hexdigest()[:12]  # noqa: S324
        return _id_from(resp, "bugs" if self.dialect == "bugtracker" else None)

    def update_issue(self, draft: IssueDraft, issue_id: str, body: dict[str, Any] | None = None) -> None:
        method = "PUT" if self.dialect == "bugtracker" else "PATCH"
        path = f"{self._issues_path(draft.portal, draft.project)}/{issue_id}"
        if body is not None:
            self.call(method, path, body=body)
            return
        self._with_fresh_options(draft, lambda: self.call(method, path, body=self.issue_body(draft, creating=False)))

    def _with_fresh_options(self, draft: IssueDraft, send: Callable[[], Response]) -> Response:
        """Zoho refusing an option id means our cached metadata is stale (an option was renamed or
        recreated): read the project's field metadata again and send once more with the new ids."""
        try:
            return send()
        except ZohoPermanentError as exc:
            if self.dialect != "projects" or exc.status != 400 or exc.field not in V3_OPTION_FIELDS:
                raise
            self.options(draft.portal, draft.project, refresh=True)
            return send()

    def close_issue(self, draft: IssueDraft, issue_id: str, status_name: str) -> None:
        if self.dialect == "bugtracker":
            body: dict[str, Any] = {"status": status_name}
        else:
            body = {"status": {"id": self.resolve(draft.portal, draft.project, "status", status_name)}}
        self.update_issue(draft, issue_id, body=body)

    def _comments_path(self, portal: str, project: str, issue_id: str) -> str:
        return f"{self._issues_path(portal, project)}/{issue_id}/comments"

    def _comment_body(self, text: str) -> dict[str, Any]:
        return {"content": text} if self.dialect == "bugtracker" else {"comment": text}

    def add_comment(self, portal: str, project: str, issue_id: str, text: str) -> str:
        resp = self.call("POST", self._comments_path(portal, project, issue_id), body=self._comment_body(text))
        if self.dry_run:
            return "dry-run-comment-" + hashlib.sha1(text.encode()).hexdigest()[:12]  # noqa: S324
        return _id_from(resp, "comments")

    def update_comment(self, portal: str, project: str, issue_id: str, comment_id: str, text: str) -> None:
        method = "PUT" if self.dialect == "bugtracker" else "PATCH"
        self.call(
            method,
            f"{self._comments_path(portal, project, issue_id)}/{comment_id}",
            body=self._comment_body(text),
        )

    def delete_comment(self, portal: str, project: str, issue_id: str, comment_id: str) -> None:
        self.call("DELETE", f"{self._comments_path(portal, project, issue_id)}/{comment_id}")

    def find_comment(self, portal: str, project: str, issue_id: str, needle: str) -> str | None:
        """The Zoho comment whose text carries `needle` (the source comment's marker), if any."""
        if self.dry_run:
            return None
        resp = self.call("GET", self._comments_path(portal, project, issue_id))
        comments = (resp.data or {}).get("comments", []) if isinstance(resp.data, dict) else []
        for comment in comments:
            text = str(comment.get("content") or comment.get("comment") or "")
            if needle in text:
                return str(comment["id"])
        return None

    # -- used by the delivery core (#11) -----------------------------------------------------------------
    # Minimal versions; #10's client replaces them at merge.

    def find_marked_issues(self, draft: IssueDraft, *, created_after: float) -> list[str]:
        """Ids of the issues carrying this item's marker (external id), oldest first."""
        if self.dry_run:
            return []
        base = self._issues_path(draft.portal, draft.project)
        if self.dialect == "bugtracker":
            resp = self.call("GET", f"{base}/search", params={"search_text": marker(draft.external_id)})
            found = (resp.data or {}).get("bugs", []) if isinstance(resp.data, dict) else []
            found = [b for b in found if marker(draft.external_id) in str(b.get("description") or "")]
        else:
            if not draft.external_id_field:
                return []
            criteria = {
                "criteria": [
                    {"api_name": draft.external_id_field, "criteria_condition": "is", "value": [draft.external_id]}
                ],
                "pattern": "1",
            }
            resp = self.call("GET", base, params={"page": "1", "per_page": "100", "filter": json.dumps(criteria)})
            issues = (resp.data or {}).get("issues", []) if isinstance(resp.data, dict) else []
            found = [i for i in issues if str(i.get(draft.external_id_field)) == draft.external_id]
        return [str(i["id"]) for i in found]

    def delete_issue(self, portal: str, project: str, issue_id: str) -> None:
        self.call("DELETE", f"{self._issues_path(portal, project)}/{issue_id}")

    def comments_of(self, portal: str, project: str, issue_id: str) -> list[tuple[str, str]]:
        """(id, text) of the issue's comments, oldest first (the first page, as `find_comment` reads)."""
        if self.dry_run:
            return []
        resp = self.call("GET", self._comments_path(portal, project, issue_id))
        comments = (resp.data or {}).get("comments", []) if isinstance(resp.data, dict) else []
        return [(str(c["id"]), str(c.get("content") or c.get("comment") or "")) for c in comments]

    def move_issue(self, portal: str, project: str, issue_id: str, to_project: str) -> None:
        self.call("POST", f"{self._issues_path(portal, project)}/{issue_id}/move", body={"project_id": to_project})


def _with_marker(description: str, external_id: str) -> str:
    return f"{description}\n\n{marker(external_id)}" if description else marker(external_id)


def _id_from(resp: Response, list_key: str | None) -> str:
    data = resp.data
    if list_key and isinstance(data, dict) and isinstance(data.get(list_key), list) and data[list_key]:
        data = data[list_key][0]
    if not isinstance(data, dict) or "id" not in data:
        raise ZohoTransientError(f"Zoho answered {resp.status} without an id: {resp.text[:200]}")
    return str(data["id"])


def _retry_after(raw: requests.Response) -> float:
    """Seconds to wait after a 429: Retry-After (seconds or HTTP date), else X-RateLimit-Reset (epoch)."""
    value = raw.headers.get("Retry-After")
    if value:
        if re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            return max(1.0, float(value))
        try:
            return max(1.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    reset = raw.headers.get("X-RateLimit-Reset")
    if reset and re.fullmatch(r"\d+(\.\d+)?", reset.strip()):
        return min(3600.0, max(1.0, float(reset) - time.time()))
    return 30.0
