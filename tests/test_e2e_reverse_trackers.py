"""Talking back to Bugzilla and BugHerd, end to end on real processes: gunicorn + celery worker + beat + broker,
a strict FakeZoho, and the FakeBugzilla / FakeBugHerd servers that accept only the seeds' documented writes,
record them, and send the webhooks a real instance sends for them (so every echo really comes back).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.factories_trackers import BUGHERD_TOKEN, BUGZILLA_SECRET, bugherd_task
from testkit.fakes.bugherd import FakeBugHerd
from testkit.fakes.bugzilla import FakeBugzilla
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

pytestmark = pytest.mark.e2e

POLL = 2.0
BUGZILLA_KEYS = """
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {status: VERIFIED, resolution: FIXED, comment: "Resolved in Zoho Projects."}
    Reopened: {status: REOPENED}
"""
BUGHERD_KEYS = """
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {status: closed}
    Reopened: {status: todo}
  comments: true
"""
ECHO = "the source's echo of the bridge's own write"
OWN_COMMENT = "a comment the bridge wrote on the source"


def _mapping(tmp: Path, name: str, keys: str) -> Path:
    path = tmp / "src" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((REPO / "mappings" / "examples" / f"{name}.yaml").read_text() + keys)
    return path


def _notes(stack: BridgeStack) -> str:
    from sqlalchemy import select

    from bridge.store import schema as db

    with stack.engine.connect() as conn:
        return "\n".join(str(r.notes or "") for r in conn.execute(select(db.events.c.notes)).all())


def _quiet(stack: BridgeStack, zoho: FakeZoho, source_calls, seconds: float = 12.0) -> int:
    """No call on the source and no Zoho write over a quiet period; Zoho reads are the poll's only."""
    stack.wait_idle()
    time.sleep(POLL)  # the last echo's tick
    before_src, before_w, before_r = len(source_calls()), len(zoho.writes()), len(zoho.api_calls("GET"))
    time.sleep(seconds)
    assert source_calls()[before_src:] == []
    assert zoho.writes()[before_w:] == []
    reads = len(zoho.api_calls("GET")) - before_r
    assert reads <= seconds / POLL + 2, reads
    return reads


@pytest.fixture
def zoho():
    fake = FakeZoho().start()
    yield fake
    fake.stop()


def _status(issue: dict) -> str:
    return issue["status"] if isinstance(issue["status"], str) else issue["status"]["name"]  # BugTracker: a name


def _key(issue: dict) -> str:
    return issue.get("prefix") or issue["key"]  # Projects: prefix (EC1-I14); BugTracker: key (MOBILE-127)


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_bugzilla_backlink_resolve_reopen_and_no_echo(tmp_path, zoho, dialect):
    """In the BugTracker dialect the poll reads every page of the bug list (no sort is documented there)."""
    bugzilla = FakeBugzilla().start()
    bugzilla.put_bug(35, changed=0, summary="Checkout button unresponsive after login")
    stack = BridgeStack(
        tmp_path,
        zoho,
        mappings=[_mapping(tmp_path, "bugzilla", BUGZILLA_KEYS)],
        extra_env={
            "BUGZILLA_WEBHOOK_SECRET": BUGZILLA_SECRET,
            "BUGZILLA_URL": bugzilla.base_url,
            "BUGZILLA_API_KEY": bugzilla.api_key,
            "ZOHO_POLL_SECONDS": str(POLL),
            "ZOHO_DIALECT": dialect,
            # the BugTracker poll is paced to a share of the plan's daily quota: the largest plan, all of it,
            # so a poll every POLL seconds is within it (one page: 86,400 / 100,000 s)
            "ZOHO_PLAN": "enterprise",
            "ZOHO_POLL_SHARE": "1",
        },
    )
    bugzilla.webhook_url = stack.base_url + "/webhooks/bugzilla"
    bugzilla.webhook_header = ("Authorization", f"Token {BUGZILLA_SECRET}")
    stack.start()
    try:
        bugzilla.deliver("bug", "create", 35)  # a person files the bug
        issue = wait_for(lambda: zoho.issues(), 30, what="the Zoho issue")[0]

        # Exactly one back-link: one PUT with a comment; its comment.create echo is not synced.
        wait_for(lambda: len(bugzilla.comments(35)) == 2, 30, what="the back-link comment")
        wait_for(lambda: OWN_COMMENT in _notes(stack), 30, what="the back-link's echo")
        time.sleep(POLL * 2)
        comments = bugzilla.comments(35)
        assert len(comments) == 2 and f"Tracked in Zoho as {_key(issue)}" in comments[1]["text"]
        assert f"#issue/{issue['id']}" in comments[1]["text"]
        assert [w["json"] for w in bugzilla.writes()] == [{"comment": {"body": comments[1]["text"]}}]
        stack.wait_idle()
        assert zoho.comments(issue["id"]) == []

        # A person closes the Zoho issue: the bug is VERIFIED/FIXED with the resolution comment within a poll.
        zoho_writes = len(zoho.writes())
        zoho.person_sets_status(issue["id"], "Closed")
        started = time.monotonic()
        wait_for(lambda: bugzilla.bug(35)["status"] == "VERIFIED", POLL * 3, what="the bug resolved")
        latency = time.monotonic() - started
        assert bugzilla.bug(35)["resolution"] == "FIXED"
        assert "Resolved in Zoho Projects." in bugzilla.comments(35)[-1]["text"]
        wait_for(lambda: _notes(stack).count(ECHO) == 1, 30, what="the bug.modify echo absorbed")

        # Reopened in Zoho: REOPENED in Bugzilla (the resolution cleared by Bugzilla itself).
        zoho.person_sets_status(issue["id"], "Reopened")
        wait_for(lambda: bugzilla.bug(35)["status"] == "REOPENED", POLL * 3, what="the bug reopened")
        assert bugzilla.bug(35)["resolution"] == ""
        wait_for(lambda: _notes(stack).count(ECHO) == 2, 30, what="the second echo absorbed")
        assert _notes(stack).count(OWN_COMMENT) == 2  # the back-link and the resolution comment
        stack.wait_idle()
        assert zoho.writes()[zoho_writes:] == []  # no echo went back to Zoho
        assert _status(zoho.issue(issue["id"])) == "Reopened"

        reads = _quiet(stack, zoho, bugzilla.calls)
        print(f"\nBugzilla ({dialect}): resolved {latency:.1f}s after the close (poll {POLL}s); quiet: {reads} reads")
        assert [sorted(w["json"]) for w in bugzilla.writes()] == [
            ["comment"],
            ["comment", "resolution", "status"],
            ["status"],
        ]
    finally:
        stack.stop()
        bugzilla.stop()


