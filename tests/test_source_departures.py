"""The departures issue 20 lists for the sources, each against the fakes as the documents allow them to answer.

- Bugzilla: an installation's maximum replaces `limit` (003:1563-1567) and no order is documented: the
  backfill and the poller reach every bug once, whatever the order and the cap;
- Bugzilla: closing a bug without a resolution (003:2050-2052) is refused with its reason, never re-tried
  every tick;
- GitHub: a comment POST that failed after GitHub made it (5xx, timeout) is not repeated (found by its
  marker instead); a backfilled item looks exactly as a webhook of the same state would (repository id).
"""

from __future__ import annotations

import dataclasses

import pytest

from bridge import store
from bridge.backfill.runner import Batch
from bridge.core import zoho_poll as poll
from bridge.events import SourceUnavailable
from bridge.outbound.budget import Budgets
from bridge.outbound.errors import LimitWait
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.bugherd.api import BugHerdClient
from bridge.sources.bugherd.backfill import BugHerdReader
from bridge.sources.bugzilla.api import BugzillaClient
from bridge.sources.bugzilla.backfill import BugzillaReader
from bridge.sources.bugzilla.poller import PollConfig, load_mark, poll_bugzilla
from bridge.sources.bugzilla.webhook import BugzillaSource
from bridge.sources.github.api import GitHubClient
from bridge.sources.github.backfill import GitHubReader
from bridge.sources.github.webhook import GitHubSource
from bridge.sources.writers import hidden_marker, writer_for
from bridge.store import Link
from bridge.store import schema as db
from testkit.factories import BASE_TIME, github_request
from testkit.factories_trackers import (
    BUGZILLA_SECRET,
    bugherd_comment,
    bugherd_task,
    bugzilla_bug,
    bugzilla_event,
    encode,
)
from testkit.fakes.bugherd import FakeBugHerd
from testkit.fakes.bugzilla import API_KEY, FakeBugzilla
from testkit.fakes.github import TOKEN, FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import in_process_env

ORDERS = ("changed", "id", "newest")


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    yield engine
    engine.dispose()


def _read(reader) -> list[Batch]:
    return list(reader.batches(None))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("cap", [0, 2])
def test_the_bugzilla_backfill_reads_every_bug_once_whatever_the_cap_and_order(tmp_path, engine, order, cap):
    """Was: with a cap of 2 it read 2 of 5 bugs (a page shorter than `limit` taken for the last one)."""
    settings = load_settings(in_process_env(tmp_path, FakeZoho(), "bugzilla"))
    with FakeBugzilla(max_limit=cap, order=order) as bz:
        for bug_id in range(1, 6):
            bz.put_bug(bug_id, changed=10 * (6 - bug_id))  # newer changes on lower ids
        client = BugzillaClient(bz.base_url, API_KEY, budgets=Budgets(engine))
        batches = _read(BugzillaReader(client, settings, "Firefox"))
    read = [item.item_key for batch in batches for item in batch.items]
    assert sorted(read) == ["1", "2", "3", "4", "5"] and len(read) == 5
    assert all("order" not in call["query"] for call in bz.calls("/rest/bug") if call["path"] == "/rest/bug")
    for batch in batches:  # each page ordered here, oldest change first
        times = [item.events[0].event.source_ts for item in batch.items]
        assert times == sorted(times)


@pytest.mark.parametrize("order", ORDERS)
def test_the_poller_reaches_every_bug_whatever_the_order_and_polls_again_for_nothing(tmp_path, order):
    zoho = FakeZoho()
    with FakeBugzilla(max_limit=2, order=order) as bz:
        for bug_id in range(1, 8):
            bz.put_bug(bug_id, changed=10 + (bug_id % 3))
        env = in_process_env(
            tmp_path, zoho, "bugzilla", BUGZILLA_WEBHOOK_SECRET=BUGZILLA_SECRET, BUGZILLA_URL=bz.base_url
        )
        runtime = Runtime(load_settings({**env, "BUGZILLA_API_KEY": API_KEY}))
        config = PollConfig(products=("Firefox",), page_size=3, start=BASE_TIME)
        fed = poll_bugzilla(runtime.engine, runtime.settings, config)
        assert {item for _, item in fed} == {str(i) for i in range(1, 8)}
        mark = load_mark(runtime.engine, "Firefox")
        assert mark is not None
        assert poll_bugzilla(runtime.engine, runtime.settings, config) == set()  # read again, nothing new stored


