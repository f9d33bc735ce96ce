"""Delivery guarantees of the sync service against a real FakeZoho over HTTP: each test breaks, repeats,
reorders or races something and checks the end state in Zoho.

The sync service runs in this process (and, for crashes, in child processes), without Celery: the
worker task is a thin wrapper around `SyncService.process_item`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bridge import store
from bridge.events import NormalizedEvent
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import schema as db
from testkit.factories import comment_event, github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env, wait_for
from testkit.journal import age_create, died_after_sending_update, plan_recheck, recheck_at

SOURCE = GitHubSource(GITHUB_SECRET)


def make_env(tmp: Path, fake: FakeZoho, **extra: str) -> dict[str, str]:
    return in_process_env(tmp, fake, "github", "bugzilla", **extra)


@pytest.fixture
def fake():
    with FakeZoho() as server:
        yield server


def deliver(runtime: Runtime, event: str, payload: dict, delivery: str | None = None) -> tuple[int, bool]:
    body, headers = github_request(GITHUB_SECRET, event, payload, delivery=delivery)
    normalized: NormalizedEvent = SOURCE.parse(body, headers)
    return store.record_delivery(
        runtime.engine, normalized, dedup_key=SOURCE.dedup_key(body, headers), headers={}, payload=body
    )


def drain(runtime: Runtime, item: str = "acme/web#1", timeout: float = 20.0) -> None:
    """Process the item until nothing is pending (waiting out retry back-offs)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runtime.sync.process_item("github", item)
        if not store.pending_for_item(runtime.engine, "github", item, now=float("inf")):
            return
        time.sleep(0.05)
    raise AssertionError("events still pending")


