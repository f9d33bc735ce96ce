"""Intake's per-delivery work (issue 24): what was taken off the hot path still gives the same answers.

- nesting depth is measured on what `json.loads` parsed, not by two regular-expression passes over the raw
  bytes: the same depths are accepted and refused, with the same message, and a body too deep for the parser
  itself is still refused for its depth;
- a wake-up for a batch of items carries them all, described in a few characters instead of a repr of the batch;
- the answer to an accepted delivery is the JSON it always was;
- the group commit's batch is stored (on PostgreSQL in a few statements: bindings read at once, one INSERT for
  the events, one for the counters) with the same outcome per delivery as one at a time, on both databases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.events import BadDelivery
from bridge.process.broker import TASK_WAKE_ITEMS
from bridge.sources.common import load_json_object
from bridge.sources.validate import MAX_DEPTH, check_depth, depth_of
from bridge.web.publisher import WakePublisher
from testkit.dbs import engine  # noqa: F401  (the fixture)
from testkit.factories import bug_event, github_issue_id, issues_event
from testkit.harness import wait_for
from tests.test_settings_reload import home  # noqa: F401  (the fixture)


def _nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for n in range(levels):
        value = [value] if n % 2 else {"k": value, "s": "]]]]}}}}"}
    return value


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": 1},
        {"a": [1, {"b": []}]},
        {"s": "[[[[{{{{", "t": ["]]]", {"u": '\\"[{'}]},
        _nested(MAX_DEPTH - 1),
        _nested(MAX_DEPTH),
        _nested(MAX_DEPTH + 1),
        _nested(200),
        {"wide": [[i, {"x": [i]}] for i in range(50)], "deep": _nested(10)},
    ],
)
def test_the_depth_of_the_parsed_body_is_the_depth_of_its_text(value):
    body = json.dumps(value).encode()
    text_depth = _text_depth(body)
    assert depth_of(json.loads(body)) == text_depth
    if text_depth <= MAX_DEPTH and isinstance(value, dict):
        assert load_json_object(body) == value
    elif text_depth > MAX_DEPTH:
        with pytest.raises(BadDelivery, match=f"nested {text_depth} levels deep, more than the {MAX_DEPTH} allowed"):
            load_json_object(body)


def _text_depth(body: bytes) -> int:
    try:
        check_depth(body, limit=0)
    except BadDelivery as exc:
        return int(exc.reason.split("nested ")[1].split(" ")[0])
    return 0


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 990, 5_000, 100_000])
def test_a_body_too_deep_is_refused_for_its_depth_even_past_the_parsers_own_limit(levels):
    body = b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
    with pytest.raises(BadDelivery, match=f"nested {levels} levels deep"):
        load_json_object(body)


def test_broken_json_is_refused_as_before():
    with pytest.raises(BadDelivery, match="not valid JSON"):
        load_json_object(b'{"action": "opened')
    with pytest.raises(BadDelivery, match="a string is not terminated"):
        load_json_object(b'{"a": "' + b'\\"' * 1000)
    with pytest.raises(BadDelivery, match="must be a JSON object, got list"):
        load_json_object(b"[1, 2]")


def test_a_batch_wake_up_carries_every_item_and_a_short_description_of_them():
    from tests.test_lean import RecordingCelery

    celery = RecordingCelery()
    publisher = WakePublisher(celery, min_interval=0.3)  # type: ignore[arg-type]
    publisher.wake("github", "acme/web#0")
    wait_for(lambda: celery.sent, 5, interval=0.005, what="the first wake-up")
    for n in range(1, 101):
        publisher.wake("github", f"acme/web#{n}")
    wait_for(lambda: len(celery.sent) >= 2, 5, interval=0.005, what="the batch")
    name, args = celery.sent[1]
    assert name == TASK_WAKE_ITEMS
    assert sorted(item for _source, item in args[0]) == sorted(f"acme/web#{n}" for n in range(1, 101))  # type: ignore[index]
    # What Celery shows for the arguments (logs, monitoring): not a repr of a hundred items built per message.
    assert celery.options == {"argsrepr": "(100 items)"}


def test_an_accepted_delivery_is_answered_with_the_json_it_always_was(tmp_path):
    from flask import jsonify

    from testkit.factories import github_request
    from tests.test_intake_github import URL, make_app

    app = make_app(tmp_path, MAX_WEBHOOK_BYTES="1000000")
    secret = app.extensions["bridge"].settings.github_webhook_secret
    body, headers = github_request(secret, "issues", issues_event("opened"))
    r = app.test_client().post(URL, data=body, headers=headers)
    assert r.status_code == 200 and r.mimetype == "application/json"
    with app.app_context():
        assert r.data == jsonify({"status": "accepted", "event_id": r.json["event_id"]}).data  # type: ignore[index]
    assert r.json == {"status": "accepted", "event_id": 1}


def test_one_batch_stores_new_deliveries_once_each_under_their_bound_handles(engine):  # noqa: F811
    """The group commit's batch (on PostgreSQL in one INSERT): first deliveries of an issue under two names land
    under one handle, a bound issue under its handle, a copy of a delivery (stored before, or earlier in the same
    batch) stores nothing and gets the first copy's id, and the counters count each stored delivery once."""
    from sqlalchemy import func, select

    from bridge import store
    from bridge.store import counters
    from bridge.store import schema as db
    from bridge.store.deliveries import Delivery, store_batch
    from tests.test_identity import WEB_ID, parse, renamed

    earlier = parse("issues", issues_event("opened", number=2))  # acme/web#2: bound before the batch
    issue_2 = github_issue_id("acme/web", 2)
    renamed_2 = issues_event("edited", number=2, repo="acme/site", repo_id=WEB_ID, issue_id=issue_2)
    first_copy = store.record_delivery(engine, earlier, dedup_key="e2", headers={}, payload=b"{}")
    batch = [
        Delivery(parse("issues", issues_event("opened")), "d1", {}, b"{}"),  # acme/web#1: its first delivery
        Delivery(parse("issues", renamed("edited", updated=1)), "d2", {}, b"{}"),  # the same issue, renamed
        Delivery(parse("issues", issues_event("opened")), "d1", {}, b"{}"),  # d1 again, in the same batch
        Delivery(parse("issues", renamed_2), "d4", {}, b"{}"),  # acme/web#2 renamed: its binding stands
        Delivery(earlier, "e2", {}, b"{}"),  # stored before the batch
        Delivery(bug_event(7), "b7", {}, b"{}"),  # no identity
    ]
    fairy = engine.raw_connection()
    try:
        results = store_batch(engine, fairy, batch)
    finally:
        fairy.close()
    assert [(fresh, key) for _id, fresh, key in ((r[0], r[1], r.item_key) for r in results)] == [
        (True, "acme/web#1"),
        (True, "acme/web#1"),
        (False, "acme/web#1"),
        (True, "acme/web#2"),
        (False, "acme/web#2"),
        (True, "7"),
    ]
    assert results[2][0] == results[0][0] and results[4][0] == first_copy[0]
    with engine.connect() as conn:
        rows = conn.execute(select(db.events.c.id, db.events.c.dedup_key, db.events.c.item_key)).all()
        series = counters.read_all(conn)
        bindings = conn.execute(select(func.count()).select_from(db.item_identities)).scalar()
    assert sorted((key, item) for _id, key, item in rows) == [
        ("b7", "7"),
        ("d1", "acme/web#1"),
        ("d2", "acme/web#1"),
        ("d4", "acme/web#2"),
        ("e2", "acme/web#2"),
    ]
    assert {r[0] for r in results if r[1]} | {first_copy[0]} == {row[0] for row in rows}
    assert bindings == 2
    assert (
        sum(v for _labels, v in series[counters.DELIVERIES]) == 5
    )  # e2 before the batch, and d1, d2, d4, b7: copies count nothing
    assert sum(v for _labels, v in series[counters.EVENTS_STORED]) == 5