def _bugzilla_world(tmp_path, bz: FakeBugzilla, zoho: FakeZoho, reverse: str) -> Runtime:
    env = in_process_env(
        tmp_path,
        zoho,
        "bugzilla",
        BUGZILLA_WEBHOOK_SECRET=BUGZILLA_SECRET,
        BUGZILLA_URL=bz.base_url,
        BUGZILLA_API_KEY=API_KEY,
    )
    mapping = tmp_path / "mappings" / "bugzilla.yaml"
    mapping.write_text(mapping.read_text() + reverse)
    return Runtime(load_settings(env))


def test_closing_a_bugzilla_bug_without_a_resolution_is_refused_once_not_every_tick(tmp_path):
    """Was: the PUT was refused (003:2050-2052), the poll's mark stopped and the next tick sent it again, for ever."""
    with FakeZoho() as zoho, FakeBugzilla() as bz:
        bz.put_bug(35, changed=0, summary="Checkout broken")
        runtime = _bugzilla_world(tmp_path, bz, zoho, "\nreverse:\n  status:\n    Closed: {status: RESOLVED}\n")
        source = BugzillaSource(BUGZILLA_SECRET, bugzilla_url=bz.base_url)
        body = encode(bugzilla_event("bug", "create", bug=bugzilla_bug(bug_id=35, summary="Checkout broken")))
        store.record_delivery(
            runtime.engine, source.parse(body, {}), dedup_key=source.dedup_key(body, {}), headers={}, payload=body
        )
        runtime.sync.process_item("bugzilla", "35")
        (issue,) = zoho.issues()
        zoho.person_sets_status(issue["id"], "Closed")
        for _ in range(3):  # three beat ticks, and the items they nudge
            _, wake = poll.poll_zoho(runtime.engine, runtime.registry, runtime.zoho)
            for source_name, item_key in wake:
                runtime.sync.process_item(source_name, item_key)
        puts = [c for c in bz.calls("/rest/bug/35") if c["method"] == "PUT"]
        assert puts == [] and bz.bug(35)["status"] == "NEW"
        reads = [c for c in bz.calls("/rest/bug/35") if c["method"] == "GET"]
        assert len(reads) == 1  # looked at once; the refusal is not repeated while Zoho says the same
        [write] = [o for o in journal_of(runtime) if o.kind == "source.state"]
        assert write.state == "failed" and "needs a resolution" in (write.last_error or "")  # visible, with why
        runtime.engine.dispose()


def journal_of(runtime: Runtime) -> list:
    from bridge.store import journal

    with runtime.engine.connect() as conn:
        return journal.for_item(conn, "bugzilla", "35")


GH_LINK = Link(
    "github", "github:acme/web#7", "acme/web#7", "739121528", "1752587000000097024", "17525", "linked", 0.0, None
)
GH_FIELDS = {"repository": "acme/web", "number": 7}


