"""Fields of the wrong shape never reach Zoho as a Python repr.

Red Hat's Bugzilla sends fields as objects (`{"id": 49, "name": "Fedora"}`) where bugzilla.mozilla.org sends
"Fedora": the webhook parser and the REST reader take the name. Any other text field that is not text (a
GitHub `title` as an object, a list or a number) is refused with a 400 naming it, and nothing is stored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bridge import store
from bridge.events import BadDelivery
from bridge.settings import load_settings
from bridge.sources.bugherd.webhook import BugHerdSource
from bridge.sources.bugzilla.api import fields_of
from bridge.sources.bugzilla.webhook import BugzillaSource
from bridge.sources.github.webhook import GitHubSource
from bridge.web import create_app
from testkit.factories import github_request, issues_event
from testkit.factories_trackers import (
    BUGHERD_TOKEN,
    BUGZILLA_SECRET,
    bugherd_task,
    bugzilla_bug,
    bugzilla_event,
    bugzilla_headers,
    encode,
    tracker_env,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
BUGZILLA = BugzillaSource(BUGZILLA_SECRET, bugzilla_url="https://bugzilla.redhat.com")
GITHUB_SECRET = "gh-secret"
REDHAT_STYLE = {
    "product": {"id": 49, "name": "Fedora"},
    "component": {"id": 1201, "name": "kernel"},
    "status": {"id": 2, "name": "ASSIGNED"},
    "severity": {"id": 3, "name": "high"},
    "priority": {"id": 3, "name": "high"},
    "classification": {"id": 2, "name": "Fedora"},
    "version": {"id": 7, "name": "40"},
    "assigned_to": {"id": 7, "login": "kernel-maint@redhat.com", "real_name": "Kernel Maintainer"},
    "keywords": [{"id": 4, "name": "Regression"}],
}


def _redhat(bug: dict) -> dict:
    return {**bug, **copy.deepcopy(REDHAT_STYLE)}


def _no_repr(fields: dict) -> None:
    for value in fields.values():
        for text in value if isinstance(value, list) else [value]:
            assert not (isinstance(text, str) and text.startswith(("{'", "[{"))), fields


def test_a_red_hat_style_webhook_is_read_by_name():
    """Was: `{'id': 49, 'name': 'Fedora'}` in Zoho's description, status and routing."""
    event = BUGZILLA.parse(encode(bugzilla_event("bug", "modify", bug=_redhat(bugzilla_bug()))), {})
    fields = event.fields
    assert (fields["product"], fields["component"], fields["status"]) == ("Fedora", "kernel", "ASSIGNED")
    assert (fields["severity"], fields["priority"], fields["version"]) == ("high", "high", "40")
    assert fields["assigned_to"] == "kernel-maint@redhat.com" and fields["keywords"] == ["Regression"]
    assert fields["status_resolution"] == "ASSIGNED" and event.source_project == "Fedora"
    _no_repr(fields)


@pytest.mark.skipif(not (FIXTURES / "bugzilla").is_dir(), reason="the shared fixture corpus is not here")
def test_a_real_bmo_delivery_with_its_fields_as_objects_is_read_by_name():
    payload = json.loads((FIXTURES / "bugzilla" / "jbi.bug-create.public.json").read_text())
    payload["bug"] = _redhat(payload["bug"])
    fields = BUGZILLA.parse(json.dumps(payload).encode(), {}).fields
    assert (fields["product"], fields["component"], fields["assigned_to"]) == (
        "Fedora",
        "kernel",
        "kernel-maint@redhat.com",
    )
    _no_repr(fields)


def test_the_rest_reader_takes_the_name_too():
    bug = _redhat({"id": 35, "summary": "Kernel panic", "creation_time": "2024-01-02T03:04:05Z"})
    fields = fields_of({**bug, "last_change_time": "2024-01-02T03:04:05Z"}, "https://bugzilla.redhat.com", "desc")
    assert (fields["product"], fields["status"], fields["keywords"]) == ("Fedora", "ASSIGNED", ["Regression"])
    _no_repr(fields)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("summary", {"text": "no name"}, "bug.summary"),
        ("summary", ["a", "list"], "bug.summary: expected text, got a list"),
        ("status", 7, "bug.status: expected text, got a number"),
        ("product", True, "bug.product: expected text, got a boolean"),
    ],
)
def test_a_bugzilla_field_that_is_not_text_nor_named_is_refused_naming_it(field, value, named):
    with pytest.raises(BadDelivery, match=named):
        BUGZILLA.parse(encode(bugzilla_event("bug", "modify", bug={**bugzilla_bug(), field: value})), {})


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("title", {"text": "Checkout broken"}, "issue.title: expected text, got an object"),
        ("title", ["Checkout", "broken"], "issue.title: expected text, got a list"),
        ("title", 42, "issue.title: expected text, got a number"),
        ("body", {"markdown": "x"}, "issue.body: expected text, got an object"),
        ("state", ["open"], "issue.state: expected text, got a list"),
        ("assignees", 1, "issue.assignees: expected a list"),  # found by tests/test_fuzz_parsers.py
    ],
)
def test_a_github_text_field_that_is_not_text_is_refused_naming_it(field, value, named):
    payload = issues_event("opened")
    payload["issue"][field] = value
    body, headers = github_request(GITHUB_SECRET, "issues", payload)
    with pytest.raises(BadDelivery, match=named):
        GitHubSource(GITHUB_SECRET).parse(body, headers)


@pytest.mark.skipif(not (FIXTURES / "github").is_dir(), reason="the shared fixture corpus is not here")
@pytest.mark.parametrize("value", [{"text": "x"}, ["x"], 7])
def test_a_real_github_delivery_with_a_title_of_the_wrong_shape_is_refused(value):
    payload = json.loads((FIXTURES / "github" / "issues.opened.json").read_text())
    payload["issue"]["title"] = value
    body, headers = github_request(GITHUB_SECRET, "issues", payload)
    with pytest.raises(BadDelivery, match=r"issue\.title: expected text"):
        GitHubSource(GITHUB_SECRET).parse(body, headers)


@pytest.mark.parametrize(("field", "value"), [("description", {"html": "x"}), ("title", ["x"]), ("status", 4)])
def test_a_bugherd_text_field_that_is_not_text_is_refused_naming_it(field, value):
    body = encode({"task": {**bugherd_task(), field: value}})
    with pytest.raises(BadDelivery, match=f"task.{field}: expected text"):
        BugHerdSource(BUGHERD_TOKEN).parse(body, {}, "task_update")


def test_through_the_web_app_a_400_names_the_field_and_nothing_is_stored(tmp_path):
    env = tracker_env(tmp_path, GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    app = create_app(load_settings(env))
    client = app.test_client()
    payload = issues_event("opened")
    payload["issue"]["title"] = {"text": "Checkout broken"}
    body, headers = github_request(GITHUB_SECRET, "issues", payload)
    answer = client.post("/webhooks/github", data=body, headers=headers)
    assert answer.status_code == 400 and "issue.title: expected text, got an object" in answer.get_json()["error"]
    redhat = client.post(
        "/webhooks/bugzilla",
        data=encode(bugzilla_event("bug", "create", bug=_redhat(bugzilla_bug()))),
        headers=bugzilla_headers(),
    )
    assert redhat.status_code == 200 and redhat.get_json()["status"] == "accepted"
    [stored] = store.list_events(app.extensions["bridge"].engine)
    assert stored.event.fields["product"] == "Fedora"