def test_bugherd_backlink_close_reopen_comments_and_no_echo(tmp_path, zoho):
    bugherd = FakeBugHerd().start()
    bugherd.put_task(bugherd_task(status="doing", updated=10))
    stack = BridgeStack(
        tmp_path,
        zoho,
        mappings=[_mapping(tmp_path, "bugherd", BUGHERD_KEYS)],
        extra_env={
            "BUGHERD_WEBHOOK_TOKEN": BUGHERD_TOKEN,
            "BUGHERD_API_KEY": bugherd.api_key,
            "BUGHERD_API_URL": bugherd.base_url,
            "BUGHERD_BRIDGE_EMAIL": "bridge@example.org",
            "ZOHO_POLL_SECONDS": str(POLL),
        },
    )
    for event in ("task_create", "task_update", "comment"):
        bugherd.add_webhook(event, f"{stack.base_url}/webhooks/bugherd/{BUGHERD_TOKEN}/{event}", 77120)
    stack.start()
    try:
        bugherd.deliver("task_create", 41000217)
        issue = wait_for(lambda: zoho.issues(), 30, what="the Zoho issue")[0]
        assert issue["status"]["name"] == "In Progress"

        wait_for(lambda: bugherd.comments(41000217), 30, what="the back-link")
        wait_for(lambda: OWN_COMMENT in _notes(stack), 30, what="the back-link's echo")
        time.sleep(POLL * 2)
        comments = bugherd.comments(41000217)
        assert len(comments) == 1 and f"Tracked in Zoho as {issue['prefix']}" in comments[0]["text"]
        stack.wait_idle()
        assert zoho.comments(issue["id"]) == []

        zoho_writes = len(zoho.writes())
        zoho.person_sets_status(issue["id"], "Closed")
        started = time.monotonic()
        wait_for(lambda: bugherd.task(41000217)["status"] == "closed", POLL * 3, what="the task closed")
        latency = time.monotonic() - started
        wait_for(lambda: _notes(stack).count(ECHO) == 1, 30, what="the task_update echo absorbed")

        zoho.person_sets_status(issue["id"], "Reopened")
        wait_for(lambda: bugherd.task(41000217)["status"] == "todo", POLL * 3, what="the task reopened")
        wait_for(lambda: _notes(stack).count(ECHO) == 2, 30, what="the second echo absorbed")

        # A person's Zoho comment is copied to the task once; its `comment` webhook echo is not synced back.
        zoho.person_comments(issue["id"], "Fixed on staging, please check.")
        wait_for(lambda: len(bugherd.comments(41000217)) == 2, POLL * 3, what="the Zoho comment copied")
        assert "Fixed on staging, please check." in bugherd.comments(41000217)[1]["text"]
        wait_for(lambda: _notes(stack).count(OWN_COMMENT) == 2, 30, what="the copied comment's echo")
        stack.wait_idle()
        time.sleep(POLL * 2)
        assert len(bugherd.comments(41000217)) == 2  # once, whatever the later polls see
        assert [c["comment"] for c in zoho.comments(issue["id"])] == ["Fixed on staging, please check."]
        assert zoho.writes()[zoho_writes:] == []

        reads = _quiet(stack, zoho, bugherd.calls)
        print(f"\nBugHerd: closed {latency:.1f}s after the Zoho close (poll {POLL}s); quiet: {reads} Zoho reads")
        assert [(w["method"], w["json"]) for w in bugherd.writes() if w["method"] == "PUT"] == [
            ("PUT", {"task": {"status": "closed"}}),
            ("PUT", {"task": {"status": "todo"}}),
        ]
        assert len([w for w in bugherd.writes() if w["method"] == "POST"]) == 2
    finally:
        stack.stop()
        bugherd.stop()
