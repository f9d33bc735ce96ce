"""End to end on real processes: dry-run mode (no Zoho credentials) and the BugTracker dialect."""

from __future__ import annotations

import json

import pytest

from testkit.factories import comment_event, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

pytestmark = pytest.mark.e2e

PORTAL, WEB = "739121528", "1752587000000097024"
ISSUES_PATH = f"/api/v3/portal/{PORTAL}/projects/{WEB}/issues"
LABELS = ("bug", "area:auth")
LATER_LABELS = ("bug", "area:auth", "severity:critical", "security")


@pytest.fixture
def fake():
    with FakeZoho() as fake:
        yield fake


def test_dry_run_records_the_calls_it_would_make_and_sends_none(tmp_path, fake):
    # Zoho URLs point at the fake, but without credentials nothing may reach it.
    stack = BridgeStack(tmp_path, None, extra_env={"ZOHO_API_BASE": fake.base_url, "ZOHO_ACCOUNTS_URL": fake.base_url})
    assert stack.settings.dry_run
    stack.start(beat=False)
    try:
        opened = stack.github("issues", issues_event("opened", number=7, labels=LABELS, updated=0))
        assert opened.status_code == 200 and opened.json()["status"] == "accepted"
        stack.wait_idle(30)
        comment = stack.github(
            "issue_comment",
            comment_event("created", comment_id=900, text="Reproduced on 17.2", commented=25, number=7, labels=LABELS),
        )
        assert comment.json()["status"] == "accepted"
        counts = stack.wait_idle(30)
        assert counts == {"done": 2}, stack.log_text()[-3000:]

        listed = stack.cli("events", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        events = {e["id"]: e for e in json.loads(listed.stdout)}
        create_event = events[opened.json()["event_id"]]
        comment_evt = events[comment.json()["event_id"]]
        assert create_event["status"] == "done" and comment_evt["status"] == "done"

        calls = create_event["calls"]
        assert calls and all(c["dry_run"] is True and c["status"] is None for c in calls)
        [create] = [c for c in calls if c["method"] == "POST"]
        assert create["path"] == ISSUES_PATH
        body = create["body"]
        assert set(body) == {"name", "description", "status", "severity", "classification", "module", "external_id"}
        assert body["name"] == "Login button does nothing"
        # The description ends with the external-id marker line, the second anchor (issue #10).
        assert body["description"].endswith(
            "Reported in GitHub: https://github.com/acme/web/issues/7\n\n[issue-bridge:github:acme/web#7]"
        )
        assert body["external_id"] == "github:acme/web#7"
        for field, name in (("status", "Open"), ("severity", "Major"), ("classification", "Bug")):
            assert set(body[field]) == {"id"} and name in body[field]["id"], (field, body[field])
        assert "Authentication" in body["module"]["id"]

        [post] = comment_evt["calls"]
        assert post["dry_run"] is True and post["method"] == "POST"
        assert post["path"].startswith(ISSUES_PATH + "/") and post["path"].endswith("/comments")
        assert set(post["body"]) == {"comment"} and "Reproduced on 17.2" in post["body"]["comment"]

        text = stack.cli("events", "list").stdout
        assert "DRY-RUN" in text and "would POST" in text
    finally:
        stack.stop()
    assert fake.requests_log == []
    assert fake.token_refreshes == 0


def test_bugtracker_dialect_lifecycle(tmp_path, fake):
    stack = BridgeStack(tmp_path, fake, extra_env={"ZOHO_DIALECT": "bugtracker"}).start(beat=False)
    try:
        assert stack.github("issues", issues_event("opened", number=7, labels=LABELS, updated=0)).status_code == 200
        [bug] = wait_for(lambda: fake.issues(dialect="bugtracker"), 30, what="the bug in BugTracker")
        assert bug["title"] == "Login button does nothing"
        stack.wait_idle(30)

        title = "Login broken on Safari"
        stack.github("issues", issues_event("edited", number=7, title=title, labels=LATER_LABELS, updated=10))
        stack.github(
            "issue_comment",
            comment_event(
                "created",
                comment_id=900,
                text="Reproduced on 17.2",
                commented=20,
                number=7,
                title=title,
                labels=LATER_LABELS,
            ),
        )
        closed = issues_event("closed", number=7, title=title, state="closed", labels=LATER_LABELS, updated=30)
        stack.github("issues", closed)
        counts = stack.wait_idle(30)
        assert counts.get("failed", 0) == 0, stack.log_text()[-3000:]

        assert fake.issues(dialect="projects") == []
        [bug] = fake.issues(dialect="bugtracker")
        assert bug["project_id"] == WEB
        assert bug["title"] == title
        assert bug["status"] == "Closed"
        assert bug["severity"] == "Critical"
        assert bug["classification"]["name"] == "Security"
        assert bug["module"]["name"] == "Authentication"
        assert "Reported in GitHub: https://github.com/acme/web/issues/7" in bug["description"]
        assert "[issue-bridge:github:acme/web#7]" in bug["description"]

        [comment] = fake.comments(bug["id"])
        assert "Reproduced on 17.2" in comment["content"] and "hubot" in comment["content"]

        writes = [c for c in fake.api_calls() if c["method"] != "GET"]
        assert {c["method"] for c in writes} <= {"POST", "PUT"}  # BugTracker updates with PUT, never PATCH
        assert all("/bugs" in c["path"] for c in fake.api_calls())
        assert not fake.api_calls(path_contains="defaultfields")  # names, not ids
        assert len(fake.api_calls(method="POST", path_contains="/bugs")) == 2  # one create, one comment
    finally:
        stack.stop()
