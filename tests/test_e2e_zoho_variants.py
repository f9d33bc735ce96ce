"""The whole lifecycle under every variant the documents leave open, in both dialects, on real processes.

Create (with a crash between Zoho's create answer and the link write), edits, close, comments added, edited
and deleted: it must end with exactly one Zoho issue per item, the latest state, and each comment once,
whatever the fake portal does with custom fields, filters, the status list's spelling or date-only due dates.
"""

from __future__ import annotations

import os

import pytest

from testkit.factories import comment_event, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

pytestmark = pytest.mark.e2e

WEB = "1752587000000097024"
# Every value of every variant appears at least once in the fast set; the full product is `slow`.
FAST = [
    ("projects", dict(custom_field="accepted", filter_api_name="accepted", status_key="status_details")),
    ("projects", dict(custom_field="ignored", filter_api_name="refused", status_key="status_deatils")),
    ("projects", dict(custom_field="refused", filter_api_name="refused", date_only_due="refused")),
    ("bugtracker", dict()),
    # issue 20: the list with has_next_page, the extended field shape, a missing issue as 400, the 11th token
    # refused, and a live-portal throttle (400, naming minutes: capped to the fake's 2 s block) mid-lifecycle
    (
        "projects",
        dict(
            issue_page_info="has_next_page",
            fields_answer="extended",
            missing_issue="400",
            token_limit="refuse",
            throttle="400",
            v3_limit=5,
            block_seconds=2.0,
            RATE_BLOCK_MAX_SECONDS="2",
        ),
    ),
    # BugTracker search answering with descriptions, a missing bug as 400, a search index a second behind
    ("bugtracker", dict(bt_search_fields="full", missing_issue="400", search_lag=1.0)),
]
FULL = [
    ("projects", dict(custom_field=c, filter_api_name=f, status_key=s, date_only_due=d))
    for c in ("accepted", "ignored", "refused")
    for f in ("accepted", "refused")
    for s in ("status_details", "status_deatils")
    for d in ("accepted", "refused")
]
FULL = [v for v in FULL if v not in FAST]


def _ids(cases):
    return [d + ":" + ",".join(f"{k}={v}" for k, v in sorted(var.items())) for d, var in cases]


def lifecycle(tmp_path, dialect: str, variants: dict) -> None:
    env = {k: v for k, v in variants.items() if k.isupper()}  # the bridge's settings the variant needs
    variants = {k: v for k, v in variants.items() if not k.isupper()}
    fake = FakeZoho(host_dialect=dialect, **variants).start()
    stack = BridgeStack(tmp_path, fake, extra_env={"ZOHO_DIALECT": dialect, "COALESCE_MS": "0", **env})
    kind = "bugtracker" if dialect == "bugtracker" else "projects"
    try:
        stack.start(workers=1)
        # 1. The create lands in Zoho, and its answer is lost (a 500 after the commit): a crash window.
        fake.set_faults(error_500_after_commit_rate=1.0)
        assert stack.github("issues", issues_event("opened", number=7, labels=("bug",), updated=0)).status_code == 200
        wait_for(lambda: fake.issues(dialect=kind), 30, what="the first create in Zoho")
        fake.set_faults()
        stack.wait_idle(timeout=60)
        # 2. Edits and a close; comments added, edited, deleted.
        stack.github("issues", issues_event("edited", number=7, title="Login broken on Safari", updated=10))
        stack.github("issue_comment", comment_event("created", comment_id=1, text="first", commented=20, number=7))
        stack.github("issue_comment", comment_event("created", comment_id=2, text="second", commented=21, number=7))
        stack.wait_idle(timeout=60)
        stack.github(
            "issue_comment", comment_event("edited", comment_id=1, text="first, edited", commented=30, number=7)
        )
        stack.github("issue_comment", comment_event("deleted", comment_id=2, text="second", commented=31, number=7))
        closed = issues_event("closed", number=7, title="Login broken on Safari", state="closed", updated=40)
        stack.github("issues", closed)
        # 3. A second item, no crash: it costs one create.
        stack.github("issues", issues_event("opened", number=8, updated=50))
        counts = stack.wait_idle(timeout=90)
        assert set(counts) <= {"done", "superseded"}, counts  # nothing failed

        issues = fake.issues(dialect=kind)
        assert len(issues) == 2, [i.get("id") for i in issues]  # exactly one Zoho issue per item
        first = next(i for i in issues if "[issue-bridge:github:acme/web#7]" in i["description"])
        title = first["title"] if kind == "bugtracker" else first["name"]
        status = first["status"] if kind == "bugtracker" else first["status"]["name"]
        assert (title, status) == ("Login broken on Safari", "Closed")  # the latest state
        comments = [c.get("content") or c.get("comment") for c in fake.comments(first["id"])]
        assert len(comments) == 1 and "first, edited" in comments[0]  # each comment once, edited
        if kind == "projects":
            stored = first.get("external_id")
            expected = {"accepted": "github:acme/web#7", "ignored": None, "refused": None}
            assert stored == expected[variants.get("custom_field", "accepted")]
        creates = fake.api_calls(method="POST", path_contains="/bugs" if kind == "bugtracker" else "/issues")
        creates = [c for c in creates if c["path"].endswith(("/issues", "/bugs")) and not c.get("throttled")]
        refused_retry = 1 if variants.get("custom_field") == "refused" else 0  # learned once, then not sent
        assert len(creates) == 2 + refused_retry, [c["status"] for c in creates]
        if variants.get("v3_limit"):
            assert fake.throttled_calls(), "Zoho never throttled: the variant proves nothing"
    finally:
        stack.stop()
        fake.stop()


@pytest.mark.parametrize(("dialect", "variants"), FAST, ids=_ids(FAST))
def test_lifecycle_under_variant(tmp_path, dialect, variants):
    lifecycle(tmp_path, dialect, variants)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BRIDGE_TEST_SLOW"), reason="the full variant matrix: set BRIDGE_TEST_SLOW=1")
@pytest.mark.parametrize(("dialect", "variants"), FULL, ids=_ids(FULL))
def test_lifecycle_under_every_other_combination(tmp_path, dialect, variants):
    lifecycle(tmp_path, dialect, variants)
