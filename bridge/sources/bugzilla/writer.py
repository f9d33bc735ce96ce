"""Writing to Bugzilla (back-links, copied Zoho comments, closing the loop) through `BugzillaClient`.

Bugzilla REST, only as seed 003 documents it: `PUT /rest/bug/{id}` carries a comment (`comment.body`), a
`see_also` URL and status/resolution (003:1813-2176); the new comment's id is read back from the bug's
comment list (the PUT's answer leaves comments out, 003:2144). Closing an open bug needs a resolution
(003:2050-2052): an action that would close without one is refused here, with its reason, and never sent
(Bugzilla would refuse it on every try).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.bugzilla.api import BugzillaClient, BugzillaError
from bridge.sources.http import item_hold
from bridge.sources.writers import WriteRefused, plain_marker
from bridge.store import Link
from bridge.store import reverse as state

# Bugzilla's stock workflow: a bug in one of these is closed, and only a closed bug may take a resolution
# (003:2027-2037).
BUGZILLA_CLOSED = frozenset({"RESOLVED", "VERIFIED", "CLOSED"})


class BugzillaWriter:
    source = "bugzilla"

    def __init__(self, settings: Settings, engine: Engine, budgets: Budgets, via: str = "comment") -> None:
        self.engine = engine
        self.via = via
        self.client = BugzillaClient(
            settings.bugzilla_url,
            settings.bugzilla_api_key,
            budgets=budgets,
            hold=item_hold(settings.item_lease_seconds),
        )

    @staticmethod
    def _bug(fields: dict[str, Any]) -> str:
        return str(fields["id"])

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        bug = self._bug(fields)
        if kind == "backlink" and self.via == "see_also":
            # `text` is the back-link's URL (See Also takes URLs). Its echo changes no field the bridge syncs.
            self._update(bug, {"see_also": {"add": [text]}})
            return f"see_also:{text}"
        self._update(bug, {"comment": {"body": f"{text}\n\n{plain_marker(kind, link)}"}})
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
        if closed and not new_resolution:
            raise WriteRefused(
                f"bug {bug}: closing it as {new_status} needs a resolution (Bugzilla refuses a closed bug without "
                "one, 003:2050-2052): give the mapping's reverse action a `resolution:`; not sent, not repeated"
            )
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
        self._update(bug, body)
        done = [f"status {new_sr}"] if new_sr != old_sr else []
        if "comment" in body:
            self.find_comment(link, fields, "resolution")
            done.append("comment")
        return done

    def _update(self, bug: str, body: dict[str, Any]) -> None:
        """The PUT; Bugzilla's refusal of what it says (an error code, not the key) is `WriteRefused`."""
        try:
            self.client.update(bug, body)
        except BugzillaError as exc:
            if exc.status in (401, 403):
                raise
            raise WriteRefused(f"bug {bug}: {exc.reason}", status=exc.status) from None
