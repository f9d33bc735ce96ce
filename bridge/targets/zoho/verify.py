"""`bridge zoho verify`: every call the bridge will ever make, once, against a real portal.

The documents leave some behaviour open (zoho-facts.md); only the portal itself can settle it. The self-test
creates one clearly labelled test issue, reads it back (the GET's shape), finds it by each anchor and in the
poll's `last_modified_time` list, edits it, assigns it, attaches a small file (upload and association),
moves it to another project and back, comments, closes and deletes it, and records for every call Zoho's
HTTP status and message, a verdict, and what the bridge will do where a call is refused. It never provokes a
throttle, but reports the form of one it meets (a 429, or `URL_ROLLING_THROTTLES_LIMIT_EXCEEDED` in a 400 or
200) and stops there: every later call would wait for the block. What it learns goes into the database
(`Knowledge`) and every worker uses it. The test issue is deleted even when a step fails.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.mapping.model import IssueDraft
from bridge.outbound.budget import blocked_until
from bridge.targets.zoho import poll
from bridge.targets.zoho.client import ZohoClient, normalize_name, parse_defaultfields
from bridge.targets.zoho.dialects import due_timestamp
from bridge.targets.zoho.errors import ZohoError, ZohoRateLimited
from bridge.targets.zoho.ratelimit import BUDGET

OK, REFUSED, IGNORED, FAILED, SKIPPED, WARN = "ok", "refused", "ignored", "FAILED", "skipped", "warning"


@dataclass
class Row:
    step: str
    call: str
    status: str
    message: str
    verdict: str
    action: str = ""


@dataclass
class Report:
    dialect: str
    rows: list[Row] = field(default_factory=list)
    learned: dict[str, Any] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)
    stored: bool = False  # what was learned replaced the portal's stored facts (the run reached a created issue)

    @property
    def ok(self) -> bool:
        return not self.fatal

    def table(self) -> str:
        head = ("step", "call", "HTTP", "Zoho's message", "verdict", "what the bridge will do")
        rows = [head, *[(r.step, r.call, r.status, r.message, r.verdict, r.action) for r in self.rows]]
        widths = [min(60, max(len(str(row[i])) for row in rows)) for i in range(len(head))]
        lines = []
        for n, row in enumerate(rows):
            cells = [str(v)[:60].ljust(w) for v, w in zip(row[:-1], widths, strict=False)] + [str(row[-1])]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


class Verifier:
    def __init__(
        self,
        client: ZohoClient,
        portal: str,
        project: str,
        *,
        external_id_field: str | None = None,
        tag_id: str | None = None,
        closed_status: str = "Closed",
        move_to: str | None = None,
    ) -> None:
        self.client, self.portal, self.project = client, portal, project
        self.move_to = move_to if move_to and move_to != project else None
        self.email: str | None = None  # a project user's email, from the users step: the assignment's assignee
        self.throttled: str | None = None
        self.external_id_field = external_id_field
        self.tag_id = tag_id
        self.closed_status = closed_status
        self.report = Report(client.dialect)
        self.projects = client.dialect == "projects"
        self.run_id = uuid.uuid4().hex[:10]
        self.external_id = f"verify:{self.run_id}"
        self.issue_id: str | None = None
        self.created = False  # the test issue was made: the run is conclusive

    # -- plumbing ---------------------------------------------------------------------------------------

    def _answer(self) -> tuple[str, str]:
        last = self.client.transport.last_answer
        if last is None:
            return "-", ""
        status, text = last
        message = text
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            details = err.get("details") or [{}]
            first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
            message = f"{err.get('title', '')}: {first.get('message', '')}".strip(": ")
        elif isinstance(data, dict) and "code" in data:
            message = f"{data.get('code')} {data.get('message', '')}"
        elif 200 <= (status or 0) < 300:
            message = "OK"
        return str(status if status is not None else "-"), " ".join(message.split())[:60]

    def step(
        self,
        name: str,
        call: str,
        run: Callable[[], Any],
        *,
        on_refused: str = "",
        fatal: bool = False,
        judge: Callable[[Any], tuple[str, str]] | None = None,
    ) -> Any:
        self.client.transport.last_answer = None
        if self.throttled:  # every later call would wait for the block: not tried
            self.report.rows.append(Row(name, call, "-", "", SKIPPED, "not tried: Zoho throttled this run"))
            return None
        try:
            result = run()
        except ZohoRateLimited as exc:
            self._throttled(name, call, exc)
            return None
        except ZohoError as exc:
            status, message = self._answer()
            if status == "-":
                message = exc.reason[:60]
            self.report.rows.append(Row(name, call, status, message, FAILED if fatal else REFUSED, on_refused))
            if fatal:
                self.report.fatal.append(f"{name}: {exc.reason}")
            return None
        status, message = self._answer()
        verdict, action = judge(result) if judge else (OK, "")
        self.report.rows.append(Row(name, call, status, message, verdict, action))
        if verdict == FAILED:
            self.report.fatal.append(f"{name}: {action}")
        return result

    def _throttled(self, name: str, call: str, exc: ZohoRateLimited) -> None:
        """Zoho said stop: the form it used is what the bridge learns (it reads all of them); the run ends."""
        form = self.client.transport.last_throttle or "a wait the shared budget or an earlier block imposes"
        _left, until, reason = blocked_until(self.client.engine, BUDGET)
        ends = time.strftime("%H:%M:%S UTC", time.gmtime(until)) if until else "-"
        status, message = self._answer()
        self.throttled = form
        self.learn(throttle_form=form)
        action = f"every worker waits until {ends} (`issue-bridge zoho unblock` lifts it); run verify again after"
        if name == "delete test issue":
            action = f"delete test issue {self.issue_id} by hand after {ends}"
        self.report.rows.append(Row(name, call, status, message or exc.reason[:60], REFUSED, action))
        self.report.fatal.append(f"{name}: Zoho throttled the run ({form}): {reason or exc.reason}; run it again")

    def learn(self, **facts: Any) -> None:
        self.report.learned.update(facts)

    # -- the run ------------------------------------------------------------------------------------------

    def run(self) -> Report:
        c = self.client
        base = c.d.issues_path(self.portal, self.project)
        c.tokens.clear_config_error()  # an admin asked: try the (perhaps fixed) credentials now
        token = self.step("token", "POST /oauth/v2/token", c.tokens.get, fatal=True, on_refused="nothing works")
        if token is None:
            return self.report
        c.knowledge.assume(self.portal, {})  # test afresh; the stored facts stay until this run settles them
        if self.projects:
            self.step("portals", "GET /api/v3/portals", c.portals)
            self._metadata()
            self._custom_fields()
        self._users()
        try:
            self._create(base)
            if self.issue_id:
                self._lifecycle(base)
        finally:
            if self.issue_id:
                self.throttled = None  # the test issue is always asked to go (a block makes this wait, not fail)
                self.step(
                    "delete test issue",
                    f"DELETE …/{c.d.kind}/{{id}}",
                    lambda: c.call("DELETE", f"{c.d.issues_path(self.portal, self.project)}/{self.issue_id}"),
                    fatal=True,
                    on_refused=f"delete test issue {self.issue_id} by hand",
                )
        self._throttle_row()
        if self.created:  # conclusive: what it found replaces what was stored
            c.knowledge.replace(self.portal, self.report.learned)
            self.report.stored = True
        else:  # a wrong project, a refused scope, a throttle: what workers know stays, but for Zoho's throttle form
            c.knowledge.release(self.portal)
            if "throttle_form" in self.report.learned:
                c.knowledge.learn(self.portal, throttle_form=self.report.learned["throttle_form"])
                self.report.stored = True
        return self.report

    def _throttle_row(self) -> None:
        form = self.report.learned.get("throttle_form")
        if form:
            verdict, action = WARN, f"met: {form}: read as a block for every worker, never a failure"
        else:
            verdict, action = OK, "not met (never provoked): a 429, or the title in a 400 or 200, blocks every worker"
        self.report.rows.append(Row("throttle form", "(any call)", "-", "", verdict, action))

    def _metadata(self) -> None:
        c = self.client
        path = f"/restapi/portal/{self.portal}/projects/{self.project}/bugs/defaultfields/"
        resp = self.step("option lists", f"GET {path}", lambda: c.call("GET", path), fatal=True)
        if resp is None:
            return
        fields = (resp.data or {}).get("defaultfields", {}) if isinstance(resp.data, dict) else {}
        key = next((k for k in ("status_details", "status_deatils") if fields.get(k)), None)
        table = parse_defaultfields(resp.data)
        self.options = table
        empty = [f for f, names in table.items() if not names]
        if key:
            self.learn(status_key=key)
        row = self.report.rows[-1]
        row.action = f"status list read from {key or '(none)'}" + (f"; empty: {', '.join(empty)}" if empty else "")
        if not table.get("status"):
            row.verdict = FAILED
            self.report.fatal.append("option lists: the status list is empty: statuses cannot be set")

    def _custom_fields(self) -> None:
        c = self.client
        fields = self.step(
            "custom field metadata",
            "GET /api/v3/portal/{p}/settings/fields?module=Issues",
            lambda: c.custom_fields(self.portal),
            on_refused="the marker carries the external id (needs ZohoProjects.custom_fields.READ for a cfid)",
        )
        row = self.report.rows[-1]
        if fields is None or not self.external_id_field:
            if fields is not None:
                row.action = "no external_id_field configured: the description marker carries the external id"
            return
        found = next((f for f in fields if f.get("api_name") == self.external_id_field), None)
        if found is None:
            row.verdict = WARN
            row.action = f"no issue custom field {self.external_id_field!r}: the marker carries the external id"
            self.external_id_field = None
            return
        self.learn(cfid=str(found.get("id")))
        row.action = f"{self.external_id_field} has cfid {found.get('id')}"

    def _users(self) -> None:
        c = self.client
        users_path = f"/api/v3/portal/{self.portal}/projects/{self.project}/users"
        first = self.step("users", f"GET {users_path}", lambda: next(iter(c.pages(users_path, "users")), None))
        email = (first or {}).get("email")
        self.email = str(email) if email else None
        if not email or not self.projects:
            return
        self.step(
            "one user by email",
            f"GET {users_path}/{{email}}",
            lambda: c.user_by_email(self.portal, self.project, str(email)),
            on_refused="assignees cannot be resolved: issues are left unassigned (logged)",
            judge=lambda uid: (OK, f"assignee id {uid}") if uid else (WARN, "no `id` in the answer: unassigned"),
        )

    def _draft(self, **changes: Any) -> IssueDraft:
        values: dict[str, Any] = dict(
            portal=self.portal,
            project=self.project,
            external_id=self.external_id,
            external_id_field=self.external_id_field,
            title=f"[issue-bridge verify {self.run_id}] test issue: safe to delete",
            description="Created by `bridge zoho verify`; deleted at the end of the run.",
        )
        values.update(changes)
        return IssueDraft(**values)

    def _create(self, base: str) -> None:
        c = self.client
        draft = self._draft()
        body = c.issue_body(draft, creating=True)
        if self.projects:
            body["due_date"] = due_timestamp(time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400)))

        def create(b: dict[str, Any]) -> str:
            resp = c.call("POST", base, body=b)
            data = resp.data
            if isinstance(data, dict) and isinstance(data.get("bugs"), list) and data["bugs"]:
                data = data["bugs"][0]
            return str(data["id"]) if isinstance(data, dict) and "id" in data else ""

        with_field = bool(self.projects and self.external_id_field)
        self.issue_id = self.step(
            "create test issue" + (" (custom field by API name)" if with_field else ""),
            f"POST …/{c.d.kind}",
            lambda: create(body),
            on_refused="retried without the custom field" if with_field else "the bridge cannot create issues",
            fatal=not with_field,
        )
        if self.issue_id is None and with_field and not self.throttled:
            body.pop(self.external_id_field or "", None)
            self.external_id_field = None
            self.issue_id = self.step(
                "create test issue (without custom field)",
                f"POST …/{c.d.kind}",
                lambda: create(body),
                fatal=True,
                on_refused="the bridge cannot create issues",
            )
            if self.issue_id:  # only the field made the difference: that is what Zoho refused
                self.learn(custom_field="refused")
                self.report.rows[-1].action = "custom field refused by Zoho: the description marker carries the id"
        self.created = bool(self.issue_id)

    def _lifecycle(self, base: str) -> None:
        c = self.client
        path = f"{base}/{self.issue_id}"
        draft = self._draft()
        if not self.projects:
            self._bug_shape(path)
        if self.projects and self.external_id_field:
            got = self.step("read test issue", "GET …/issues/{id}", lambda: c.call("GET", path).data)
            stored = (got or {}).get(self.external_id_field) if isinstance(got, dict) else None
            if got is not None:
                accepted = str(stored) == self.external_id
                self.learn(custom_field="accepted" if accepted else "ignored")
                self.report.rows[-1].verdict = OK if accepted else IGNORED
                self.report.rows[-1].action = (
                    f"custom field {self.external_id_field} kept the external id"
                    if accepted
                    else "custom field ignored by Zoho: the description marker carries the external id"
                )
        found = self.step(
            "find by description marker",
            "GET …/issues?sort_by=DESC(created_time) + GET …/description"
            if self.projects
            else "GET …/bugs/search?search_text=",
            lambda: (
                c.scan_recent(draft, time.time() - 60)
                if self.projects
                else c.search_marked(draft, created_after=time.time() - 60)
            ),
            judge=lambda ids: (
                (OK, "the crash-window lookup works")
                if self.issue_id in (ids or [])
                else (FAILED, "the marker was not found: a crash between create and link could duplicate")
            ),
        )
        del found
        if not self.projects and self.report.rows[-1].verdict == OK:
            self._search_lag(draft)
        if self.projects and self.report.learned.get("custom_field") == "accepted" and self.report.learned.get("cfid"):
            cfid = str(self.report.learned["cfid"])
            hits = self.step(
                "find by cfid filter",
                "GET …/issues?filter=[{criteria:[{cfid}]}]",
                lambda: c.filter_by_cfid(draft, cfid),
                on_refused="the description marker is used instead",
            )
            self.learn(filter_cfid="accepted" if hits and self.issue_id in hits else "refused")
            if hits is not None and self.issue_id not in hits:
                self.report.rows[-1].verdict = IGNORED
                self.report.rows[-1].action = "the filter did not find it: the description marker is used"
        if self.projects and self.external_id_field:
            spec = json.dumps(
                [
                    {
                        "criteria": [
                            {
                                "api_name": self.external_id_field,
                                "criteria_condition": "is",
                                "value": [self.external_id],
                            }
                        ],
                        "pattern": "1",
                    }
                ]
            )
            ok = self.step(
                "filter by API name",
                "GET …/issues?filter=[{criteria:[{api_name}]}]",
                lambda: c.call("GET", base, params={"filter": spec, "page": "1", "per_page": "10"}),
                on_refused="not used: filters name fields by cfid",
            )
            self.learn(filter_api_name="accepted" if ok is not None else "refused")
        self.step(
            "update test issue",
            f"{c.d.update_method} …/{c.d.kind}/{{id}}",
            lambda: c.update_issue(self._draft(title=draft.title + " (edited)"), str(self.issue_id)),
            fatal=True,
            on_refused="edits cannot be synced",
        )
        if self.projects:
            day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400))
            ok = self.step(
                "date-only due date",
                "PATCH …/issues/{id} {due_date: YYYY-MM-DD}",
                lambda: c.call("PATCH", path, body={"due_date": day}),
                on_refused="the bridge sends the documented timestamp form",
            )
            self.learn(due_date="timestamp+date" if ok is not None else "timestamp")
            if ok is not None:
                self.report.rows[-1].action = "accepted; the bridge still sends the documented timestamp"
            if self.tag_id:
                tags = [{"add": [{"id": self.tag_id}], "remove": []}]
                self.step(
                    "tag add", "PATCH …/issues/{id} {tags: [{add}]}", lambda: c.call("PATCH", path, body={"tags": tags})
                )
                tags = [{"add": [], "remove": [{"id": self.tag_id}]}]
                self.step(
                    "tag remove",
                    "PATCH …/issues/{id} {tags: [{remove}]}",
                    lambda: c.call("PATCH", path, body={"tags": tags}),
                )
            else:
                self.report.rows.append(
                    Row("tags add/remove", "PATCH …/issues/{id}", "-", "", SKIPPED, "give --tag ID")
                )
        self._poll_list(base)
        self._assignment(draft)
        self._attachments()
        self._move()
        self._comments()
        closed = self.closed_status
        if self.projects:
            names = {normalize_name(n[1]) for n in getattr(self, "options", {}).get("status", {}).values()}
            if normalize_name(closed) not in names:
                self.report.rows.append(
                    Row("close", "PATCH …/issues/{id}", "-", "", WARN, f"no status {closed!r} in this project")
                )
                return
        self.step(
            "close test issue",
            f"{c.d.update_method} …/{c.d.kind}/{{id}} {{status}}",
            lambda: c.close_issue(draft, str(self.issue_id), closed),
            on_refused="closing in the source will not close the Zoho issue",
        )

    def _search_lag(self, draft: IssueDraft) -> None:
        """Whether BugTracker's search already finds the new bug (000:563-583), or its index lags and the
        crash-window lookup found it through the bug list."""
        row = self.report.rows[-1]
        hits = self.step("search index", "GET …/bugs/search?search_text=", lambda: self.client.search_marked(draft))
        self.report.rows.pop()
        if hits is not None and self.issue_id in hits:
            row.action += "; the search finds a new bug at once"
            self.learn(search="immediate")
        else:
            row.verdict = WARN
            row.action += "; the search index lags behind a create: the bug list is read instead (costs pages)"
            self.learn(search="lags")

    def _bug_shape(self, path: str) -> None:
        """BugTracker's `GET …/bugs/{id}` documents no answer (000:148): which shape this portal sends."""
        c = self.client

        def shape(data: Any) -> tuple[str, str]:
            wrapped = isinstance(data, dict) and isinstance(data.get("bugs"), list)
            bug = c.d.issue_from(data)
            if str(bug.get("id")) != str(self.issue_id):
                return FAILED, "the answer names no bug with this id: the status guard and re-check cannot read it"
            self.learn(bug_answer="wrapped" if wrapped else "bare")
            return OK, ("{bugs: [bug]} like the create's answer" if wrapped else "the bug itself") + ": both are read"

        self.step("read test issue", "GET …/bugs/{id}", lambda: c.call("GET", path).data, judge=shape)

    def _poll_list(self, base: str) -> None:
        """The reverse poll's read: v3 sorted by last_modified_time (001:3497), BugTracker every page."""
        c = self.client
        if self.projects:
            call = "GET …/issues?sort_by=DESC(last_modified_time)"
            run: Any = lambda: poll.changed_issues(c, self.portal, self.project, time.time() - 3600)  # noqa: E731
        else:
            call = "GET …/bugs?index&range"
            run = lambda: list(c.pages(base, "bugs"))  # noqa: E731 - not the paced poll: one look, no pace kept

        def found(issues: Any) -> tuple[str, str]:
            if any(str(i.get("id")) == str(self.issue_id) for i in issues or []):
                return OK, "the test issue is among the changed ones: changes people make in Zoho are seen"
            return WARN, "the test issue is not in the list: changes made in Zoho may be missed"

        self.step("poll list (changes made in Zoho)", call, run, judge=found)

    def _assignment(self, draft: IssueDraft) -> None:
        c = self.client
        if not self.email:
            self.report.rows.append(Row("assign", "-", "-", "", SKIPPED, "no project user to assign"))
            return
        email = self.email
        assigned = self._draft(assignee_email=email)

        def who(_: Any) -> tuple[str, str]:
            user_id = c.user_id(self.portal, self.project, email)
            return (OK, f"{email} is user {user_id}") if user_id else (WARN, f"{email} not found: left unassigned")

        self.step(
            "assign",
            f"{c.d.update_method} …/{c.d.kind}/{{id}} {{assignee}}",
            lambda: c.update_issue(assigned, str(self.issue_id)),
            on_refused="an assignee Zoho refuses is left out (fallback, else unassigned), with a note",
            judge=who,
        )
        del draft

    def _attachments(self) -> None:
        from bridge.core.attachments import Fetched
        from bridge.targets.zoho.attachments import ZohoAttachments

        c = self.client
        uploader = ZohoAttachments(c)
        file = Fetched("issue-bridge-verify.txt", "text/plain", b"issue-bridge verify: safe to delete\n")
        where = "POST /api/v3/portal/{p}/attachments" if uploader.associates else "POST …/bugs/{id}/attachments"
        attachment = self.step(
            "attachment upload",
            where,
            lambda: uploader.upload(self.portal, self.project, str(self.issue_id), file),
            on_refused="attachments are not copied (needs ZohoProjects.portals.CREATE, WorkDrive.workspace.ALL, "
            "WorkDrive.files.ALL: 001:12298)"
            if uploader.associates
            else "attachments are not copied",
        )
        if attachment is None or not uploader.associates:
            return
        self.step(
            "attachment associate",
            "POST …/issues/{id}/attachments attachment_ids",
            lambda: uploader.associate(self.portal, self.project, str(self.issue_id), str(attachment)),
            on_refused="attachments are not copied",
        )

    def _move(self) -> None:
        c = self.client
        if not self.projects:
            self.report.rows.append(Row("move", "-", "-", "", SKIPPED, "BugTracker documents no move"))
            return
        if not self.move_to:
            action = "give --move-to PROJECT (on_route_change: move needs it)"
            self.report.rows.append(Row("move", "POST …/issues/{id}/move", "-", "", SKIPPED, action))
            return
        there, home = self.move_to, self.project
        moved = self.step(
            "move",
            "POST …/issues/{id}/move {to_project}",
            lambda: _moved(c, self.portal, home, str(self.issue_id), there),
            on_refused="on_route_change: move cannot move issues: use keep",
        )
        if moved is None:
            return
        back = self.step(
            "move back",
            "POST …/issues/{id}/move {to_project}",
            lambda: _moved(c, self.portal, there, str(self.issue_id), home),
            fatal=True,
            on_refused=f"the test issue stays in project {there}: delete it by hand",
        )
        if back is None:  # the issue lives in the other project now: delete it there
            self.project = there

    def _comments(self) -> None:
        c = self.client
        issue = str(self.issue_id)
        needle = f"(issue-bridge verify comment {self.run_id})"
        cid = self.step(
            "comment add",
            "POST …/comments",
            lambda: c.add_comment(self.portal, self.project, issue, f"verify\n\n{needle}"),
            fatal=True,
            on_refused="comments cannot be synced",
        )
        if not cid:
            return
        self.step(
            "comment edit",
            f"{c.d.comment_update_method} …/comments/{{id}}",
            lambda: c.update_comment(self.portal, self.project, issue, cid, f"verify (edited)\n\n{needle}"),
            on_refused="comment edits are not synced",
        )
        self.step(
            "comment find (paged list)",
            "GET …/comments?page&per_page",
            lambda: c.find_comment(self.portal, self.project, issue, needle),
            judge=lambda found: (OK, "a comment lost in a crash is found") if found == cid else (WARN, "not found"),
        )
        self.step(
            "comment delete",
            "DELETE …/comments/{id}",
            lambda: c.delete_comment(self.portal, self.project, issue, cid),
            on_refused="comment deletions are not synced",
        )


def _moved(client: ZohoClient, portal: str, project: str, issue_id: str, to: str) -> bool:
    client.move_issue(portal, project, issue_id, to)
    return True
