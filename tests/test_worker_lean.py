"""A worker near its database's speed (issue 24): what the worker's hot path no longer spends, and that what
the operators read is still all there.

- a Zoho call's log row rides in the item's next fenced step (4 transactions per edit, not 5), and the call log,
  its counters and the story show every call, a call made by a worker that then lost its claim included;
- a call with no window, rate or quota to spend takes no write transaction, and still honours the shared block;
- a burst of deliveries is synced by a few Celery tasks of several items, shared by the worker processes, not by
  a task per item; every issue is still made once.

Each test runs on SQLite and, when BRIDGE_TEST_POSTGRES_URL names a server, on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from bridge import store
from bridge.outbound.budget import Budgets, Limit
from bridge.outbound.errors import LimitWait
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import schema as db
from testkit.dbs import engine  # noqa: F401  (the fixture)
from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, BridgeStack, in_process_env, wait_for
from workers import tasks

SOURCE = GitHubSource(GITHUB_SECRET)
ITEM = "acme/web#1"


@pytest.fixture
def fake():
    with FakeZoho() as server:
        yield server


def runtime_on(engine: Engine, tmp: Path, fake: FakeZoho, **extra: str) -> Runtime:  # noqa: F811
    url = engine.url.render_as_string(hide_password=False)
    return Runtime(load_settings(in_process_env(tmp, fake, "github", DATABASE_URL=url, **extra), read_dotenv=False))


def deliver(runtime: Runtime, payload: dict) -> None:
    body, headers = github_request(GITHUB_SECRET, "issues", payload)
    store.record_delivery(
        runtime.engine, SOURCE.parse(body, headers), dedup_key=SOURCE.dedup_key(body, headers), headers={}, payload=body
    )


class Transactions:
    """Commits on an engine, as a user of the database would count them."""

    def __init__(self, engine: Engine) -> None:  # noqa: F811
        self.commits = 0
        event.listen(engine, "commit", self._commit)

    def _commit(self, _conn: object) -> None:
        self.commits += 1


def zoho_call_log(runtime: Runtime) -> list[tuple[str, str, int | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(db.zoho_calls).order_by(db.zoho_calls.c.id)).all()
    return [(r.method, r.path, r.status) for r in rows]


def issue_calls_seen_by_zoho(fake: FakeZoho) -> list[str]:
    return [c["method"] for c in fake.api_calls() if "/issues" in c["path"]]


def test_an_edit_takes_four_transactions_and_the_call_log_shows_its_call(engine, tmp_path, fake):  # noqa: F811
    runtime = runtime_on(engine, tmp_path, fake)
    deliver(runtime, issues_event("opened", title="first"))
    runtime.sync.process_item("github", ITEM)
    deliver(runtime, issues_event("edited", title="second", updated=5.0))
    counted = Transactions(runtime.engine)
    runtime.sync.process_item("github", ITEM)
    assert [i["name"] for i in fake.issues()] == ["second"]
    # claim + read, the step that marks the update sent, the finish (the call's row is in it); the budget,
    # with no limit to spend, is a read
    assert counted.commits == 3
    logged = [m for m, p, _ in zoho_call_log(runtime) if "/issues" in p]
    assert logged == issue_calls_seen_by_zoho(fake) == ["POST", "PATCH"]
    [edit] = [e for e in store.list_events(runtime.engine) if e.event_name == "issues.edited"]
    assert [c["method"] for c in store.calls_for_event(runtime.engine, edit.id)] == ["PATCH"]  # the story's


def test_a_call_made_by_a_worker_that_then_lost_its_claim_is_still_logged(engine, tmp_path, fake):  # noqa: F811
    """The worker's create is slow; meanwhile its lease runs out and another worker takes the item over. The
    slow worker stops without writing the item's state, but the call it made is in the call log."""
    slow, other = runtime_on(engine, tmp_path, fake), runtime_on(engine, tmp_path, fake)
    deliver(slow, issues_event("opened", number=2))
    slow.sync.process_item("github", "acme/web#2")  # the token and the field metadata, warm
    deliver(slow, issues_event("opened", title="slow one"))
    fake.set_faults(slow_rate=1.0, slow_seconds=2.0)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(slow.sync.process_item("github", ITEM)))
    worker.start()
    time.sleep(0.7)  # its create is on its way (the fake logs a request once it answered)
    fake.set_faults()
    with slow.engine.begin() as conn:  # its lease runs out (a pause, a slow network) ...
        conn.execute(update(db.leases).values(expires_at=0.0))
    other.sync.process_item("github", ITEM)  # ... and another worker takes the item over
    worker.join(30)
    assert result and result[0].lost
    logged = [m for m, p, _ in zoho_call_log(slow) if "/issues" in p]
    assert logged == issue_calls_seen_by_zoho(fake)  # every call Zoho saw is in the log, the lost worker's too
    assert logged.count("POST") >= 2


