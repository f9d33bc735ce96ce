"""The backfill runner in this process against a real fake GitHub and a real FakeZoho over HTTP.

The sync service runs here too (no Celery): `drain` does what the workers and the beat job do, taking every
item with due events. What is checked is what an admin sees: the Zoho issues and comments, the calls made.
"""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from bridge import store
from bridge.backfill import feeder, list_backfills, run_backfill
from bridge.backfill.feeder import COMMENT_COST, CREATE_COST
from bridge.cli import main
from bridge.outbound.budget import Budgets
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.api import GitHubClient
from bridge.sources.github.backfill import GitHubReader
from bridge.sources.github.webhook import GitHubSource
from bridge.store import schema as db
from bridge.store.clock import engine_now
from testkit.factories import github_request, issues_event
from testkit.fakes.github import BASE_TIME, TOKEN, FakeGitHub, iso
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

WEB = "1752587000000097024"
REPO = "acme/web"


@pytest.fixture
def zoho():
    with FakeZoho() as server:
        yield server


@pytest.fixture
def github():
    with FakeGitHub() as server:
        yield server


def populate(github: FakeGitHub, issues: int = 30, comments_each: int = 2, prs: int = 5) -> None:
    for n in range(1, issues + 1):
        labels = ("bug", "area:auth") if n % 3 == 0 else ("enhancement",)
        github.add_issue(
            REPO, n, title=f"Issue number {n}", labels=labels, at=n, state="closed" if n % 10 == 0 else "open"
        )
        for c in range(comments_each):
            github.add_comment(REPO, n, f"comment {c} on {n}", at=1000 + n * 10 + c)
    for n in range(issues + 1, issues + prs + 1):
        github.add_issue(REPO, n, title=f"PR {n}", at=n, pull_request=True)
        github.add_comment(REPO, n, "a review comment", at=5000 + n)


def runtime_for(tmp_path, zoho, github, **extra) -> Runtime:
    env = in_process_env(tmp_path, zoho, "github", GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github.base_url, **extra)
    return Runtime(load_settings(env))


def backfill(runtime: Runtime, github: FakeGitHub, **kwargs):
    client = GitHubClient(TOKEN, budgets=Budgets(runtime.engine), base_url=github.base_url)
    filters = {k: kwargs.pop(k) for k in ("state", "since", "labels") if k in kwargs}
    reader = GitHubReader(client, runtime.engine, REPO, **filters)
    return run_backfill(runtime.engine, runtime.settings, reader, **kwargs), client


