"""Writing to the source: one small class per tracker, each turning reverse actions into its API calls.

Every write the bridge makes is recorded in `source_writes` before its echo can matter: comments by the
source's comment id (and, for the race where the webhook outruns our bookkeeping, a hidden marker that the
code appends, not the admin's template), state changes by the value written.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from bridge.settings import Settings
from bridge.store import Link
from bridge.store import reverse as state

log = logging.getLogger("bridge.reverse")
MARKER_PREFIX = "<!-- issue-bridge:"
# Bugzilla and BugHerd show comments as plain text: an HTML comment would be shown as is, so there the marker
# is a short last line in brackets. Neither is part of a template an admin edits.
PLAIN_MARKER_PREFIX = "(issue-bridge:"
MARKER_PREFIXES = (MARKER_PREFIX, PLAIN_MARKER_PREFIX)
BUGHERD_STATUS_IDS = {"backlog": 0, "todo": 1, "doing": 2, "done": 4, "closed": 5}  # seed 002:112
# Bugzilla's stock workflow: a bug in one of these is closed, and only a closed bug may take a resolution
# (seed 003:2027-2037).
BUGZILLA_CLOSED = frozenset({"RESOLVED", "VERIFIED", "CLOSED"})


def hidden_marker(kind: str, link: Link) -> str:
    """An HTML comment: invisible in GitHub's rendering, and not part of any template an admin edits."""
    return f"{MARKER_PREFIX}{kind} {link.external_id} -->"


def plain_marker(kind: str, link: Link) -> str:
    return f"{PLAIN_MARKER_PREFIX}{kind} {link.external_id})"


class SourceWriter(Protocol):
    source: str

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str: ...

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None: ...

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]: ...


class GitHubWriter:
    source = "github"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        from bridge.sources.github.api import GitHubClient

        self.engine = engine
        self.client = GitHubClient(settings.github_token, base_url=settings.github_api_url, max_wait=60.0)

    @staticmethod
    def _where(fields: dict[str, Any]) -> tuple[str, int]:
        return str(fields["repository"]), int(fields["number"])

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        repo, number = self._where(fields)
        comment = self.client.add_comment(repo, number, f"{text}\n\n{hidden_marker(kind, link)}")
        comment_id = str(comment["id"])
        state.record_write(self.engine, self.source, link.external_id, "comment", comment_id)
        return comment_id

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None:
        repo, number = self._where(fields)
        needle = hidden_marker(kind, link)
        for comment in self.client.issue_comments(repo, number):
            if needle in str(comment.get("body") or ""):
                state.record_write(self.engine, self.source, link.external_id, "comment", str(comment["id"]))
                return str(comment["id"])
        return None

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
        """Make the issue match `actions`; only what differs from its current state is sent."""
        repo, number = self._where(fields)
        current = self.client.get_issue(repo, number)  # the source's state now, not our memory of it
        labels = {str(lb.get("name")) for lb in current.get("labels") or [] if isinstance(lb, dict)}
        done: list[str] = []
        if "close" in actions and current.get("state") != "closed":
            state.record_write(self.engine, self.source, link.external_id, "state", "state=closed")
            self.client.set_state(repo, number, "closed", actions["close"])
            done.append(f"closed ({actions['close']})")
        if actions.get("reopen") and current.get("state") != "open":
            state.record_write(self.engine, self.source, link.external_id, "state", "state=open")
            self.client.set_state(repo, number, "open", "reopened")
            done.append("reopened")
        if actions.get("add_label") and actions["add_label"] not in labels:
            state.record_write(self.engine, self.source, link.external_id, "state", f"labels+={actions['add_label']}")
            self.client.add_labels(repo, number, [actions["add_label"]])
            done.append(f"label {actions['add_label']} added")
        if actions.get("remove_label") and actions["remove_label"] in labels:
            state.record_write(
                self.engine, self.source, link.external_id, "state", f"labels-={actions['remove_label']}"
            )
            self.client.remove_label(repo, number, actions["remove_label"])
            done.append(f"label {actions['remove_label']} removed")
        return done


