"""BugHerd API v2 client, enrichment and `bridge bugherd register-webhooks`, against the fake BugHerd over HTTP:
the seed's wrappers or bare answers, and one 60-a-minute budget (bursts of 10) for every process (002:29)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from bridge import sources
from bridge.cli import main
from bridge.outbound.budget import Budgets
from bridge.outbound.errors import ConfigError, LimitWait
from bridge.settings import load_settings
from bridge.sources.bugherd import api as bugherd_api
from bridge.sources.bugherd.webhook import REDUCED_TASK_NOTE, BugHerdSource
from bridge.sources.http import SourceBusy
from bridge.store import schema as db
from testkit.factories_trackers import BUGHERD_TOKEN, bugherd_comment, bugherd_task, encode, tracker_env
from testkit.fakes.bugherd import API_KEY, FakeBugHerd

EVENTS = ("task_create", "task_update", "comment", "task_destroy")


@pytest.fixture(params=["wrapped", "bare"])
def bh(request):
    with FakeBugHerd(shapes=request.param) as server:
        yield server


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    yield engine
    engine.dispose()


def client(bh: FakeBugHerd, engine, key: str = API_KEY, hold: float = 0.0) -> bugherd_api.BugHerdClient:
    return bugherd_api.BugHerdClient(key, budgets=Budgets(engine), base_url=bh.base_url, hold=hold)


def reduced_event():
    body = encode({"task": {"id": 41000217, "project_id": 77120, "updated_at": "2026-03-02T09:00:05.000Z"}})
    return BugHerdSource(BUGHERD_TOKEN).parse(body, {}, "task_update")


def test_a_body_without_the_tasks_fields_has_no_state_and_says_why():
    ev = reduced_event()
    assert not ev.has_state and ev.notes == (REDUCED_TASK_NOTE,)
    destroy = BugHerdSource(BUGHERD_TOKEN).parse(
        encode({"task": {"id": 1, "project_id": 2, "updated_at": "2026-03-02T09:00:05Z"}}), {}, "task_destroy"
    )
    assert destroy.has_state and destroy.action == "deleted"


def test_enrich_fetches_the_whole_task_with_basic_auth(tmp_path, bh, engine):
    bh.put_task(bugherd_task(description="Kettle price hidden", status="doing", tags=("ui",), updated=9))
    settings = load_settings(tracker_env(tmp_path, BUGHERD_API_KEY=API_KEY), read_dotenv=False)
    ev = bugherd_api.enrich(settings, reduced_event(), Budgets(engine), client=client(bh, engine))
    assert ev.has_state and ev.fields["description"] == "Kettle price hidden" and ev.fields["status"] == "doing"
    assert ev.fields["tag_names"] == ["ui"] and ev.notes == (bugherd_api.FETCHED_NOTE,)
    assert set(ev.fields) <= BugHerdSource.fields
    (call,) = bh.calls("GET")
    assert call["path"] == "/api_v2/projects/77120/tasks/41000217.json" and call["auth"].startswith("Basic ")


def test_the_workers_enrichment_asks_bugherd_api_url(tmp_path, bh, engine):
    """Was: the worker's enrichment always asked BugHerd's public host, whatever BUGHERD_API_URL said."""
    bh.put_task(bugherd_task(description="Fetched from the configured host", updated=9))
    env = tracker_env(tmp_path, BUGHERD_API_KEY=API_KEY, BUGHERD_API_URL=bh.base_url)
    settings = load_settings(env, read_dotenv=False)
    ev = sources.enrich(settings, reduced_event(), engine)
    assert ev.has_state and ev.fields["description"] == "Fetched from the configured host"
    assert [c["path"] for c in bh.calls("GET")] == ["/api_v2/projects/77120/tasks/41000217.json"]


def test_enrich_without_a_key_leaves_the_event_and_a_missing_task_is_a_note(tmp_path, bh, engine):
    ev = reduced_event()
    settings = load_settings(tracker_env(tmp_path), read_dotenv=False)
    assert bugherd_api.enrich(settings, ev, Budgets(engine)) is ev
    keyed = load_settings(tracker_env(tmp_path, BUGHERD_API_KEY=API_KEY), read_dotenv=False)
    missing = bugherd_api.enrich(keyed, ev, Budgets(engine), client=client(bh, engine))
    assert not missing.has_state and "could not fetch the task from BugHerd: not found" in missing.notes[-1]
    # a refused key is the deployment's to fix: the change waits for it (a ConfigError), it is not skipped
    with pytest.raises(ConfigError, match=r"refused BUGHERD_API_KEY \(401\)"):
        bugherd_api.enrich(keyed, ev, Budgets(engine), client=client(bh, engine, key="wrong"))


def test_a_429_blocks_every_process_for_its_retry_after_a_wait_not_a_failure(bh, engine):
    bh.fail_next(1, 429)
    with pytest.raises(SourceBusy) as info:
        client(bh, engine).task(77120, 1)
    assert isinstance(info.value, LimitWait) and info.value.retry_after == 3.0
    with pytest.raises(SourceBusy):  # another process waits on the same block, and sends nothing
        client(bh, engine).task(77120, 1)
    assert len(bh.calls()) == 1


def test_beat_workers_and_a_backfill_share_sixty_a_minute_with_bursts_of_ten(bh, engine):
    """Was: each process kept its own 60 a minute (a backfill beside live work drew 31 x 429)."""
    bh.put_task(bugherd_task())
    processes = [client(bh, engine, hold=10.0) for _ in range(3)]  # each its own Budgets, one database
    started = time.monotonic()
    for n in range(14):
        processes[n % 3].task(77120, 41000217)
    elapsed = time.monotonic() - started
    assert bh.refused == []  # the fake's burst model never said 429
    assert 3.0 <= elapsed < 8.0  # ten at once, then one a second


def test_comments_page_until_the_count_though_a_page_is_short(engine):
    """Was: a comment page shorter than 100 ended the list although `meta.count` said more."""
    with FakeBugHerd(comment_page_size=20) as bh:
        bh.put_task(bugherd_task())
        for n in range(45):
            bh.put_comment(41000217, bugherd_comment(comment_id=500 + n, text=f"c{n}"))
        comments = client(bh, engine, hold=30.0).task_comments(77120, 41000217)
    assert [c["id"] for c in comments] == [500 + n for n in range(45)]


def test_comments_without_a_count_page_until_an_empty_page(engine):
    with FakeBugHerd(comment_page_size=20, shapes="bare") as bh:
        bh.put_task(bugherd_task())
        for n in range(25):
            bh.put_comment(41000217, bugherd_comment(comment_id=700 + n, text=f"c{n}"))
        comments = client(bh, engine, hold=30.0).task_comments(77120, 41000217)
        assert len(comments) == 25 and len(bh.calls("GET")) == 3  # 20, 5, then the empty page


def cli_env(tmp_path, **extra: str) -> dict[str, str]:
    return tracker_env(tmp_path, **{"BUGHERD_API_KEY": API_KEY, **extra})


def test_register_webhooks_creates_four_and_skips_existing(tmp_path, bh):
    runner = CliRunner()
    args = ["bugherd", "register-webhooks", "https://bridge.example.org/", "--api-url", bh.base_url]
    result = runner.invoke(main, args, env=cli_env(tmp_path))
    assert result.exit_code == 0, result.output
    hooks = bh.webhooks()
    assert sorted(h["event"] for h in hooks) == sorted(EVENTS)
    for hook in hooks:
        assert hook["target_url"] == f"https://bridge.example.org/webhooks/bugherd/{BUGHERD_TOKEN}/{hook['event']}"
        assert hook["project_id"] is None
    assert BUGHERD_TOKEN not in result.output and result.output.count("created") == 4
    again = runner.invoke(main, args, env=cli_env(tmp_path))
    assert again.exit_code == 0 and again.output.count("already registered") == 4
    assert len(bh.webhooks()) == 4
    scoped = runner.invoke(main, [*args, "--project-id", "77120"], env=cli_env(tmp_path))
    assert scoped.exit_code == 0 and scoped.output.count("created") == 4
    assert sorted(h["project_id"] for h in bh.webhooks() if h["project_id"]) == [77120] * 4


def test_register_webhooks_says_what_is_missing(tmp_path, bh):
    runner = CliRunner()
    args = ["bugherd", "register-webhooks", "https://bridge.example.org", "--api-url", bh.base_url]
    no_key = runner.invoke(main, args, env={**tracker_env(tmp_path), "BUGHERD_API_KEY": ""})
    assert no_key.exit_code != 0 and "BUGHERD_API_KEY is not set" in no_key.output
    bad_key = runner.invoke(main, args, env=cli_env(tmp_path, BUGHERD_API_KEY="wrong"))
    assert bad_key.exit_code != 0 and "refused" in bad_key.output and bh.webhooks() == []
