"""The two Zoho dialects: paths, bodies and list shapes, one small class each, no `if dialect` branches.

- `ProjectsDialect`: Zoho Projects API v3 (seed 001): `POST/PATCH …/issues`, options as `{"id": …}`,
  assignee `{"zpuid": <id of …/users/{email}>}`, tags `[{"id"}]` on create and `[{"add", "remove"}]` on
  update, due dates as timestamps, lists paged by `page`/`per_page`.
- `BugTrackerDialect`: Zoho BugTracker (seed 000): `POST/PUT …/bugs`, fields by name, comments with
  `content`, lists paged by `index`/`range` (at most 100), no custom fields documented.

Both put the external id on the Zoho issue as a marker line in the description: the one anchor that only
documented calls write and read.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.mapping.model import BT_FLAGS, V3_FLAGS, IssueDraft
from bridge.targets.zoho.errors import ZohoPermanentError

if TYPE_CHECKING:
    from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge.zoho")

# Zoho's limits: an issue name holds at most 65000 characters (seed 001 create parameters), a single-line
# custom field 200 (seed 001:508-518). Descriptions and comments have no documented limit: a safe one keeps
# a 4 MB source body from becoming a 4 MB Zoho call; the cut is marked and links to the full text.
NAME_MAX = 65000
SINGLELINE_MAX = 200
DESCRIPTION_MAX = 32000
COMMENT_MAX = 16000
TRUNCATED = "…(truncated)"
PER_PAGE = 100  # Projects v3 lists
BT_RANGE = 100  # BugTracker lists: "Max 100 per request" (seed 000:1267-1298)
# v1 defaultfields keys per option field: (list keys, id key, name key); Zoho's own wrapper reads the
# status list as `status_deatils` (sic): both spellings are accepted.
DEFAULTFIELDS = {
    "status": (("status_details", "status_deatils"), "status_id", "status_name"),
    "severity": (("severity_details",), "severity_id", "severity_name"),
    "classification": (("classification_details",), "classification_id", "classification_name"),
    "module": (("module_details",), "module_id", "module_name"),
    "priority": (("priority_details",), "priority_id", "priority_name"),
}
# Option fields the v3 issue body accepts (priority is not one: see the seed's create parameters).
V3_OPTION_FIELDS = ("status", "severity", "classification", "module")


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut shown by a trailing "…(truncated)"."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def cut_long_text(text: str, limit: int, source_url: str | None, reference: str) -> str:
    """Long text cut to `limit` with a visible note and a link to the full text. A trailing bridge marker
    paragraph ("[issue-bridge…" / "(issue-bridge…") is kept whole: lookups depend on it."""
    if len(text) <= limit:
        return text
    body, tail = text, ""
    head, sep, last = text.rpartition("\n\n")
    if sep and last.startswith(("[issue-bridge", "(issue-bridge")) and len(last) < 500:
        body, tail = head, "\n\n" + last
    note = f"\n\n…(truncated by issue-bridge: the full text is at {source_url or reference})"
    keep = max(0, limit - len(note) - len(tail))
    return body[:keep] + note + tail


def marker(external_id: str) -> str:
    return f"[issue-bridge:{external_id}]"


def with_marker(description: str, external_id: str) -> str:
    return f"{description}\n\n{marker(external_id)}" if description else marker(external_id)


def has_marker(description: str, external_id: str) -> bool:
    """The marker on a line of its own, exactly (a full-text search may match a longer external id)."""
    return marker(external_id) in (line.strip() for line in description.splitlines())


def due_timestamp(due: str) -> str:
    """The documented due-date form `2025-12-12T02:12:00.000Z` (seed 001:3749, 3777). A date-only value is
    sent as noon UTC, which is the same calendar day in every time zone from UTC-11 to UTC+11."""
    if "T" in due:
        return due
    day = datetime.strptime(due, "%Y-%m-%d").replace(hour=12, tzinfo=UTC)
    return day.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_time(value: Any) -> float | None:
    """UNIX seconds of a Zoho timestamp ("2024-05-06T11:25:58.000Z"), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ProjectsDialect:
    name = "projects"
    kind = "issues"
    update_method = "PATCH"
    comment_update_method = "PATCH"  # seed 001:5514-5588
    flags: tuple[str, ...] = V3_FLAGS
    can_move = True  # seed 001:4007-4062
    refusals_teach = True  # a 400 naming an option or a custom field says what to send instead
    create_list_key: str | None = None  # the create answer is the issue object itself (seed 001:3776)

    def issues_path(self, portal: str, project: str) -> str:
        return f"/api/v3/portal/{portal}/projects/{project}/{self.kind}"

    def page_params(self, page: int) -> dict[str, str]:
        return {"page": str(page), "per_page": str(PER_PAGE)}

    def has_next(self, data: Any, items: list[Any]) -> bool:
        info = data.get("page_info") if isinstance(data, dict) else None
        if isinstance(info, dict) and "has_next_page" in info:
            return str(info["has_next_page"]).lower() == "true"
        return len(items) >= PER_PAGE

    def comment_body(self, text: str) -> dict[str, Any]:
        return {"comment": text}

    def issue_from(self, data: Any) -> dict[str, Any]:
        """`GET …/issues/{id}` answers the issue object itself (seed 001:3555-3588)."""
        return data if isinstance(data, dict) else {}

    def comment_text(self, comment: dict[str, Any]) -> str:
        return str(comment.get("comment") or "")

    def status_name(self, issue: dict[str, Any]) -> str | None:
        """v3: `"status": {"id", "name", …}` (seed 001:3554); BugTracker: the name itself (000:294)."""
        status = issue.get("status")
        if isinstance(status, dict):
            return str(status.get("name") or "") or None
        return str(status) if status else None

    def assignee(self, user_id: str) -> Any:
        return {"zpuid": user_id}  # seed 001:3749: "assignee" : { "zpuid" : "4000000002055" }

    def due_date(self, due: str) -> str:
        return due_timestamp(due)

    def tags(self, wanted: tuple[str, ...], applied: tuple[str, ...] | None, *, creating: bool) -> Any:
        """Create: `[{"id"}]` (seed 001:3749). Update: `[{"add": [{"id"}], "remove": [{"id"}]}]` (seed
        001:3843-3847, 3911), computed from the tags last applied (None: unknown, so only add)."""
        if creating:
            return [{"id": t} for t in wanted] if wanted else None
        before = set(applied or ())
        add = [{"id": t} for t in wanted if t not in before]
        remove = [{"id": t} for t in sorted(before - set(wanted))] if applied is not None else []
        if not add and not remove:
            return None
        return [{"add": add, "remove": remove}]

    def close_body(self, client: ZohoClient, draft: IssueDraft, status_name: str) -> dict[str, Any]:
        return {"status": {"id": client.resolve(draft.portal, draft.project, "status", status_name)}}

    def find_user(self, client: ZohoClient, portal: str, project: str, email: str) -> str | None:
        return client.user_by_email(portal, project, email)

    def find_marked(
        self, client: ZohoClient, draft: IssueDraft, created_after: float | None, *, first_only: bool
    ) -> list[str]:
        facts = client.knowledge.get(draft.portal)
        proven = facts.get("custom_field") == "accepted" and facts.get("filter_cfid") == "accepted"
        if draft.external_id_field and proven and facts.get("cfid"):
            return client.filter_by_cfid(draft, str(facts["cfid"]))
        if created_after is None:
            return []
        return client.scan_recent(draft, created_after, first_only=first_only)

    def description(self, draft: IssueDraft) -> str:
        text = cut_long_text(draft.description, DESCRIPTION_MAX, draft.source_url, draft.external_id)
        return with_marker(text, draft.external_id)

    def issue_body(
        self, client: ZohoClient, draft: IssueDraft, *, creating: bool, applied_tags: tuple[str, ...] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": truncate(draft.title, NAME_MAX), "description": self.description(draft)}
        for field in V3_OPTION_FIELDS:
            if field in draft.options:
                body[field] = {"id": client.resolve(draft.portal, draft.project, field, draft.options[field])}
        self.extras(client, body, draft)
        tags = self.tags(draft.tags, applied_tags, creating=creating)
        if tags is not None:
            body["tags"] = tags
        if client.knowledge.fact(draft.portal, "custom_field") == "refused":
            if draft.custom_fields:
                log.warning("Zoho refuses issue custom fields by API name: %s left out", ", ".join(draft.custom_fields))
            return body
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

    def extras(self, client: ZohoClient, body: dict[str, Any], draft: IssueDraft) -> None:
        """assignee, flag and due date: the same keys in both dialects, each in its documented form."""
        if draft.assignee_email or draft.assignee_fallback:
            user_id = client.assignee_id(draft)
            if user_id is not None:
                body["assignee"] = self.assignee(user_id)
        if draft.flag:
            if draft.flag in self.flags:
                body["flag"] = draft.flag
            else:
                log.warning("flag %s is not one of %s in the %s dialect: left out", draft.flag, self.flags, self.name)
        if draft.due_date:
            body["due_date"] = self.due_date(draft.due_date)


class BugTrackerDialect(ProjectsDialect):
    name = "bugtracker"
    kind = "bugs"
    update_method = "PUT"
    comment_update_method = "PUT"  # seed 000 "3. Comments"
    flags = BT_FLAGS
    can_move = False
    refusals_teach = False
    create_list_key = "bugs"  # the create answer is {"bugs": [bug]} (seed 000, "Response")

    def page_params(self, page: int) -> dict[str, str]:
        return {"index": str((page - 1) * BT_RANGE + 1), "range": str(BT_RANGE)}

    def has_next(self, data: Any, items: list[Any]) -> bool:
        return len(items) >= BT_RANGE  # seed 000:1287: "if len(bugs) < range_size: break"

    def comment_body(self, text: str) -> dict[str, Any]:
        return {"content": text}

    def issue_from(self, data: Any) -> dict[str, Any]:
        """`GET …/bugs/{id}` (seed 000:148) documents no answer: `{"bugs": [bug]}` like the create, or the bug."""
        if isinstance(data, dict) and isinstance(data.get("bugs"), list):
            bug = data["bugs"][0] if data["bugs"] else {}
            return bug if isinstance(bug, dict) else {}
        return data if isinstance(data, dict) else {}

    def comment_text(self, comment: dict[str, Any]) -> str:
        return str(comment.get("content") or comment.get("comment") or "")

    def assignee(self, user_id: str) -> Any:
        return int(user_id) if user_id.isdigit() else user_id  # seed 000: "assignee": 123456000000098765

    def due_date(self, due: str) -> str:
        return due.split("T", 1)[0]  # seed 000: "due_date": "2025-01-25"

    def tags(self, wanted: tuple[str, ...], applied: tuple[str, ...] | None, *, creating: bool) -> Any:
        return None  # BugTracker documents no tags on bugs

    def close_body(self, client: ZohoClient, draft: IssueDraft, status_name: str) -> dict[str, Any]:
        return {"status": status_name}

    def find_user(self, client: ZohoClient, portal: str, project: str, email: str) -> str | None:
        return client.user_in_list(portal, project, email)  # no lookup by email is documented here

    def find_marked(
        self, client: ZohoClient, draft: IssueDraft, created_after: float | None, *, first_only: bool
    ) -> list[str]:
        return client.search_marked(draft, created_after=created_after) if created_after is not None else []

    def issue_body(
        self, client: ZohoClient, draft: IssueDraft, *, creating: bool, applied_tags: tuple[str, ...] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"title": truncate(draft.title, NAME_MAX), "description": self.description(draft)}
        body.update(draft.options)  # fields by name (seed 000 "Bug Fields")
        self.extras(client, body, draft)
        if draft.custom_fields:  # `mappings check` refuses them in this dialect; a stale mapping is not sent
            log.warning("BugTracker documents no custom fields: %s left out", ", ".join(draft.custom_fields))
        return body


DIALECT_CLASSES: dict[str, type[ProjectsDialect]] = {"projects": ProjectsDialect, "bugtracker": BugTrackerDialect}
