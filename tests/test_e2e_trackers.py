"""End to end for BugHerd and Bugzilla on real parts: gunicorn + celery worker + beat + the embedded broker + a
strict FakeZoho over HTTP, with the shipped mappings/bugherd.yaml and mappings/bugzilla.yaml.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from testkit.factories_trackers import (
    BUGHERD_TOKEN,
    BUGZILLA_SECRET,
    bugherd_event,
    bugherd_path,
    bugzilla_attachment,
    bugzilla_bug,
    bugzilla_comment,
    bugzilla_event,
    bugzilla_headers,
    encode,
)
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]  # also on PostgreSQL + Redis in CI

WEB = "1752587000000097024"
BMO = "https://bugzilla.mozilla.org"


@pytest.fixture(params=["projects", "bugtracker"])
def stack(request, tmp_path):
    fake = FakeZoho().start()
    bridge = BridgeStack(
        tmp_path,
        fake,
        mappings=[REPO / "mappings" / "examples" / "bugherd.yaml", REPO / "mappings" / "examples" / "bugzilla.yaml"],
        extra_env={
            "BUGHERD_WEBHOOK_TOKEN": BUGHERD_TOKEN,
            "BUGZILLA_WEBHOOK_SECRET": BUGZILLA_SECRET,
            "BUGZILLA_URL": BMO,
            "ZOHO_DIALECT": request.param,  # same mappings, same guarantees; only the client's dialect differs
        },
    ).start()
    yield bridge
    bridge.stop()
    fake.stop()


def bugherd(stack: BridgeStack, event: str, payload: dict[str, Any]) -> requests.Response:
    return stack.post(bugherd_path(event), encode(payload), {"Content-Type": "application/json"})


def bugzilla(stack: BridgeStack, payload: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
    return stack.post("/webhooks/bugzilla", encode(payload), headers or bugzilla_headers(f"Token {BUGZILLA_SECRET}"))


def accepted(r: requests.Response) -> dict[str, Any]:
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    return r.json()


def names(issue: dict) -> dict:
    """The Zoho names of an issue, whichever dialect stored it (Projects v3 issue or BugTracker bug)."""
    if issue.get("dialect") == "bugtracker":
        marker = re.search(r"\[issue-bridge:([^\]]+)\]", issue.get("description") or "")
        return {
            "name": issue["title"],
            "status": issue["status"],
            "severity": issue.get("severity") or "None",
            "classification": (issue.get("classification") or {}).get("name", "None"),
            "module": (issue.get("module") or {}).get("name", "None"),
            "external_id": marker.group(1) if marker else None,
            "project": issue["project_id"],
        }
    return {
        "name": issue["name"],
        "status": issue["status"]["name"],
        "severity": issue["severity"]["value"],
        "classification": issue["classification"]["value"],
        "module": issue["module"]["value"],
        "external_id": issue.get("external_id"),
        "project": issue["project_id"],
    }


def text(comment: dict) -> str:
    return comment.get("comment") or comment.get("content") or ""


def writes_since(fake: FakeZoho, mark: int) -> list[dict]:
    return [c for c in fake.api_calls()[mark:] if c["method"] != "GET"]


def test_bugherd_task_lifecycle_lands_in_zoho_once(stack: BridgeStack):
    fake = stack.fake
    assert fake is not None
    description = "The 'Add to cart' button overlaps the price on narrow screens.\nSeen on a Pixel 8."

    # A new task in the feedback panel: null title and status, priority normal.
    accepted(bugherd(stack, "task_create", bugherd_event("task_create", description=description, status=None)))
    issue = wait_for(lambda: fake.issues(WEB), 30, what="the issue in Zoho")[0]
    assert names(issue) == {
        "name": "The 'Add to cart' button overlaps the price on narrow screens.",  # the title fallback
        "status": "Open",
        "severity": "Minor",
        "classification": "Bug",
        "module": "None",  # no tag: left unset
        "external_id": "bugherd:41000217",
        "project": WEB,
    }
    assert description in issue["description"]
    assert "Page: https://shop.example.org/products/blue-kettle" in issue["description"]
    assert "https://bugherd-attachments.example.com/screens/41000217.png" in issue["description"]
    assert "https://www.bugherd.com/projects/77120/tasks/58" in issue["description"]

    # Moved to "doing", critical, tagged, titled; then a comment (carrying the whole task).
    later = {
        "description": description,
        "title": "Price overlaps Add to cart",
        "status": "doing",
        "priority": "critical",
        "tags": ("checkout", "security"),
        "assignee": "tom.okafor@example.org",
    }
    accepted(bugherd(stack, "task_update", bugherd_event("task_update", updated=10, **later)))
    comment = bugherd_event("comment", comment_id=18800452, text="Reproduced on Pixel 8", commented=20, **later)
    accepted(bugherd(stack, "comment", comment))
    assert stack.wait_idle().get("failed", 0) == 0, stack.log_text()[-3000:]
    [issue] = fake.issues()
    assert names(issue) == {
        "name": "Price overlaps Add to cart",
        "status": "In Progress",
        "severity": "Critical",
        "classification": "Security",
        "module": "Checkout",
        "external_id": "bugherd:41000217",
        "project": WEB,
    }
    [posted] = fake.comments(issue["id"])
    assert "Reproduced on Pixel 8" in text(posted) and "Tom Okafor" in text(posted)

    # The same delivery again is a duplicate; the same comment in a new body is not posted twice;
    # an older state arriving late does not roll the issue back.
    mark = len(fake.api_calls())
    assert bugherd(stack, "comment", comment).json()["status"] == "duplicate"
    again = bugherd_event("comment", comment_id=18800452, text="Reproduced on Pixel 8", commented=20, **later)
    again["comment"]["task"]["updated_at"] = bugherd_event("task_update", updated=21)["task"]["updated_at"]
    accepted(bugherd(stack, "comment", again))
    accepted(bugherd(stack, "task_update", bugherd_event("task_update", updated=5, description=description)))
    stack.wait_idle()
    assert len(fake.comments(issue["id"])) == 1
    assert names(fake.issue(issue["id"]))["status"] == "In Progress"
    assert writes_since(fake, mark) == []

    # Destroyed in BugHerd: closed in Zoho (on_delete: close), once.
    destroy = bugherd_event("task_destroy", updated=40, status="closed", description=description)
    accepted(bugherd(stack, "task_destroy", destroy))
    stack.wait_idle()
    assert names(fake.issue(issue["id"]))["status"] == "Closed"
    mark = len(fake.api_calls())
    assert bugherd(stack, "task_destroy", destroy).json()["status"] == "duplicate"
    stack.wait_idle()
    assert writes_since(fake, mark) == [] and len(fake.issues()) == 1

    # Bad input changes nothing.
    assert stack.post(bugherd_path("task_create", "nope"), encode(destroy), {}).status_code == 401
    assert stack.post(bugherd_path("task_moved"), encode(destroy), {}).status_code == 404


def test_bugzilla_bug_lifecycle_lands_in_zoho_once(stack: BridgeStack):
    fake = stack.fake
    assert fake is not None
    bug = {"bug_id": 1629704, "summary": "Login loops back to the sign-in page", "component": "Accounts"}

    accepted(bugzilla(stack, bugzilla_event("bug", "create", changed=0, **bug)))
    issue = wait_for(lambda: fake.issues(WEB), 30, what="the issue in Zoho")[0]
    assert names(issue) == {
        "name": "Login loops back to the sign-in page",
        "status": "Open",
        "severity": "None",  # "--": not triaged
        "classification": "Bug",
        "module": "Authentication",
        "external_id": "bugzilla:1629704",
        "project": WEB,
    }
    assert "Bugzilla bug 1629704 in Firefox / Accounts" in issue["description"]
    assert f"{BMO}/show_bug.cgi?id=1629704" in issue["description"]

    # Comment 0 is the description, not a comment; triage; a real comment; resolved as fixed.
    description = bugzilla_comment(comment_id=100, number=0, text="Steps: sign in, get bounced")
    accepted(bugzilla(stack, bugzilla_event("comment", "create", comment=description, changed=0, **bug)))
    triaged = {**bug, "status": "ASSIGNED", "severity": "S2", "keywords": ("sec-high",)}
    changes = [{"field": "status", "removed": "NEW", "added": "ASSIGNED"}]
    accepted(bugzilla(stack, bugzilla_event("bug", "modify", changes=changes, changed=10, **triaged)))
    note = bugzilla_comment(comment_id=101, number=1, text="Bisected to the cookie change", commented=20)
    accepted(
        bugzilla(
            stack, bugzilla_event("comment", "create", comment=note, changed=20, user="dev@example.org", **triaged)
        )
    )
    fixed = {**triaged, "status": "RESOLVED", "resolution": "FIXED"}
    changes = [{"field": "status", "removed": "ASSIGNED", "added": "RESOLVED"}]
    accepted(bugzilla(stack, bugzilla_event("bug", "modify", changes=changes, changed=30, **fixed)))
    # Nothing changes for an attachment (accepted: copied only by a mapping with `attachments: true`; its bug
    # state is older than Zoho's) nor for the bug gone private (skipped).
    accepted(bugzilla(stack, bugzilla_event("attachment", "create", attachment=bugzilla_attachment(), **bug)))
    accepted(bugzilla(stack, bugzilla_event("bug", "modify", bug=bugzilla_bug(bug_id=1629704, private=True), at=31)))
    counts = stack.wait_idle()
    assert counts.get("failed", 0) == 0 and counts.get("skipped") == 1, stack.log_text()[-3000:]

    [issue] = fake.issues()
    assert names(issue) == {
        "name": "Login loops back to the sign-in page",
        "status": "To be Tested",
        "severity": "Major",
        "classification": "Security",
        "module": "Authentication",
        "external_id": "bugzilla:1629704",
        "project": WEB,
    }
    [posted] = fake.comments(issue["id"])
    assert "Bisected to the cookie change" in text(posted) and "dev@example.org" in text(posted)
    assert f"{BMO}/show_bug.cgi?id=1629704#c1" in text(posted)

    # Verified: closed. Bugzilla never deletes bugs, so this is the end of the line.
    verified = {**fixed, "status": "VERIFIED"}
    last = bugzilla_event(
        "bug",
        "modify",
        changes=[{"field": "status", "removed": "RESOLVED", "added": "VERIFIED"}],
        changed=40,
        **verified,
    )
    accepted(bugzilla(stack, last))
    stack.wait_idle()
    assert names(fake.issue(issue["id"]))["status"] == "Closed"

    # Repeats change nothing: the same delivery, the same comment again, an older state, a bad header.
    mark = len(fake.api_calls())
    r = bugzilla(stack, last)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    accepted(
        bugzilla(
            stack, bugzilla_event("comment", "create", comment=note, changed=41, user="dev@example.org", **verified)
        )
    )
    stale = {**bug, "status": "REOPENED"}
    accepted(bugzilla(stack, bugzilla_event("bug", "modify", changes=changes, changed=35, **stale)))
    assert bugzilla(stack, last, bugzilla_headers("wrong")).status_code == 401
    stack.wait_idle()
    assert writes_since(fake, mark) == []
    assert names(fake.issue(issue["id"]))["status"] == "Closed" and len(fake.comments(issue["id"])) == 1
