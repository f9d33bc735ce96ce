"""Seeing and steering one item in the test process (the real sync service against the strict fake Zoho): pause and
resume (a source, a mapping file, one item), `links link`, `links recover` after a restore, adopting what already
exists, and the item's story. The same on real processes: tests/test_e2e_steer.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests

from bridge import store
from bridge.core import adopt, steer, story
from bridge.core.recover import recover, restore_suspected
from bridge.events import NormalizedEvent
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import calllog, claims
from bridge.store import schema as db
from testkit.factories import BASE_TIME, comment_event, github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

SOURCE = GitHubSource(GITHUB_SECRET)
WEB = "1752587000000097024"


@pytest.fixture
def fake():
    with FakeZoho() as server:
        yield server


def runtime_for(tmp: Path, fake: FakeZoho, **extra: str) -> Runtime:
    return Runtime(load_settings(in_process_env(tmp, fake, "github", **extra)))


def deliver(runtime: Runtime, event: str, payload: dict, delivery: str | None = None) -> int:
    body, headers = github_request(GITHUB_SECRET, event, payload, delivery=delivery)
    normalized: NormalizedEvent = SOURCE.parse(body, headers)
    event_id, _ = store.record_delivery(
        runtime.engine, normalized, dedup_key=SOURCE.dedup_key(body, headers), headers=dict(headers), payload=body
    )
    return event_id


def sync(runtime: Runtime, *numbers: int) -> None:
    for n in numbers:
        for _ in range(20):
            runtime.sync.process_item("github", f"acme/web#{n}")
            if not store.pending_for_item(runtime.engine, "github", f"acme/web#{n}", now=float("inf")):
                break
            time.sleep(0.05)


def hand_made(fake: FakeZoho, name: str, description: str, project: str = WEB) -> str:
    """A person makes an issue in Zoho (through the API, as a script or an earlier tool would)."""
    url = f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/{project}/issues"
    answer = requests.post(
        url,
        json={"name": name, "description": description},
        headers={"Authorization": f"Zoho-oauthtoken {fake.mint_token()}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


# -- pause and resume ----------------------------------------------------------------------------------------------


def test_a_paused_source_stores_its_deliveries_sends_nothing_and_drains_in_order_on_resume(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    target = steer.target_of(runtime.engine, runtime.registry, "github")
    assert steer.pause(runtime.engine, runtime.registry, target, "test") == (True, 0)
    deliver(runtime, "issues", issues_event("opened", number=1, title="first"))
    deliver(runtime, "issues", issues_event("edited", number=1, title="second", updated=5))
    deliver(runtime, "issues", issues_event("opened", number=2))
    for _ in range(3):
        runtime.sync.process_item("github", "acme/web#1")
    assert fake.api_calls() == []  # nothing sent for a paused source
    assert store.count_by_status(runtime.engine) == {"pending": 3}
    assert claims.stale_items(runtime.engine, grace=0) == []  # the sweeper leaves it alone
    told = story.tell(runtime.engine, "github", "acme/web#1", registry=runtime.registry)
    assert told.verdict_kind == "paused" and "the github source is paused" in told.verdict, told.verdict
    assert any("wait for `issue-bridge resume`" in line for line in told.next), told.next

    was, woken = steer.resume(runtime.engine, target, "test")
    assert was and woken == [("github", "acme/web#1"), ("github", "acme/web#2")]  # oldest first
    assert claims.stale_items(runtime.engine, grace=0) == woken
    sync(runtime, 1, 2)
    names = sorted(i["name"] for i in fake.issues())
    assert names == ["Login button does nothing", "second"]  # each once, the newest state
    actions = [e.title for e in story.tell(runtime.engine, "github", "acme/web#1").entries if e.kind == "action"]
    assert actions == ["operator (test): pause", "operator (test): resume"]


def test_one_item_stopped_and_started_again(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", number=1))
    deliver(runtime, "issues", issues_event("opened", number=2))
    target = steer.target_of(runtime.engine, runtime.registry, "github:acme/web#1")
    assert (target.kind, target.source, target.name) == ("item", "github", "acme/web#1")
    assert steer.pause(runtime.engine, runtime.registry, target, "test") == (True, 1)
    sync(runtime, 1, 2)
    assert len(fake.issues()) == 1  # only #2
    assert ("github", "acme/web#1") not in claims.stale_items(runtime.engine, grace=0)
    assert "stopped by an operator" in story.tell(runtime.engine, "github", "acme/web#1").verdict
    assert steer.resume(runtime.engine, target, "test") == (True, [("github", "acme/web#1")])
    sync(runtime, 1)
    assert len(fake.issues()) == 2


def test_a_paused_mapping_holds_its_items_the_first_time_a_worker_claims_them(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", number=1))
    target = steer.target_of(runtime.engine, runtime.registry, "github.yaml")
    assert target.kind == "mapping"
    fresh, waiting = steer.pause(runtime.engine, runtime.registry, target, "test")
    assert fresh and waiting == 1  # the item with work waiting is held at once
    deliver(runtime, "issues", issues_event("opened", number=2))  # a new item: held when first claimed
    sync(runtime, 1, 2)
    assert fake.api_calls() == []
    with runtime.engine.connect() as conn:
        assert store.steer.held_count(conn) == {"mapping:github.yaml": 2}
        assert store.steer.waiting(conn) == {"mapping:github.yaml": 2}
    was, woken = steer.resume(runtime.engine, target, "test")
    assert was and sorted(woken) == [("github", "acme/web#1"), ("github", "acme/web#2")]
    sync(runtime, 1, 2)
    assert len(fake.issues()) == 2


# -- links link, recover, adopt --------------------------------------------------------------------------------------


def test_links_link_adopts_a_hand_made_issue_and_writes_the_external_id_with_the_next_update(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    made = hand_made(fake, "Login broken (reported by phone)", "see GitHub")
    deliver(runtime, "issues", issues_event("opened", number=1))
    with runtime.engine.begin() as conn:  # the item is known but not synced yet (stopped before the create)
        store.steer.hold(conn, "github", "acme/web#1", "stopped")
    done = steer.link_item(runtime.engine, runtime.registry, runtime.zoho, "github", "acme/web#1", made, "test")
    assert (done.issue_id, done.external_id) == (made, "github:acme/web#1")
    with runtime.engine.begin() as conn:
        store.steer.release(conn, "github", "acme/web#1")
    sync(runtime, 1)
    [issue] = fake.issues()
    assert issue["id"] == made and issue["name"] == "Login button does nothing"
    assert (
        issue.get("external_id") == "github:acme/web#1" and "[issue-bridge:github:acme/web#1]" in issue["description"]
    )
    deliver(runtime, "issues", issues_event("opened", number=2))
    sync(runtime, 2)
    with pytest.raises(steer.SteerError, match="acme/web#1's already"):
        steer.link_item(runtime.engine, runtime.registry, runtime.zoho, "github", "acme/web#2", made, "test")
    other = hand_made(fake, "Another one", "")
    with pytest.raises(steer.SteerError, match="is linked to Zoho issue"):
        steer.link_item(runtime.engine, runtime.registry, runtime.zoho, "github", "acme/web#1", other, "test")
    deliver(runtime, "issues", issues_event("opened", number=3))
    with pytest.raises(steer.SteerError, match="Zoho has no issue 999"):
        steer.link_item(runtime.engine, runtime.registry, runtime.zoho, "github", "acme/web#3", "999", "test")
    entries = story.tell(runtime.engine, "github", "acme/web#1").entries
    assert any(e.kind == "action" and e.title.endswith(": link") and made in e.detail for e in entries)


def test_a_restored_backup_then_recover_gives_no_item_a_second_issue(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    for n in (1, 2, 3):
        deliver(runtime, "issues", issues_event("opened", number=n))
    deliver(runtime, "issues", issues_event("opened", number=4))
    sync(runtime, 1, 2, 3)
    fake.fail_next(1, status=500)  # #4's create meets an outage when the backup is taken: its link is `creating`
    runtime.sync.process_item("github", "acme/web#4")
    assert store.get_link(runtime.engine, "github", "github:acme/web#4").state == "creating"
    calllog.heartbeat(runtime.engine)
    database = Path(runtime.settings.database_url.removeprefix("sqlite:///"))
    runtime.engine.dispose()
    backup = tmp_path / "backup.db"
    shutil.copy(database, backup)
    for n in (4, 5, 6):  # after the backup: #4 synced, #5 and #6 new
        if n != 4:
            deliver(runtime, "issues", issues_event("opened", number=n))
    sync(runtime, 4, 5, 6)
    assert len(fake.issues()) == 6
    runtime.engine.dispose()
    for suffix in ("-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, database)  # the restore
    with runtime.engine.begin() as conn:  # the backup is a day old
        conn.execute(db.kv.update().where(db.kv.c.key == calllog.HEARTBEAT_KEY).values(value='{"at": 1000.0}'))
    beat, _now = restore_suspected(runtime.engine) or (None, None)
    assert beat == 1000.0
    since = time.time() - 86400
    report = recover(runtime.engine, runtime.registry, runtime.zoho, since)
    assert [r[1] for r in report.relinked] == ["acme/web#4"]  # known to the backup, its issue made after it
    assert sorted(w[0] for w in report.waiting) == ["github:acme/web#5", "github:acme/web#6"]
    assert report.known == 3 and report.read == 0  # the custom field says it: no description read
    assert restore_suspected(runtime.engine) is None
    for n in range(1, 7):  # new deliveries for every item
        deliver(runtime, "issues", issues_event("edited", number=n, title=f"after the restore {n}", updated=50))
    sync(runtime, *range(1, 7))
    issues = fake.issues()
    assert len(issues) == 6, [i["name"] for i in issues]
    assert sorted(i["name"] for i in issues) == [f"after the restore {n}" for n in range(1, 7)]
    notes = [e.detail for e in story.tell(runtime.engine, "github", "acme/web#5").entries if e.kind == "decision"]
    assert any("adopted existing Zoho issue" in n for n in notes), notes


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])  # each lists comments its own documented way
def test_a_comment_copied_after_the_backup_and_redelivered_after_the_restore_is_not_posted_twice(
    tmp_path, fake, dialect
):
    """After a restore the database has lost the comments the bridge copied since the backup, and the deliveries
    that carried them: a sender's redelivery (GitHub's "Redeliver") is new to it. `links recover` remembers the
    window; a comment from it is looked for on its issue by its marker before it is posted."""
    runtime = runtime_for(tmp_path, fake, ZOHO_DIALECT=dialect)
    deliver(runtime, "issues", issues_event("opened", number=1))
    sync(runtime, 1)
    calllog.heartbeat(runtime.engine)
    database = Path(runtime.settings.database_url.removeprefix("sqlite:///"))
    runtime.engine.dispose()
    backup = tmp_path / "backup.db"
    shutil.copy(database, backup)
    recent = time.time() - BASE_TIME.timestamp() - 60  # the fake source's times count from BASE_TIME
    comment = comment_event("created", comment_id=70, text="Bisected to the cookie change", commented=recent)
    deliver(runtime, "issue_comment", comment, delivery="d-70")
    sync(runtime, 1)
    (issue,) = fake.issues()
    assert len(fake.comments(issue["id"])) == 1
    runtime.engine.dispose()
    for suffix in ("-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, database)  # the restore
    recover(runtime.engine, runtime.registry, runtime.zoho, time.time() - 3600)
    deliver(runtime, "issue_comment", comment, delivery="d-70")  # redelivered: the database does not know it
    later = comment_event("created", comment_id=71, text="Fixed in the next build", commented=recent + 30)
    deliver(runtime, "issue_comment", later, delivery="d-71")  # a new one: posted
    sync(runtime, 1)
    texts = [c.get("content") or c.get("comment") or "" for c in fake.comments(issue["id"])]
    assert len(texts) == 2 and sum("Bisected" in t for t in texts) == 1, texts
    notes = [ev.notes or "" for ev in store.list_events(runtime.engine) if ev.event_name == "issue_comment.created"]
    assert any("comment found in Zoho by its marker" in n for n in notes), notes


def test_adopt_existing_by_source_url_and_an_ambiguous_item_is_left_unlinked_with_the_reason(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake, ADOPT_EXISTING="on")
    one = hand_made(fake, "Login (by hand)", "Reported on https://github.com/acme/web/issues/1.")
    hand_made(fake, "Two, first copy", "see https://github.com/acme/web/issues/2")
    hand_made(fake, "Two, second copy", "also https://github.com/acme/web/issues/2")
    hand_made(fake, "Unrelated", "https://github.com/acme/web/issues/12 is another one")
    for n in (1, 2, 3):
        deliver(runtime, "issues", issues_event("opened", number=n))
    sync(runtime, 1, 2, 3)
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.zoho_issue_id == one
    assert fake.issue(one)["name"] == "Login button does nothing"  # brought to the item's state
    failed = [ev for ev in store.list_events(runtime.engine, status="failed")]
    assert [ev.item_key for ev in failed] == ["acme/web#2"]
    assert "2 Zoho issues name https://github.com/acme/web/issues/2" in (failed[0].last_error or "")
    assert len(fake.issues()) == 5  # #3 created (nothing named it); nothing else made
    told = story.tell(runtime.engine, "github", "acme/web#2")
    assert told.verdict_kind == "failed" and "links link" in told.verdict
    # An index read once: the next create reads only the issues made since (none but the bridge's own).
    descriptions = len(fake.api_calls("GET", "/description"))
    deliver(runtime, "issues", issues_event("opened", number=4))
    sync(runtime, 4)
    assert len(fake.api_calls("GET", "/description")) == descriptions


def test_explain_finds_an_item_by_key_external_id_url_and_zoho_issue(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", number=7), delivery="d-1")
    deliver(runtime, "issue_comment", comment_event("created", comment_id=70, text="more", commented=3, number=7))
    sync(runtime, 7)
    [issue] = fake.issues()
    for text in (
        "acme/web#7",
        "github:acme/web#7",
        "https://github.com/acme/web/issues/7",
        issue["id"],
        issue["prefix"],
    ):
        assert story.find_items(runtime.engine, text) == [("github", "acme/web#7")], text
    assert story.find_items(runtime.engine, "nothing-like-this") == []
    told = story.tell(runtime.engine, "github", "acme/web#7", registry=runtime.registry)
    assert told.verdict.startswith(f"In Zoho: issue {issue['id']}") and told.mapping == "github.yaml"
    kinds = [e.kind for e in told.entries]
    assert kinds.count("delivery") == 2 and "zoho" in kinds and "operation" in kinds
    assert told.next == ["nothing due: the item is up to date"]
    assert told.comments == [("70", fake.comments(issue["id"])[0]["id"], "posted")]


def test_the_item_story_bounded_and_pages_of_the_call_minutes(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    calllog.source_call(runtime.engine, system="github", lane="live", item=("github", "acme/web#1"), method="GET",
                        path="/repos/acme/web/issues/1", status=200, duration_ms=3.0, message=None)  # fmt: skip
    calllog.source_call(runtime.engine, system="github", lane="backfill", item=None, method="GET",
                        path="/repos/acme/web/issues", status=502, duration_ms=3.0, message="bad gateway")  # fmt: skip
    with runtime.engine.connect() as conn:
        per = calllog.minutes(conn, 0)["github"]
        assert sum(c for c, _ in per["live"].values()) == 1 and sum(e for _, e in per["backfill"].values()) == 1
        [call] = calllog.calls_for_item(conn, "github", "acme/web#1")
    assert call.path == "/repos/acme/web/issues/1" and call.status == 200
    assert adopt.CREATE == "create"


def test_a_paused_backlog_holds_back_neither_side_work_nor_the_zoho_poll(tmp_path, fake):
    from bridge.store import outcomes

    runtime = runtime_for(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", number=1))
    assert outcomes.live_due_besides(runtime.engine, "github", "acme/web#9")  # live work is due: side work waits
    assert store.forward_busy(runtime.engine)
    target = steer.target_of(runtime.engine, runtime.registry, "github:acme/web#1")
    steer.pause(runtime.engine, runtime.registry, target, "test")
    assert not outcomes.live_due_besides(runtime.engine, "github", "acme/web#9")  # held: it holds nothing back
    assert not store.forward_busy(runtime.engine)
    steer.resume(runtime.engine, target, "test")
    steer.pause(runtime.engine, runtime.registry, steer.target_of(runtime.engine, runtime.registry, "github"), "test")
    assert not store.forward_busy(runtime.engine)


def test_an_issue_found_then_deleted_in_zoho_is_created_instead(tmp_path, fake):
    runtime = runtime_for(tmp_path, fake)
    made = hand_made(fake, "Made by the bridge before the restore", "[issue-bridge:github:acme/web#1]")
    with runtime.engine.begin() as conn:
        store.found.save(
            conn, store.found.Found("739121528", WEB, made, None, None, None, "github:acme/web#1", (), "recover")
        )
    requests.delete(
        f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/{WEB}/issues/{made}",
        headers={"Authorization": f"Zoho-oauthtoken {fake.mint_token()}"},
        timeout=10,
    )
    deliver(runtime, "issues", issues_event("opened", number=1))
    sync(runtime, 1)
    [issue] = fake.issues()
    assert (
        issue["id"] != made
        and store.get_link(runtime.engine, "github", "github:acme/web#1").zoho_issue_id == issue["id"]
    )
