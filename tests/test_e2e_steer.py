"""Seeing and steering each item on real processes (gunicorn, celery worker and beat, the broker, the strict fake
Zoho and a fake GitHub that sends the webhooks GitHub would): `explain` names every decision and why an item is not
in Zoho; a pause holds deliveries through a killed worker and drains them in order on resume; adoption of hand-made
issues (one ambiguous, left unlinked); a restored day-old backup relinked with no second issue."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bridge.store import schema as db
from testkit.factories import comment_event, issues_event
from testkit.fakes.github import BASE_TIME as GITHUB_BASE_TIME
from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, BridgeStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]  # also on PostgreSQL + Redis in CI
SCRIPT = str(Path(sys.executable).parent / "issue-bridge")
WEB = "1752587000000097024"
TALKBACK = """
when:
  label: [bug, enhancement]
on_unmatch: keep
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {close: completed}
    Reopened: {reopen: true}
"""


def _mapping(tmp: Path, extra: str = TALKBACK, owned: bool = True) -> Path:
    text = (REPO / "mappings" / "examples" / "github.yaml").read_text()
    if owned:
        old = "    default: Minor               # when no label matches\n"
        assert old in text
        text = text.replace(old, old + "    sync: if_unchanged_in_zoho\n")
        text = text.replace(
            'map: {"area:auth": Authentication, "area:ui": UI}',
            'map: {"area:auth": Authentication, "area:ui": UI, "area:db": Database}',
        )
    path = tmp / "src" / "github.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + extra)
    return path


def _cli(stack: BridgeStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=stack.tmp, env=stack.env, capture_output=True, text=True, timeout=180)


def _explain(stack: BridgeStack, item: str) -> str:
    done = _cli(stack, "explain", item)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _person_sets_severity(fake: FakeZoho, issue_id: str, name: str) -> None:
    import requests

    url = f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/{WEB}/issues/{issue_id}"
    answer = requests.patch(
        url, json={"severity": {"id": fake.option_id("severity", name)}},
        headers={"Authorization": f"Zoho-oauthtoken {fake.mint_token()}"}, timeout=10,
    )  # fmt: skip
    assert answer.ok, answer.text


def _issue_of(stack: BridgeStack, number: int) -> str | None:
    with stack.engine.connect() as conn:
        return conn.execute(
            select(db.links.c.zoho_issue_id).where(db.links.c.item_key == f"acme/web#{number}")
        ).scalar()


@pytest.fixture
def fakes():
    zoho, github = FakeZoho().start(), FakeGitHub().start()
    yield zoho, github
    github.stop()
    zoho.stop()


def test_explain_names_every_decision_and_why_an_item_is_not_in_zoho(tmp_path, fakes):
    zoho, github = fakes
    stack = BridgeStack(
        tmp_path, zoho, mappings=[_mapping(tmp_path)],
        extra_env={"GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.base_url, "ZOHO_POLL_SECONDS": "2",
                   "ZOHO_RATE_BLOCK_SECONDS": "600"},
    )  # fmt: skip
    github.webhook_url, github.webhook_secret = stack.base_url + "/webhooks/github", GITHUB_SECRET
    stack.start()
    try:
        for n, labels in ((1, ("bug",)), (2, ("question",)), (3, ("bug",)), (4, ("bug", "area:db")), (7, ("bug",))):
            github.add_issue("acme/web", n, title=f"Issue {n}", labels=labels, at=0)
            github.deliver("issues", "opened", "acme/web", n, sender="octocat")
        wait_for(lambda: _issue_of(stack, 7) and _issue_of(stack, 1) and _issue_of(stack, 3), 60, what="issues")
        stack.wait_idle(90)

        # #1: applied; two edits while it is stopped (one batch on resume: the first superseded); an old redelivery.
        assert _cli(stack, "pause", "github:acme/web#1").returncode == 0
        later = time.time() - GITHUB_BASE_TIME  # newer than the back-links' comments (made now)
        for at, title in ((later + 10, "Issue 1, second"), (later + 11, "Issue 1, third")):
            github.edit_issue("acme/web", 1, at=at, title=title)
            github.deliver("issues", "edited", "acme/web", 1, sender="octocat")
        wait_for(lambda: stack.counts().get("pending") == 2, 30, what="both edits stored")
        assert _cli(stack, "resume", "github:acme/web#1").returncode == 0
        stack.wait_idle()
        stale = issues_event("labeled", number=1, title="Issue 1, stale", labels=("bug",), updated=5)
        assert stack.github("issues", stale, delivery="stale-1").json()["status"] == "accepted"
        assert stack.github("issues", stale, delivery="stale-1").json()["status"] == "duplicate"
        # #2 is kept out by `when:`; its comment is held.
        github.deliver(
            "issue_comment", "created", "acme/web", 2, comment=github.add_comment("acme/web", 2, "me too", at=later)
        )
        # #3: a person sets the severity in Zoho; the source's new severity label is then held by ownership.
        _person_sets_severity(zoho, _issue_of(stack, 3), "Critical")
        github.edit_issue("acme/web", 3, at=later + 20, labels=["bug", "severity:blocker"])
        github.deliver("issues", "labeled", "acme/web", 3, sender="octocat")
        # #7: a person closes its Zoho issue: the bridge closes it on GitHub, whose webhook is its echo.
        zoho.person_sets_status(_issue_of(stack, 7), "Closed")
        wait_for(lambda: github.issue("acme/web", 7)["state"] == "closed", 60, what="#7 closed on GitHub")
        stack.wait_idle(90)

        one = _explain(stack, "https://github.com/acme/web/issues/1")
        assert f"In Zoho: issue {_issue_of(stack, 1)}" in one.splitlines()[1], one
        for decision in (": applied", ": superseded", ": older than the state in Zoho"):
            assert decision in one, (decision, one)
        assert "superseded by event" in one and "older than the state already in Zoho: not applied" in one
        assert "repeated once by" in one and "answered duplicate" in one
        assert "operator (cli): pause" in one and "operator (cli): resume" in one
        assert "Zoho POST /api/v3/portal/" in one and "Zoho PATCH" in one, one
        assert (
            "back-link on the source: confirmed" in one and "github POST /repos/acme/web/issues/1/comments → 201" in one
        )

        two = _explain(stack, "acme/web#2")
        assert "Not in Zoho: kept out by the mapping's `when:`" in two.splitlines()[1], two
        assert ": kept out by when:" in two and ": held comment" in two, two

        three = _explain(stack, "github:acme/web#3")
        assert ": field kept by ownership" in three and "edited in Zoho since the bridge wrote it" in three, three
        seven = _explain(stack, _issue_of(stack, 7))
        assert ": the source's echo" in seven and "github PATCH /repos/acme/web/issues/7 → 200" in seven, seven
        assert "Zoho comment copied" not in seven and "status change on the source" in seven

        # #4: a field Zoho refuses for good.
        four = _explain(stack, "acme/web#4")
        assert "Not in Zoho: event" in four.splitlines()[1] and "failed: unknown Zoho module 'Database'" in four, four
        assert "`issue-bridge events replay" in four

        # #5: Zoho blocks every call (a 429 naming no reset): it waits, and says until when.
        zoho.block(600)
        github.add_issue("acme/web", 5, title="Issue 5", labels=("bug",), at=later + 30)
        github.deliver("issues", "opened", "acme/web", 5, sender="octocat")
        wait_for(lambda: "waiting" in _explain(stack, "acme/web#5").splitlines()[1], 60, what="#5 waiting")
        five = _explain(stack, "acme/web#5")
        assert "Not in Zoho yet: waiting:" in five.splitlines()[1], five
        assert "waiting for the zoho budget until" in five and "next try at" in five, five
        everything = one + two + three + four + five + seven
        for secret in (github.token, zoho.client_secret, zoho.refresh_token, GITHUB_SECRET):
            assert secret not in everything
        print(f"\n{five}")
    finally:
        stack.stop()


def _generations(stack: BridgeStack) -> dict[str, int]:
    with stack.engine.connect() as conn:
        rows = conn.execute(select(db.leases.c.name, db.leases.c.generation).where(db.leases.c.name.like("item:%")))
        return {r.name: int(r.generation) for r in rows}


def test_a_pause_holds_deliveries_through_a_killed_worker_and_resume_drains_them_once_in_order(tmp_path):
    zoho = FakeZoho().start()
    stack = BridgeStack(tmp_path, zoho)
    try:
        stack.start()
        for n in range(1, 11):
            stack.github("issues", issues_event("opened", number=n, title=f"#{n} v0"))
        wait_for(lambda: len(zoho.issues()) == 10, 60, what="10 issues")
        stack.wait_idle()
        paused = _cli(stack, "pause", "github")
        assert paused.returncode == 0 and "source github paused" in paused.stdout, paused.stdout + paused.stderr
        writes = len(zoho.writes())
        before = _generations(stack)
        for version in (1, 2, 3):
            for n in range(1, 11):
                payload = issues_event("edited", number=n, title=f"#{n} v{version}", updated=10 * version)
                assert stack.github("issues", payload).json()["status"] == "accepted"
        for n in range(11, 16):
            stack.github("issues", issues_event("opened", number=n, title=f"#{n} v3", updated=30))
        # The workers were woken for each item and left it alone (a claim, nothing sent)...
        wait_for(lambda: sum(_generations(stack).get(k, 0) > before.get(k, 0) for k in _generations(stack)) >= 10,
                 60, what="the woken items claimed and given back")  # fmt: skip
        stack.kill("worker1")  # ...and one dies, killed mid-way; another takes its place
        stack.start_worker("worker9")
        status = _cli(stack, "status")
        assert "source github paused since" in status.stdout and "35 event(s) wait" in status.stdout, status.stdout
        assert "held by pauses" in status.stdout
        metrics = _cli(stack, "status", "--json")
        assert metrics.returncode == 0
        with stack.engine.connect() as conn:  # the sweeper ran meanwhile and found nothing to hand out
            beat = conn.execute(select(db.kv.c.value).where(db.kv.c.key == "store.heartbeat")).scalar()
        wait_for(lambda: _heartbeat(stack) != beat, 30, what="the sweeper to run once more")
        assert zoho.writes()[writes:] == []
        assert stack.counts().get("pending") == 35

        resumed = _cli(stack, "resume", "github")
        assert resumed.returncode == 0 and "15 item(s) woken" in resumed.stdout, resumed.stdout
        stack.wait_idle(120)
        issues = zoho.issues()
        assert len(issues) == 15  # every item once
        assert sorted(i["name"] for i in issues) == sorted(f"#{n} v3" for n in range(1, 16))
        patches: dict[str, list[str]] = {}
        for call in zoho.writes()[writes:]:
            if call["method"] == "PATCH":
                patches.setdefault(call["path"].rsplit("/", 1)[-1], []).append(call["json"]["name"])
        for issue_id, names in patches.items():
            assert names == sorted(names), (issue_id, names)  # in order, never an older state after a newer one
        assert stack.counts() == {"done": 25, "superseded": 20}, stack.counts()
    finally:
        stack.stop()
        zoho.stop()


def _heartbeat(stack: BridgeStack) -> str | None:
    with stack.engine.connect() as conn:
        return conn.execute(select(db.kv.c.value).where(db.kv.c.key == "store.heartbeat")).scalar()


def _hand_made(fake: FakeZoho, name: str, description: str) -> str:
    import requests

    url = f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/{WEB}/issues"
    answer = requests.post(url, json={"name": name, "description": description},
                           headers={"Authorization": f"Zoho-oauthtoken {fake.mint_token()}"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_adopt_hand_made_issues_by_source_url_and_leave_the_ambiguous_one_unlinked(tmp_path, fakes):
    zoho, github = fakes
    for n in range(1, 6):
        github.add_issue("acme/web", n, title=f"Issue {n}", labels=("bug",), at=n)
    one = _hand_made(zoho, "Login (typed in by support)", "Customer call. https://github.com/acme/web/issues/1")
    two = _hand_made(zoho, "Search slow", "From GitHub: https://github.com/acme/web/issues/2\nPriority high")
    _hand_made(zoho, "Export, copy A", "https://github.com/acme/web/issues/3")
    _hand_made(zoho, "Export, copy B", "dup of https://github.com/acme/web/issues/3")
    _hand_made(zoho, "Unrelated", "see https://github.com/acme/web/issues/30")
    stack = BridgeStack(
        tmp_path, zoho, mappings=[_mapping(tmp_path, extra="", owned=False)],
        extra_env={"GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.base_url, "ADOPT_EXISTING": "on"},
    )  # fmt: skip
    github.webhook_url, github.webhook_secret = stack.base_url + "/webhooks/github", GITHUB_SECRET
    stack.start()
    try:
        dry = _cli(stack, "backfill", "github", "--repo", "acme/web", "--state", "all", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        out = dry.stdout
        assert f"adopt     github acme/web#1 → Zoho issue {one}" in out, out
        assert f"adopt     github acme/web#2 → Zoho issue {two}" in out
        assert "ambiguous github acme/web#3: Zoho issues" in out and "not linked" in out
        assert "create    github acme/web#4" in out and "create    github acme/web#5" in out
        assert "items: 2 adopt, 1 ambiguous, 2 create" in out, out
        with stack.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(db.links)).scalar() == 0  # a dry run links nothing

        only = _cli(stack, "backfill", "github", "--repo", "acme/web", "--state", "all", "--adopt-only")
        assert only.returncode == 0 and only.stdout.count("; linked") == 2, only.stdout + only.stderr
        assert stack.counts() == {}  # nothing stored
        assert len(zoho.issues()) == 5  # nothing created
        reads = len(zoho.api_calls("GET", "/description"))

        done = _cli(stack, "backfill", "github", "--repo", "acme/web", "--state", "all", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        stack.wait_idle(120)
        issues = {i["id"]: i for i in zoho.issues()}
        assert len(issues) == 7, [i["name"] for i in issues.values()]  # 5 hand-made + #4 and #5 created
        assert issues[one]["name"] == "Issue 1" and "[issue-bridge:github:acme/web#1]" in issues[one]["description"]
        assert issues[two]["external_id"] == "github:acme/web#2"
        assert len(zoho.api_calls("GET", "/description")) == reads  # the index was read once
        three = _explain(stack, "acme/web#3")
        assert "Not in Zoho: event" in three and "2 Zoho issues name https://github.com/acme/web/issues/3" in three
        assert "`issue-bridge links link`" in three
    finally:
        stack.stop()


@pytest.mark.skipif(bool(os.environ.get("BRIDGE_TEST_DATABASE_URL")), reason="a SQLite file's backup and restore")
def test_a_restored_day_old_backup_and_links_recover_make_no_second_issue(tmp_path):
    zoho = FakeZoho().start()
    stack = BridgeStack(tmp_path, zoho)
    try:
        stack.start()
        for n in range(1, 11):
            stack.github("issues", issues_event("opened", number=n, title=f"#{n} before"))
        wait_for(lambda: len(zoho.issues()) == 10, 60, what="10 issues")
        stack.wait_idle()
        wait_for(lambda: _heartbeat(stack), 30, what="the sweeper's heartbeat")
        database = Path(stack.settings.database_url.removeprefix("sqlite:///"))
        backup = tmp_path / "backup.db"
        live, copy = sqlite3.connect(database), sqlite3.connect(backup)
        live.backup(copy)  # an online backup, as `sqlite3 .backup` takes it
        live.close()
        beat = json.loads(copy.execute("SELECT value FROM kv WHERE key = 'store.heartbeat'").fetchone()[0])
        day_old = json.dumps({"at": beat["at"] - 86400})  # taken a day ago: its heartbeat is a day old
        copy.execute("UPDATE kv SET value = ? WHERE key = 'store.heartbeat'", (day_old,))
        copy.commit()
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, as a backup is kept
        copy.close()
        for n in range(11, 21):
            stack.github("issues", issues_event("opened", number=n, title=f"#{n} before"))
        stack.github(
            "issue_comment", comment_event("created", comment_id=111, text="after the backup", commented=5, number=11)
        )
        wait_for(lambda: len(zoho.issues()) == 20, 60, what="20 issues")
        stack.wait_idle()
        stack.stop()

        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, database)  # the restore
        upgrade = _cli(stack, "db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        out = upgrade.stdout
        assert "a restored backup, or a long stop" in out, out
        assert "remembered for items not stored yet (adopted at their first event): 10" in out, out
        assert "already linked: 10" in out, out
        again = _cli(stack, "db", "upgrade")
        assert "restored backup" not in again.stdout  # once only

        stack.start()
        for n in range(1, 21):
            stack.github("issues", issues_event("edited", number=n, title=f"#{n} after", updated=50))
        stack.wait_idle(120)
        issues = zoho.issues()
        assert len(issues) == 20, sorted(i["name"] for i in issues)  # no second issue for any item
        assert sorted(i["name"] for i in issues) == sorted(f"#{n} after" for n in range(1, 21))
        eleven = _explain(stack, "acme/web#11")
        assert "adopted existing Zoho issue" in eleven, eleven
    finally:
        stack.stop()
        zoho.stop()


def test_resync_from_source_fetches_the_state_and_comments_once(tmp_path, fakes):
    zoho, github = fakes
    github.add_issue("acme/web", 9, title="Nine", labels=("bug",), at=0)
    stack = BridgeStack(
        tmp_path, zoho, mappings=[_mapping(tmp_path, extra="", owned=False)],
        extra_env={"GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.base_url},
    )  # fmt: skip
    github.webhook_url, github.webhook_secret = stack.base_url + "/webhooks/github", GITHUB_SECRET
    stack.start()
    try:
        github.deliver("issues", "opened", "acme/web", 9, sender="octocat")
        wait_for(lambda: zoho.issues(), 60, what="the issue")
        stack.wait_idle()
        github.webhook_url = ""  # the webhooks stop arriving: a title edit and a comment are missed
        github.edit_issue("acme/web", 9, at=10, title="Nine, renamed")
        github.add_comment("acme/web", 9, "missed comment", at=11)
        for _ in range(2):  # twice: the comment is posted once
            done = _cli(stack, "resync", "acme/web#9", "--from-source")
            assert done.returncode == 0 and "1 comment(s)" in done.stdout, done.stdout + done.stderr
            stack.wait_idle()
        [issue] = zoho.issues()
        assert issue["name"] == "Nine, renamed"
        [comment] = zoho.comments(issue["id"])  # once, however many resyncs
        assert "missed comment" in comment["comment"]
        story = _explain(stack, "acme/web#9")
        assert "operator (cli): resync" in story and "fetched from github" in story
    finally:
        stack.stop()