class BugzillaWriter:
    """Bugzilla REST, only as seed 003 documents it: `PUT /rest/bug/{id}` carries a comment (`comment.body`),
    a `see_also` URL and status/resolution (seed 003:1820-2176); the new comment's id is read back from the
    bug's comment list (the PUT's answer leaves comments out, seed 003:2144)."""

    source = "bugzilla"

    def __init__(self, settings: Settings, engine: Engine, via: str = "comment") -> None:
        from bridge.sources.bugzilla.api import BugzillaClient

        self.engine = engine
        self.via = via
        self.client = BugzillaClient(settings.bugzilla_url, settings.bugzilla_api_key)

    @staticmethod
    def _bug(fields: dict[str, Any]) -> str:
        return str(fields["id"])

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        bug = self._bug(fields)
        if kind == "backlink" and self.via == "see_also":
            # `text` is the back-link's URL (See Also takes URLs). Its echo changes no field the bridge syncs.
            self.client.update(bug, {"see_also": {"add": [text]}})
            return f"see_also:{text}"
        self.client.update(bug, {"comment": {"body": f"{text}\n\n{plain_marker(kind, link)}"}})
        return self.find_comment(link, fields, kind) or "comment"

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None:
        bug = self._bug(fields)
        if kind == "backlink" and self.via == "see_also":
            return None  # adding a URL See Also holds already changes nothing: posting again is harmless
        needle = plain_marker(kind, link)
        for comment in self.client.comments(bug):
            if needle in str(comment.get("text") or comment.get("body") or ""):
                state.record_write(self.engine, self.source, link.external_id, "comment", str(comment["id"]))
                return str(comment["id"])
        return None

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
        """One PUT with what differs from the bug now: status, resolution (closed bugs only) and a comment."""
        bug = self._bug(fields)
        current = self.client.bug(bug, include_fields=("id", "status", "resolution"))
        status, resolution = str(current.get("status") or ""), str(current.get("resolution") or "")
        body: dict[str, Any] = {}
        new_status = str(actions.get("status") or status)
        if new_status != status:
            body["status"] = new_status
        closed = new_status.upper() in BUGZILLA_CLOSED
        new_resolution = str(actions["resolution"]) if closed and actions.get("resolution") else resolution
        if not closed:
            new_resolution = ""  # an open status clears the resolution by itself (seed 003:2033-2037)
        elif new_resolution != resolution:
            body["resolution"] = new_resolution
        if not body and ("status" in actions or "resolution" in actions):
            return []  # the bug already says so: no comment either, it would repeat itself
        if actions.get("comment"):
            body["comment"] = {"body": f"{actions['comment']}\n\n{plain_marker('resolution', link)}"}
        refs = {"status": new_status, "resolution": new_resolution}
        before = {"status": status, "resolution": resolution}
        for key in ("status", "resolution"):
            if refs[key] != before[key]:
                state.record_write(self.engine, self.source, link.external_id, "state", f"{key}={refs[key]}")
        new_sr = f"{new_status}/{new_resolution}" if new_resolution else new_status
        old_sr = f"{status}/{resolution}" if resolution else status
        if new_sr != old_sr:
            state.record_write(self.engine, self.source, link.external_id, "state", f"status_resolution={new_sr}")
        if not body:
            return []
        self.client.update(bug, body)
        done = [f"status {new_sr}"] if new_sr != old_sr else []
        if "comment" in body:
            self.find_comment(link, fields, "resolution")
            done.append("comment")
        return done


class BugHerdWriter:
    """BugHerd API v2 as seed 002 documents it: `POST …/tasks/{t}/comments.json` with `{"comment": {"text",
    "email"}}` (seed 002:180-185) and `PUT …/tasks/{t}.json` with `{"task": {"status"}}` (seed 002:136-164).
    Every documented comment names its author (`user_id` or `email`): the bridge writes as BUGHERD_BRIDGE_EMAIL."""

    source = "bugherd"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        from bridge.sources.bugherd.api import BugHerdClient

        self.engine = engine
        self.email = settings.bugherd_bridge_email
        self.client = BugHerdClient(settings.bugherd_api_key, base_url=settings.bugherd_api_url)

    @staticmethod
    def _task(fields: dict[str, Any]) -> str:
        return f"projects/{fields['project_id']}/tasks/{fields['task_id']}"

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        body = {"comment": {"text": f"{text}\n\n{plain_marker(kind, link)}", "email": self.email}}
        answer = self.client.request("POST", f"{self._task(fields)}/comments.json", body)
        comment: dict[str, Any] = answer["comment"] if isinstance(answer.get("comment"), dict) else {}
        if comment.get("id") is None:  # the seed documents no answer: look the comment up by its marker
            return self.find_comment(link, fields, kind) or "comment"
        comment_id = str(comment["id"])
        state.record_write(self.engine, self.source, link.external_id, "comment", comment_id)
        return comment_id

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None:
        needle = plain_marker(kind, link)
        for comment in self.client.task_comments(fields["project_id"], fields["task_id"]):
            if needle in str(comment.get("text") or ""):
                state.record_write(self.engine, self.source, link.external_id, "comment", str(comment["id"]))
                return str(comment["id"])
        return None

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
        wanted = str(actions.get("status") or "")
        if not wanted:
            return []
        current = self.client.task(fields["project_id"], fields["task_id"])
        if (current.get("status") or "feedback") == wanted:
            return []
        # The echo (`task_update`) changes the column and its id; both are ours.
        state.record_write(self.engine, self.source, link.external_id, "state", f"status={wanted}")
        if wanted in BUGHERD_STATUS_IDS and current.get("status_id") != BUGHERD_STATUS_IDS[wanted]:
            state.record_write(
                self.engine, self.source, link.external_id, "state", f"status_id={BUGHERD_STATUS_IDS[wanted]}"
            )
        self.client.request("PUT", f"{self._task(fields)}.json", {"task": {"status": wanted}})
        return [f"status {wanted}"]


def writer_for(source: str, settings: Settings, engine: Engine, *, via: str = "comment") -> SourceWriter | None:
    if missing_credential(source, settings):
        return None
    if source == "github":
        return GitHubWriter(settings, engine)
    if source == "bugzilla":
        return BugzillaWriter(settings, engine, via)
    if source == "bugherd":
        return BugHerdWriter(settings, engine)
    return None


def missing_credential(source: str, settings: Settings) -> str | None:
    """What `mappings check` reports when a mapping asks to talk back but a setting is missing: the same
    settings the sources already use to fetch (enrichment, backfill), plus BugHerd's comment author."""
    needs = {
        "github": [("GITHUB_TOKEN", settings.github_token)],
        "bugzilla": [("BUGZILLA_URL", settings.bugzilla_url), ("BUGZILLA_API_KEY", settings.bugzilla_api_key)],
        "bugherd": [
            ("BUGHERD_API_KEY", settings.bugherd_api_key),
            ("BUGHERD_BRIDGE_EMAIL", settings.bugherd_bridge_email),
        ],
    }
    missing = [name for name, value in needs.get(source, []) if not value]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: back-links and reverse sync need it"
    )
