"""The one Zoho client: the domain verbs the delivery core calls, over one transport and one dialect.

`Transport` (transport.py) owns the session, token, shared budget, call log and error translation; a dialect
(dialects.py) owns paths, bodies and list shapes. What `bridge zoho verify` learned about the portal
(knowledge.py) decides where the documents are silent. Every list read here is paged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy.engine import Engine

from bridge.mapping.model import IssueDraft
from bridge.outbound.session import EnvCachedSession
from bridge.settings import Settings
from bridge.store import outcomes
from bridge.store.calllog import ZohoCall
from bridge.targets.zoho import poll
from bridge.targets.zoho.dialects import (
    COMMENT_MAX,
    DEFAULTFIELDS,
    DIALECT_CLASSES,
    NAME_MAX,
    SINGLELINE_MAX,
    TRUNCATED,
    V3_OPTION_FIELDS,
    ProjectsDialect,
    cut_long_text,
    has_marker,
    marker,
    parse_time,
    truncate,
)
from bridge.targets.zoho.errors import ResolutionError, ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.targets.zoho.knowledge import Knowledge
from bridge.targets.zoho.ratelimit import RateLimiter
from bridge.targets.zoho.transport import Response, Transport

__all__ = ["NAME_MAX", "SINGLELINE_MAX", "TRUNCATED", "Response", "ZohoClient", "marker", "normalize_name", "truncate"]

log = logging.getLogger("bridge.zoho")
OPTIONS_TTL = 600.0
USERS_TTL = OPTIONS_TTL
UNKNOWN_USER_TTL = 60.0  # an unknown email is asked again at most this often
CLOCK_SLACK = 60.0  # Zoho's clock against the database's, when listing issues created after an intent
DESCRIPTIONS_KEPT = 5000  # descriptions read by the crash-window lookup, kept so a retry does not read them again
STANDARD_ISSUE_FIELDS = frozenset(
    {"name", "description", "status", "severity", "classification", "module", "is_it_reproducible", "flag"}
    | {"assignee", "due_date", "start_date", "end_date", "tags", "release_milestone", "affected_milestone"}
    | {"associated_teams", "followers", "reminder", "rate_per_hour", "cost_rate_per_hour", "attachments"}
    | {"priority", "created_by", "created_time", "last_updated_time", "prefix", "key", "teams", "owner"}
)
ASSIGNEE_FIELDS = ("assignee", "assignees", "assignee_zpuid", "owner")  # a refusal naming the assignee
LOOKUP_PER_PAGE = 200  # the most the list documents in its sample (seed 001:3554 "per_page": 200)


MISSING_FIELDS = ("issue", "bug", "issue_id", "bug_id", "issueid", "bugid")


def is_missing(exc: ZohoPermanentError) -> bool:
    """Zoho says the issue (bug) does not exist: a 404, or a 400 naming the issue as the invalid parameter (v3
    INVALID_PARAMETER_VALUE on `issue`, BugTracker 6006 Resource Not Found): the documents list 400 for an
    invalid parameter value (001:39-125) and give 6006 no HTTP status (000:863), so both are read as gone."""
    if exc.status == 404:
        return True
    return exc.status == 400 and (str(exc.field or "").lower() in MISSING_FIELDS or getattr(exc, "title", "") == "6006")


def normalize_name(name: str) -> str:
    """Names match case- and whitespace-insensitively: " in  progress " == "In Progress"."""
    return " ".join(name.split()).casefold()


class ZohoClient:
    knowledge: Knowledge = Knowledge(None)  # no database: nothing learned (body-only subclasses in tests)

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
        self.session = session or EnvCachedSession()  # the environment's proxy settings read once per host
        self.transport = Transport(settings, engine, self.session, limiter=limiter)
        self.tokens = self.transport.tokens
        self.limiter = self.transport.limiter
        self.knowledge = Knowledge(engine)
        self._options: dict[tuple[str, str], tuple[float, dict[str, dict[str, tuple[str, str]]]]] = {}
        self._options_lock = threading.Lock()
        self._users: dict[tuple[str, str, str], tuple[float, str | None]] = {}  # (portal, project, email)
        self._descriptions: dict[str, str] = {}  # issue id -> description (dropped when this client updates it)
        self._refused_assignees: dict[tuple[str, str, str], float] = {}  # (portal, project, user id) -> when

    @property
    def d(self) -> ProjectsDialect:
        return DIALECT_CLASSES[self.dialect]()

    # The sync service sets these; they live on the transport, which makes the calls.
    @property
    def event_id(self) -> int | None:
        return self.transport.event_id

    @event_id.setter
    def event_id(self, value: int | None) -> None:
        self.transport.event_id = value

    @property
    def before_call(self) -> Callable[[str], None] | None:
        """Called before every Zoho call; the sync service renews its item lease there."""
        return self.transport.before_call

    @before_call.setter
    def before_call(self, hook: Callable[[str], None] | None) -> None:
        self.transport.before_call = hook

    @property
    def log_call(self) -> Callable[[ZohoCall], bool] | None:
        """The sync service keeps a call's log row for the item's next fenced step (True), else it is written here."""
        return self.transport.log_call

    @log_call.setter
    def log_call(self, hook: Callable[[ZohoCall], bool] | None) -> None:
        self.transport.log_call = hook

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Response:
        return self.transport.call(method, path, body=body, params=params)

    def pages(self, path: str, list_key: str, *, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every entry of a paged list (v3 `page`/`per_page`, BugTracker `index`/`range`); 204 ends it."""
        page = 1
        while True:
            resp = self.call("GET", path, params={**(params or {}), **self.d.page_params(page)})
            data = resp.data
            items = data.get(list_key) if isinstance(data, dict) else data if isinstance(data, list) else None
            items = [i for i in items or [] if isinstance(i, dict)]
            yield from items
            if resp.status == 204 or not items or not self.d.has_next(data, items):
                return
            page += 1

    # -- metadata ---------------------------------------------------------------------------------

    def options(self, portal: str, project: str, *, refresh: bool = False) -> dict[str, dict[str, tuple[str, str]]]:
        """{field: {normalized name: (id, display name)}} from the project's issue field metadata."""
        key = (portal, project)
        with self._options_lock:
            cached = self._options.get(key)
            if cached and not refresh and time.time() - cached[0] < OPTIONS_TTL:
                return cached[1]
        resp = self.call("GET", f"/restapi/portal/{portal}/projects/{project}/bugs/defaultfields/")
        table = parse_defaultfields(resp.data)
        with self._options_lock:
            self._options[key] = (time.time(), table)
        return table

    def custom_fields(self, portal: str) -> list[dict[str, Any]]:
        """The issue custom fields (API name, id, display name, type) from `settings/fields` (seed 001:17082)."""
        fields = self.pages(f"/api/v3/portal/{portal}/settings/fields", "fields", params={"module": "Issues"})
        # The shape 001:16991 shows has no `is_default`: an issue's own fields are told apart by their API name
        # (the create parameters, 001:3600-3720). An empty answer (`{ }`, as 001:17171 shows) is no custom field.
        return [
            f
            for f in fields
            if not f.get("is_default") and ("is_default" in f or str(f.get("api_name")) not in STANDARD_ISSUE_FIELDS)
        ]

    def portals(self) -> list[dict[str, Any]]:
        resp = self.call("GET", "/api/v3/portals")
        return [p for p in resp.data or [] if isinstance(p, dict)] if isinstance(resp.data, list) else []

    def projects(self, portal: str) -> list[dict[str, Any]]:
        """The portal's projects: a top-level JSON array (seed 001:1002-1080), paged."""
        return list(self.pages(f"/api/v3/portal/{portal}/projects", "projects"))

    def resolve(self, portal: str, project: str, field: str, name: str) -> str:
        if self.dry_run:
            return f"<id of {field} {name!r}>"
        table = self.options(portal, project).get(field, {})
        found = table.get(normalize_name(name))
        if found is None:  # someone may have renamed or added an option: look once more
            table = self.options(portal, project, refresh=True).get(field, {})
            found = table.get(normalize_name(name))
        if found is None:
            valid = ", ".join(sorted(v[1] for v in table.values())) or "(none: Zoho reported an empty list)"
            raise ResolutionError(
                f"unknown Zoho {field} {name!r} in project {project}; valid names: {valid}", field=field
            )
        return found[0]

    # -- users (assignees by email) ----------------------------------------------------------------------

    def user_id(self, portal: str, project: str, email: str) -> str | None:
        """The id of the project's user with this email, or None when Zoho knows no such user.

        Projects: the documented one-user call `GET …/projects/{j}/users/{EMAIL}` reading `id` (seed
        001:13627-13661). BugTracker documents no lookup by email: its project user list, paged."""
        if self.dry_run:
            return f"<id of {email!r}>"
        key = (portal, project, normalize_name(email))
        with self._options_lock:
            cached = self._users.get(key)
        if cached and time.time() - cached[0] < (USERS_TTL if cached[1] else UNKNOWN_USER_TTL):
            return cached[1]
        found = self.d.find_user(self, portal, project, email.strip().lower())
        with self._options_lock:
            self._users[key] = (time.time(), found)
        return found

    def user_in_list(self, portal: str, project: str, email: str) -> str | None:
        """The project's user list, paged, matched by email (BugTracker documents no lookup by email)."""
        for user in self.pages(f"/api/v3/portal/{portal}/projects/{project}/users", "users"):
            if normalize_name(str(user.get("email") or "")) == normalize_name(email):
                return str(user.get("id") or user.get("zpuid") or "") or None
        return None

    def user_by_email(self, portal: str, project: str, email: str) -> str | None:
        """`GET …/projects/{j}/users/{EMAIL}`, reading `id` (seed 001:13627-13661)."""
        users = f"/api/v3/portal/{portal}/projects/{project}/users"
        try:
            resp = self.call("GET", f"{users}/{quote(email, safe='@')}")
        except ZohoPermanentError as exc:
            if exc.status in (400, 404):  # Zoho knows no such user in this project
                return None
            raise
        data = resp.data if isinstance(resp.data, dict) else {}
        if isinstance(data.get("users"), list) and data["users"]:
            data = data["users"][0]
        user_id = data.get("id") if isinstance(data, dict) else None
        return str(user_id) if user_id else None

    def assignee_id(self, draft: IssueDraft) -> str | None:
        """The assignee's id: the draft's email, else its fallback. An unknown email is logged and the
        fallback tried; neither known leaves the issue unassigned, said out loud in the log."""
        tried = []
        for email in (draft.assignee_email, draft.assignee_fallback):
            if not email:
                continue
            tried.append(email)
            user_id = self.user_id(draft.portal, draft.project, email)
            refused = getattr(self, "_refused_assignees", {}).get((draft.portal, draft.project, user_id or ""))
            if refused is not None and time.monotonic() - refused < USERS_TTL:
                continue  # Zoho refused to assign this user here a moment ago
            if user_id is not None:
                return user_id
        log.warning("no Zoho user in project %s for %s: the issue is left unassigned", draft.project, tried)
        return None

    # -- bodies ---------------------------------------------------------------------------------------

    def issue_body(
        self, draft: IssueDraft, *, creating: bool, applied_tags: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        return self.d.issue_body(self, draft, creating=creating, applied_tags=applied_tags)

    def _issues_path(self, portal: str, project: str) -> str:
        return self.d.issues_path(portal, project)

    # -- issues ------------------------------------------------------------------------------------------

    def create_issue(self, draft: IssueDraft) -> str:
        """One call: `POST …/issues` (seed 001:3590-3776) or `POST …/bugs` (seed 000)."""
        path = self._issues_path(draft.portal, draft.project)
        resp = self._send(draft, lambda: self.call("POST", path, body=self.issue_body(draft, creating=True)))
        if self.dry_run:
            return "dry-run-" + hashlib.sha1(draft.external_id.encode()).hexdigest()[:12]  # noqa: S324
        return _id_from(resp, self.d.create_list_key)

    def update_issue(
        self,
        draft: IssueDraft,
        issue_id: str,
        *,
        applied_tags: tuple[str, ...] | None = None,
        omit: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """`PATCH …/issues/{id}` (seed 001:3778-3938) or `PUT …/bugs/{id}`. `applied_tags` are the tag ids
        last applied to this issue: the update adds and removes the difference (None: only adds). `omit`
        names body keys (as `issue_body` spells them, e.g. `"name"`, `"tags"`) left out of the update: the
        fields Zoho owns under mapping v3's `sync:` policies. A body left empty sends nothing."""
        path = f"{self._issues_path(draft.portal, draft.project)}/{issue_id}"

        def body() -> dict[str, Any]:
            full = self.issue_body(draft, creating=False, applied_tags=applied_tags)
            return {k: v for k, v in full.items() if k not in omit}

        if omit and not body():
            return
        self._descriptions.pop(issue_id, None)  # the marker changes with the external id (a rename, a transfer)
        self._send(draft, lambda: self.call(self.d.update_method, path, body=body()))

    def get_issue(self, portal: str, project: str, issue_id: str) -> dict[str, Any] | None:
        """`GET …/issues/{id}` (seed 001:3555-3588) / `GET …/bugs/{id}` (seed 000:148); None if it is gone."""
        try:
            resp = self.call("GET", f"{self._issues_path(portal, project)}/{issue_id}")
        except ZohoPermanentError as exc:
            if is_missing(exc):
                return None
            raise
        return self.d.issue_from(resp.data)

    def status_of(self, portal: str, project: str, issue_id: str) -> str | None:
        """The issue's status name as Zoho shows it now (v3 `{"name"}`, BugTracker a name), or None when gone."""
        issue = self.get_issue(portal, project, issue_id)
        return self.d.status_name(issue) if issue is not None else None

    def changed_issues(self, portal: str, project: str, since: float) -> list[dict[str, Any]]:
        """Issues modified at or after `since`, oldest first: the reverse poll's read (bridge/targets/zoho/poll.py)."""
        if self.dry_run:
            return []
        return poll.changed_issues(self, portal, project, since)

    def poll_status_lines(self) -> list[str]:
        """How the BugTracker reverse poll is paced (for `issue-bridge status`)."""
        return poll.status_lines(self.settings, self.engine)

    def close_issue(self, draft: IssueDraft, issue_id: str, status_name: str) -> None:
        path = f"{self._issues_path(draft.portal, draft.project)}/{issue_id}"
        self.call(self.d.update_method, path, body=self.d.close_body(self, draft, status_name))

    def delete_issue(self, portal: str, project: str, issue_id: str) -> None:
        """`DELETE …/issues/{id}` (seed 001:3940) / `DELETE …/bugs/{id}` (seed 000); gone already is fine."""
        try:
            self.call("DELETE", f"{self._issues_path(portal, project)}/{issue_id}")
        except ZohoPermanentError as exc:
            if not is_missing(exc):
                raise

    def move_issue(self, portal: str, project: str, issue_id: str, to_project: str) -> None:
        """`POST …/issues/{id}/move {"to_project"}` answering 204 (seed 001:4007-4062). BugTracker documents
        no move."""
        if not self.d.can_move:
            raise ZohoPermanentError("the BugTracker API documents no move of a bug between projects")
        self.call("POST", f"{self._issues_path(portal, project)}/{issue_id}/move", body={"to_project": to_project})

    def _send(self, draft: IssueDraft, send: Callable[[], Response]) -> Response:
        """Send once more after what Zoho's refusal teaches: a stale option id (read the field metadata
        again), or issue custom fields by API name refused (the documents support API names for Tasks and
        Projects only, seed 001:499): remembered for every worker, and the marker carries the external id."""
        try:
            return send()
        except ZohoPermanentError as exc:
            if exc.status == 400 and str(exc.field or "").lower() in ASSIGNEE_FIELDS:
                return self._unassigned(draft, send, exc)
            if not self.d.refusals_teach or exc.status != 400:
                raise
            custom = {*draft.custom_fields, *([draft.external_id_field] if draft.external_id_field else [])}
            if exc.field in custom and self.knowledge.fact(draft.portal, "custom_field") != "refused":
                log.warning("Zoho refused issue custom field %s by API name: sending without custom fields", exc.field)
                self.knowledge.learn(draft.portal, custom_field="refused")
                return send()
            if exc.field in V3_OPTION_FIELDS:
                self.options(draft.portal, draft.project, refresh=True)
                return send()
            raise

    def _unassigned(self, draft: IssueDraft, send: Callable[[], Response], exc: ZohoPermanentError) -> Response:
        """Zoho refused the assignee (an inactive user, one who may not be assigned in this project): the issue
        is sent with the fallback, else without one, and the event says so, instead of failing."""
        refused: list[str] = []
        while True:
            user_id = self.assignee_id(draft)  # the one the refused body carried (refused ones are skipped)
            if user_id is None or len(refused) >= 2:
                raise exc  # the refusal names the assignee but none was sent: not the assignee's fault
            self._refused_assignees[(draft.portal, draft.project, user_id)] = time.monotonic()
            refused.append(user_id)
            try:
                resp = send()
            except ZohoPermanentError as again:
                if again.status == 400 and str(again.field or "").lower() in ASSIGNEE_FIELDS:
                    exc = again
                    continue
                raise
            who = ", ".join(e for e in (draft.assignee_email, draft.assignee_fallback) if e)
            kept = self.assignee_id(draft)
            outcome = f"assigned to user {kept} instead" if kept else "the issue is left unassigned"
            self._note(f"Zoho refused assignee {who} (user {', '.join(refused)}): {exc.reason}; {outcome}")
            log.warning("Zoho refused assignee %s in project %s: %s", who, draft.project, outcome)
            return resp

    def _note(self, note: str) -> None:
        """A note on the event being applied (shown with it: `events show`, the admin page)."""
        if self.event_id is None:
            return
        with self.engine.begin() as conn:
            outcomes.add_notes(conn, self.event_id, [note])

    # -- finding an issue by its external id ----------------------------------------------------------------

    def find_issue(self, draft: IssueDraft, *, created_after: float | None = None) -> str | None:
        """The Zoho issue carrying this item's external id, oldest first, or None.

        For the crash window (an earlier attempt wrote an intent, Zoho may have created the issue and the
        answer was lost): `created_after` is the intent's time, and only documented calls are used: the
        issue list sorted by `created_time`, newest first, down to that time, then the marker line in each
        candidate's description. Where `zoho verify` proved the custom field and its `cfid` filter, one
        filtered list call answers instead. Without `created_after`, only that proven filter is asked."""
        if self.dry_run:
            return None
        found = self.d.find_marked(self, draft, created_after, first_only=True)
        return found[0] if found else None

    def find_marked_issues(self, draft: IssueDraft, *, created_after: float | None) -> list[str]:
        """Ids of the issues carrying this item's marker (or proven custom field), oldest first."""
        if self.dry_run:
            return []
        return self.d.find_marked(self, draft, created_after, first_only=False)

    def filter_by_cfid(self, draft: IssueDraft, cfid: str) -> list[str]:
        """The issue list filtered by the custom field's `cfid` (seed 001:3524-3550)."""
        criteria = {"criteria": [{"cfid": cfid, "criteria_condition": "is", "value": [draft.external_id]}]}
        spec = json.dumps([{**criteria, "pattern": "1"}])
        base = self._issues_path(draft.portal, draft.project)
        hits = []
        for issue in self.pages(base, "issues", params={"filter": spec, "sort_by": "ASC(created_time)"}):
            value = issue.get(draft.external_id_field or "")
            if value is None or str(value) == draft.external_id:
                hits.append(str(issue["id"]))
        return hits

    def _read_twice(self, path: str, params: dict[str, str]) -> Response:
        """A list read, repeated once at once after a 5xx or network error: it is idempotent, and a lookup
        that fails on one page of several would otherwise cost the whole attempt (a rate-limit wait is not
        repeated: it is the budget's to decide)."""
        try:
            return self.call("GET", path, params=params)
        except ZohoRateLimited:
            raise
        except ZohoTransientError:
            return self.call("GET", path, params=params)

    def scan_recent(self, draft: IssueDraft, created_after: float, *, first_only: bool = False) -> list[str]:
        """Issues created since `created_after` (newest first, paged), then each one's description.

        Candidates named like the draft are read first (the likely one; `first_only` stops at the first hit),
        then the others (the item may have been renamed inside its own crash window). Descriptions read are
        kept per process (dropped when this client updates the issue: its marker follows the external id), so
        retries and other items in doubt do not read them again: the cost is bounded by the issues created
        meanwhile, not multiplied by the retries."""
        base = self._issues_path(draft.portal, draft.project)
        since = created_after - CLOCK_SLACK
        candidates: list[tuple[float, str, dict[str, Any]]] = []
        page = 1
        while True:  # bounded by the doubt's send time, not a page count: it finds the create however many came since
            params = {"sort_by": "DESC(created_time)", **self.d.page_params(page), "per_page": str(LOOKUP_PER_PAGE)}
            resp = self._read_twice(base, params)
            issues = (resp.data or {}).get("issues", []) if isinstance(resp.data, dict) else []
            older = False
            for issue in issues:
                created = parse_time(issue.get("created_time"))
                if created is not None and created < since:
                    older = True
                    break
                candidates.append((created or 0.0, str(issue["id"]), issue))
            if older or resp.status == 204 or not issues or not self.d.has_next(resp.data, issues):
                break
            page += 1
        title = normalize_name(truncate(draft.title, NAME_MAX))
        hits: list[tuple[float, str]] = []
        unread = 0
        ordered = sorted(candidates, key=lambda c: (normalize_name(str(c[2].get("name") or "")) != title, c[0], c[1]))
        for created, issue_id, issue in ordered:
            description = issue.get("description")
            if not isinstance(description, str):  # the list documents no description (seed 001:3555)
                description = self._descriptions.get(issue_id)
            if not isinstance(description, str):
                try:
                    description = self._description(draft.portal, draft.project, issue_id)
                except ZohoRateLimited:
                    raise
                except ZohoTransientError:  # read the others now; this one on the next try (reads are kept)
                    unread += 1
                    continue
                if len(self._descriptions) >= DESCRIPTIONS_KEPT:
                    self._descriptions.pop(next(iter(self._descriptions)))
                self._descriptions[issue_id] = description
            if has_marker(description, draft.external_id):
                hits.append((created, issue_id))
                if first_only:
                    break
        if unread and not (first_only and hits):
            raise ZohoTransientError(f"crash-window lookup incomplete: {unread} descriptions could not be read yet")
        return [i for _, i in sorted(hits)]

    def _description(self, portal: str, project: str, issue_id: str) -> str:
        """`GET …/issues/{id}/description` (seed 001:3970-4006)."""
        try:
            resp = self.call("GET", f"{self._issues_path(portal, project)}/{issue_id}/description")
        except ZohoPermanentError as exc:
            if is_missing(exc):  # deleted meanwhile
                return ""
            raise
        return str((resp.data or {}).get("description") or "") if isinstance(resp.data, dict) else ""

    def search_marked(self, draft: IssueDraft, *, created_after: float | None = None) -> list[str]:
        """BugTracker `GET …/bugs/search?search_text=` paged (seed 000:563-583). 000 shows no answer: a hit
        without its description is read (`GET …/bugs/{id}`), and a full-text search may tokenise the marker, so
        the marker is matched exactly on the description. A search index may lag behind a create: when the
        search finds nothing and the lookup is for a create in doubt (`created_after`), the bug list is read
        too, and each bug created since then is checked (000:1267-1298: every page, no sort documented)."""
        path = f"{self._issues_path(draft.portal, draft.project)}/search"
        hits: dict[str, float] = {}
        for bug in self.pages(path, "bugs", params={"search_text": marker(draft.external_id)}):
            if self._bug_marked(draft, bug):
                hits[str(bug["id"])] = parse_time(bug.get("created_time")) or 0.0
        if not hits and created_after is not None:
            since = created_after - CLOCK_SLACK
            for bug in self.pages(self._issues_path(draft.portal, draft.project), "bugs"):
                created = parse_time(bug.get("created_time"))
                if (created is None or created >= since) and self._bug_marked(draft, bug):
                    hits[str(bug["id"])] = created or 0.0
        return [i for i, _ in sorted(hits.items(), key=lambda h: (h[1], h[0]))]

    def _bug_marked(self, draft: IssueDraft, bug: dict[str, Any]) -> bool:
        if "id" not in bug:
            return False
        bug_id = str(bug["id"])
        description = bug.get("description")
        if not isinstance(description, str):
            description = self._descriptions.get(bug_id)
        if not isinstance(description, str):
            full = self.get_issue(draft.portal, draft.project, bug_id) or {}
            description = str(full.get("description") or "")
            if len(self._descriptions) >= DESCRIPTIONS_KEPT:
                self._descriptions.pop(next(iter(self._descriptions)))
            self._descriptions[bug_id] = description
        return has_marker(description, draft.external_id)

    # -- comments -------------------------------------------------------------------------------------------

    def _comments_path(self, portal: str, project: str, issue_id: str) -> str:
        return f"{self._issues_path(portal, project)}/{issue_id}/comments"

    def _comment_text(self, text: str, source_url: str | None) -> str:
        return cut_long_text(text, COMMENT_MAX, source_url, "the source item")

    def add_comment(self, portal: str, project: str, issue_id: str, text: str, *, source_url: str | None = None) -> str:
        body = self.d.comment_body(self._comment_text(text, source_url))
        resp = self.call("POST", self._comments_path(portal, project, issue_id), body=body)
        if self.dry_run:
            return "dry-run-comment-" + hashlib.sha1(text.encode()).hexdigest()[:12]  # noqa: S324
        return _id_from(resp, "comments")

    def update_comment(
        self, portal: str, project: str, issue_id: str, comment_id: str, text: str, *, source_url: str | None = None
    ) -> None:
        body = self.d.comment_body(self._comment_text(text, source_url))
        self.call(
            self.d.comment_update_method, f"{self._comments_path(portal, project, issue_id)}/{comment_id}", body=body
        )

    def delete_comment(self, portal: str, project: str, issue_id: str, comment_id: str) -> None:
        self.call("DELETE", f"{self._comments_path(portal, project, issue_id)}/{comment_id}")

    def find_comment(self, portal: str, project: str, issue_id: str, needle: str) -> str | None:
        """The Zoho comment whose text carries `needle` (the source comment's marker), if any; paged."""
        if self.dry_run:
            return None
        for comment in self.pages(self._comments_path(portal, project, issue_id), "comments"):
            if needle in self.d.comment_text(comment):
                return str(comment["id"])
        return None

    def comments_of(self, portal: str, project: str, issue_id: str) -> list[tuple[str, str]]:
        """(id, text) of every comment of the issue, oldest first; paged (the late-copy re-check reads them)."""
        if self.dry_run:
            return []
        return [
            (str(c["id"]), self.d.comment_text(c))
            for c in self.pages(self._comments_path(portal, project, issue_id), "comments")
            if isinstance(c, dict) and "id" in c
        ]


def parse_defaultfields(data: Any) -> dict[str, dict[str, tuple[str, str]]]:
    """{field: {normalized name: (id, name)}} from the v1 defaultfields answer, either status spelling."""
    fields = data.get("defaultfields", {}) if isinstance(data, dict) else {}
    fields = fields if isinstance(fields, dict) else {}
    table: dict[str, dict[str, tuple[str, str]]] = {}
    for field, (list_keys, id_key, name_key) in DEFAULTFIELDS.items():
        entries: list[Any] = next((fields[k] for k in list_keys if isinstance(fields.get(k), list) and fields[k]), [])
        table[field] = {
            normalize_name(str(e[name_key])): (str(e[id_key]), str(e[name_key]))
            for e in entries
            if isinstance(e, dict) and name_key in e and id_key in e
        }
    return table


def _id_from(resp: Response, list_key: str | None) -> str:
    data = resp.data
    if list_key and isinstance(data, dict) and isinstance(data.get(list_key), list) and data[list_key]:
        data = data[list_key][0]
    if not isinstance(data, dict) or "id" not in data:
        raise ZohoTransientError(f"Zoho answered {resp.status} without an id: {resp.text[:200]}")
    return str(data["id"])
