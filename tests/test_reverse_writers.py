"""The Bugzilla and BugHerd writers against `responses`: the requests they send are the seeds' documented shapes
(the seed's own sample bodies where it gives them), each write is recorded for echo suppression, and what the
seeds leave open (no comment id in Bugzilla's PUT answer, no documented answer to BugHerd's comment create) is
resolved through documented reads only.
"""

from __future__ import annotations

import json

import pytest
import responses

from bridge.core.talkback import changed_refs
from bridge.settings import load_settings
from bridge.sources.bugherd.writer import BugHerdWriter
from bridge.sources.bugzilla.writer import BugzillaWriter
from bridge.sources.writers import WriteRefused, missing_credential, plain_marker, writer_for
from bridge.store import Link
from bridge.store import reverse as state
from bridge.store import schema as db

BZ = "https://bugzilla.example.org"
BH = "https://www.bugherd.com"
BZ_LINK = Link("bugzilla", "bugzilla:35", "35", "739121528", "1752587000000097024", "17525", "linked", 0.0, None)
BH_LINK = Link("bugherd", "bugherd:41000217", "41000217", "739121528", "1752587000000097024", "1", "linked", 0.0, None)
BH_FIELDS = {"project_id": 77120, "task_id": 41000217, "status": "doing", "status_id": 2}
# seed 003 "Update Bug", the documented answer (a status and keywords changed)
SEED_PUT_ANSWER = {
    "bugs": [
        {
            "alias": [],
            "changes": {
                "keywords": {"added": "funny, stupid", "removed": ""},
                "status": {"added": "IN_PROGRESS", "removed": "CONFIRMED"},
            },
            "id": 35,
            "last_change_time": "2014-09-29T14:25:35Z",
        }
    ]
}


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    db.ensure_schema(engine)
    yield engine
    engine.dispose()


def _settings(**env: str):
    return load_settings({"BRIDGE_DATA_DIR": "var", "BROKER_URL": "redis://127.0.0.1:1/0", **env})


def _bz(engine, via: str = "comment") -> BugzillaWriter:
    writer = writer_for("bugzilla", _settings(BUGZILLA_URL=BZ, BUGZILLA_API_KEY="k"), engine, via=via)
    assert isinstance(writer, BugzillaWriter)
    return writer


def _bh(engine) -> BugHerdWriter:
    settings = _settings(BUGHERD_API_KEY="bhkey", BUGHERD_API_URL=BH, BUGHERD_BRIDGE_EMAIL="bridge@example.org")
    writer = writer_for("bugherd", settings, engine)
    assert isinstance(writer, BugHerdWriter)
    return writer


def _bug(status: str, resolution: str = "") -> dict:
    return {"faults": [], "bugs": [{"id": 35, "status": status, "resolution": resolution}]}


def _comments(*texts: str) -> dict:
    comments = [{"id": 900 + n, "count": n, "text": t} for n, t in enumerate(texts)]
    return {"bugs": {"35": {"comments": comments}}, "comments": {}}


def test_missing_settings_are_named_and_no_writer_is_made():
    assert missing_credential("bugzilla", _settings()) == (
        "BUGZILLA_URL and BUGZILLA_API_KEY are not set: back-links and reverse sync need it"
    )
    assert missing_credential("bugzilla", _settings(BUGZILLA_URL=BZ)) == (
        "BUGZILLA_API_KEY is not set: back-links and reverse sync need it"
    )
    assert "BUGHERD_BRIDGE_EMAIL is not set" in str(missing_credential("bugherd", _settings(BUGHERD_API_KEY="x")))
    assert writer_for("bugherd", _settings(BUGHERD_API_KEY="x"), None) is None  # type: ignore[arg-type]