@pytest.mark.parametrize("failure", ["5xx", "timeout"])
def test_a_github_comment_post_that_failed_after_it_was_made_is_not_posted_again(tmp_path, engine, failure):
    """Was: a comment POST was repeated after a 5xx or a timeout: a second back-link on the issue."""
    settings = load_settings(in_process_env(tmp_path, FakeZoho(), "github", GITHUB_TOKEN=TOKEN))
    with FakeGitHub() as github:
        github.add_issue("acme/web", 7)
        settings = dataclasses.replace(settings, github_api_url=github.base_url, item_lease_seconds=90.0)
        writer = writer_for("github", settings, engine, budgets=Budgets(engine))
        assert writer is not None
        if failure == "5xx":
            github.fail_writes_next(1, 502)
        else:
            github.slow_writes_next(1, 3.0)
            writer.client.http.timeout = (2.0, 1.0)  # type: ignore[attr-defined]
        with pytest.raises(SourceUnavailable, match="not repeated"):
            writer.post_comment(GH_LINK, GH_FIELDS, "Tracked in Zoho as EC1-I4", "backlink")
        comments = github.comments_of("acme/web", 7)
        assert len(comments) == 1 and hidden_marker("backlink", GH_LINK) in comments[0]["body"]
        Budgets(engine).unblock("github")
        assert writer.find_comment(GH_LINK, GH_FIELDS, "backlink") == str(comments[0]["id"])  # in doubt: looked up
        assert len(github.comments_of("acme/web", 7)) == 1


def test_a_backfilled_github_issue_is_exactly_what_a_webhook_of_the_same_state_brings(engine):
    """Was: backfilled bodies lacked the repository id, so the first webhook after a backfill was a change."""
    with FakeGitHub() as github:
        github.add_issue("acme/web", 3, title="Crash on save", labels=("bug",), at=5)
        client = GitHubClient(TOKEN, budgets=Budgets(engine), base_url=github.base_url)
        (batch, *_) = _read(GitHubReader(client, engine, "acme/web", state="all"))
        backfilled = batch.items[0].events[0].event
        payload = {
            "action": "labeled",
            "issue": github.issue("acme/web", 3),
            "repository": github.repository("acme/web"),
        }
    body, headers = github_request("s", "issues", payload)
    webhook = GitHubSource("s").parse(body, headers)
    assert backfilled.fields == webhook.fields and backfilled.identity == webhook.identity
    assert backfilled.fields["repository_id"] is not None


@pytest.mark.parametrize(("status", "retry_after"), [(403, 120), (429, None)])
def test_a_github_secondary_limit_on_a_write_is_a_wait_then_the_comment_is_posted_once(
    tmp_path, engine, status, retry_after
):
    """Was: a Retry-After over 60 s failed the back-link's attempt."""
    settings = load_settings(in_process_env(tmp_path, FakeZoho(), "github", GITHUB_TOKEN=TOKEN))
    with FakeGitHub() as github:
        github.add_issue("acme/web", 7)
        settings = dataclasses.replace(settings, github_api_url=github.base_url)
        writer = writer_for("github", settings, engine, budgets=Budgets(engine))
        assert writer is not None
        github.secondary_limit_next(1, retry_after, status)
        with pytest.raises(LimitWait) as wait:
            writer.post_comment(GH_LINK, GH_FIELDS, "Tracked in Zoho as EC1-I4", "backlink")
        assert wait.value.retry_after == (retry_after or 60.0) and github.comments_of("acme/web", 7) == []
        Budgets(engine).unblock("github")  # the wait is over
        writer.post_comment(GH_LINK, GH_FIELDS, "Tracked in Zoho as EC1-I4", "backlink")
        assert len(github.comments_of("acme/web", 7)) == 1


def test_the_bugherd_backfill_reads_every_task_and_comment_whatever_the_shapes(engine):
    for shapes in ("wrapped", "bare"):
        with FakeBugHerd(shapes=shapes, comment_page_size=2, burst=False) as bugherd:
            for n in range(1, 4):
                task = bugherd_task(task_id=41_000_000 + n, local_task_id=n)
                bugherd.put_task(task)
                for c in range(3):  # two pages of two, one short page with more to come per the count
                    bugherd.put_comment(task["id"], bugherd_comment(comment_id=18_000_000 + 10 * n + c, task=task))
            client = BugHerdClient(bugherd.api_key, budgets=Budgets(engine), base_url=bugherd.base_url, hold=30.0)
            items = [item for batch in _read(BugHerdReader(client, 77120)) for item in batch.items]
        assert sorted(item.item_key for item in items) == [str(41_000_000 + n) for n in range(1, 4)], shapes
        assert all(len(item.events) == 4 for item in items), shapes  # the task and its three comments
