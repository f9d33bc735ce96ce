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

from bridge import store
from bridge.events import NormalizedEvent
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github import GitHubSource
from tests.factories import comment_event, github_request, issues_event
from tests.fakes.zoho import FakeZoho
from tests.harness import GITHUB_SECRET, in_process_env

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


def _crash_after_create(env: dict[str, str]) -> None:
    """Child process: sync the item but die (like kill -9) right after Zoho answered the create."""
    os.environ.update(env)
    runtime = Runtime(load_settings(env))

    def die(*_args: object, **_kwargs: object) -> None:
        os._exit(9)

    store.confirm_link = die  # the link write never happens
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


def test_comments_once_edited_and_deleted(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake)))
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="hello", commented=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="hello", commented=5))  # redelivery
    drain(runtime)
    [issue] = fake.issues()
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


def test_transient_failures_retry_then_give_up_after_max_attempts(tmp_path, fake):
    runtime = Runtime(load_settings(make_env(tmp_path, fake, MAX_ATTEMPTS="3")))
    deliver(runtime, "issues", issues_event("opened"))
    fake.set_faults(error_500_rate=1.0)
    drain(runtime)
    [failed] = store.list_events(runtime.engine, status="failed")
    assert failed.attempts == 3 and "gave up after 3 attempts" in (failed.last_error or "")
    fake.set_faults()
    store.reset_for_replay(runtime.engine, [failed.id])
    drain(runtime)
    assert len(fake.issues()) == 1


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
    from bridge.sources.bugzilla import BugzillaSource
    from tests.factories_trackers import bugzilla_comment, bugzilla_event

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