@responses.activate
def test_bugzilla_backlink_is_a_put_comment_and_its_id_is_read_back(engine):
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    marker = plain_marker("backlink", BZ_LINK)
    responses.get(f"{BZ}/rest/bug/35/comment", json=_comments("the description", f"Tracked in EC1-I4\n\n{marker}"))
    with state.collecting() as wrote:
        ref = _bz(engine).post_comment(BZ_LINK, {"id": 35}, "Tracked in EC1-I4", "backlink")
    assert ref == "901"
    assert json.loads(put.calls[0].request.body) == {"comment": {"body": f"Tracked in EC1-I4\n\n{marker}"}}
    assert put.calls[0].request.headers["X-BUGZILLA-API-KEY"] == "k"
    # The comment's id is reported: its `comment.create` webhook is recognized by the id, whatever the text says
    # (tests/test_journal_echo.py).
    assert ("comment", "901") in wrote


@responses.activate
def test_bugzilla_see_also_backlink_adds_the_url(engine):
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    url = "https://projects.zoho.com/portal/739121528#issue/17525"
    assert _bz(engine, "see_also").post_comment(BZ_LINK, {"id": 35}, url, "backlink") == f"see_also:{url}"
    assert json.loads(put.calls[0].request.body) == {"see_also": {"add": [url]}}
    assert _bz(engine, "see_also").find_comment(BZ_LINK, {"id": 35}, "backlink") is None  # re-adding is harmless


@responses.activate
def test_bugzilla_resolve_sends_status_resolution_and_comment_once(engine):
    get = responses.get(f"{BZ}/rest/bug/35", json=_bug("NEW"))
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    responses.get(f"{BZ}/rest/bug/35/comment", json=_comments("d"))
    actions = {"status": "RESOLVED", "resolution": "FIXED", "comment": "Fixed in Zoho."}
    with state.collecting() as wrote:
        done = _bz(engine).apply(BZ_LINK, {"id": 35}, actions)
    assert done == ["status RESOLVED/FIXED", "comment"]
    body = json.loads(put.calls[0].request.body)
    assert body == {
        "status": "RESOLVED",
        "resolution": "FIXED",
        "comment": {"body": f"Fixed in Zoho.\n\n{plain_marker('resolution', BZ_LINK)}"},
    }
    assert "include_fields=id%2Cstatus%2Cresolution" in get.calls[0].request.url
    # Every value the echo will show (status and resolution, and the derived status_resolution) is reported.
    before = {"status": "NEW", "resolution": "", "status_resolution": "NEW", "summary": "s"}
    after = {**before, "status": "RESOLVED", "resolution": "FIXED", "status_resolution": "RESOLVED/FIXED"}
    assert set(changed_refs(before, after)) <= {ref for kind, ref in wrote if kind == "state"}

    # Already resolved so: nothing sent, not even the comment.
    responses.replace(responses.GET, f"{BZ}/rest/bug/35", json=_bug("RESOLVED", "FIXED"))
    assert _bz(engine).apply(BZ_LINK, {"id": 35}, actions) == []
    assert len(put.calls) == 1


@responses.activate
def test_bugzilla_reopen_never_sends_a_resolution_to_an_open_bug(engine):
    responses.get(f"{BZ}/rest/bug/35", json=_bug("RESOLVED", "FIXED"))
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    with state.collecting() as wrote:
        done = _bz(engine).apply(BZ_LINK, {"id": 35}, {"status": "REOPENED", "resolution": "FIXED"})
    assert done == ["status REOPENED"]
    assert json.loads(put.calls[0].request.body) == {"status": "REOPENED"}  # seed 003:2027-2037
    refs = [ref for kind, ref in wrote if kind == "state"]
    assert refs == ["status=REOPENED", "resolution=", "status_resolution=REOPENED"]


@responses.activate
def test_bugzilla_error_body_is_a_refusal_not_a_success(engine):
    responses.get(f"{BZ}/rest/bug/35", json=_bug("NEW"))
    responses.put(f"{BZ}/rest/bug/35", status=400, json={"error": True, "code": 104, "message": "no such status"})
    with pytest.raises(WriteRefused, match="no such status") as info:
        _bz(engine).apply(BZ_LINK, {"id": 35}, {"status": "ASSIGNED"})
    assert info.value.status == 400


