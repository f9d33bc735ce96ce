"""Real GitHub bodies from ../shared/fixtures/github, read in place and signed here over their exact bytes.

Every file there must have a row in EXPECTED, so a new fixture cannot slip through untested.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bridge import store
from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import schema as db
from bridge.web import create_app
from testkit.factories import sign

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
HELLO = "Codertocat/Hello-World"
SPELLING = "Spelling error in the README file"

# file -> the normalized action and the fields it must carry, "ignored" (answered 200, nothing stored),
# or {"rejected": field} for a trimmed test stub that lacks what the bridge needs (answered 400 naming it)
EXPECTED: dict[str, str | dict[str, Any]] = {
    "issues.opened.json": {
        "action": "created",
        "item_key": f"{HELLO}#1",
        "fields": {
            "title": SPELLING,
            "labels": ["bug"],
            "repository": HELLO,
            "number": 1,
            "state": "open",
            "state_reason": None,  # recorded before 2022: no key at all
            "issue_id": 444500041,
            "repository_id": 186853002,
            "html_url": "https://github.com/Codertocat/Hello-World/issues/1",
            "user": "Codertocat",
        },
        "body_starts": "It looks like you accidently spelled",
        "identity": "444500041",  # GitHub's issue id: a rename of the repository keeps it
    },
    "issues.opened.null-body.json": {"action": "created", "item_key": f"{HELLO}#1", "fields": {"body": ""}},
    "issues.opened.via-transfer.json": {
        "action": "created",
        "item_key": f"{HELLO}#1",
        "fields": {"title": SPELLING},
        "identity": "444500041",
        "previous_identity": "512748900",  # changes.old_issue.id: the item keeps the old issue's link
    },
    "issues.edited.json": {"action": "updated", "item_key": f"{HELLO}#1", "fields": {"title": SPELLING}},
    "issues.labeled.json": {"action": "updated", "item_key": f"{HELLO}#1", "fields": {"labels": ["bug"]}},
    "issues.unlabeled.json": {"action": "updated", "item_key": f"{HELLO}#1", "fields": {"labels": ["bug"]}},
    "issues.assigned.json": {
        "action": "updated",
        "item_key": f"{HELLO}#1",
        "fields": {"assignee": "Codertocat", "assignees": ["Codertocat"]},
    },
    "issues.reopened.json": {"action": "updated", "item_key": f"{HELLO}#1", "fields": {"state": "open"}},
    "issues.closed.state_reason-completed.json": {
        "action": "updated",
        "item_key": "codinasion/codinasion-bot#2",
        "fields": {
            "state": "closed",
            "state_reason": "completed",
            "closed_at": "2022-07-08T13:54:56Z",
            "labels": ["triage", "team"],
            "title": "Another Test Issue",
        },
    },
    "issues.deleted.json": {"action": "deleted", "item_key": f"{HELLO}#1", "fields": {"state": "closed"}},
    "issues.milestoned.json": "ignored",  # the "issue" is a pull request
    # The old repository's news of a transfer: the new issue's fields under its new id, and the old id.
    "issues.transferred.json": {
        "action": "updated",
        "item_key": f"{HELLO}#1",
        "fields": {"repository": HELLO, "number": 1, "issue_id": 444500041, "repository_id": 186853002},
        "identity": "444500041",
        "previous_identity": "512748900",
    },
    "issue_comment.created.json": {
        "action": "comment_created",
        "item_key": f"{HELLO}#1",
        "comment": {"id": "492700400", "author": "Codertocat"},
        "comment_starts": "You are totally right!",
    },
    "issue_comment.edited.json": {
        "action": "comment_updated",
        "item_key": f"{HELLO}#1",
        "comment": {"id": "492700400", "author": "Codertocat"},
    },
    "issue_comment.deleted.json": {
        "action": "comment_deleted",
        "item_key": f"{HELLO}#1",
        "comment": {"id": "492700400"},
    },
    "issue_comment.created.on-pull-request.json": "ignored",
    "issue_comment.created.on-pull-request.all-contributors.json": "ignored",
    "ping.repository.json": "ignored",
    "ping.organization.json": "ignored",
    # Second round: recorded deliveries from other projects' test suites (see SOURCES.md).
    "issues.typed.webhooks-net.json": "ignored",  # issue types are not mapped
    "issues.untyped.webhooks-net.json": "ignored",
    "issues.closed.c-saunders.json": {
        "action": "updated",
        "item_key": "C-Saunders/flynn_env_test#1",
        "fields": {"state": "closed", "state_reason": None, "closed_at": "2018-11-18T18:42:08Z"},
    },
    "issues.closed.zero-closed_at.rachmari.json": {
        "action": "updated",
        "item_key": "swinton/example#36",
        "fields": {"state": "closed", "title": "Issue events"},
    },
    "issues.edited.closed-completed.copilot-survey.json": {
        "action": "updated",
        "item_key": "mageroni/TestRepo#62",
        "fields": {"state": "closed", "state_reason": "completed", "closed_at": "2023-03-19T01:12:10Z"},
    },
    "issue_comment.created.copilot-survey.json": {
        "action": "comment_created",
        "item_key": "mageroni/TestRepo#60",
        "fields": {"state": "open", "state_reason": None},
        "comment": {"id": "1475081580", "author": "mageroni"},
        "comment_starts": "Comentario especial",
    },
    "issues.opened.pytorch-probot.json": {
        "action": "created",
        "item_key": "ezyang/testing-ideal-computing-machine#5",
        "fields": {"title": "ROCm", "labels": []},
    },
    "issues.labeled.pytorch-probot.json": {
        "action": "updated",
        "item_key": "ezyang/testing-ideal-computing-machine#5",
        "fields": {"labels": ["testlabel"]},
    },
    "issues.opened.rails-probot.json": {"action": "created", "item_key": f"{HELLO}#2", "fields": {"title": SPELLING}},
    # Trimmed stubs: without repository.full_name or action there is no item to sync.
    "issues.opened.trimmed-no-repo-name.jupyterlab.json": {"rejected": "repository.full_name"},
    "issues.labeled.trimmed.home-assistant.json": {"rejected": "repository.full_name"},
    "issues.closed.trimmed.devolution-tasker.json": {"rejected": "repository.full_name"},
    "issues.closed.trimmed-no-action.gr2m-helpdesk.json": {"rejected": "action"},
}


def _path(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared fixtures sit beside the project)")
    return path


def _headers(name: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": name.split(".", 1)[0],
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
    }


def test_every_fixture_has_an_expected_outcome():
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is not here")
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_as_expected(name: str):
    body = _path(name).read_bytes()
    headers = _headers(name, body)
    source = GitHubSource(SECRET)
    source.verify(body, headers)  # signed over the exact file bytes, irregular indentation and all
    expected = EXPECTED[name]
    if expected == "ignored":
        with pytest.raises(IgnoredEvent) as err:
            source.parse(body, headers)
        assert err.value.reason
        return
    assert isinstance(expected, dict)
    if "rejected" in expected:
        with pytest.raises(BadDelivery) as bad:
            source.parse(body, headers)
        assert bad.value.reason.startswith(expected["rejected"] + ":")
        return
    event = source.parse(body, headers)
    assert event.source == "github" and event.item_kind == "issue"
    assert event.action == expected["action"]
    assert event.item_key == expected["item_key"]
    assert event.event_name == ".".join(name.split(".")[:2])  # e.g. issues.opened
    assert event.source_project == expected["item_key"].split("#")[0]
    assert event.source_ts.tzinfo is not None
    for key, value in expected.get("fields", {}).items():
        assert event.fields[key] == value, key
    assert event.identity == expected.get("identity", str(event.fields["issue_id"]))
    assert event.previous_identity == expected.get("previous_identity", "")
    if "body_starts" in expected:
        assert event.fields["body"].startswith(expected["body_starts"])
    if "comment" in expected:
        assert event.comment is not None
        for key, value in expected["comment"].items():
            assert getattr(event.comment, key) == value, key
        assert event.comment.updated_at is not None
        if "comment_starts" in expected:
            assert event.comment.body.startswith(expected["comment_starts"])
    else:
        assert event.comment is None
    # What is stored for the worker survives the JSON round trip unchanged.
    assert NormalizedEvent.from_json(event.to_json()) == event


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    settings = load_settings(
        {
            "BRIDGE_DATA_DIR": str(tmp / "var"),
            "DATABASE_URL": f"sqlite:///{tmp}/b.db",
            "BROKER_URL": "redis://127.0.0.1:1/0",
            "MAPPINGS_DIR": str(tmp / "mappings"),
            "GITHUB_WEBHOOK_SECRET": SECRET,
        }
    )
    app = create_app(settings)
    yield app
    app.extensions["bridge"].engine.dispose()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_through_the_intake(app, name: str):
    body = _path(name).read_bytes()
    headers = _headers(name, body)
    r = app.test_client().post("/webhooks/github", data=body, headers=headers)
    engine = app.extensions["bridge"].engine
    expected = EXPECTED[name]
    if isinstance(expected, dict) and "rejected" in expected:
        assert r.status_code == 400 and expected["rejected"] in r.get_json()["error"]
        with engine.connect() as conn:
            stored = conn.execute(select(db.events.c.id).where(db.events.c.dedup_key == headers["X-GitHub-Delivery"]))
            assert stored.first() is None
        return
    assert r.status_code == 200, r.get_json()
    answer = r.get_json()
    if EXPECTED[name] == "ignored":
        assert answer["status"] == "ignored" and answer["event_id"] is None
        return
    assert answer["status"] == "accepted"
    ev = store.get_event(engine, answer["event_id"])
    assert ev is not None and ev.dedup_key == headers["X-GitHub-Delivery"]
    assert ev.event_name == ".".join(name.split(".")[:2])
    assert store.get_raw_delivery(engine, ev.id)[1] == body
    # The same delivery again is a duplicate.
    again = app.test_client().post("/webhooks/github", data=body, headers=headers).get_json()
    assert again == {"status": "duplicate", "event_id": ev.id}