def test_first_deliveries_in_one_batch_are_bound_each_to_its_own_handle(engine):  # noqa: F811
    """Several first deliveries in one batch (on PostgreSQL bound in one statement): each issue under its own
    handle, and one whose name another issue holds (a repository renamed away and its name taken by a new one)
    under "<handle> (id N)", as one at a time binds them; a later delivery finds each binding."""
    from bridge import store
    from bridge.store.deliveries import Delivery, store_batch
    from tests.test_identity import parse

    old_5 = parse("issues", issues_event("opened", number=5))  # acme/web#5 of the repository renamed away later
    store.record_delivery(engine, old_5, dedup_key="old5", headers={}, payload=b"{}")
    new_repo = 777001

    def new_issue(action: str, number: int, key: str) -> Delivery:  # the new acme/web's issue
        payload = issues_event(action, number=number, repo_id=new_repo, issue_id=999000000 + number)
        return Delivery(parse("issues", payload), key, {}, b"{}")

    batch = [new_issue("opened", 5, "n5"), new_issue("opened", 6, "n6"), new_issue("opened", 7, "n7")]
    batch.append(new_issue("edited", 6, "n6e"))
    fairy = engine.raw_connection()
    try:
        results = store_batch(engine, fairy, batch)
    finally:
        fairy.close()
    assert [r.item_key for r in results] == ["acme/web#5 (id 999000005)", "acme/web#6", "acme/web#7", "acme/web#6"]
    assert all(r[1] for r in results)
    again = parse("issues", issues_event("edited", number=5, repo_id=new_repo, issue_id=999000005))
    assert store.record_delivery(engine, again, dedup_key="n5e", headers={}, payload=b"{}").item_key == (
        "acme/web#5 (id 999000005)"
    )
    assert store.record_delivery(engine, old_5, dedup_key="old5b", headers={}, payload=b"{}").item_key == "acme/web#5"


