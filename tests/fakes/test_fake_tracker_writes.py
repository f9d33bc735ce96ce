"""The fake trackers refuse what their seeds do not document, in the seed's error form, and change nothing."""

from __future__ import annotations

import pytest
import requests

from testkit.factories_trackers import bugherd_task
from testkit.fakes.bugherd import FakeBugHerd
from testkit.fakes.bugzilla import FakeBugzilla


@pytest.fixture
def bugzilla():
    fake = FakeBugzilla().start()
    fake.put_bug(35, changed=0)
    yield fake
    fake.stop()


@pytest.fixture
def bugherd():
    fake = FakeBugHerd().start()
    fake.put_task(bugherd_task(status="doing"))
    yield fake
    fake.stop()


def _bz(fake: FakeBugzilla, method: str, path: str, body: object) -> requests.Response:
    headers = {"X-BUGZILLA-API-KEY": fake.api_key}
    return requests.request(method, fake.base_url + path, json=body, headers=headers, timeout=5)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/rest/bug/35/comment", {"comment": "x"}, 404, 32614),  # not in seed 003
        ("PUT", "/rest/bug/35", {"resolution": "FIXED"}, 400, 104),  # an open bug takes no resolution
        ("PUT", "/rest/bug/35", {"status": "RESOLVED"}, 400, 104),  # closing needs a resolution
        ("PUT", "/rest/bug/35", {"status": "SHIPPED"}, 400, 104),
        ("PUT", "/rest/bug/35", {"comment": {"text": "x"}}, 400, 51),
        ("PUT", "/rest/bug/35", {"comment": {"body": " "}}, 400, 51),
        ("PUT", "/rest/bug/35", {"see_also": {"add": ["not a url"]}}, 400, 112),
        # See Also takes URLs of bugs in trackers Bugzilla knows (003:2039-2048), not any web page
        ("PUT", "/rest/bug/35", {"see_also": {"add": ["https://projects.zoho.com/portal/p#issue/17525"]}}, 400, 112),
        ("PUT", "/rest/bug/35", {"nonsense": 1}, 400, 51),
        ("PUT", "/rest/bug/35", [1], 400, 32000),
    ],
)
def test_bugzilla_refuses_undocumented_writes(bugzilla, method, path, body, status, code, probing_fakes):
    before = bugzilla.bug(35), bugzilla.comments(35)
    answer = _bz(bugzilla, method, path, body)
    assert answer.status_code == status
    assert answer.json()["error"] is True and answer.json()["code"] == code and answer.json()["message"]
    assert (bugzilla.bug(35), bugzilla.comments(35)) == before and bugzilla.writes() == []


def test_bugzilla_documented_update_answers_with_changes(bugzilla):
    answer = _bz(
        bugzilla, "PUT", "/rest/bug/35", {"status": "RESOLVED", "resolution": "FIXED", "comment": {"body": "ok"}}
    )
    bug = answer.json()["bugs"][0]
    assert bug["id"] == 35 and set(bug["changes"]) == {"status", "resolution"}  # comments are not listed
    assert bug["changes"]["status"] == {"added": "RESOLVED", "removed": "NEW"}
    assert bugzilla.comments(35)[-1]["text"] == "ok"
    reopened = _bz(bugzilla, "PUT", "/rest/bug/35", {"status": "REOPENED"}).json()["bugs"][0]
    assert reopened["changes"]["resolution"] == {"added": "", "removed": "FIXED"}  # cleared by Bugzilla


@pytest.mark.parametrize(
    "url",
    [
        "https://bugzilla.redhat.com/show_bug.cgi?id=1234",
        "https://github.com/acme/web/issues/12",
        "https://issues.apache.org/jira/browse/KAFKA-42",
        "https://bugs.launchpad.net/ubuntu/+bug/99",
    ],
)
def test_bugzilla_see_also_takes_urls_of_bugs(bugzilla, url):
    answer = _bz(bugzilla, "PUT", "/rest/bug/35", {"see_also": {"add": [url]}})
    assert answer.status_code == 200 and bugzilla.bug(35)["see_also"] == [url]


def _bh(fake: FakeBugHerd, method: str, path: str, body: object) -> requests.Response:
    url = f"{fake.base_url}/api_v2/projects/77120/tasks/41000217{path}"
    return requests.request(method, url, json=body, auth=(fake.api_key, "x"), timeout=5)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/comments.json", {"comment": {"text": "no author"}}),
        ("POST", "/comments.json", {"comment": {"text": "x", "email": "a@b", "user_id": 1}}),
        ("POST", "/comments.json", {"comment": {"text": "x", "email": "stranger@example.org"}}),
        ("POST", "/comments.json", {"text": "x", "email": "bridge@example.org"}),
        ("PUT", ".json", {"task": {"status": "shipped"}}),
        ("PUT", ".json", {"status": "done"}),
        ("PUT", ".json", {"task": {"colour": "red"}}),
    ],
)
def test_bugherd_refuses_undocumented_writes(bugherd, method, path, body):
    before = bugherd.task(41000217), bugherd.comments(41000217)
    answer = _bh(bugherd, method, path, body)
    assert answer.status_code == 422 and answer.json()["error"]
    assert (bugherd.task(41000217), bugherd.comments(41000217)) == before and bugherd.writes() == []


def test_bugherd_documented_writes(bugherd):
    comment = {"comment": {"text": "comment here", "email": "bridge@example.org"}}  # seed 002:185
    assert _bh(bugherd, "POST", "/comments.json", comment).status_code == 201
    assert _bh(bugherd, "PUT", ".json", {"task": {"status": "done"}}).status_code == 200  # seed 002:162
    task = bugherd.task(41000217)
    assert (task["status"], task["status_id"]) == ("done", 4)
    assert [w["method"] for w in bugherd.writes()] == ["POST", "PUT"]
