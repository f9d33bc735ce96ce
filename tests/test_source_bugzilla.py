"""The Bugzilla source: auth header, parse outcomes, fields, timestamps, dedup keys, and bad input via the web app."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bridge import store
from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent, Unauthorized
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS, enabled_sources
from bridge.sources.bugzilla.webhook import FIELDS, PRIVATE_BUG_NOTE, BugzillaSource
from bridge.store import schema as db
from bridge.web import create_app
from testkit.factories_trackers import (
    BUGZILLA_SECRET,
    bugzilla_attachment,
    bugzilla_bug,
    bugzilla_comment,
    bugzilla_event,
    bugzilla_headers,
    encode,
    tracker_env,
)

BMO = "https://bugzilla.mozilla.org"
SOURCE = BugzillaSource(BUGZILLA_SECRET, bugzilla_url=BMO)


def parse(payload: dict | bytes, source: BugzillaSource = SOURCE) -> NormalizedEvent:
    return source.parse(encode(payload), {}, None)


def at(seconds: int) -> datetime:
    return datetime(2026, 3, 2, 9, 0, seconds, tzinfo=UTC)


# -- verify -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        BUGZILLA_SECRET,
        f"Token {BUGZILLA_SECRET}",
        f"Bearer {BUGZILLA_SECRET}",
        f"token  {BUGZILLA_SECRET}",
        f" {BUGZILLA_SECRET} ",
    ],
)
def test_verify_accepts_the_secret_with_or_without_a_scheme(value):
    SOURCE.verify(b"{}", {"Authorization": value})


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Authorization header"),
        ({"Authorization": ""}, "missing Authorization header"),
        ({"Authorization": "wrong"}, "does not match"),
        ({"Authorization": f"Basic {BUGZILLA_SECRET}"}, "does not match"),
        ({"Authorization": BUGZILLA_SECRET[:-1]}, "does not match"),
        ({"Authorization": "Token"}, "does not match"),
        ({"X-Api-Key": BUGZILLA_SECRET}, "missing Authorization header"),
    ],
)
def test_verify_refuses_a_missing_or_wrong_header(headers, reason):
    with pytest.raises(Unauthorized, match=reason):
        SOURCE.verify(b"{}", headers)


def test_verify_uses_the_configured_header_name():
    source = BugzillaSource(BUGZILLA_SECRET, header="X-Api-Key")
    source.verify(b"{}", {"X-Api-Key": BUGZILLA_SECRET})
    with pytest.raises(Unauthorized, match="missing X-Api-Key header"):
        source.verify(b"{}", {"Authorization": BUGZILLA_SECRET})


def test_a_secret_that_has_a_scheme_must_be_sent_whole():
    source = BugzillaSource("Token abc123")
    source.verify(b"{}", {"Authorization": "Token abc123"})
    with pytest.raises(Unauthorized):
        source.verify(b"{}", {"Authorization": "abc123"})


def test_verify_compares_in_constant_time(monkeypatch):
    import bridge.sources.bugzilla.webhook as module

    seen = []
    real = module.hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    with pytest.raises(Unauthorized):
        SOURCE.verify(b"{}", {"Authorization": "Token guess"})
    assert seen == [(BUGZILLA_SECRET.encode(), b"guess")]


def test_a_source_without_secret_cannot_be_built():
    with pytest.raises(ValueError, match="BUGZILLA_WEBHOOK_SECRET"):
        BugzillaSource("  ")


# -- bug events -------------------------------------------------------------------------------------------


def test_bug_create_is_created_with_all_fields():
    ev = parse(bugzilla_event("bug", "create", keywords=("regression",), changed=5))
    assert (ev.source, ev.item_kind, ev.item_key, ev.action, ev.event_name) == (
        "bugzilla",
        "bug",
        "1629704",
        "created",
        "bug.create",
    )
    assert ev.source_project == "Firefox" and ev.has_state and ev.comment is None and ev.notes == ()
    assert ev.source_ts == at(5)
    assert set(ev.fields) | {"description"} == FIELDS and KNOWN_FIELDS["bugzilla"] == FIELDS
    assert ev.fields == ev.fields | {
        "id": 1629704,
        "summary": "Checkout button unresponsive after login",
        "status": "NEW",
        "resolution": "",
        "status_resolution": "NEW",
        "severity": "--",
        "priority": "",
        "classification": "Client Software",
        "product": "Firefox",
        "component": "Sync",
        "keywords": ["regression"],
        "keywords_and_type": ["regression", "defect"],
        "type": "defect",
        "assigned_to": "nobody@mozilla.org",
        "creator": "reporter@example.org",
        "op_sys": "Unspecified",
        "is_private": False,
        "bug_url": "https://bugzilla.mozilla.org/show_bug.cgi?id=1629704",
    }
    assert NormalizedEvent.from_json(json.loads(json.dumps(ev.to_json()))) == ev


def test_bug_modify_is_updated_with_status_and_resolution_combined():
    changes = [
        {"field": "status", "removed": "NEW", "added": "RESOLVED"},
        {"field": "resolution", "removed": "", "added": "FIXED"},
    ]
    ev = parse(bugzilla_event("bug", "modify", status="RESOLVED", resolution="FIXED", changes=changes, changed=9))
    assert ev.action == "updated" and ev.event_name == "bug.modify"
    assert ev.fields["status_resolution"] == "RESOLVED/FIXED"


def test_bug_url_is_empty_without_bugzilla_url():
    ev = parse(bugzilla_event("bug", "create"), BugzillaSource(BUGZILLA_SECRET))
    assert ev.fields["bug_url"] == ""


def test_alias_as_a_list_is_joined():
    bug = {**bugzilla_bug(), "alias": ["CVE-2026-1", "login-crash"]}
    assert parse(bugzilla_event("bug", "create", bug=bug)).fields["alias"] == "CVE-2026-1, login-crash"


def test_a_private_bug_has_no_state_and_says_why():
    ev = parse(bugzilla_event("bug", "modify", bug=bugzilla_bug(bug_id=2, private=True), at=7))
    assert ev.action == "updated" and ev.item_key == "2" and not ev.has_state
    assert ev.fields == {"id": 2, "is_private": True}
    assert ev.notes == (PRIVATE_BUG_NOTE,)
    assert ev.source_ts == at(7)  # no last_change_time: the event's time
    assert ev.source_project == ""


# -- comments ---------------------------------------------------------------------------------------------


def test_comment_create_is_comment_created():
    payload = bugzilla_event(
        "comment",
        "create",
        comment=bugzilla_comment(comment_id=77, number=3, text="Still broken in 124", commented=12),
        changed=12,
        user="qa@example.org",
    )
    ev = parse(payload)
    assert ev.action == "comment_created" and ev.event_name == "comment.create" and ev.has_state
    assert ev.comment is not None
    assert (ev.comment.id, ev.comment.body, ev.comment.author, ev.comment.url) == (
        "77",
        "Still broken in 124",
        "qa@example.org",
        "https://bugzilla.mozilla.org/show_bug.cgi?id=1629704#c3",
    )
    assert ev.comment.created_at == at(12)
    assert "description" not in ev.fields  # unknown here: the last known description stays in Zoho


def test_comment_url_is_empty_without_bugzilla_url():
    payload = bugzilla_event("comment", "create", comment=bugzilla_comment())
    ev = parse(payload, BugzillaSource(BUGZILLA_SECRET))
    assert ev.comment is not None and ev.comment.url == ""


def test_comment_zero_is_the_description_not_a_comment():
    payload = bugzilla_event("comment", "create", comment=bugzilla_comment(number=0, text="Steps:\n1. log in"))
    ev = parse(payload)
    assert ev.action == "updated" and ev.comment is None and ev.has_state
    assert ev.fields["description"] == "Steps:\n1. log in"


def test_a_private_comment_is_ignored():
    payload = bugzilla_event(
        "comment", "create", bug={"id": 1629704, "is_private": False, "comment": {"id": 5, "is_private": True}}
    )
    with pytest.raises(IgnoredEvent, match="private comment"):
        parse(payload)


def test_a_visible_comment_on_a_private_bug_keeps_the_comment_without_state():
    bug = {"id": 2, "is_private": True, "comment": bugzilla_comment(comment_id=9, number=4)}
    ev = parse(bugzilla_event("comment", "create", bug=bug))
    assert ev.action == "comment_created" and not ev.has_state and ev.comment is not None
    assert ev.fields == {"id": 2, "is_private": True}


# -- ignored and bad --------------------------------------------------------------------------------------


def test_a_new_attachment_is_an_update_carrying_it_and_changes_to_one_are_ignored():
    ev = parse(bugzilla_event("attachment", "create", attachment=bugzilla_attachment(attachment_id=77)))
    assert (ev.action, ev.event_name, ev.has_state) == ("updated", "attachment.create", True)
    assert ev.fields["attachment"]["id"] == 77 and ev.fields["attachment"]["file_name"] == "file_1629704.txt"
    assert "data" not in ev.fields["attachment"]  # the content is fetched later, only if the mapping wants it
    with pytest.raises(IgnoredEvent, match="attachments are not synced"):
        parse(bugzilla_event("attachment", "modify", attachment=bugzilla_attachment()))
    with pytest.raises(IgnoredEvent, match="private attachment"):
        parse(bugzilla_event("attachment", "create", attachment={"id": 5, "is_private": True}))


@pytest.mark.parametrize(("target", "action"), [("comment", "modify"), ("bug", "delete"), ("flag", "create")])
def test_unknown_targets_and_actions_are_ignored(target, action):
    with pytest.raises(IgnoredEvent, match=f"{target}.{action} is not synced"):
        parse(bugzilla_event(target, action, comment=bugzilla_comment()))


def test_target_is_inferred_when_an_old_bugzilla_strips_it():
    payload = bugzilla_event("comment", "create", comment=bugzilla_comment(number=2))
    del payload["event"]["target"], payload["event"]["routing_key"]
    assert parse(payload).action == "comment_created"
    payload = bugzilla_event("bug", "modify", comment=bugzilla_comment(number=2))  # BMO's sample carries one
    del payload["event"]["target"], payload["event"]["routing_key"]
    assert parse(payload).action == "updated"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"bug": bugzilla_bug()}, "event: expected an object"),
        ({"event": "bug.create", "bug": bugzilla_bug()}, "event: expected an object"),
        ({"event": {"target": "bug"}, "bug": bugzilla_bug()}, "event.action"),
        ({"event": {"action": "create", "target": "bug"}}, "bug: expected an object"),
        ({"event": {"action": "create", "target": "bug"}, "bug": {"summary": "x"}}, "bug.id"),
        ({"event": {"action": "create", "target": "bug"}, "bug": {"id": True}}, "bug.id"),
        ({"event": {"action": "create", "target": "bug"}, "bug": {**bugzilla_bug(), "keywords": "x"}}, "keywords"),
        (bugzilla_event("comment", "create"), "bug.comment"),
        (b"{nope", "not valid JSON"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_bad_bodies_name_the_field(payload, reason):
    with pytest.raises(BadDelivery, match=reason):
        parse(payload)


# -- timestamps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["2026-03-02T09:00:05", "2026-03-02T09:00:05Z", "2026-03-02T09:00:05+00:00", "2026-03-02T10:00:05+01:00"],
)
def test_last_change_time_with_or_without_offset_is_utc(value):
    bug = {**bugzilla_bug(), "last_change_time": value}
    assert parse(bugzilla_event("bug", "modify", bug=bug)).source_ts == at(5)


def test_event_time_is_used_when_the_bug_has_no_last_change_time():
    payload = bugzilla_event("bug", "create", changed=None, at=3)
    payload["event"]["time"] = "2026-03-02T09:00:03.495000+00:00"
    assert parse(payload).source_ts == datetime(2026, 3, 2, 9, 0, 3, 495000, tzinfo=UTC)


def test_no_time_at_all_is_a_bad_delivery():
    payload = bugzilla_event("bug", "create", changed=None)
    del payload["event"]["time"]
    with pytest.raises(BadDelivery, match=r"event\.time"):
        parse(payload)


# -- dedup keys -------------------------------------------------------------------------------------------


def key(payload: dict) -> str:
    return SOURCE.dedup_key(encode(payload), {}, None)


def test_dedup_key_is_stable_and_names_the_event():
    payload = bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=77), changed=4)
    assert key(payload) == key(json.loads(json.dumps(payload)))
    assert key(payload).startswith("23:1629704:comment.create:2026-03-02T09:00:04:77:")


def test_two_modifies_in_the_same_second_with_different_changes_are_distinct():
    one = bugzilla_event("bug", "modify", changes=[{"field": "priority", "removed": "P3", "added": "P1"}], changed=4)
    two = bugzilla_event("bug", "modify", changes=[{"field": "priority", "removed": "P1", "added": "P2"}], changed=4)
    assert one["event"]["routing_key"] == two["event"]["routing_key"] and one["event"]["time"] == two["event"]["time"]
    assert key(one) != key(two)


def test_same_second_deliveries_with_the_same_changes_but_another_state_are_distinct():
    one = bugzilla_event("bug", "modify", changes=[{"field": "priority", "removed": "P3", "added": "P1"}], changed=4)
    two = json.loads(json.dumps(one))
    two["bug"]["summary"] = "renamed in the same second"
    assert key(one) != key(two)
    assert key(one) == key(json.loads(json.dumps(one)))  # a resend is still a duplicate


def test_dedup_key_differs_by_comment_bug_webhook_and_time():
    base = key(bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=1)))
    assert base != key(bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=2)))
    assert base != key(bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=1), bug_id=5))
    assert base != key(bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=1), webhook_id=24))
    assert base != key(bugzilla_event("comment", "create", comment=bugzilla_comment(comment_id=1), at=1))


def test_dedup_key_fits_the_column_with_a_long_routing_key():
    changes = [{"field": f"cf_custom_field_{i}", "removed": "", "added": "x"} for i in range(40)]
    assert len(key(bugzilla_event("bug", "modify", changes=changes))) <= 255


# -- through the web app ----------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    app = create_app(load_settings(tracker_env(tmp_path, BUGZILLA_URL=BMO)))
    app.testing = True
    return app


def stored(app) -> list:
    return store.list_events(app.extensions["bridge"].engine)


def post(app, payload: dict | bytes, headers: dict[str, str] | None = None):
    return app.test_client().post(
        "/webhooks/bugzilla", data=encode(payload), headers=bugzilla_headers() if headers is None else headers
    )


def test_an_accepted_delivery_gets_exactly_200_and_is_stored(app):
    r = post(app, bugzilla_event("bug", "create"))
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    [ev] = stored(app)
    assert (ev.source, ev.event_name, ev.item_key) == ("bugzilla", "bug.create", "1629704")
    headers, _ = store.get_raw_delivery(app.extensions["bridge"].engine, ev.id)
    assert "Authorization" not in headers and BUGZILLA_SECRET not in json.dumps(headers)


def test_a_repeated_delivery_is_a_duplicate_with_200(app):
    payload = bugzilla_event("bug", "modify", changes=[{"field": "priority", "removed": "", "added": "P1"}])
    first = post(app, payload).get_json()
    r = post(app, payload)
    assert r.status_code == 200 and r.get_json() == {"status": "duplicate", "event_id": first["event_id"]}
    assert len(stored(app)) == 1


@pytest.mark.parametrize(
    "payload",
    [
        bugzilla_event("attachment", "modify", attachment=bugzilla_attachment()),
        bugzilla_event("comment", "create", bug={"id": 1, "is_private": False, "comment": {"id": 5, "is_private": 1}}),
        bugzilla_event("bug", "delete"),
    ],
)
def test_an_ignored_delivery_gets_exactly_200_and_nothing_is_stored(app, payload):
    r = post(app, payload)
    assert r.status_code == 200 and r.get_json()["status"] == "ignored" and r.get_json()["event_id"] is None
    assert stored(app) == []


def test_a_private_bug_is_accepted_and_stored_with_its_note(app):
    r = post(app, bugzilla_event("bug", "modify", bug=bugzilla_bug(bug_id=2, private=True)))
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    [ev] = stored(app)
    assert not ev.event.has_state and PRIVATE_BUG_NOTE in (ev.notes or "")


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        bugzilla_headers("wrong"),
        bugzilla_headers(BUGZILLA_SECRET, header="X-Api-Key"),
    ],
)
def test_a_wrong_or_missing_header_gets_401_and_nothing_is_stored(app, headers):
    r = post(app, bugzilla_event("bug", "create"), headers)
    assert r.status_code == 401 and r.get_json()["status"] == "error"
    assert stored(app) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"42", "must be a JSON object"),
        (b'["bug"]', "must be a JSON object"),
        (encode({"bug": bugzilla_bug()}), "event: expected an object"),
        (encode({"event": {"action": "create", "target": "bug"}, "bug": {"summary": "x"}}), "bug.id"),
    ],
)
def test_bad_bodies_get_400_and_nothing_is_stored(app, body, reason):
    r = post(app, body)
    assert r.status_code == 400 and reason in r.get_json()["error"]
    assert stored(app) == []


def test_a_custom_header_carrying_the_secret_is_never_stored(tmp_path):
    # Even a header the bridge normally keeps is dropped when it is the configured auth header.
    app = create_app(load_settings(tracker_env(tmp_path, BUGZILLA_WEBHOOK_HEADER="User-Agent")))
    headers = {"Content-Type": "application/json", "User-Agent": BUGZILLA_SECRET}
    assert post(app, bugzilla_event("bug", "create"), headers).status_code == 200
    [ev] = stored(app)
    raw_headers, _ = store.get_raw_delivery(app.extensions["bridge"].engine, ev.id)
    assert "User-Agent" not in raw_headers and BUGZILLA_SECRET not in json.dumps(raw_headers)


def test_the_source_is_disabled_without_a_secret(tmp_path):
    settings = load_settings(tracker_env(tmp_path, BUGZILLA_WEBHOOK_SECRET=""))
    assert "bugzilla" not in enabled_sources(settings)
    app = create_app(settings)
    r = post(app, bugzilla_event("bug", "create"))
    assert r.status_code == 401 and "disabled" in r.get_json()["error"]
    assert stored(app) == []


def test_answers_without_a_stored_event_are_counted_for_metrics(app):
    post(app, bugzilla_event("attachment", "modify", attachment=bugzilla_attachment()))
    post(app, bugzilla_event("bug", "create"))
    post(app, bugzilla_event("bug", "create"))
    post(app, bugzilla_event("bug", "create"), bugzilla_headers("wrong"))
    post(app, b"[]")
    with app.extensions["bridge"].engine.connect() as conn:
        rows = {(r.source, r.event, r.answer): r.count for r in conn.execute(select(db.intake_counters))}
    assert rows == {
        ("bugzilla", "attachment.modify", "ignored"): 1,
        ("bugzilla", "bug.create", "duplicate"): 1,
        ("bugzilla", "", "unauthorized"): 1,
        ("bugzilla", "", "bad_request"): 1,
    }