def test_a_first_delivery_bound_meanwhile_by_another_writer_keeps_that_binding(engine):  # noqa: F811
    """PostgreSQL: a batch's first deliveries are bound in one statement; one whose identity another writer binds at
    the same moment (its transaction still open) waits for it, then is filed under that writer's handle, while the
    rest of the batch gets its own."""
    import threading

    from bridge.store.deliveries import Delivery, store_batch
    from tests.test_identity import parse

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing binds meanwhile")
    five, six = (parse("issues", issues_event("opened", number=n)) for n in (5, 6))
    other = engine.raw_connection()  # the other writer, its binding not committed yet
    watcher = engine.raw_connection()
    try:
        other.cursor().execute(
            "INSERT INTO item_identities (source, identity, item_key, created_at) VALUES ('github', %s, %s, 0)",
            [five.identity, "acme/web#5 (the other writer)"],
        )
        results: list = []
        fairy = engine.raw_connection()
        batch = [Delivery(five, "n5", {}, b"{}"), Delivery(six, "n6", {}, b"{}")]
        thread = threading.Thread(target=lambda: results.extend(store_batch(engine, fairy, batch)))
        thread.start()

        def waiting_on_a_lock() -> bool:
            cur = watcher.cursor()
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            found = cur.fetchone()[0] > 0
            watcher.rollback()
            return found

        wait_for(waiting_on_a_lock, 30, what="the batch waiting for the other writer's binding")
        other.commit()
        thread.join(30)
        fairy.close()
    finally:
        other.close()
        watcher.close()
    assert [(r[1], r.item_key) for r in results] == [(True, "acme/web#5 (the other writer)"), (True, "acme/web#6")]


def test_a_look_at_dotenv_does_not_wait_while_another_thread_takes_an_edit_over(home):  # noqa: F811
    """Every request looks at .env; while one thread reloads an edit (a slow read, a slow database), the others'
    looks that find nothing new answer at once instead of queueing on the reload."""
    import threading

    from bridge.settings import SettingsWatcher, load_settings

    watcher = SettingsWatcher(load_settings(), min_interval=0)
    with watcher._lock:  # another thread is in the middle of taking an edit over
        looked: list[object] = []
        thread = threading.Thread(target=lambda: looked.append(watcher.check()))
        thread.start()
        thread.join(2)
        assert looked == [None]  # answered within the join's 2 s: it did not wait for the lock held here


def test_log_lines_written_from_many_threads_at_once_are_each_whole(tmp_path, capfd):
    """Lines are built outside the handler's lock: each is still one whole JSON line."""
    import logging
    import threading

    from bridge.process.logs import configure_logging
    from bridge.settings import load_settings

    configure_logging(load_settings({"BRIDGE_DATA_DIR": str(tmp_path), "LOG_LEVEL": "INFO"}, read_dotenv=False))
    log = logging.getLogger("bridge.intake")

    def write(t: int) -> None:
        for n in range(200):
            log.info("delivery accepted", extra={"source": "github", "event_id": t * 1000 + n, "item": "x" * 300})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"delivery accepted"' in line]
    assert sorted(line["event_id"] for line in lines) == sorted(t * 1000 + n for t in range(8) for n in range(200))