def test_answer_lost_after_zoho_created_the_issue_does_not_duplicate(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    fake.set_faults(error_500_after_commit_rate=1.0)  # Zoho creates it, the answer is lost
    runtime.sync.process_item("github", "acme/web#1")
    assert len(fake.issues()) == 1
    fake.set_faults()
    drain(runtime)
    assert len(fake.issues()) == 1
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.confirmed and link.zoho_issue_id == fake.issues()[0]["id"]


def test_a_create_retried_in_doubt_and_made_is_not_made_again_when_its_claim_fails_before_linking(tmp_path, fake):
    """A create got a 500 that stored nothing (in doubt); the next attempt looks, finds nothing, creates, and
    then fails reading Zoho for copies. The issue it made is the item's: nothing makes a third one."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake, RETRY_BASE_SECONDS="0.1")))
    deliver(runtime, "issues", issues_event("opened"))
    fake.fail_matching("POST", r"/issues$")  # the first create: a 500, nothing stored
    runtime.sync.process_item("github", "acme/web#1")
    assert fake.issues() == []
    fake.fail_matching("GET", r"/issues/\d+/description$")  # the look for copies after the second create
    drain(runtime)
    assert len(fake.issues()) == 1, [i["id"] for i in fake.issues()]
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.zoho_issue_id == fake.issues()[0]["id"]


def _crash_after_create(env: dict[str, str]) -> None:
    """Child process: sync the item but die (like kill -9) right after Zoho answered the create."""
    os.environ.update(env)
    runtime = Runtime(load_settings(env))

    def die(*_args: object, **_kwargs: object) -> None:
        os._exit(9)

    from bridge.store import links

    links.update_link = die  # the link write after Zoho's answer never happens
    runtime.sync.process_item("github", "acme/web#1")


def test_worker_killed_between_zoho_create_and_link_write_creates_no_second_issue(tmp_path, fake):
    env = make_env(tmp_path, fake)
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened", title="first"))
    child = multiprocessing.get_context("spawn").Process(target=_crash_after_create, args=(env,))
    child.start()
    child.join(30)
    assert child.exitcode == 9
    assert len(fake.issues()) == 1  # Zoho has it; our link table does not
    # The dead worker's lease must expire before anyone may take the item: shorten the wait.
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
    deliver(runtime, "issues", issues_event("edited", title="second", updated=5))
    drain(runtime)
    issues = fake.issues()
    assert len(issues) == 1 and issues[0]["name"] == "second"


def test_two_workers_racing_on_a_new_item_create_one_issue(tmp_path, fake):
    env = make_env(tmp_path, fake)
    runtimes = [Runtime(load_settings(env)) for _ in range(2)]
    deliver(runtimes[0], "issues", issues_event("opened", title="a"))
    deliver(runtimes[0], "issues", issues_event("edited", title="b", updated=3))
    fake.set_faults(slow_rate=1.0, slow_seconds=0.2)  # widen the race window
    barrier = threading.Barrier(2)

    def work(rt: Runtime) -> None:
        barrier.wait()
        rt.sync.process_item("github", "acme/web#1")

    threads = [threading.Thread(target=work, args=(rt,)) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fake.set_faults()
    drain(runtimes[0])
    issues = fake.issues()
    assert len(issues) == 1 and issues[0]["name"] == "b"
    assert len(fake.api_calls("POST", "/issues")) == 1


def test_reordered_updates_latest_state_wins_and_burst_is_coalesced(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    # The update arrives before the create; then a burst of edits, stored out of order.
    deliver(runtime, "issues", issues_event("edited", title="t3", updated=3))
    deliver(runtime, "issues", issues_event("opened", title="t0", updated=0))
    for n in (9, 5, 7, 8, 6):
        deliver(runtime, "issues", issues_event("edited", title=f"t{n}", updated=n))
    drain(runtime)
    issues = fake.issues()
    assert len(issues) == 1 and issues[0]["name"] == "t9"
    writes = [c for c in fake.api_calls() if c["method"] in ("POST", "PATCH")]
    assert len(writes) == 1  # one create carrying the latest state, not one call per edit
    statuses = store.count_by_status(runtime.engine)
    assert statuses == {"done": 1, "superseded": 6}
    # A late, older edit does not roll it back.
    deliver(runtime, "issues", issues_event("edited", title="t4", updated=4))
    drain(runtime)
    assert fake.issues()[0]["name"] == "t9"


@pytest.mark.parametrize("keep_alive", [False, True], ids=["one-request-per-connection", "kept-connections"])
def test_comments_once_edited_and_deleted(tmp_path, keep_alive):
    """Zoho's documents do not say whether a connection is kept between calls: the same issue and comment calls
    hold on a server that closes each connection and on one that keeps them (as Zoho's servers do, HTTP/1.1)."""
    with FakeZoho(keep_alive=keep_alive) as fake:
        _comments_once_edited_and_deleted(tmp_path, fake)


def _comments_once_edited_and_deleted(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issues", issues_event("edited", title="renamed", updated=6))  # newer than the comment's copy
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="hello", commented=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="hello", commented=5))  # redelivery
    drain(runtime)
    [issue] = fake.issues()
    assert issue["name"] == "renamed"
    [comment] = fake.comments(issue["id"])
    assert "hello" in comment["comment"]
    # Replaying the comment event does not post it again.
    event_id = store.list_events(runtime.engine, limit=10)[-2].id
    store.reset_for_replay(runtime.engine, [event_id])
    drain(runtime)
    assert len(fake.comments(issue["id"])) == 1
    deliver(runtime, "issue_comment", comment_event("edited", comment_id=1, text="hello, edited", commented=9))
    drain(runtime)
    [comment] = fake.comments(issue["id"])
    assert "hello, edited" in comment["comment"]
    deliver(runtime, "issue_comment", comment_event("deleted", comment_id=1, text="hello, edited", commented=12))
    drain(runtime)
    assert fake.comments(issue["id"]) == []


@pytest.mark.parametrize("late", ["created", "edited"])
def test_a_comment_deleted_before_its_creation_arrives_is_never_posted(tmp_path, fake, late):
    """Out of order: the deletion is the comment's newest state, so its creation (or an edit) arriving after it is
    not posted. Before, the deletion of a comment never synced was only a note, and the late copy was posted."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issue_comment", comment_event("deleted", comment_id=7, text="gone", commented=9))
    drain(runtime)
    deliver(runtime, "issue_comment", comment_event(late, comment_id=7, text="gone", commented=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=8, text="stays", commented=6))
    drain(runtime)
    [issue] = fake.issues()
    texts = [c["comment"] for c in fake.comments(issue["id"])]
    assert len(texts) == 1 and "stays" in texts[0], texts
    notes = " ".join(ev.notes or "" for ev in store.list_events(runtime.engine, limit=10))
    assert "not re-posted" in notes
    # the story names what happened to each comment (a comment delivery's notes about the issue's fields are
    # detail: before, its decision read "older than the state in Zoho" beside the comment's POST)
    from bridge.core import story

    told = story.tell(runtime.engine, "github", "acme/web#1", registry=runtime.registry)
    decisions = [e.title.split(": ", 1)[1] for e in told.entries if e.kind == "decision"]
    assert decisions.count("comment deleted in the source") == 2 and "comment copied" in decisions, decisions


def test_comment_posted_but_answer_lost_is_not_posted_twice(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issue_comment", comment_event("created", comment_id=2, text="once", commented=5))
    fake.set_faults(error_500_after_commit_rate=1.0)
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    drain(runtime)
    [issue] = fake.issues()
    assert len(fake.comments(issue["id"])) == 1


def test_zoho_4xx_fails_the_event_with_zohos_reason_and_a_newer_event_recovers(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    mapping = Path(runtime.settings.mappings_dir) / "github.yaml"
    good = mapping.read_text()
    mapping.write_text(good.replace("bug: Major", "bug: Majr"))  # a name Zoho does not have
    deliver(runtime, "issues", issues_event("opened", labels=("bug",)))
    drain(runtime)
    [failed] = store.list_events(runtime.engine, status="failed")
    assert "unknown Zoho severity 'Majr'" in (failed.last_error or "")
    assert "Major" in (failed.last_error or "")  # the valid names are listed
    assert fake.issues() == []
    # The admin fixes the mapping; a newer edit carries the state and creates the issue.
    mapping.write_text(good)
    time.sleep(0.01)
    os.utime(mapping)
    deliver(runtime, "issues", issues_event("edited", labels=("bug",), title="fixed", updated=5))
    drain(runtime)
    [issue] = fake.issues()
    assert issue["severity"]["value"] == "Major" and issue["name"] == "fixed"


def test_an_outage_is_a_wait_never_a_failure_by_attempts(tmp_path, fake):
    """Zoho answers 500 to everything for longer than MAX_ATTEMPTS tries: the event stays pending (an outage
    is a wait until EVENT_MAX_AGE_SECONDS) and syncs once Zoho is back, without a replay."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake, MAX_ATTEMPTS="2")))
    deliver(runtime, "issues", issues_event("opened"))
    fake.set_faults(error_500_rate=1.0)
    deadline = time.time() + 20
    while time.time() < deadline:
        runtime.sync.process_item("github", "acme/web#1")
        [event] = store.list_events(runtime.engine)
        if event.attempts >= 5:
            break
        time.sleep(0.05)
    assert event.status == "pending" and event.attempts >= 5, event
    fake.set_faults()
    drain(runtime)
    assert len(fake.issues()) == 1
    assert store.count_by_status(runtime.engine) == {"done": 1}


def test_an_event_past_its_maximum_age_ends_failed(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake, EVENT_MAX_AGE_SECONDS="3600")))
    deliver(runtime, "issues", issues_event("opened"))
    with runtime.engine.begin() as conn:  # received two hours ago (by the database's clock)
        conn.execute(update(db.events).values(received_at=db.events.c.received_at - 7200))
    fake.set_faults(error_500_rate=1.0)
    drain(runtime)
    [failed] = store.list_events(runtime.engine, status="failed")
    assert "still not synced" in (failed.last_error or "") and failed.attempts == 1


