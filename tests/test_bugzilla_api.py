"""Bugzilla REST client and enrichment, against the fake Bugzilla over real HTTP.

A private bug's webhook carries `{id, is_private}` only: with BUGZILLA_URL + BUGZILLA_API_KEY the worker
fetches the bug (and comment 0, its description) and the Zoho issue gets the real summary; without them the
event is skipped with a note saying what to set.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge import store
from bridge.events import SourceUnavailable
from bridge.outbound.budget import Budgets
from bridge.outbound.errors import LimitWait
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.bugzilla import api as bugzilla_api
from bridge.sources.bugzilla.webhook import PRIVATE_BUG_NOTE, BugzillaSource
from bridge.sources.http import SourceBusy
from bridge.store import schema as db
from testkit.factories_trackers import BUGZILLA_SECRET, bugzilla_bug, bugzilla_event, encode
from testkit.fakes.bugzilla import API_KEY, FakeBugzilla
from testkit.fakes.zoho import FakeZoho
from testkit.harness import in_process_env


@pytest.fixture
def zoho():
    with FakeZoho() as server:
        yield server


@pytest.fixture
def bz():
    with FakeBugzilla() as server:
        yield server


def make_env(tmp: Path, zoho: FakeZoho, **extra: str) -> dict[str, str]:
    return in_process_env(tmp, zoho, "bugzilla", BUGZILLA_WEBHOOK_SECRET=BUGZILLA_SECRET, **extra)


def deliver(runtime: Runtime, payload: dict) -> int:
    source = BugzillaSource(BUGZILLA_SECRET, bugzilla_url=runtime.settings.bugzilla_url)
    body = encode(payload)
    event = source.parse(body, {})
    event_id, _ = store.record_delivery(
        runtime.engine, event, dedup_key=source.dedup_key(body, {}), headers={}, payload=body
    )
    return event_id


def drain(runtime: Runtime, item: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runtime.sync.process_item("bugzilla", item)
        if not store.pending_for_item(runtime.engine, "bugzilla", item, now=float("inf")):
            return
        time.sleep(0.05)
    raise AssertionError("events still pending")


def private_modify(bug_id: int = 2) -> dict:
    return bugzilla_event("bug", "modify", bug=bugzilla_bug(bug_id=bug_id, private=True), at=7)


def test_a_private_bug_is_fetched_and_lands_in_zoho_with_its_summary(tmp_path, zoho, bz):
    bz.put_bug(2, changed=5, summary="Password reset mail leaks the token", description="The token is in the URL.")
    env = make_env(tmp_path, zoho, BUGZILLA_URL=bz.base_url, BUGZILLA_API_KEY=API_KEY)
    runtime = Runtime(load_settings(env))
    event_id = deliver(runtime, private_modify())
    drain(runtime, "2")
    stored = store.get_event(runtime.engine, event_id)
    assert stored is not None and stored.status == "done", stored
    assert "fields fetched from Bugzilla" in (stored.notes or "")
    assert PRIVATE_BUG_NOTE not in (stored.notes or "")
    assert stored.event.has_state and stored.event.fields["summary"] == "Password reset mail leaks the token"
    (issue,) = zoho.issues()
    assert issue["name"] == "Password reset mail leaks the token"
    assert "The token is in the URL." in str(issue.get("description"))
    # the key went in the header, never in the URL
    calls = bz.calls("/rest/bug/2")
    assert {c["path"] for c in calls} == {"/rest/bug/2", "/rest/bug/2/comment"}
    assert all("api_key" not in c["query"] for c in calls)


def test_without_credentials_the_private_bug_is_skipped_with_the_note(tmp_path, zoho):
    runtime = Runtime(load_settings(make_env(tmp_path, zoho)))
    event_id = deliver(runtime, private_modify())
    drain(runtime, "2")
    stored = store.get_event(runtime.engine, event_id)
    assert stored is not None and stored.status == "skipped"
    assert PRIVATE_BUG_NOTE in (stored.notes or "")
    assert zoho.issues() == []


def test_a_refused_key_is_a_configuration_error_the_change_waits_for(tmp_path, zoho, bz):
    """A refused BUGZILLA_API_KEY is the deployment's to fix, not the bug's: the change waits with the reason in
    view (before, it was skipped with a note and never synced once the key was fixed)."""
    bz.put_bug(2, changed=5, summary="Password reset mail leaks the token")
    env = make_env(tmp_path, zoho, BUGZILLA_URL=bz.base_url, BUGZILLA_API_KEY="wrong-key")
    runtime = Runtime(load_settings(env))
    event_id = deliver(runtime, private_modify())
    runtime.sync.process_item("bugzilla", "2")
    stored = store.get_event(runtime.engine, event_id)
    assert stored is not None and stored.status == "pending" and stored.attempts == 0, stored
    assert "Bugzilla refused BUGZILLA_API_KEY (401" in (stored.last_error or "")
    assert zoho.issues() == []
    # the key fixed (what a reload of .env gives the worker): the waiting change syncs, nothing replayed
    fixed = Runtime(load_settings({**env, "BUGZILLA_API_KEY": API_KEY}))
    with fixed.engine.begin() as conn:  # its wait (CONFIG_WAIT_SECONDS) over
        conn.exec_driver_sql("UPDATE events SET next_attempt_at = 0")
        conn.exec_driver_sql("UPDATE leases SET retry_at = 0")
    drain(fixed, "2")
    stored = store.get_event(fixed.engine, event_id)
    assert stored is not None and stored.status == "done", stored
    assert [i["name"] for i in zoho.issues()] == ["Password reset mail leaks the token"]


def test_an_unknown_bug_is_a_note(tmp_path, zoho, bz):
    env = make_env(tmp_path, zoho, BUGZILLA_URL=bz.base_url, BUGZILLA_API_KEY=API_KEY)
    runtime = Runtime(load_settings(env))
    event_id = deliver(runtime, private_modify(bug_id=404404))
    drain(runtime, "404404")
    stored = store.get_event(runtime.engine, event_id)
    assert stored is not None and stored.status == "skipped"
    assert "not found in Bugzilla" in (stored.notes or "")


def test_bugzilla_down_defers_the_event_and_it_syncs_later(tmp_path, zoho, bz):
    bz.put_bug(2, changed=5, summary="Fetched once Bugzilla is back")
    # a lease of 3 s: the item waits in place at most 1 s, less than the breaker's first pause
    env = make_env(tmp_path, zoho, BUGZILLA_URL=bz.base_url, BUGZILLA_API_KEY=API_KEY, ITEM_LEASE_SECONDS="3")
    runtime = Runtime(load_settings(env))
    event_id = deliver(runtime, private_modify())
    bz.fail_next(1, 503)
    runtime.sync.process_item("bugzilla", "2")
    stored = store.get_event(runtime.engine, event_id)
    assert stored is not None and stored.status == "pending" and "503" in (stored.last_error or "")
    drain(runtime, "2")
    assert store.get_event(runtime.engine, event_id).status == "done"
    assert [i["name"] for i in zoho.issues()] == ["Fetched once Bugzilla is back"]


@pytest.fixture
def budgets(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    yield Budgets(engine)
    engine.dispose()


def test_client_errors(bz, budgets):
    client = bugzilla_api.BugzillaClient(bz.base_url, API_KEY, budgets=budgets, hold=0.0)
    bz.fail_next(1, 429)
    with pytest.raises(SourceBusy) as info:  # a wait for every process, never an attempt
        client.bug(1)
    assert isinstance(info.value, LimitWait) and info.value.retry_after == 7.0
    budgets.unblock("bugzilla")
    with pytest.raises(bugzilla_api.BugzillaError, match="not found"):
        client.bug(1)
    dead = bugzilla_api.BugzillaClient("http://127.0.0.1:9", API_KEY, budgets=budgets, hold=0.0)
    with pytest.raises(SourceUnavailable, match="did not answer") as down:
        dead.bug(1)
    assert not isinstance(down.value, LimitWait)
    assert down.value.retry_after == pytest.approx(2.0, abs=0.5)  # the breaker's first pause


def test_a_503_with_retry_after_blocks_and_is_waited_out(bz, budgets):
    bz.put_bug(7, changed=3)
    bz.fail_next(1, 503, retry_after=1)
    client = bugzilla_api.BugzillaClient(bz.base_url, API_KEY, budgets=budgets, hold=5.0)
    assert client.bug(7)["id"] == 7 and len(bz.calls("/rest/bug/7")) == 2


def test_a_put_is_never_repeated_after_a_5xx(bz, budgets):
    bz.put_bug(7, changed=3)
    bz.fail_next(1, 502)
    client = bugzilla_api.BugzillaClient(bz.base_url, API_KEY, budgets=budgets, hold=30.0)
    with pytest.raises(SourceUnavailable, match="not repeated"):
        client.update(7, {"comment": {"body": "Tracked in EC1-I4"}})
    assert [c["path"] for c in bz.calls()] == ["/rest/bug/7"]


def test_rest_fields_match_the_webhook_fields(bz, budgets):
    bz.put_bug(7, changed=3, summary="Same names", status="RESOLVED", resolution="FIXED", keywords=["perf"])
    client = bugzilla_api.BugzillaClient(bz.base_url, API_KEY, budgets=budgets)
    fields = bugzilla_api.fields_of(client.bug(7), "https://bugzilla.example.org", "desc")
    assert fields["status_resolution"] == "RESOLVED/FIXED"
    assert fields["keywords_and_type"] == ["perf", "defect"]
    assert fields["last_change_time"].endswith(":03") and not fields["last_change_time"].endswith("Z")
    assert fields["bug_url"] == "https://bugzilla.example.org/show_bug.cgi?id=7"
    assert set(fields) <= BugzillaSource.fields
