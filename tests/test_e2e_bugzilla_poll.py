"""A Bugzilla without webhooks, polled on real processes: beat schedules the source's poll
(BUGZILLA_POLL_PRODUCTS), the worker stores the changes it finds and wakes the items, and each bug lands in
Zoho once. The in-process poll's guarantees (overlaps, restarts, one-second times) are tests/test_polling.py's."""

from __future__ import annotations

import time

import pytest

from testkit.factories import BASE_TIME
from testkit.fakes.bugzilla import API_KEY, FakeBugzilla
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

pytestmark = [pytest.mark.e2e]

WEB = "1752587000000097024"  # the example mapping's project for Firefox


def test_a_polled_bugzilla_bug_lands_in_zoho_once(tmp_path):
    fake, bz = FakeZoho().start(), FakeBugzilla().start()
    stack = BridgeStack(
        tmp_path,
        fake,
        mappings=[REPO / "mappings" / "examples" / "bugzilla.yaml"],
        extra_env={
            "BUGZILLA_URL": bz.base_url,
            "BUGZILLA_API_KEY": API_KEY,
            "BUGZILLA_POLL_PRODUCTS": "Firefox",
            "BUGZILLA_POLL_SECONDS": "10",  # the shortest period the settings allow
            "COALESCE_MS": "0",
        },
    )
    try:
        now = time.time() - BASE_TIME.timestamp()  # the fake's times count from BASE_TIME
        bz.put_bug(4242, changed=now - 30, summary="Checkout hangs on the last step", component="Accounts")
        bz.put_bug(4243, changed=now - 30, summary="Not ours", product="Thunderbird")
        stack.start(workers=1)
        issue = wait_for(lambda: fake.issues(WEB), 60, what="the polled bug in Zoho")[0]
        assert issue["name"] == "Checkout hangs on the last step"
        assert issue.get("external_id") == "bugzilla:4242"
        # Later polls read the same bug again (polls overlap by a second): no second issue, nothing else synced.
        wait_for(lambda: _polls(bz) >= 2, 40, what="a second poll")
        assert stack.wait_idle(timeout=60).get("failed", 0) == 0
        assert [i["name"] for i in fake.issues()] == ["Checkout hangs on the last step"]
    finally:
        stack.stop()
        fake.stop()
        bz.stop()


def _polls(bz: FakeBugzilla) -> int:
    return len([r for r in bz.calls("/rest/bug") if r["path"] == "/rest/bug"])  # the searches
