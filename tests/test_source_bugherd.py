"""The BugHerd source: parse outcomes, fields, timestamps, dedup keys, and bad input through the web app."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bridge import store
from bridge.events import BadDelivery, NormalizedEvent, Unauthorized
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS, enabled_sources
from bridge.sources.bugherd.webhook import FIELDS, TITLE_LIMIT, BugHerdSource
from bridge.store import schema as db
from bridge.web import create_app
from testkit.factories_trackers import (
    BUGHERD_TOKEN,
    bugherd_event,
    bugherd_path,
    bugherd_task,
    bugherd_user,
    encode,
    tracker_env,
)

SOURCE = BugHerdSource(BUGHERD_TOKEN)


def parse(event: str, payload: dict | bytes) -> NormalizedEvent:
    return SOURCE.parse(encode(payload), {}, event)


# -- verify -----------------------------------------------------------------------------------------------


def test_verify_accepts_the_token_and_refuses_anything_else():
    SOURCE.verify(b"{}", {}, path_token=BUGHERD_TOKEN)
    for wrong in ("", None, BUGHERD_TOKEN[:-1], BUGHERD_TOKEN + "x", BUGHERD_TOKEN.upper()):
        with pytest.raises(Unauthorized):
            SOURCE.verify(b"{}", {}, path_token=wrong)


def test_verify_compares_in_constant_time(monkeypatch):
    import bridge.sources.bugherd.webhook as module

    seen = []
    real = module.hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    with pytest.raises(Unauthorized):
        SOURCE.verify(b"{}", {}, path_token="guess")
    assert seen == [(BUGHERD_TOKEN.encode(), b"guess")]


def test_a_source_without_token_cannot_be_built():
    with pytest.raises(ValueError, match="BUGHERD_WEBHOOK_TOKEN"):
        BugHerdSource("")


# -- parse: actions and fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "action"),
    [("task_create", "created"), ("task_update", "updated"), ("task_destroy", "deleted")],
)
def test_task_events_become_item_actions(event, action):
    ev = parse(event, bugherd_event(event, updated=30))
    assert (ev.source, ev.item_kind, ev.item_key, ev.action, ev.event_name) == (
        "bugherd",
        "task",
        "41000217",
        action,
        event,
    )
    assert ev.source_project == "77120"  # routed by project id: stable across project renames
    assert ev.has_state and ev.comment is None


def test_task_fields_are_flat_and_complete():
    ev = parse(
        "task_update",
        bugherd_event(
            "task_update",
            title="Price overlaps the button",
            status="doing",
            priority="critical",
            tags=("checkout", "mobile"),
            assignee="tom.okafor@example.org",
            updated=30,
        ),
    )
    fields = ev.fields
    assert set(fields) == FIELDS
    assert fields == fields | {
        "title": "Price overlaps the button",
        "status": "doing",
        "status_id": 2,
        "priority": "critical",
        "priority_id": 1,
        "tag_names": ["checkout", "mobile"],
        "requester": "maria.lopez@example.org",
        "assignee": "tom.okafor@example.org",
        "assignees": ["tom.okafor@example.org"],
        "site": "https://shop.example.org",
        "url": "/products/blue-kettle",
        "page_url": "https://shop.example.org/products/blue-kettle",
        "screenshot_url": "https://bugherd-attachments.example.com/screens/41000217.png",
        "admin_link": "https://www.bugherd.com/projects/77120/tasks/58",
        "project_id": 77120,
        "project_name": "Storefront redesign",
        "local_task_id": 58,
        "task_id": 41000217,
        "external_id": "",
        "due_at": None,
    }
    assert KNOWN_FIELDS["bugherd"] == FIELDS
    json.dumps(ev.to_json())  # the worker gets it as JSON
    assert NormalizedEvent.from_json(json.loads(json.dumps(ev.to_json()))) == ev


def test_null_status_is_feedback_and_null_priority_is_not_set():
    ev = parse("task_create", bugherd_event("task_create", status=None, priority=None))
    assert ev.fields["status"] == "feedback" and ev.fields["status_id"] is None
    assert ev.fields["priority"] == "not set"


def test_a_custom_column_keeps_its_name():
    ev = parse("task_update", bugherd_event("task_update", status="Waiting on client"))
    assert ev.fields["status"] == "Waiting on client" and ev.fields["status_id"] == 6


def test_requester_falls_back_to_requester_email():
    task = bugherd_task()
    task["requester"] = None
    assert parse("task_create", {"task": task}).fields["requester"] == "maria.lopez@example.org"


@pytest.mark.parametrize(
    ("site", "url", "expected"),
    [
        ("https://shop.example.org", "/products/1", "https://shop.example.org/products/1"),
        ("https://shop.example.org/", "products/1", "https://shop.example.org/products/1"),
        ("https://shop.example.org", "https://cdn.example.org/x", "https://cdn.example.org/x"),
        ("", "/products/1", "/products/1"),
        ("https://shop.example.org", "", "https://shop.example.org"),
    ],
)
def test_page_url_joins_site_and_url(site, url, expected):
    assert parse("task_create", bugherd_event("task_create", site=site, url=url)).fields["page_url"] == expected


# -- titles -------------------------------------------------------------------------------------------------


def test_null_title_falls_back_to_the_first_line_of_the_description():
    ev = parse("task_create", bugherd_event("task_create", title=None, description="\n  Price overlaps\nmore"))
    assert ev.fields["title"] == "Price overlaps"
    assert ev.fields["description"] == "\n  Price overlaps\nmore"  # the description itself is untouched


def test_a_long_first_line_is_truncated_for_the_title():
    ev = parse("task_create", bugherd_event("task_create", title="  ", description="x" * 500))
    assert len(ev.fields["title"]) == TITLE_LIMIT and ev.fields["title"].endswith("…")


def test_no_title_and_no_description_still_gives_a_name():
    ev = parse("task_create", bugherd_event("task_create", title=None, description=None))
    assert ev.fields["title"] == "BugHerd task #58" and ev.fields["description"] == ""


# -- timestamps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("millis", [True, False])
def test_source_ts_is_the_tasks_updated_at_with_or_without_milliseconds(millis):
    ev = parse("task_update", bugherd_event("task_update", updated=30.25, millis=millis))
    expected = datetime(2026, 3, 2, 9, 0, 30, 250000 if millis else 0, tzinfo=UTC)
    assert ev.source_ts == expected


def test_a_timestamp_with_an_offset_is_converted_to_utc():
    task = bugherd_task()
    task["updated_at"] = "2026-03-02T11:00:00.500+02:00"
    assert parse("task_update", {"task": task}).source_ts == datetime(2026, 3, 2, 9, 0, 0, 500000, tzinfo=UTC)


def test_a_destroy_is_never_older_than_its_deletion():
    payload = bugherd_event("task_destroy", updated=30, deleted=45)
    assert parse("task_destroy", payload).source_ts == datetime(2026, 3, 2, 9, 0, 45, tzinfo=UTC)


def test_a_bad_timestamp_is_a_bad_delivery():
    task = bugherd_task()
    task["updated_at"] = "yesterday"
    with pytest.raises(BadDelivery, match=r"task\.updated_at"):
        parse("task_update", {"task": task})


# -- comments ---------------------------------------------------------------------------------------------


def test_comment_carries_the_comment_and_the_whole_task():
    ev = parse(
        "comment",
        bugherd_event("comment", comment_id=5, text="Seen on iOS too", commented=40, status="doing", tags=("ui",)),
    )
    assert ev.action == "comment_created" and ev.item_key == "41000217" and ev.has_state
    assert ev.comment is not None
    assert (ev.comment.id, ev.comment.body, ev.comment.author, ev.comment.url) == (
        "5",
        "Seen on iOS too",
        "Tom Okafor",
        "https://www.bugherd.com/projects/77120/tasks/58",
    )
    assert ev.comment.created_at == datetime(2026, 3, 2, 9, 0, 40, tzinfo=UTC)
    assert ev.fields["status"] == "doing" and ev.fields["tag_names"] == ["ui"]
    assert ev.source_ts == datetime(2026, 3, 2, 9, 0, 40, tzinfo=UTC)  # the task's updated_at


def test_comment_author_falls_back_to_email_then_nothing():
    ev = parse("comment", bugherd_event("comment", author=bugherd_user(name="")))
    assert ev.comment is not None and ev.comment.author == "tom.okafor@example.org"
    payload = bugherd_event("comment")
    del payload["comment"]["user"]
    ev = parse("comment", payload)
    assert ev.comment is not None and ev.comment.author == ""


def test_a_deleted_comment_is_comment_deleted():
    ev = parse("comment", bugherd_event("comment", commented=40, deleted=50))
    assert ev.action == "comment_deleted" and ev.comment is not None and ev.comment.id == "18800452"


# -- bad bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("task_create", {}, "task: expected an object"),
        ("task_update", {"task": [1]}, "task: expected an object"),
        ("task_update", {"comment": {"id": 1, "task": bugherd_task()}}, "task: expected an object"),
        ("comment", {"task": bugherd_task()}, "comment: expected an object"),
        ("comment", {"comment": {"id": 1, "text": "x"}}, "comment.task: expected an object"),
        ("task_create", {"task": {**bugherd_task(), "id": None}}, "task.id"),
        ("task_create", {"task": {**bugherd_task(), "project_id": "abc"}}, "task.project_id"),
        ("task_create", {"task": {**bugherd_task(), "tag_names": "ui"}}, "task.tag_names"),
        ("task_create", {"task": {**bugherd_task(), "updated_at": None, "created_at": None}}, "updated_at"),
        ("task_create", b"[1, 2]", "must be a JSON object"),
        ("task_create", b"{not json", "not valid JSON"),
        ("task_renamed", bugherd_event("task_create"), "unknown BugHerd event"),
        (None, bugherd_event("task_create"), "unknown BugHerd event"),
    ],
)
def test_bad_bodies_say_what_is_wrong(event, payload, reason):
    with pytest.raises(BadDelivery, match=reason):
        parse(event, payload)


def test_string_ids_are_accepted():
    task = {**bugherd_task(), "id": "41000217", "project_id": "77120"}
    ev = parse("task_create", {"task": task})
    assert ev.item_key == "41000217" and ev.source_project == "77120" and ev.fields["task_id"] == 41000217


# -- dedup keys -------------------------------------------------------------------------------------------


def test_dedup_key_is_stable_per_event_and_body_and_distinct_otherwise():
    body = encode(bugherd_event("task_update", updated=30))
    key = SOURCE.dedup_key(body, {}, "task_update")
    assert key == SOURCE.dedup_key(body, {}, "task_update")  # a retried delivery
    assert key.startswith("task_update:") and len(key) <= 255
    assert key != SOURCE.dedup_key(body, {}, "task_create")  # the same body on another event's URL
    assert key != SOURCE.dedup_key(encode(bugherd_event("task_update", updated=31)), {}, "task_update")


# -- through the web app ----------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    app = create_app(load_settings(tracker_env(tmp_path)))
    app.testing = True
    return app


def stored(app) -> list:
    return store.list_events(app.extensions["bridge"].engine)


def post(client, path: str, payload: dict | bytes):
    return client.post(path, data=encode(payload), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("event", ["task_create", "task_update", "comment", "task_destroy"])
def test_each_event_url_is_accepted_and_stored(app, event):
    client = app.test_client()
    r = post(client, bugherd_path(event), bugherd_event(event, updated=10))
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    [ev] = stored(app)
    assert ev.id == r.get_json()["event_id"] and ev.source == "bugherd" and ev.event_name == event
    headers, _payload = store.get_raw_delivery(app.extensions["bridge"].engine, ev.id)
    assert headers["X-Bridge-Event"] == event
    # The token lives in the URL only: it is kept nowhere.
    assert BUGHERD_TOKEN not in json.dumps(headers) + json.dumps(ev.event.to_json()) + (ev.notes or "")


def test_a_repeated_delivery_is_a_duplicate(app):
    client = app.test_client()
    body = bugherd_event("task_update", updated=10)
    first = post(client, bugherd_path("task_update"), body).get_json()
    second = post(client, bugherd_path("task_update"), body)
    assert second.status_code == 200
    assert second.get_json() == {"status": "duplicate", "event_id": first["event_id"]}
    assert len(stored(app)) == 1


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        (bugherd_path("task_create", token="wrong-token"), 401, "token in the webhook URL is wrong"),
        (bugherd_path("task_renamed", token="wrong-token"), 401, "token in the webhook URL is wrong"),
        (
            bugherd_path("task_renamed"),
            404,
            "unknown BugHerd event 'task_renamed' (expected one of task_create, task_update, comment, task_destroy)",
        ),
        (f"/webhooks/bugherd/{BUGHERD_TOKEN}", 404, "the webhook URL must end with the BugHerd event"),
    ],
)
def test_wrong_token_or_event_is_refused_and_nothing_is_stored(app, path, code, reason):
    r = post(app.test_client(), path, bugherd_event("task_create"))
    assert r.status_code == code and r.status_code != 410  # 410 would make BugHerd delete the webhook
    assert r.get_json()["status"] == "error" and reason in r.get_json()["error"]
    assert stored(app) == []


@pytest.mark.parametrize(
    ("event", "body", "reason"),
    [
        ("task_create", b"{not json", "not valid JSON"),
        ("task_create", b"", "not valid JSON"),
        ("task_create", b'"a string"', "must be a JSON object"),
        ("task_create", b"[]", "must be a JSON object"),
        ("task_update", encode({"comment": {"id": 1}}), "task: expected an object"),
        ("comment", encode(bugherd_event("task_create")), "comment: expected an object"),
        ("task_create", encode({"task": {"id": 1}}), "task.project_id"),
    ],
)
def test_bad_bodies_get_400_and_nothing_is_stored(app, event, body, reason):
    r = post(app.test_client(), bugherd_path(event), body)
    assert r.status_code == 400 and reason in r.get_json()["error"]
    assert stored(app) == []


def test_the_source_is_disabled_without_a_token(tmp_path):
    settings = load_settings(tracker_env(tmp_path, BUGHERD_WEBHOOK_TOKEN=""))
    assert "bugherd" not in enabled_sources(settings)
    app = create_app(settings)
    r = post(app.test_client(), bugherd_path("task_create"), bugherd_event("task_create"))
    assert r.status_code == 401 and "disabled" in r.get_json()["error"]
    assert stored(app) == []


def test_answers_without_a_stored_event_are_counted_for_metrics(app):
    client = app.test_client()
    post(client, bugherd_path("task_update"), bugherd_event("task_update"))
    post(client, bugherd_path("task_update"), bugherd_event("task_update"))
    post(client, bugherd_path("task_update", token="nope"), bugherd_event("task_update"))
    post(client, bugherd_path("task_gone"), bugherd_event("task_update"))  # the made-up name is not a label
    with app.extensions["bridge"].engine.connect() as conn:
        rows = {(r.source, r.event, r.answer): r.count for r in conn.execute(select(db.intake_counters))}
    assert rows == {
        ("bugherd", "task_update", "duplicate"): 1,
        ("bugherd", "", "unauthorized"): 1,
        ("bugherd", "", "not_found"): 1,
    }
