"""Polling Bugzilla against the fake Bugzilla REST server over real HTTP.

Polls overlap (`last_change_time` means "at or after"), Bugzilla times have one-second precision, and the
process may restart or fail between and during polls: every change must be stored exactly once, none lost.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from bridge import store
from bridge.events import SourceUnavailable, parse_timestamp
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.bugzilla import poller as polling
from bridge.sources.bugzilla.poller import PollConfig, load_mark, poll_bugzilla
from testkit.factories import BASE_TIME
from testkit.fakes.bugzilla import API_KEY, FakeBugzilla, rest_ts
from testkit.fakes.zoho import FakeZoho
from tests.test_bugzilla_api import make_env

CONFIG = PollConfig(products=("Firefox",), start=BASE_TIME)


@pytest.fixture
def zoho():
    with FakeZoho() as server:
        yield server


@pytest.fixture
def bz():
    with FakeBugzilla() as server:
        yield server


def runtime_for(tmp_path, zoho, bz) -> Runtime:
    """A fresh set of process objects on the same database: what a restarted beat process builds."""
    return Runtime(load_settings(make_env(tmp_path, zoho, BUGZILLA_URL=bz.base_url, BUGZILLA_API_KEY=API_KEY)))


def stored_keys(runtime: Runtime) -> Counter[str]:
    with runtime.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT dedup_key FROM events WHERE source = 'bugzilla'").all()
    return Counter(row[0] for row in rows)


def changes(runtime: Runtime) -> Counter[str]:
    """What was stored, readable: `bug:<id>@<second>` and `comment:<id>`, with how often."""
    out: Counter[str] = Counter()
    for key, n in stored_keys(runtime).items():
        kind, ident, rest = (key + ":").split(":", 2)
        if kind == "poll":
            offset = (parse_timestamp(rest[:20], field_name="key") - BASE_TIME).total_seconds()
            out[f"bug:{ident}@{offset:.0f}"] += n
        else:
            out[f"comment:{ident}"] += n
    return out


def drain(runtime: Runtime, items: set[tuple[str, str]], timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    for source, item in sorted(items):
        while time.time() < deadline:
            runtime.sync.process_item(source, item)
            if not store.pending_for_item(runtime.engine, source, item, now=float("inf")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{item} still pending")


def test_overlapping_polls_and_a_restart_store_each_change_once(tmp_path, zoho, bz):
    bz.put_bug(1, changed=10, summary="one")
    bz.put_bug(2, changed=10, summary="two")
    bz.put_bug(3, changed=20, summary="three")
    bz.put_bug(9, changed=15, summary="elsewhere", product="Thunderbird")
    runtime = runtime_for(tmp_path, zoho, bz)

    fed = poll_bugzilla(runtime.engine, runtime.settings, CONFIG)
    assert fed == {("bugzilla", "1"), ("bugzilla", "2"), ("bugzilla", "3")}
    assert changes(runtime) == Counter({"bug:1@10": 1, "bug:2@10": 1, "bug:3@20": 1})
    mark = load_mark(runtime.engine, "Firefox")
    assert mark is not None and polling.rest_time(mark.time) == rest_ts(20) and mark.ids == (3,)
    drain(runtime, fed)
    assert sorted(i["name"] for i in zoho.issues()) == ["one", "three", "two"]

    # More changes: at the mark's very second (a new bug, a comment on bug 3) and later ones.
    bz.put_bug(4, changed=20, summary="four")
    c3 = bz.add_comment(3, "same second as the last poll", at=20)
    bz.put_bug(1, changed=30, status="ASSIGNED")
    c2 = bz.add_comment(2, "a later comment", at=31)

    runtime = runtime_for(tmp_path, zoho, bz)  # restart between the polls
    fed = poll_bugzilla(runtime.engine, runtime.settings, CONFIG)
    assert fed == {("bugzilla", "1"), ("bugzilla", "2"), ("bugzilla", "3"), ("bugzilla", "4")}
    assert changes(runtime) == Counter(
        {
            "bug:1@10": 1,
            "bug:2@10": 1,
            "bug:3@20": 1,
            "bug:4@20": 1,
            f"comment:{c3}": 1,
            "bug:1@30": 1,
            "bug:2@31": 1,
            f"comment:{c2}": 1,
        }
    )
    before = stored_keys(runtime)
    assert poll_bugzilla(runtime.engine, runtime.settings, CONFIG) == set()  # nothing new: nothing stored
    assert stored_keys(runtime) == before and max(before.values()) == 1

    drain(runtime, fed)
    issues = {i["name"]: i for i in zoho.issues()}
    assert sorted(issues) == ["four", "one", "three", "two"]
    assert sum("a later comment" in str(c) for c in zoho.comments(issues["two"]["id"])) == 1
    assert sum("same second as the last poll" in str(c) for c in zoho.comments(issues["three"]["id"])) == 1
    # Comment 0 is the description, never a comment.
    assert all("Steps to reproduce" not in str(c) for i in issues.values() for c in zoho.comments(i["id"]))
    assert "Steps to reproduce" in str(issues["four"].get("description"))


def test_paging_through_more_bugs_than_a_page_with_many_in_one_second(tmp_path, zoho, bz):
    for bug_id in range(1, 8):  # seven bugs in one second, then three later
        bz.put_bug(bug_id, changed=10)
    for bug_id in range(8, 11):
        bz.put_bug(bug_id, changed=10 + bug_id)
    runtime = runtime_for(tmp_path, zoho, bz)
    fed = poll_bugzilla(
        runtime.engine, runtime.settings, PollConfig(products=("Firefox",), page_size=3, start=BASE_TIME)
    )
    assert {item for _, item in fed} == {str(i) for i in range(1, 11)}
    assert sum(stored_keys(runtime).values()) == 10 and max(stored_keys(runtime).values()) == 1
    assert len(bz.calls("/rest/bug")) - len(bz.calls("/rest/bug/")) >= 4  # several search pages


def test_a_server_cap_below_the_page_size_still_reaches_every_bug(tmp_path, zoho):
    with FakeBugzilla(max_limit=2) as bz:
        for bug_id in range(1, 6):
            bz.put_bug(bug_id, changed=bug_id)
        runtime = runtime_for(tmp_path, zoho, bz)
        fed = poll_bugzilla(runtime.engine, runtime.settings, CONFIG)
        assert {item for _, item in fed} == {"1", "2", "3", "4", "5"}


def test_a_failure_mid_poll_keeps_the_mark_and_the_retry_stores_nothing_twice(tmp_path, zoho, bz):
    for bug_id in range(1, 6):
        bz.put_bug(bug_id, changed=bug_id)
    runtime = runtime_for(tmp_path, zoho, bz)
    config = PollConfig(products=("Firefox",), page_size=2, start=BASE_TIME)
    real_search = polling.BugzillaClient.search
    calls = {"n": 0}

    def flaky_search(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second page fails: the first page's bugs are stored already
            raise SourceUnavailable("Bugzilla answered 503")
        return real_search(self, **kwargs)

    polling.BugzillaClient.search = flaky_search
    try:
        with pytest.raises(SourceUnavailable):
            poll_bugzilla(runtime.engine, runtime.settings, config)
    finally:
        polling.BugzillaClient.search = real_search
    assert sum(stored_keys(runtime).values()) == 0  # every page is read before anything is stored
    assert load_mark(runtime.engine, "Firefox") is None  # not advanced
    runtime = runtime_for(tmp_path, zoho, bz)  # and a restart on top
    fed = poll_bugzilla(runtime.engine, runtime.settings, config)
    assert {item for _, item in fed} == {"1", "2", "3", "4", "5"}
    keys = stored_keys(runtime)
    assert sum(keys.values()) == 5 and max(keys.values()) == 1


def test_bugzilla_down_raises_source_unavailable_and_moves_nothing(tmp_path, zoho, bz):
    bz.put_bug(1, changed=1)
    runtime = runtime_for(tmp_path, zoho, bz)
    config = PollConfig(products=("Firefox",), start=BASE_TIME, interval=10.0)  # waits in place up to 5 s
    bz.fail_next(2, 503)  # the breaker's pauses: 2 s (the search is repeated), then 4 s (more than is left)
    with pytest.raises(SourceUnavailable):
        poll_bugzilla(runtime.engine, runtime.settings, config)
    assert load_mark(runtime.engine, "Firefox") is None and not stored_keys(runtime)
    assert len(bz.calls("/rest/bug")) == 2
    assert poll_bugzilla(runtime.engine, runtime.settings, config) == {("bugzilla", "1")}


def test_without_credentials_or_products_polling_does_nothing(tmp_path, zoho, bz):
    bz.put_bug(1, changed=1)
    runtime = Runtime(load_settings(make_env(tmp_path, zoho)))
    assert poll_bugzilla(runtime.engine, runtime.settings, CONFIG) == set()
    runtime = runtime_for(tmp_path, zoho, bz)
    assert poll_bugzilla(runtime.engine, runtime.settings, PollConfig(products=())) == set()
    assert bz.calls() == []
