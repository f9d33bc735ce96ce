"""Errors answer JSON: a locked database is a retryable 503 with Retry-After, anything unexpected a 500 with
an error id that is logged with its traceback; and the start-up warning about an open /metrics."""

from __future__ import annotations

import logging
import sqlite3

from sqlalchemy import event, func, select

from bridge.settings import load_settings
from bridge.store import schema as db
from bridge.web import create_app, warn_if_metrics_open
from testkit.factories import github_request, issues_event
from testkit.harness import GITHUB_SECRET


def _app(tmp_path, **extra):
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "MAPPINGS_DIR": str(tmp_path / "mappings"),
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        **extra,
    }
    return create_app(load_settings(env))


def test_a_locked_database_answers_503_with_retry_after_and_the_redelivery_is_stored(tmp_path):
    app = _app(tmp_path)
    engine = app.extensions["bridge"].engine
    engine.dispose()
    # The real lock, a short wait (the shipped 30 s busy timeout would make this test slow).
    event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout = 200"))
    body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened"))
    holder = sqlite3.connect(tmp_path / "b.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = app.test_client().post("/webhooks/github", data=body, headers=headers)
    finally:
        holder.rollback()
        holder.close()
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.data[:300]
    assert r.is_json and r.get_json()["error_id"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.events)).scalar_one() == 0
    again = app.test_client().post("/webhooks/github", data=body, headers=headers)  # the sender redelivers
    assert again.status_code == 200 and again.get_json()["status"] == "accepted"


def test_an_unexpected_error_is_json_with_an_error_id_in_the_log(tmp_path, caplog):
    app = _app(tmp_path)

    def broken():
        raise RuntimeError("boom")

    app.add_url_rule("/broken", "broken", broken)
    with caplog.at_level(logging.ERROR, logger="bridge.web"):
        r = app.test_client().get("/broken")
    assert r.status_code == 500 and r.is_json
    error_id = r.get_json()["error_id"]
    record = next(rec for rec in caplog.records if getattr(rec, "error_id", None) == error_id)
    assert record.exc_info and "boom" in str(record.exc_info[1])
    assert "boom" not in r.get_data(as_text=True)  # the detail stays in the log


def test_unknown_paths_and_methods_answer_json(tmp_path):
    client = _app(tmp_path).test_client()
    for r in (client.get("/nope"), client.get("/webhooks/github")):
        assert r.status_code in (404, 405) and r.is_json and r.get_json()["status"] == "error"


def test_an_open_metrics_endpoint_on_a_public_bind_is_warned_about(tmp_path, caplog):
    settings = load_settings({"BRIDGE_DATA_DIR": str(tmp_path), "BROKER_URL": "redis://127.0.0.1:1/0"})
    with caplog.at_level(logging.WARNING, logger="bridge.web"):
        warn_if_metrics_open(settings, "127.0.0.1:8000")
        warn_if_metrics_open(settings, "unix:/run/bridge.sock")
        assert not caplog.records
        warn_if_metrics_open(settings, "0.0.0.0:8000")
    assert "METRICS_TOKEN" in caplog.text
    caplog.clear()
    token = load_settings(
        {"BRIDGE_DATA_DIR": str(tmp_path), "BROKER_URL": "redis://127.0.0.1:1/0", "METRICS_TOKEN": "t"}
    )
    with caplog.at_level(logging.WARNING, logger="bridge.web"):
        warn_if_metrics_open(token, "0.0.0.0:8000")
    assert not caplog.records


def test_a_delivery_not_stored_within_the_deadline_is_a_503_before_the_sender_gives_up(tmp_path, monkeypatch):
    """With SQLite's shipped 30 s busy timeout a locked file held the answer 30 s, after GitHub's 10 s give-up. The
    answer now comes at the intake's deadline (8 s, shortened here), and a row stored after it is found again."""
    import time

    from bridge.web import intake

    assert intake.STORE_DEADLINE_SECONDS < 10  # GitHub's webhook timeout
    monkeypatch.setattr(intake, "STORE_DEADLINE_SECONDS", 1.0)
    app = _app(tmp_path)
    engine = app.extensions["bridge"].engine
    body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened"))
    holder = sqlite3.connect(tmp_path / "b.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        r = app.test_client().post("/webhooks/github", data=body, headers=headers)
        took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit() and r.is_json, r.data[:300]
    assert took < 5, took
    # the writer stores the row once the lock is gone; the sender's redelivery is then a duplicate, not a second
    again = app.test_client().post("/webhooks/github", data=body, headers=headers)
    assert again.status_code == 200 and again.get_json()["status"] in ("accepted", "duplicate")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.events)).scalar_one() == 1


WEBHOOK_PATHS = [
    "/webhooks/github",
    "/webhooks/github/",
    "/webhooks/github/x",
    "/webhooks//github",
    "/webhooks/bugzilla",
    "/webhooks/bugzilla/",
    "/webhooks/bugherd",
    "/webhooks/bugherd/",
    "/webhooks/bugherd/tok",
    "/webhooks/bugherd/tok/",
    "/webhooks/bugherd/tok/task_create",
    "/webhooks/bugherd/tok/task_create/",
    "/webhooks/bugherd/tok/task_create/more",
    "/webhooks/bugherd//task_create",
    "/webhooks/bugherd/t%C3%B6k/comment_create".replace("%C3%B6", "\u00c3\u00b6"),  # UTF-8 bytes, as WSGI hands them
    "/webhooks/zoho/tok",
    "/webhooks/GitHub",
]


def test_the_webhook_paths_served_before_flask_are_exactly_flasks_webhook_routes(tmp_path):
    """`WebhookRoutes` answers a POST itself only where Flask's routes would have run the same view with the same
    arguments; every other path (a trailing slash, a missing or extra segment) still gets Flask's answer."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    from bridge.web import intake

    app = _app(tmp_path)
    views = {"intake.github": "github", "intake.bugzilla": "bugzilla", "intake.bugherd": "bugherd"}
    adapter = app.url_map.bind("localhost")
    for path in WEBHOOK_PATHS:
        try:
            endpoint, args = adapter.match(path.encode("latin-1").decode("utf-8"), method="POST")
            flask = (views[endpoint], args.get("event"), args.get("token")) if endpoint in views else None
        except (HTTPException, RequestRedirect):
            flask = None
        assert intake.route(path) == flask, path


def test_an_unexpected_error_in_a_delivery_is_json_with_an_error_id_and_stores_nothing(tmp_path, caplog, monkeypatch):
    """A delivery is answered before Flask (bridge/web/intake.py): an exception there gets the app's answer too,
    a 500 naming only an error id, the detail in the log; nothing is stored, so the sender's retry is not a
    duplicate."""
    app = _app(tmp_path)
    source = app.extensions["sources"]["github"]

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom in the parser")

    monkeypatch.setattr(source, "parse", broken)
    body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened"))
    with caplog.at_level(logging.ERROR):
        r = app.test_client().post("/webhooks/github", data=body, headers=headers)
    assert r.status_code == 500 and r.is_json, r.data[:300]
    error_id = r.get_json()["error_id"]
    record = next(rec for rec in caplog.records if getattr(rec, "error_id", None) == error_id)
    assert record.exc_info and "boom" in str(record.exc_info[1]) and record.path == "/webhooks/github"
    assert "boom" not in r.get_data(as_text=True)
    engine = app.extensions["bridge"].engine
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.events)).scalar_one() == 0