@responses.activate
def test_closing_a_bugzilla_bug_without_a_resolution_is_refused_here_and_never_sent(engine):
    """003:2050-2052: closing needs a resolution; Bugzilla would refuse the PUT on every try."""
    responses.get(f"{BZ}/rest/bug/35", json=_bug("NEW"))
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    with state.collecting() as wrote, pytest.raises(WriteRefused, match=r"needs a resolution.*003:2050-2052"):
        _bz(engine).apply(BZ_LINK, {"id": 35}, {"status": "RESOLVED", "comment": "Closed in Zoho"})
    assert len(put.calls) == 0 and wrote == []


@responses.activate
def test_bugherd_comment_in_the_seed_shape_with_basic_auth(engine):
    url = f"{BH}/api_v2/projects/77120/tasks/41000217/comments.json"
    post = responses.post(url, status=201, json={"comment": {"id": 18800999, "text": "x"}})
    with state.collecting() as wrote:
        ref = _bh(engine).post_comment(BH_LINK, BH_FIELDS, "Tracked in EC1-I4", "backlink")
    assert ref == "18800999"
    sent = json.loads(post.calls[0].request.body)
    # seed 002:182-185: {"comment":{ "text":"comment here", "email":"[email protected]" }}
    assert sent == {
        "comment": {"text": f"Tracked in EC1-I4\n\n{plain_marker('backlink', BH_LINK)}", "email": "bridge@example.org"}
    }
    assert post.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert ("comment", "18800999") in wrote


@responses.activate
def test_bugherd_comment_without_an_id_in_the_answer_is_found_by_its_marker(engine):
    url = f"{BH}/api_v2/projects/77120/tasks/41000217/comments.json"
    responses.post(url, status=201, body="")  # the seed documents no answer
    marker = plain_marker("backlink", BH_LINK)
    responses.get(f"{url}?page=1", json={"comments": [{"id": 5, "text": f"t\n\n{marker}"}], "meta": {"count": 1}})
    assert _bh(engine).post_comment(BH_LINK, BH_FIELDS, "t", "backlink") == "5"


@responses.activate
def test_bugherd_status_is_a_put_of_the_task(engine):
    task = f"{BH}/api_v2/projects/77120/tasks/41000217.json"
    responses.get(task, json={"task": {"id": 41000217, "status": "doing", "status_id": 2}})
    put = responses.put(task, json={"task": {"id": 41000217, "status": "done"}})
    with state.collecting() as wrote:
        assert _bh(engine).apply(BH_LINK, BH_FIELDS, {"status": "done"}) == ["status done"]
    assert json.loads(put.calls[0].request.body) == {"task": {"status": "done"}}  # seed 002:161-162
    before = {"status": "doing", "status_id": 2, "updated_at": "a"}
    after = {"status": "done", "status_id": 4, "updated_at": "b"}
    assert set(changed_refs(before, after)) <= {ref for kind, ref in wrote if kind == "state"}
    responses.replace(responses.GET, task, json={"task": {"id": 41000217, "status": "done", "status_id": 4}})
    assert _bh(engine).apply(BH_LINK, BH_FIELDS, {"status": "done"}) == []
    assert len(put.calls) == 1


@responses.activate
def test_bugzilla_comment_only_action_is_posted(engine):
    responses.get(f"{BZ}/rest/bug/35", json=_bug("NEW"))
    put = responses.put(f"{BZ}/rest/bug/35", json=SEED_PUT_ANSWER)
    responses.get(f"{BZ}/rest/bug/35/comment", json=_comments("d"))
    assert _bz(engine).apply(BZ_LINK, {"id": 35}, {"comment": "In testing in Zoho."}) == ["comment"]
    assert list(json.loads(put.calls[0].request.body)) == ["comment"]