def test_a_call_with_no_limit_to_spend_takes_no_write_lock_and_still_waits_for_a_block(tmp_path):
    """ZOHO_RATE_LIMIT_PER_MINUTE=0 (no limit enforced by the bridge): a call has nothing to spend, so it does not
    queue behind other processes' writes for the database's write lock; a block another process set still stops
    it."""
    sqlite = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
    db.ensure_schema(sqlite)
    budgets = Budgets(sqlite)
    budgets.register(Limit("zoho"))  # no window, no quota
    writer = sqlite.raw_connection()  # another process in the middle of a write transaction
    writer.cursor().execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert budgets.take(["zoho"], hold=0) == 0.0
        assert time.monotonic() - started < 10  # a write would wait out busy_timeout (30 s)
    finally:
        writer.rollback()
        writer.close()
    Budgets(sqlite).block("zoho", 30, "Zoho throttled another worker")
    with pytest.raises(LimitWait) as wait:
        budgets.take(["zoho"], hold=0)
    assert "another worker" in wait.value.reason and 25 < (wait.value.retry_after or 0) <= 30
    sqlite.dispose()


def test_a_burst_is_cut_into_shares_every_item_once_in_order():
    for n in (1, 2, 3, 7, 10, 23, 60, 500):
        items = [["github", f"acme/web#{i}"] for i in range(n)]
        shares = tasks.shares(items)
        assert [item for share in shares for item in share] == items
        assert len(shares) >= min(n, tasks.SPREAD)  # every process of a worker's pool takes a share
        assert max(len(share) for share in shares) <= tasks.ITEMS_PER_TASK
    assert tasks.shares([]) == []


@pytest.mark.e2e
@pytest.mark.scale_out
def test_a_burst_is_synced_by_fewer_tasks_than_items_and_every_issue_made_once(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake).start()
    try:
        numbers = range(100, 140)
        with ThreadPoolExecutor(8) as senders:  # a burst: the deliveries arrive together
            answers = list(senders.map(lambda n: stack.github("issues", issues_event("opened", number=n)), numbers))
        assert all(r.status_code == 200 for r in answers)
        wait_for(lambda: len(fake.issues()) >= len(numbers), 90, what="every issue in Zoho")
        stack.wait_idle()
        made = sorted(i.get("external_id") for i in fake.issues())
        assert made == sorted(f"github:acme/web#{n}" for n in numbers)  # each once
        names = ('"workers.tasks.sync_item', '"workers.tasks.wake_items')  # sync_item, sync_items, wake_items
        received = [
            line for line in stack.log_text().splitlines() if "received" in line and any(n in line for n in names)
        ]
        assert 0 < len(received) < 0.75 * len(numbers), received[:3]
    finally:
        stack.stop()
        fake.stop()


def test_a_skewed_worker_logs_its_zoho_calls_at_the_databases_time(engine, tmp_path, fake, monkeypatch):  # noqa: F811
    """The call log feeds the budget charts and the item's story, both timed by the database's clock: a row stamped
    with the host's clock put a skewed worker's calls two hours away (in no chart minute at all)."""
    from bridge.store.clock import db_now

    runtime = runtime_on(engine, tmp_path, fake)
    deliver(runtime, issues_event("opened"))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200.0)
    runtime.sync.process_item("github", ITEM)
    monkeypatch.setattr(time, "time", real)
    with engine.connect() as conn:
        now = db_now(conn)
        stamps = list(conn.execute(select(db.zoho_calls.c.at)).scalars())
    assert stamps and all(now - 60 < at <= now + 1 for at in stamps), (now, stamps)
