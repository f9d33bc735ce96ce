"""BugHerd API v2 client, enrichment and `bridge bugherd register-webhooks`, against the fake BugHerd over HTTP."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.events import SourceUnavailable
from bridge.settings import load_settings
from bridge.sources.bugherd import api as bugherd_api
from bridge.sources.bugherd.webhook import REDUCED_TASK_NOTE, BugHerdSource
from testkit.factories_trackers import BUGHERD_TOKEN, bugherd_task, encode, tracker_env
from testkit.fakes.bugherd import API_KEY, FakeBugHerd

EVENTS = ("task_create", "task_update", "comment", "task_destroy")


@pytest.fixture
def bh():
    with FakeBugHerd() as server:
        yield server


def client(bh: FakeBugHerd, key: str = API_KEY) -> bugherd_api.BugHerdClient:
    return bugherd_api.BugHerdClient(key, base_url=bh.base_url, limiter=bugherd_api.TokenBucket(capacity=100))


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


def test_enrich_fetches_the_whole_task_with_basic_auth(tmp_path, bh):
    bh.put_task(bugherd_task(description="Kettle price hidden", status="doing", tags=("ui",), updated=9))
    settings = load_settings(tracker_env(tmp_path, BUGHERD_API_KEY=API_KEY), read_dotenv=False)
    ev = bugherd_api.enrich(settings, reduced_event(), client=client(bh))
    assert ev.has_state and ev.fields["description"] == "Kettle price hidden" and ev.fields["status"] == "doing"
    assert ev.fields["tag_names"] == ["ui"] and ev.notes == (bugherd_api.FETCHED_NOTE,)
    assert set(ev.fields) <= BugHerdSource.fields
    (call,) = bh.calls("GET")
    assert call["path"] == "/api_v2/projects/77120/tasks/41000217.json" and call["auth"].startswith("Basic ")


def test_enrich_without_a_key_leaves_the_event_and_a_missing_task_is_a_note(tmp_path, bh):
    ev = reduced_event()
    settings = load_settings(tracker_env(tmp_path), read_dotenv=False)
    assert bugherd_api.enrich(settings, ev) is ev
    keyed = load_settings(tracker_env(tmp_path, BUGHERD_API_KEY=API_KEY), read_dotenv=False)
    missing = bugherd_api.enrich(keyed, ev, client=client(bh))
    assert not missing.has_state and "could not fetch the task from BugHerd: not found" in missing.notes[-1]
    refused = bugherd_api.enrich(keyed, ev, client=client(bh, key="wrong"))
    assert "refused BUGHERD_API_KEY (401)" in refused.notes[-1]


def test_429_is_source_unavailable_with_retry_after(bh):
    bh.fail_next(1, 429)
    with pytest.raises(SourceUnavailable) as info:
        client(bh).task(77120, 1)
    assert info.value.retry_after == 3.0


def test_the_token_bucket_allows_a_burst_of_10_then_one_a_second():
    bucket = bugherd_api.TokenBucket(rate=20.0, capacity=10)  # a faster clock, same shape
    started = time.monotonic()
    for _ in range(10):
        bucket.acquire()
    assert time.monotonic() - started < 0.05
    for _ in range(4):
        bucket.acquire()
    assert time.monotonic() - started >= 4 / 20.0 - 0.02
    slow = bugherd_api.TokenBucket(rate=1.0, capacity=1)
    slow.acquire()
    with pytest.raises(SourceUnavailable):
        slow.acquire(max_wait=0.1)


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