def drain(runtime: Runtime, timeout: float = 120.0) -> None:
    """What beat and the workers do: release parked backfill events, process every item with due events."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        store.kv_set(runtime.engine, feeder.FED_AT_KEY, "0")  # as if a long while passed: the pace is tested apart
        feeder.release(runtime.engine, runtime.settings)
        items = store.stale_items(runtime.engine, older_than=time.time() + 1, now=time.time(), limit=10_000)
        if not items and not feeder.parked_count(runtime.engine, "backfill:%"):
            return
        for source, key in items:
            runtime.sync.process_item(source, key)
    raise AssertionError("events still pending")


def zoho_writes(zoho: FakeZoho) -> int:
    return sum(len(zoho.api_calls(m)) for m in ("POST", "PATCH", "PUT", "DELETE"))


@pytest.mark.parametrize("state", ["all", "open"])
def test_backfill_lands_every_issue_and_comment_once_and_a_rerun_writes_nothing(tmp_path, zoho, github, state):
    populate(github)
    runtime = runtime_for(tmp_path, zoho, github)
    result, _ = backfill(runtime, github, state=state)
    wanted = 30 if state == "all" else 27  # every tenth issue is closed
    assert result.progress.items_read == wanted
    drain(runtime)
    issues = zoho.issues(WEB)
    assert len(issues) == wanted
    assert sorted(i["external_id"] for i in issues) == sorted(
        f"github:{REPO}#{n}" for n in range(1, 31) if state == "all" or n % 10
    )
    third = next(i for i in issues if i["external_id"] == f"github:{REPO}#3")
    assert third["name"] == "Issue number 3" and third["module"]["value"] == "Authentication"
    assert third["severity"]["value"] == "Major" and third["status"]["name"] == "Open"
    closed = [i for i in issues if i["external_id"] == f"github:{REPO}#10"]
    assert (closed[0]["status"]["name"] == "Closed") if state == "all" else not closed
    for issue in issues:
        texts = [c["comment"] for c in zoho.comments(issue["id"])]
        assert len(texts) == 2, texts
    # The comments came the cheaper way: repository-wide for the whole repository, else per issue.
    repo_wide = github.calls("/issues/comments")
    per_issue = [c for c in github.calls("/comments") if "/issues/comments" not in c["path"]]
    if state == "all":
        assert len(repo_wide) == 1 and not per_issue
    else:
        assert not repo_wide and len(per_issue) == 27

    writes = zoho_writes(zoho)
    calls_before = len(zoho.api_calls())
    again, _ = backfill(runtime, github, state=state)
    assert again.progress.events_stored == 0 and again.progress.duplicates == wanted * 3
    drain(runtime)
    assert zoho_writes(zoho) == writes and len(zoho.api_calls()) == calls_before
    rows = list_backfills(runtime.engine)
    assert [r["state"] for r in rows] == ["done", "done"]
    assert rows[1]["synced"] == wanted * 3 and rows[1]["failed"] == 0
    assert [r["eta_seconds"] for r in rows] == [0.0, 0.0]  # done: nothing left to wait for


def test_the_feeder_releases_parked_events_at_the_budget_share_and_only_while_workers_keep_up(tmp_path, zoho, github):
    populate(github, issues=40, comments_each=1, prs=0)
    # 600 calls a minute, half for the backfill: 5 calls a second; in flight at most 2 s of that (10 events).
    runtime = runtime_for(
        tmp_path,
        zoho,
        github,
        ZOHO_RATE_LIMIT_PER_MINUTE="600",
        ZOHO_RATE_WINDOW_SECONDS="60",
        BACKFILL_BUDGET_SHARE="0.5",
    )
    engine = runtime.engine
    result, _ = backfill(runtime, github, state="all")
    assert result.progress.planned_zoho_calls == 40 * CREATE_COST + 40 * COMMENT_COST
    # Everything is parked: neither the workers nor the stale sweeper see it.
    assert store.stale_items(engine, older_than=time.time() + 1, now=time.time()) == []
    assert feeder.parked_count(engine, f"backfill:{result.backfill_id}") == 80
    # A live delivery meanwhile is due at once.
    live = issues_event("opened", number=777, title="live", updated=5)
    body, headers = github_request(GITHUB_SECRET, "issues", live)
    source = GitHubSource(GITHUB_SECRET)
    store.record_delivery(engine, source.parse(body, headers), dedup_key="live-777", headers={}, payload=body)
    assert store.stale_items(engine, older_than=time.time() + 1, now=time.time()) == [("github", f"{REPO}#777")]

    def release_after(seconds: float) -> list:
        store.kv_set(engine, feeder.FED_AT_KEY, repr(engine_now(engine) - seconds))
        return feeder.release(engine, runtime.settings)

    # 2 s of pace = 10 calls; whole items (the issue: one create, its comment: one post), oldest first: 5 items.
    first = release_after(2.0)
    assert first == [("github", f"{REPO}#{n}") for n in range(1, 6)]
    assert feeder.release(engine, runtime.settings) == []  # no time passed: no allowance
    # The workers did nothing with them: 10 events in flight of at most 10, however long it has been.
    assert release_after(60.0) == []
    writes_before = len(zoho.api_calls("POST"))
    drain_due(runtime)  # they do: the calls the feeder planned for (field metadata aside), no more
    assert len(zoho.api_calls("POST")) - writes_before == 5 * (CREATE_COST + COMMENT_COST) + 1  # + the live item
    assert release_after(1.0) == [("github", f"{REPO}#{n}") for n in (6, 7, 8)]  # 5 calls: 2 items, the third begun
    drain(runtime)
    assert len(zoho.issues(WEB)) == 41


def drain_due(runtime: Runtime) -> None:
    for source, key in store.stale_items(runtime.engine, older_than=time.time() + 1, now=time.time()):
        runtime.sync.process_item(source, key)


class Interrupting(GitHubClient):
    """Ctrl-C while fetching the n-th page."""

    def __init__(self, *args, stop_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at = stop_at

    def get(self, url, params=None, *, repo=""):
        if self.calls + 1 == self.stop_at:
            self.stop_at = -1
            raise KeyboardInterrupt
        return super().get(url, params, repo=repo)


def test_interrupted_then_resumed_ends_in_the_same_state(tmp_path, zoho, github):
    populate(github, issues=250, comments_each=1, prs=3)
    runtime = runtime_for(tmp_path, zoho, github)
    # call 1 reads the repository, call 2 the first page of issues: Ctrl-C on the second page
    client = Interrupting(TOKEN, budgets=Budgets(runtime.engine), base_url=github.base_url, stop_at=3)
    reader = GitHubReader(client, runtime.engine, REPO, state="all")
    with pytest.raises(KeyboardInterrupt):
        run_backfill(runtime.engine, runtime.settings, reader)
    [row] = list_backfills(runtime.engine)
    assert row["state"] == "interrupted" and row["items_read"] == 100
    drain(runtime)  # the workers went on with what was stored
    assert len(zoho.issues(WEB)) == 100

    client = GitHubClient(TOKEN, budgets=Budgets(runtime.engine), base_url=github.base_url)
    fresh = GitHubReader(client, runtime.engine, REPO, state="all")
    result = run_backfill(runtime.engine, runtime.settings, fresh, resume=True)
    assert result.backfill_id == row["id"]
    pages = [c for c in github.calls("/repos/acme/web/issues") if c["path"].endswith("/issues")]
    assert len(pages) == 3  # page 1 before the interrupt, then pages 2 and 3: page 1 is not read again
    drain(runtime)
    issues = zoho.issues(WEB)
    assert len(issues) == 250 and len({i["external_id"] for i in issues}) == 250
    assert all(len(zoho.comments(i["id"])) == 1 for i in issues)
    [row] = list_backfills(runtime.engine)
    assert row["state"] == "done" and row["items_read"] == 250 and row["failed"] == 0


def test_a_newer_webhook_wins_over_the_backfilled_state(tmp_path, zoho, github):
    populate(github, issues=3, comments_each=0, prs=0)
    runtime = runtime_for(tmp_path, zoho, github, ZOHO_RATE_LIMIT_PER_MINUTE="6000")
    # The backfill reads issue 2 as it was; then the issue is renamed and its webhook arrives.
    backfill(runtime, github, state="open")
    source = GitHubSource(GITHUB_SECRET)
    newer = issues_event("edited", number=2, title="Renamed after the backfill read it", updated=10**8)
    body, headers = github_request(GITHUB_SECRET, "issues", newer)
    event = source.parse(body, headers)
    store.record_delivery(runtime.engine, event, dedup_key=source.dedup_key(body, headers), headers={}, payload=body)
    drain(runtime)
    [issue] = [i for i in zoho.issues(WEB) if i["external_id"] == f"github:{REPO}#2"]
    assert issue["name"] == "Renamed after the backfill read it"
    assert len(zoho.issues(WEB)) == 3


def test_dry_run_stores_nothing_and_estimates_the_calls(tmp_path, zoho, github):
    populate(github, issues=5, comments_each=2, prs=1)
    runtime = runtime_for(tmp_path, zoho, github)
    result, _ = backfill(runtime, github, state="open", dry_run=True)
    assert result.backfill_id is None
    assert result.progress.items_read == 5 and result.progress.events_stored == 15
    assert result.progress.planned_zoho_calls == 5 * CREATE_COST + 10 * COMMENT_COST
    assert store.count_by_status(runtime.engine) == {} and list_backfills(runtime.engine) == []


# -- the command line: bad input is a clear error and stores nothing ---------------------------------------


def _cli(tmp_path, zoho, github, *args, **extra):
    settings = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url, **extra}
    env = in_process_env(tmp_path, zoho, "github", **settings)
    db.ensure_schema(db.make_engine(load_settings(env).database_url))  # the bridge's database, as `run` made it
    return CliRunner().invoke(main, ["backfill", "github", *args], env=env), load_settings(env)


def _nothing_stored(settings) -> bool:
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    return store.count_by_status(engine) == {} and list_backfills(engine) == []


def test_cli_unknown_repository(tmp_path, zoho, github):
    github.add_repo(REPO)
    result, settings = _cli(tmp_path, zoho, github, "--repo", "acme/nope")
    assert result.exit_code == 1
    assert "unknown repository 'acme/nope' on GitHub (404: Not Found)" in result.output
    assert _nothing_stored(settings)


def test_cli_missing_token(tmp_path, zoho, github):
    result, settings = _cli(tmp_path, zoho, github, "--repo", REPO, GITHUB_TOKEN="")
    assert result.exit_code == 1 and "GITHUB_TOKEN is not set" in result.output
    assert _nothing_stored(settings)


def test_cli_bad_token(tmp_path, zoho, github):
    github.add_repo(REPO)
    result, settings = _cli(tmp_path, zoho, github, "--repo", REPO, GITHUB_TOKEN="ghp_wrong")
    assert result.exit_code == 1 and "GitHub refused GITHUB_TOKEN (401: Bad credentials)" in result.output
    assert _nothing_stored(settings)


@pytest.mark.parametrize("args", [["--since", "last tuesday"], ["--since", "2024-13-01"], ["--repo-x"]])
def test_cli_malformed_options(tmp_path, zoho, github, args):
    github.add_repo(REPO)
    if args == ["--repo-x"]:
        args = ["--repo", "not a repo"]
        message = "expected OWNER/NAME"
    else:
        args = ["--repo", REPO, *args]
        message = "expected a date like 2024-01-31"
    result, settings = _cli(tmp_path, zoho, github, *args)
    assert result.exit_code == 2 and message in result.output
    assert _nothing_stored(settings)


def test_cli_backfill_and_since_filter(tmp_path, zoho, github):
    populate(github, issues=6, comments_each=1, prs=1)
    github.edit_issue(REPO, 2, at=10**6, title="touched later")
    result, settings = _cli(tmp_path, zoho, github, "--repo", REPO, "--since", iso(BASE_TIME + 10**6)[:10])
    assert result.exit_code == 0, result.output
    assert "backfill 1: 1 items read, 2 events stored" in result.output
    engine = db.make_engine(settings.database_url)
    [row] = list_backfills(engine)
    assert row["scope"]["since"].startswith(iso(BASE_TIME + 10**6)[:10]) and row["items_read"] == 1
    assert {e.event.fields["title"] for e in store.list_events(engine)} == {"touched later"}
    env = in_process_env(tmp_path, zoho, "github")
    listed = CliRunner().invoke(main, ["backfill", "list"], env=env)
    assert listed.exit_code == 0
    assert "#1 github repo=acme/web since=2023-11-26T00:00:00Z state=open [syncing]" in listed.output
    assert "read 1, stored 2 (+0 dup)" in listed.output
    resumed, _ = _cli(tmp_path, zoho, github, "--repo", REPO, "--resume")
    assert resumed.exit_code == 1 and "no interrupted github backfill with these options" in resumed.output
