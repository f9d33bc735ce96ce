"""GitHub intake through the Flask test client: each bad input gets its documented answer and stores nothing.

No broker runs: BROKER_URL points at a closed port, so the wake-up (best effort, in a background thread)
fails, and the delivery must still be answered at once and kept.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bridge import store
from bridge.events import Unauthorized
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.web import create_app
from testkit.factories import comment_event, github_request, issues_event, sign

SECRET = "It's a Secret to Everybody"
URL = "/webhooks/github"


def make_app(tmp_path: Path, **extra: str):
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
        "BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "MAPPINGS_DIR": str(tmp_path / "mappings"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "MAX_WEBHOOK_BYTES": "2048",
        **extra,
    }
    app = create_app(load_settings(env))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(tmp_path: Path):
    app = make_app(tmp_path)
    yield app
    app.extensions["bridge"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def stored(app) -> list[store.StoredEvent]:
    return store.list_events(app.extensions["bridge"].engine)


def post(client, event: str, payload, *, delivery: str | None = None, **header_changes: str | None):
    body, headers = github_request(SECRET, event, payload, delivery=delivery)
    for name, value in header_changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return client.post(URL, data=body, headers=headers)


# -- the signature --------------------------------------------------------------------------------------


def test_documented_test_vector():
    source = GitHubSource(SECRET)
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(SECRET, b"Hello, World!") == good
    source.verify(b"Hello, World!", {"X-Hub-Signature-256": good})
    with pytest.raises(Unauthorized):
        source.verify(b"Hello, World!\n", {"X-Hub-Signature-256": good})
    with pytest.raises(Unauthorized):
        source.verify(b"Hello, World!", {"X-Hub-Signature-256": good.upper()})
    with pytest.raises(Unauthorized):
        source.verify(b"Hello, World!", {"X-Hub-Signature-256": good.removeprefix("sha256=")})
    with pytest.raises(Unauthorized):
        source.verify(b"Hello, World!", {})


def test_a_source_without_a_secret_cannot_be_built():
    with pytest.raises(ValueError, match="GITHUB_WEBHOOK_SECRET"):
        GitHubSource("")


# -- bad input: the documented answer and nothing stored -------------------------------------------------------


def _wrong_signature(client):
    return post(client, "issues", issues_event("opened"), X_Hub_Signature_256=sign("not the secret", b"{}"))


def _no_signature(client):
    return post(client, "issues", issues_event("opened"), X_Hub_Signature_256=None)


def _signature_of_another_body(client):
    other = json.dumps(issues_event("opened", title="something else")).encode()
    return post(client, "issues", issues_event("opened"), X_Hub_Signature_256=sign(SECRET, other))


def _legacy_sha1_only(client):
    return post(client, "issues", issues_event("opened"), X_Hub_Signature_256=None, X_Hub_Signature="sha1=00")


def _malformed_json(client):
    return post(client, "issues", b'{"action": "opened", "issue": ')


def _not_utf8(client):
    return post(client, "issues", b"\xff\xfe{}")


def _json_list(client):
    return post(client, "issues", b'[{"action": "opened"}]')


def _missing_event_header(client):
    return post(client, "issues", issues_event("opened"), X_GitHub_Event=None)


def _issue_not_an_object(client):
    return post(client, "issues", {**issues_event("opened"), "issue": "nope"})


def _number_missing(client):
    payload = issues_event("opened")
    del payload["issue"]["number"]
    return post(client, "issues", payload)


def _bad_timestamp(client):
    payload = issues_event("opened")
    payload["issue"]["updated_at"] = "yesterday"
    return post(client, "issues", payload)


def _form_without_payload(client):
    body = urlencode({"data": json.dumps(issues_event("opened"))}).encode()
    return post(client, "issues", body, Content_Type="application/x-www-form-urlencoded")


def _too_large(client):
    payload = issues_event("opened", body="x" * 4000)
    return post(client, "issues", payload)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (_wrong_signature, 401),
        (_no_signature, 401),
        (_signature_of_another_body, 401),
        (_legacy_sha1_only, 401),
        (_malformed_json, 400),
        (_not_utf8, 400),
        (_json_list, 400),
        (_missing_event_header, 400),
        (_issue_not_an_object, 400),
        (_number_missing, 400),
        (_bad_timestamp, 400),
        (_form_without_payload, 400),
        (_too_large, 413),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else str(v),
)
def test_bad_input_gets_its_code_and_changes_nothing(app, client, send, code):
    r = send(client)
    assert r.status_code == code
    assert r.is_json and r.get_json()["status"] == "error" and r.get_json()["error"]
    assert stored(app) == []


def test_too_large_chunked_body_is_413(app, client):
    body, headers = github_request(SECRET, "issues", issues_event("opened", body="x" * 4000))
    headers["Transfer-Encoding"] = "chunked"
    r = client.post(  # what gunicorn hands over for a chunked request: a terminated stream, no length
        URL, input_stream=io.BytesIO(body), headers=headers, environ_overrides={"wsgi.input_terminated": True}
    )
    assert stored(app) == []  # holds today already: nothing is stored
    assert r.status_code == 413


def test_signature_is_checked_before_the_body_is_parsed(app, client):
    r = post(client, "issues", b"not json at all", X_Hub_Signature_256=sign("wrong", b"not json at all"))
    assert r.status_code == 401  # not 400: nothing about the body is revealed to an unsigned sender


def test_disabled_source_refuses_everything(tmp_path):
    app = make_app(tmp_path, GITHUB_WEBHOOK_SECRET="")
    r = post(app.test_client(), "issues", issues_event("opened"))
    assert r.status_code == 401
    assert r.get_json()["status"] == "error" and "disabled" in r.get_json()["error"]
    assert stored(app) == []
    app.extensions["bridge"].engine.dispose()


def test_get_is_not_allowed(client):
    assert client.get(URL).status_code == 405


# -- deliberately skipped: 200 ignored, nothing stored ------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("push", {"ref": "refs/heads/main", "repository": {"full_name": "acme/web"}}),
        ("ping", {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"}}),
        ("issue_comment", comment_event("created", comment_id=5, text="lgtm", commented=3, pull_request=True)),
        ("issues", issues_event("milestoned", pull_request=True)),
        ("issues", issues_event("locked")),
        ("issues", issues_event("pinned")),
        ("issue_comment", comment_event("pinned", comment_id=5, text="x", commented=3)),
    ],
    ids=["push", "ping", "pr-comment", "pr-milestoned", "issues.locked", "issues.pinned", "comment.pinned"],
)
def test_skipped_events_are_answered_ignored(app, client, event, payload):
    r = post(client, event, payload)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ignored" and body["event_id"] is None
    assert body.get("reason")
    assert stored(app) == []


# -- accepted ---------------------------------------------------------------------------------------------


def test_good_delivery_is_stored_once_and_answered_at_once(app, client):
    started = time.monotonic()
    r = post(client, "issues", issues_event("opened", number=7), delivery="d-0001")
    assert time.monotonic() - started < 1.0  # never waits on the broker (or Zoho)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "accepted" and isinstance(body["event_id"], int)
    [ev] = stored(app)
    assert ev.id == body["event_id"] and ev.status == "pending"
    assert (ev.source, ev.dedup_key, ev.event_name, ev.item_key) == ("github", "d-0001", "issues.opened", "acme/web#7")
    assert ev.event.fields["title"] == "Login button does nothing"
    headers, raw = store.get_raw_delivery(app.extensions["bridge"].engine, ev.id)
    assert raw == json.dumps(issues_event("opened", number=7)).encode()  # the exact bytes, for replays
    assert headers["X-GitHub-Delivery"] == "d-0001"
    assert not any("signature" in h.lower() for h in headers)


def test_redelivery_is_a_duplicate(app, client):
    first = post(client, "issues", issues_event("opened"), delivery="d-0002").get_json()
    again = post(client, "issues", issues_event("opened"), delivery="d-0002")
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "event_id": first["event_id"]}
    assert len(stored(app)) == 1


def test_distinct_deliveries_of_one_item_are_all_kept(app, client):
    post(client, "issues", issues_event("opened", updated=0))
    post(client, "issues", issues_event("edited", title="v2", updated=5))
    post(client, "issue_comment", comment_event("created", comment_id=9, text="hi", commented=6))
    events = stored(app)
    assert [e.event_name for e in reversed(events)] == ["issues.opened", "issues.edited", "issue_comment.created"]
    assert {e.item_key for e in events} == {"acme/web#1"}


def test_form_encoded_delivery_is_accepted(app, client):
    payload = json.dumps(issues_event("opened", number=12))
    body = urlencode({"payload": payload}).encode()
    r = post(client, "issues", body, Content_Type="application/x-www-form-urlencoded")
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    [ev] = stored(app)
    assert ev.item_key == "acme/web#12"


def test_wake_up_failure_does_not_fail_the_request(app, client):
    publisher = app.extensions["publisher"]
    r = post(client, "issues", issues_event("opened"))
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    deadline = time.time() + 15
    while publisher.failures == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert publisher.failures >= 1  # the broker is down: counted and left to the beat job
    assert len(stored(app)) == 1 and stored(app)[0].status == "pending"
    # ... and the next delivery is still answered at once.
    started = time.monotonic()
    assert post(client, "issues", issues_event("opened", number=2)).get_json()["status"] == "accepted"
    assert time.monotonic() - started < 1.0