def test_expired_token_is_refreshed_once_and_the_call_repeated(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    assert fake.token_refreshes == 1
    fake.expire_tokens()
    deliver(runtime, "issues", issues_event("edited", title="after expiry", updated=5))
    drain(runtime)
    assert fake.issues()[0]["name"] == "after expiry"
    assert fake.token_refreshes == 2


def test_a_field_an_event_does_not_carry_keeps_its_value(tmp_path, fake):
    """Bugzilla sends the description (comment 0) once; later changes must not blank it in Zoho."""
    from bridge.sources.bugzilla.webhook import BugzillaSource
    from testkit.factories_trackers import bugzilla_comment, bugzilla_event

    env = make_env(tmp_path, fake, BUGZILLA_WEBHOOK_SECRET="s3cret")
    runtime = Runtime(load_settings(env))
    source = BugzillaSource("s3cret")

    def post(payload: dict) -> None:
        body = json.dumps(payload).encode()
        event = source.parse(body, {})
        store.record_delivery(runtime.engine, event, dedup_key=source.dedup_key(body, {}), headers={}, payload=body)
        runtime.sync.process_item("bugzilla", event.item_key)

    post(bugzilla_event("bug", "create", bug_id=7, changed=0))
    post(
        bugzilla_event(
            "comment", "create", bug_id=7, changed=1, comment=bugzilla_comment(number=0, text="Steps: log in")
        )
    )
    post(
        bugzilla_event(
            "bug",
            "modify",
            bug_id=7,
            changed=2,
            summary="Renamed",
            changes=[{"field": "summary", "removed": "Checkout button unresponsive after login", "added": "Renamed"}],
        )
    )
    [issue] = fake.issues()
    assert issue["name"] == "Renamed"
    assert issue["description"].startswith("Steps: log in")


# -- the fence, the failure boundary, exactly one issue (issue #11) ---------------------------------------


def issue_calls(fake: FakeZoho, method: str | None = None) -> list[dict]:
    return [c for c in fake.api_calls(method) if "/issues" in c["path"]]


def test_a_new_issue_costs_one_zoho_call(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened", labels=("bug",)))
    drain(runtime)
    assert [c["method"] for c in issue_calls(fake)] == ["POST"]  # no lookup: nothing was in doubt
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.confirmed and recheck_at(runtime.engine) is None


def test_a_worker_that_lost_its_claim_stops_without_touching_zoho_or_the_events(tmp_path, fake):
    env = make_env(tmp_path, fake)
    stalled, other = Runtime(load_settings(env)), Runtime(load_settings(env))
    deliver(stalled, "issues", issues_event("opened", title="first"))
    outcomes: list = []

    def pause_past_the_lease() -> None:
        # The first worker holds the claim, then stalls (GC pause, SIGSTOP) until its lease is gone and
        # another worker has claimed the item and synced it.
        with stalled.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
        outcomes.append(other.sync.process_item("github", "acme/web#1"))

    stalled.registry.reload_if_changed = pause_past_the_lease  # type: ignore[method-assign]
    outcome = stalled.sync.process_item("github", "acme/web#1")
    assert outcome.lost and outcome.processed == 0
    assert len(issue_calls(fake, "POST")) == 1 and len(fake.issues()) == 1  # only the new holder created
    [event] = store.list_events(stalled.engine)
    assert event.status == "done" and event.attempts == 1  # written once, by the worker that held it


def test_zoho_slower_than_the_lease_leaves_one_issue(tmp_path, fake):
    """The first worker's create takes longer than its lease: a second worker takes the item over (a create
    in doubt), and the late copy is found and deleted by the duplicate re-check."""
    env = make_env(tmp_path, fake, ITEM_LEASE_SECONDS="2", DUPLICATE_RECHECK_SECONDS="1")
    slow, other = Runtime(load_settings(env)), Runtime(load_settings(env))
    deliver(slow, "issues", issues_event("opened", number=2))
    slow.sync.process_item("github", "acme/web#2")  # warm the token and field metadata
    deliver(slow, "issues", issues_event("opened", title="slow one"))
    fake.set_faults(slow_rate=1.0, slow_seconds=3.0)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(slow.sync.process_item("github", "acme/web#1")))
    worker.start()
    # the slow worker's create is the one Zoho holds (waited for, not assumed after a fixed 0.5 s: on a loaded
    # machine it can be sent later, and then it would not be held)
    wait_for(lambda: [m for m, _ in fake.slowed] == ["POST"], 10, what="the slow worker's create held by Zoho")
    fake.set_faults()
    time.sleep(2.0)  # the slow worker's lease is gone; its create has not landed yet
    other.sync.process_item("github", "acme/web#1")
    worker.join(30)
    assert result and result[0].lost  # the slow worker could not write its link
    # the slow create landed beside the takeover's (or before its lookup, which then adopted it)
    assert len([i for i in fake.issues() if i.get("external_id") == "github:acme/web#1"]) in (1, 2)
    due = recheck_at(other.engine)
    assert due is not None  # a create in doubt: re-checked once a late copy can have landed
    time.sleep(max(0.0, due - time.time()) + 0.2)
    other.sync.process_item("github", "acme/web#1")  # the re-check, once it is due
    issues = [i for i in fake.issues() if i.get("external_id") == "github:acme/web#1"]
    link = store.get_link(other.engine, "github", "github:acme/web#1")
    assert link is not None and [i["id"] for i in issues] == [link.zoho_issue_id]
    assert recheck_at(other.engine) is None
    [event] = [e for e in store.list_events(other.engine) if e.item_key == "acme/web#1"]
    assert event.status == "done"


def test_an_unexpected_exception_is_an_attempt_and_ends_failed(tmp_path, fake, monkeypatch):
    runtime = Runtime(load_settings(make_env(tmp_path, fake, MAX_ATTEMPTS="2")))
    deliver(runtime, "issues", issues_event("opened"))

    def broken(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("a bad answer from somewhere, access_token=SECRET123")

    monkeypatch.setattr(runtime.zoho, "create_issue", broken)
    drain(runtime)
    [event] = store.list_events(runtime.engine)
    assert event.status == "failed" and event.attempts == 2
    assert "gave up after 2 attempts: RuntimeError" in (event.last_error or "")
    attempts = store.attempts_for_event(runtime.engine, event.id)
    assert [a["outcome"] for a in attempts] == ["retry", "retry"]
    assert "Traceback" in attempts[0]["detail"] and "SECRET123" not in attempts[0]["detail"]


def test_a_malformed_row_ends_failed_instead_of_looping(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    event_id, _ = deliver(runtime, "issues", issues_event("opened"))
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql('UPDATE events SET event_json = \'{"not": "an event"}\'')
    drain(runtime)
    with runtime.engine.connect() as conn:
        status, error = conn.execute(
            select(db.events.c.status, db.events.c.last_error).where(db.events.c.id == event_id)
        ).one()
    assert status == "failed" and "cannot be read" in error
    assert issue_calls(fake) == []
    [listed] = store.list_events(runtime.engine, status="failed")  # still visible (and replayable)
    assert listed.id == event_id and "cannot be read" in listed.event.notes[0]


def test_a_rate_limit_wait_is_not_an_attempt(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake, MAX_ATTEMPTS="1", ZOHO_RATE_BLOCK_SECONDS="1")))
    deliver(runtime, "issues", issues_event("opened"))
    fake.set_faults(retry_after_seconds=1)
    fake.fail_next(1, status=429)
    drain(runtime)
    [event] = store.list_events(runtime.engine)
    assert event.status == "done" and event.attempts == 1  # the 429 cost a wait, not one of the attempts
    assert len(fake.issues()) == 1


def test_an_item_backs_off_as_one_during_an_outage(tmp_path, fake):
    """Six edits of one item during an outage: each retry is one update for the item, not one per edit."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake, MAX_ATTEMPTS="3")))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    for n in range(1, 7):
        deliver(runtime, "issues", issues_event("edited", title=f"edit {n}", updated=n))
    fake.set_faults(error_500_rate=1.0)
    deadline = time.time() + 20
    while len(issue_calls(fake, "PATCH")) < 4 and time.time() < deadline:
        runtime.sync.process_item("github", "acme/web#1")
        time.sleep(0.05)
    tries = len(issue_calls(fake, "PATCH"))
    assert tries >= 4  # more than MAX_ATTEMPTS: an outage is a wait
    assert store.count_by_status(runtime.engine) == {"done": 1, "pending": 6}
    fake.set_faults()
    drain(runtime)
    assert len(issue_calls(fake, "PATCH")) == tries + 1  # the newest state, once, when Zoho is back
    assert store.count_by_status(runtime.engine) == {"done": 2, "superseded": 5}
    assert fake.issues()[0]["name"] == "edit 6"


def test_a_failing_state_update_does_not_fail_the_comments(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    mapping = Path(runtime.settings.mappings_dir) / "github.yaml"
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    mapping.write_text(mapping.read_text().replace("bug: Major", "bug: Majr"))  # a name Zoho does not have
    time.sleep(0.01)
    os.utime(mapping)
    deliver(runtime, "issues", issues_event("labeled", labels=("bug",), updated=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=7, text="still here", commented=6))
    drain(runtime)
    [issue] = fake.issues()
    assert ["still here" in c["comment"] for c in fake.comments(issue["id"])] == [True]


def test_a_deletion_is_terminal_even_against_a_same_time_reopen(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issues", issues_event("reopened", updated=9))
    deliver(runtime, "issues", issues_event("deleted", updated=9))
    drain(runtime)
    deliver(runtime, "issues", issues_event("reopened", title="back?", updated=20))
    drain(runtime)
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.state == "deleted"
    assert fake.issues()[0]["status"]["name"] == "Closed" and fake.issues()[0]["name"] != "back?"


def test_a_write_zoho_applies_after_the_newer_deletion_is_put_right_by_the_recheck(tmp_path, fake):
    """The client gives up on an update; the deletion that follows closes the issue; then Zoho applies the
    update it was still holding (a reopen): the re-check reads the issue and closes it again."""
    env = make_env(
        tmp_path, fake, ZOHO_TIMEOUT_SECONDS="0.5", DUPLICATE_RECHECK_SECONDS="2.5", RETRY_BASE_SECONDS="0.1"
    )
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issues", issues_event("reopened", title="reopened", updated=9))
    fake.set_faults(slow_rate=1.0, slow_seconds=1.5)  # Zoho holds the reopen past the client's timeout
    sent = time.time()
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    deliver(runtime, "issues", issues_event("deleted", title="reopened", updated=9))
    drain(runtime)
    [issue] = fake.issues()
    assert issue["status"]["name"] == "Closed"  # the deletion closed it ...
    time.sleep(max(0.0, sent + 1.8 - time.time()))
    assert fake.issues()[0]["status"]["name"] == "Open"  # ... and the held reopen landed after it
    before = len(fake.api_calls())
    time.sleep(max(0.0, sent + 3.2 - time.time()))  # the re-check is due
    runtime.sync.process_item("github", "acme/web#1")
    assert fake.issues()[0]["status"]["name"] == "Closed"
    calls = [(c["method"], c["path"].rsplit("/", 1)[-1]) for c in fake.api_calls()[before:]]
    assert calls[-2:] == [("GET", issue["id"]), ("PATCH", issue["id"])], calls  # read it, put the status back
    assert [m for m, _ in calls].count("GET") == len(calls) - 1, calls  # the one write
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.state == "deleted" and recheck_at(runtime.engine) is None


def test_a_claim_taken_over_from_a_slow_worker_has_its_state_checked_again(tmp_path, fake):
    """The first worker's update takes longer than its lease; the worker that takes the item over applies a
    newer title, then the first worker's update lands: the re-check a takeover asks for restores the newer
    one. When the state is right, the re-check costs reads only."""
    env = make_env(tmp_path, fake, ITEM_LEASE_SECONDS="2", DUPLICATE_RECHECK_SECONDS="1")
    slow, other = Runtime(load_settings(env)), Runtime(load_settings(env))
    deliver(slow, "issues", issues_event("opened"))
    drain(slow)
    deliver(slow, "issues", issues_event("edited", title="older", updated=3))
    fake.set_faults(slow_rate=1.0, slow_seconds=3.0)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(slow.sync.process_item("github", "acme/web#1")))
    worker.start()
    # the slow worker's update is the one Zoho holds (waited for: on a loaded machine it took longer than 0.5 s
    # to send, was not held, and landed before the newer one)
    wait_for(lambda: [m for m, _ in fake.slowed] == ["PATCH"], 10, what="the slow worker's update held by Zoho")
    fake.set_faults()
    deliver(slow, "issues", issues_event("edited", title="newer", updated=4))
    time.sleep(2.0)  # the slow worker's lease is gone; its update has not landed yet
    other.sync.process_item("github", "acme/web#1")
    assert fake.issues()[0]["name"] == "newer"
    worker.join(30)
    assert result and result[0].lost
    assert fake.issues()[0]["name"] == "older"  # the lost worker's update landed last
    due = recheck_at(other.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.2)
    other.sync.process_item("github", "acme/web#1")
    assert fake.issues()[0]["name"] == "newer"
    assert recheck_at(other.engine) is None
    [patch] = [c for c in issue_calls(fake, "PATCH")][-1:]
    assert set(patch["json"]) == {"name"}, patch["json"]  # only what differed is sent again
    # A day later, a takeover whose state stays right: the re-check reads the issue and its comments, and
    # lists no issues (a create sent a day ago cannot land now).
    deliver(other, "issues", issues_event("edited", title="newest", updated=5))
    other.sync.process_item("github", "acme/web#1")
    died_after_sending_update(other.engine)
    age_create(other.engine, 86400)
    with other.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE operations SET sent_at = sent_at - 86400 WHERE kind = 'zoho.create'")
    other.sync.process_item("github", "acme/web#1")  # the takeover finds the update in doubt
    due = recheck_at(other.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.2)
    before = len(issue_calls(fake))
    other.sync.process_item("github", "acme/web#1")
    reads = [c["path"].rsplit("/", 1)[-1] for c in issue_calls(fake)[before:]]
    assert sorted(reads) == sorted(["comments", fake.issues()[0]["id"]]), reads  # reads only, two of them
    assert fake.issues()[0]["name"] == "newest"


def test_a_recheck_leaves_a_persons_zoho_status_alone_when_the_mapping_talks_back(tmp_path, fake):
    """With `reverse:` on, Zoho's status is a person's to change: a re-check puts back only what a late
    write could have left (here nothing), never the status a person set in Zoho."""
    env = make_env(tmp_path, fake, ITEM_LEASE_SECONDS="2", DUPLICATE_RECHECK_SECONDS="0.2")
    mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
    mapping.write_text(mapping.read_text() + "reverse:\n  status:\n    Closed: {close: completed}\n")
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    fake.person_sets_status(issue["id"], "Closed")
    deliver(runtime, "issues", issues_event("edited", title="renamed", updated=3))
    drain(runtime)
    died_after_sending_update(runtime.engine)  # its last holder died right after sending: a re-check comes due
    runtime.sync.process_item("github", "acme/web#1")
    due = recheck_at(runtime.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.3)
    runtime.sync.process_item("github", "acme/web#1")
    assert recheck_at(runtime.engine) is None
    assert (fake.issues()[0]["name"], fake.issues()[0]["status"]["name"]) == ("renamed", "Closed")


@pytest.mark.parametrize("answer", [400, 500])
def test_a_recheck_that_keeps_failing_ends_instead_of_spinning(tmp_path, fake, answer):
    """A refusal ends the re-check after MAX_ATTEMPTS; an outage (500) is a wait: it keeps it planned."""
    env = make_env(
        tmp_path,
        fake,
        ITEM_LEASE_SECONDS="2",
        DUPLICATE_RECHECK_SECONDS="0.2",
        MAX_ATTEMPTS="2",
        RETRY_BASE_SECONDS="0.1",
        RETRY_MAX_SECONDS="0.2",
    )
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issues", issues_event("edited", title="after", updated=3))
    drain(runtime)
    died_after_sending_update(runtime.engine)  # the item's last holder died right after sending
    runtime.sync.process_item("github", "acme/web#1")
    fake.fail_next(50, answer)  # Zoho refuses (or is down for) every read the re-check makes
    rounds = 0
    deadline = time.time() + 20
    while time.time() < deadline:
        due = recheck_at(runtime.engine)
        if due is None:
            break
        time.sleep(max(0.0, due - time.time()) + 0.3)
        runtime.sync.process_item("github", "acme/web#1")
        rounds += 1
        if rounds == 4:
            break
    if answer == 500:  # an outage: still planned, the item's back-off spacing the tries
        assert recheck_at(runtime.engine) is not None and rounds == 4
        with fake._lock:  # Zoho is back
            fake._fail_queue.clear()
        due = recheck_at(runtime.engine)
        time.sleep(max(0.0, (due or 0) - time.time()) + 0.3)
        drain(runtime)
        wait_for(lambda: runtime.sync.process_item("github", "acme/web#1") and recheck_at(runtime.engine) is None, 10)
        assert fake.issues()[0]["name"] == "after"
        return
    assert recheck_at(runtime.engine) is None and rounds == 2, rounds  # MAX_ATTEMPTS rounds, then given up
    from bridge.store.claims import stale_items

    assert ("github", "acme/web#1") not in stale_items(runtime.engine, grace=0)
    assert fake.issues()[0]["name"] == "after"


def test_a_deletion_before_the_first_sync_stays_terminal_against_older_redeliveries(tmp_path, fake):
    """The deletion is the first event the bridge gets (the others come late, or are GitHub's redeliveries):
    nothing is created, then or later."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("deleted", title="gone", updated=9))
    drain(runtime)
    deliver(runtime, "issues", issues_event("opened", title="first", updated=0))
    deliver(runtime, "issues", issues_event("edited", title="second", updated=3))
    drain(runtime)
    assert fake.issues() == [] and issue_calls(fake) == []
    events = store.list_events(runtime.engine)
    assert {e.status for e in events} <= {"done", "superseded"} and len(events) == 3
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.state == "deleted" and link.zoho_issue_id is None


def test_dry_run_first_then_real_credentials_syncs_every_item(tmp_path, fake):
    """The README path: run without credentials first, then with them. Nothing dry-run 'created' is used."""
    env = make_env(tmp_path, fake)
    dry_env = {k: v for k, v in env.items() if k not in ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN")}
    dry = Runtime(load_settings(dry_env))
    assert dry.settings.dry_run
    for number in (1, 2):
        deliver(dry, "issues", issues_event("opened", number=number), delivery=f"d-open-{number}")
        deliver(
            dry, "issue_comment", comment_event("created", number=number, comment_id=number, text="hi", commented=2)
        )
        drain(dry, f"acme/web#{number}")
    assert {link.state for link in store.list_links(dry.engine)} == {"dry-run"} and fake.issues() == []
    assert set(store.count_by_status(dry.engine)) == {"done", "superseded"}
    dry.engine.dispose()
    real = Runtime(load_settings(env))
    for number in (1, 2):
        deliver(real, "issues", issues_event("edited", number=number, title=f"real {number}", updated=5))
        drain(real, f"acme/web#{number}")
    assert sorted(i["name"] for i in fake.issues()) == ["real 1", "real 2"]
    statuses = store.count_by_status(real.engine)
    assert set(statuses) == {"done", "superseded"} and statuses["done"] == 4


def test_a_comment_zoho_applies_after_the_client_gave_up_is_left_once(tmp_path, fake):
    env = make_env(tmp_path, fake, ZOHO_TIMEOUT_SECONDS="0.5", DUPLICATE_RECHECK_SECONDS="2")
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    deliver(runtime, "issue_comment", comment_event("created", comment_id=3, text="late", commented=5, updated=0))
    fake.set_faults(slow_rate=1.0, slow_seconds=1.5)  # Zoho stores the comment after the client timed out
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    drain(runtime)  # the retry finds nothing yet and posts again
    [issue] = fake.issues()
    time.sleep(2.5)
    assert len(fake.comments(issue["id"])) == 2  # the late one landed
    runtime.sync.process_item("github", "acme/web#1")  # the re-check
    [comment] = fake.comments(issue["id"])
    assert "late" in comment["comment"]
    [event] = [e for e in store.list_events(runtime.engine) if e.event_name == "issue_comment.created"]
    assert event.status == "done"


def _edit_mapping(runtime: Runtime, old: str, new: str) -> None:
    mapping = Path(runtime.settings.mappings_dir) / "github.yaml"
    text = mapping.read_text()
    assert old in text
    mapping.write_text(text.replace(old, new))
    time.sleep(0.01)
    os.utime(mapping)


def test_a_routing_change_keeps_updates_and_comments_on_the_linked_issue(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    _edit_mapping(runtime, 'acme/web: "1752587000000097024"', 'acme/web: "1752587000000098001"')  # a new route
    deliver(runtime, "issues", issues_event("edited", title="after the route changed", updated=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=4, text="follows", commented=6, updated=4))
    drain(runtime)
    assert [(i["id"], i["name"]) for i in fake.issues()] == [(issue["id"], "after the route changed")]
    assert ["follows" in c["comment"] for c in fake.comments(issue["id"])] == [True]
    assert store.count_by_status(runtime.engine).get("failed", 0) == 0


def test_an_external_id_template_change_keeps_the_issue_and_updates_its_external_id(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    _edit_mapping(runtime, 'external_id: "github:{repository}#{number}"', 'external_id: "gh:{repository}/{number}"')
    deliver(runtime, "issues", issues_event("edited", title="same issue", updated=5))
    drain(runtime)
    [after] = fake.issues()  # not forked into a second issue
    assert (after["id"], after["name"], after["external_id"]) == (issue["id"], "same issue", "gh:acme/web/1")


def test_an_external_id_template_change_while_a_create_is_in_doubt_adopts_the_first_issue(tmp_path, fake):
    """The create reached Zoho but its answer was lost; then the template changes. The retry looks for the
    issue under the identity the create was sent with, adopts it and gives it the new external id."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    fake.set_faults(error_500_after_commit_rate=1.0)
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    [first] = fake.issues()
    assert first["external_id"] == "github:acme/web#1"
    _edit_mapping(runtime, 'external_id: "github:{repository}#{number}"', 'external_id: "gh:{repository}/{number}"')
    drain(runtime)
    [issue] = fake.issues()  # adopted, not forked
    assert (issue["id"], issue["external_id"]) == (first["id"], "gh:acme/web/1")
    assert "gh:acme/web/1" in issue["description"]  # the marker too


def test_a_deletion_before_the_first_sync_stays_terminal_against_a_later_same_time_reopen(tmp_path, fake):
    """Found by the fence chaos: opened, edited and deleted arrive in one batch (nothing reaches Zoho: the item
    is gone), then the reopen of the deletion's own second arrives. It must not create the issue."""
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issues", issues_event("edited", title="edited", updated=3))
    deliver(runtime, "issues", issues_event("deleted", updated=9))
    drain(runtime)
    deliver(runtime, "issues", issues_event("reopened", title="back?", updated=9))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=8, text="late", commented=10, updated=0))
    drain(runtime)
    assert fake.issues() == [] and issue_calls(fake, "POST") == []
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.state == "deleted" and link.zoho_issue_id is None
    statuses = store.count_by_status(runtime.engine)
    assert statuses.get("failed", 0) == 0 and statuses.get("pending", 0) == 0, statuses


@pytest.mark.parametrize("first_intent_days_ago", [0, 1])
def test_a_late_copy_of_a_retried_create_is_removed_however_old_the_first_intent(tmp_path, fake, first_intent_days_ago):
    """Creates kept timing out (a long outage, or an item unlinked long ago: the first intent is old); the
    last one lands after the retry created and linked another. The re-check still removes the copy: how
    late a copy can land is measured from the latest create sent."""
    env = make_env(tmp_path, fake, ZOHO_TIMEOUT_SECONDS="0.5", DUPLICATE_RECHECK_SECONDS="3", RETRY_BASE_SECONDS="0.1")
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issues", issues_event("opened", number=2), delivery="warm")
    drain(runtime, "acme/web#2")  # metadata cached: the slow call below is the create
    fake.set_faults(slow_rate=1.0, slow_seconds=2.0)
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    age_create(runtime.engine, 86400.0 * first_intent_days_ago)
    drain(runtime)
    time.sleep(2.5)
    assert len(fake.issues()) == 3  # the late copy landed
    due = recheck_at(runtime.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.3)
    runtime.sync.process_item("github", "acme/web#1")
    assert len(fake.issues()) == 2


def test_a_recheck_leaves_a_persons_zoho_title_alone(tmp_path, fake):
    """A re-check puts back only a value the bridge once sent (what a late write carries), never a person's."""
    env = make_env(tmp_path, fake, ITEM_LEASE_SECONDS="2", DUPLICATE_RECHECK_SECONDS="0.2")
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    with fake._lock:
        fake._issues[str(issue["id"])]["obj"]["name"] = "renamed by a person in Zoho"
    died_after_sending_update(runtime.engine)
    deliver(runtime, "issue_comment", comment_event("created", comment_id=5, text="hi", commented=4, updated=0))
    drain(runtime)
    due = recheck_at(runtime.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.3)
    runtime.sync.process_item("github", "acme/web#1")
    assert fake.issues()[0]["name"] == "renamed by a person in Zoho"
    assert issue_calls(fake, "PATCH") == []


def test_a_due_recheck_under_dry_run_neither_loops_nor_is_lost(tmp_path, fake):
    from bridge.store.claims import stale_items

    env = make_env(tmp_path, fake)
    real = Runtime(load_settings(env))
    deliver(real, "issues", issues_event("opened"))
    drain(real)
    plan_recheck(real.engine, at=1)
    real.engine.dispose()
    dry_env = {k: v for k, v in env.items() if k not in ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN")}
    dry = Runtime(load_settings(dry_env))
    assert dry.settings.dry_run
    calls = len(fake.api_calls())
    started = time.monotonic()
    dry.sync.process_item("github", "acme/web#1")
    assert time.monotonic() - started < 5  # no loop until MAX_ITEM_SECONDS
    again = dry.sync.process_item("github", "acme/web#1")
    assert again.processed == 0 and len(fake.api_calls()) == calls  # refused for a while, nothing called
    assert ("github", "acme/web#1") in stale_items(dry.engine, grace=0)  # still due for the real run
    assert recheck_at(dry.engine) == 1


@pytest.mark.parametrize("bug_answer", ["wrapped", "bare"])
def test_a_recheck_in_the_bugtracker_dialect_reads_the_bug_whichever_shape_zoho_answers(tmp_path, fake, bug_answer):
    """`GET …/bugs/{id}` documents no answer (seed 000:148): the re-check reads both plausible shapes and puts
    back the title a late write (an older value the bridge sent) left on the bug."""
    fake.set_variant(bug_answer=bug_answer)
    env = make_env(tmp_path, fake, ZOHO_DIALECT="bugtracker", ITEM_LEASE_SECONDS="2", DUPLICATE_RECHECK_SECONDS="0.2")
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened", title="first"))
    drain(runtime)
    deliver(runtime, "issues", issues_event("edited", title="second", updated=3))
    drain(runtime)
    [bug] = fake.issues(dialect="bugtracker")
    with fake._lock:  # the first title's write, landing late
        fake._issues[str(bug["id"])]["obj"]["title"] = "first"
    died_after_sending_update(runtime.engine)
    deliver(runtime, "issue_comment", comment_event("created", comment_id=5, text="hi", commented=4, updated=0))
    drain(runtime)
    due = recheck_at(runtime.engine)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.3)
    runtime.sync.process_item("github", "acme/web#1")
    assert fake.issues(dialect="bugtracker")[0]["title"] == "second"
