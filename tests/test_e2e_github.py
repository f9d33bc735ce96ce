"""End to end on real parts: gunicorn + celery worker + beat + a real broker + a strict FakeZoho over HTTP.

Runs on the embedded default (the private Redis the bridge starts itself) and again against a
separately started redis-server through BROKER_URL.
"""

from __future__ import annotations

import json

import pytest

from testkit.factories import comment_event, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, RedisServer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]  # also on PostgreSQL + Redis in CI

WEB = "1752587000000097024"
API = "1752587000000098001"


@pytest.fixture(params=["embedded", "redis-url"])
def stack(request, tmp_path):
    fake = FakeZoho().start()
    redis = None
    broker_url = ""
    if request.param == "redis-url":
        redis = RedisServer(tmp_path)
        broker_url = redis.url
    bridge = BridgeStack(tmp_path, fake, broker_url=broker_url).start()
    yield bridge
    bridge.stop()
    fake.stop()
    if redis:
        redis.stop()


def _names(fake: FakeZoho, issue: dict) -> dict:
    return {
        "name": issue["name"],
        "status": issue["status"]["name"],
        "severity": issue["severity"]["value"],
        "classification": issue["classification"]["value"],
        "module": issue["module"]["value"],
        "external_id": issue.get("external_id"),
        "project": issue["project_id"],
    }


def test_github_issue_lifecycle_lands_in_zoho_once(stack: BridgeStack):
    fake = stack.fake
    assert fake is not None

    r = stack.github("issues", issues_event("opened", number=7, labels=("bug", "area:auth"), updated=0))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    issue = wait_for(lambda: fake.issues(WEB), 30, what="the issue in Zoho")[0]
    assert _names(fake, issue) == {
        "name": "Login button does nothing",
        "status": "Open",
        "severity": "Major",
        "classification": "Bug",
        "module": "Authentication",
        "external_id": "github:acme/web#7",
        "project": WEB,
    }
    assert "Reported in GitHub: https://github.com/acme/web/issues/7" in issue["description"]

    # Later edits, labels and the close land on the same Zoho issue.
    stack.github(
        "issues",
        issues_event("edited", number=7, title="Login broken on Safari", labels=("bug", "area:auth"), updated=10),
    )
    stack.github(
        "issues",
        issues_event(
            "labeled",
            number=7,
            title="Login broken on Safari",
            labels=("bug", "area:auth", "severity:critical", "security"),
            updated=20,
        ),
    )
    stack.github(
        "issue_comment",
        comment_event(
            "created",
            comment_id=900,
            text="Reproduced on 17.2",
            commented=25,
            number=7,
            title="Login broken on Safari",
            labels=("bug", "area:auth", "severity:critical", "security"),
        ),
    )
    delivery = "6b1a3c3e-0000-4000-8000-000000000031"
    closed = issues_event(
        "closed",
        number=7,
        title="Login broken on Safari",
        state="closed",
        labels=("bug", "area:auth", "severity:critical", "security"),
        updated=30,
    )
    assert stack.github("issues", closed, delivery=delivery).json()["status"] == "accepted"
    counts = stack.wait_idle()
    assert counts.get("failed", 0) == 0, stack.log_text()[-3000:]

    issues = fake.issues()
    assert len(issues) == 1
    assert _names(fake, issues[0]) | {"description": None} == {
        "name": "Login broken on Safari",
        "status": "Closed",
        "severity": "Critical",  # the map's order wins: severity:critical before bug
        "classification": "Security",  # security comes first in the classification map
        "module": "Authentication",
        "external_id": "github:acme/web#7",
        "project": WEB,
        "description": None,
    }
    comments = fake.comments(issues[0]["id"])
    assert len(comments) == 1
    assert "Reproduced on 17.2" in comments[0]["comment"] and "hubot" in comments[0]["comment"]

    # A repeated delivery changes nothing: answered duplicate, no new Zoho call.
    calls_before = len(fake.api_calls())
    r = stack.github("issues", closed, delivery=delivery)
    assert r.json()["status"] == "duplicate"
    # A redelivered comment (new delivery id, same comment) is not posted twice either.
    stack.github(
        "issue_comment",
        comment_event(
            "created",
            comment_id=900,
            text="Reproduced on 17.2",
            commented=25,
            number=7,
            title="Login broken on Safari",
            labels=("bug", "area:auth", "severity:critical", "security"),
        ),
    )
    stack.wait_idle()
    assert len(fake.comments(issues[0]["id"])) == 1
    assert [c for c in fake.api_calls()[calls_before:] if c["method"] != "GET"] == []


def test_routing_by_repository_and_null_body(stack: BridgeStack):
    fake = stack.fake
    assert fake is not None
    stack.github("issues", issues_event("opened", repo="acme/api", number=3, body=None, labels=()))
    stack.wait_idle()
    [issue] = fake.issues(API)
    assert issue["external_id"] == "github:acme/api#3"
    assert issue["severity"]["value"] == "Minor" and issue["classification"]["value"] == "Bug"  # defaults
    assert issue["module"]["value"] == "None"  # no default: left unset


def test_deleted_issue_is_closed_and_stale_update_does_not_roll_back(stack: BridgeStack):
    fake = stack.fake
    assert fake is not None
    stack.github("issues", issues_event("opened", number=9, title="v2", updated=50))
    stack.wait_idle()
    # An older state arriving late must not roll the title back.
    stack.github("issues", issues_event("edited", number=9, title="v1 (stale)", updated=40))
    stack.wait_idle()
    [issue] = fake.issues()
    assert issue["name"] == "v2"
    stack.github("issues", issues_event("deleted", number=9, title="v2", updated=60))
    stack.wait_idle()
    assert fake.issue(issue["id"])["status"]["name"] == "Closed"


def test_events_cli_shows_attempts_and_calls(stack: BridgeStack):
    r = stack.github("issues", issues_event("opened", number=11))
    event_id = r.json()["event_id"]
    stack.wait_idle()
    listed = json.loads(stack.cli("events", "list", "--json").stdout)
    assert listed[0]["id"] == event_id and listed[0]["status"] == "done"
    assert any(
        c["method"] == "POST" and c["path"].endswith("/issues") and c["status"] == 200 for c in listed[0]["calls"]
    )
    shown = stack.cli("events", "show", str(event_id)).stdout
    assert "Login button does nothing" in shown and "zoho calls:" in shown
