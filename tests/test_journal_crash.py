"""A worker killed (like kill -9) between an operation's `sent` and its `confirmed`, for every kind of the
journal: whatever the outside system did is found, nothing is done twice (issue #21).

Each case runs the delivery core in a child process that dies the moment the outside system's answer to the
operation's request arrives: the request landed, the journal still says `sent`. The parent then takes the item
over (its lease expired) and works it until it is quiet, and counts what exists on the other side.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from pathlib import Path

import pytest

from bridge import store
from bridge.core.zoho_poll import nudge
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import journal
from bridge.store import schema as db
from testkit.factories import BASE_TIME, comment_event, github_request, issues_event
from testkit.fakes.files import FileServer
from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

SOURCE = GitHubSource(GITHUB_SECRET)
ITEM = "acme/web#1"
TALKBACK = """
backlink:
  template: "Tracked in Zoho as {issue_id}"
reverse:
  status:
    Closed: {close: completed}
  comments: true
attachments: true
"""
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _child(env: dict[str, str], method: str, pattern: str) -> None:
    """Work the item, and die right after the answer to the first request `method` + `pattern` arrives."""
    import requests

    os.environ.update(env)
    real = requests.Session.request
    wanted = re.compile(pattern)

    def request(self, verb, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        answer = real(self, verb, url, *args, **kwargs)
        if verb.upper() == method and wanted.search(url.split("?", 1)[0]):
            os._exit(9)  # the request landed; nothing after it is recorded
        return answer

    requests.Session.request = request  # type: ignore[method-assign]
    runtime = Runtime(load_settings(env))
    runtime.sync.process_item("github", ITEM)
    os._exit(0)  # never reached the request: the test proves nothing


def deliver(runtime: Runtime, event: str, payload: dict) -> None:
    body, headers = github_request(GITHUB_SECRET, event, payload)
    store.record_delivery(runtime.engine, SOURCE.parse(body, headers), dedup_key=SOURCE.dedup_key(body, headers),
                          headers={}, payload=body)  # fmt: skip


def quiet(runtime: Runtime) -> None:
    """Work the item (as the sweeper would wake it) until its events are done and nothing is due."""
    deadline = time.time() + 30
    while time.time() < deadline:
        runtime.sync.process_item("github", ITEM)
        with runtime.engine.connect() as conn:
            ops = [o for o in journal.open_for_item(conn, "github", ITEM) if o.state in ("planned", "sent")]
        due = [o for o in ops if o.next_at is not None and o.kind != "zoho.recheck"]
        if not store.pending_for_item(runtime.engine, "github", ITEM, float("inf")) and not due:
            return
        with runtime.engine.begin() as conn:  # wait out back-offs fast: the test is about doubling, not time
            conn.exec_driver_sql(
                "UPDATE operations SET next_at = 0 WHERE next_at IS NOT NULL AND kind != 'zoho.recheck'"
            )
            conn.exec_driver_sql("UPDATE leases SET retry_at = 0")
            conn.exec_driver_sql("UPDATE events SET next_attempt_at = 0 WHERE status = 'pending'")
        time.sleep(0.05)
    raise AssertionError("the item never became quiet")


def now_offset() -> float:
    return time.time() - BASE_TIME.timestamp()


@pytest.fixture
def world(tmp_path: Path):
    with FakeZoho() as zoho, FakeGitHub() as github, FileServer() as files:
        env = in_process_env(
            tmp_path, zoho, "github", GITHUB_TOKEN=github.token, GITHUB_API_URL=github.base_url,
            ATTACHMENT_HOSTS="127.0.0.1", ITEM_LEASE_SECONDS="2",
        )  # fmt: skip
        mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
        mapping.write_text(mapping.read_text() + TALKBACK)
        github.add_issue("acme/web", 1, title="Login button does nothing")
        files.routes["/shot.png"] = (200, {"Content-Type": "image/png"}, PNG)
        yield env, zoho, github, files


def die_at(env: dict[str, str], method: str, pattern: str) -> None:
    engine = db.make_engine(load_settings(env).database_url)
    with engine.begin() as conn:  # the budgets' pacing waited out fast (GitHub's one write a second): the child
        conn.exec_driver_sql("UPDATE budget_state SET tat = 0")  # must make its request in its one pass
        conn.exec_driver_sql("UPDATE budget_slots SET used_at = 0")
    engine.dispose()
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(env, method, pattern))
    child.start()
    child.join(60)
    assert child.exitcode == 9, "the child never made the request it was to die after"
    runtime = Runtime(load_settings(env))
    with runtime.engine.begin() as conn:  # the dead worker's lease expired
        conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
    runtime.engine.dispose()


def opened(env: dict[str, str], *, body: str = "Clicking it does nothing.") -> Runtime:
    runtime = Runtime(load_settings(env))
    deliver(runtime, "issues", issues_event("opened", body=body, updated=now_offset() - 60))
    return runtime


def synced(env: dict[str, str], **kwargs: str) -> Runtime:
    runtime = opened(env, **kwargs)
    quiet(runtime)
    return runtime


def zoho_issue(runtime: Runtime) -> str:
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None and link.zoho_issue_id
    return link.zoho_issue_id


def settled(runtime: Runtime, kind: str, ref: str = "") -> None:
    op = journal.get(runtime.engine, "github", ITEM, kind, ref)
    assert op is not None and op.state == "confirmed", op


def test_killed_after_the_zoho_create(world):
    env, zoho, _, _ = world
    runtime = opened(env)
    die_at(env, "POST", r"/projects/\d+/issues$")
    assert len(zoho.issues()) == 1
    quiet(runtime)
    assert len(zoho.issues()) == 1 and zoho_issue(runtime) == str(zoho.issues()[0]["id"])
    settled(runtime, "zoho.create")


def test_killed_after_a_zoho_update(world):
    env, zoho, _, _ = world
    runtime = synced(env)
    deliver(runtime, "issues", issues_event("edited", title="renamed", updated=now_offset()))
    die_at(env, "PATCH", r"/issues/\d+$")
    quiet(runtime)
    assert len(zoho.issues()) == 1 and zoho.issues()[0]["name"] == "renamed"
    op = journal.get(runtime.engine, "github", ITEM, "zoho.update")
    assert op is not None and op.state in ("confirmed", "sent")  # in doubt until the re-check settles it
    assert journal.get(runtime.engine, "github", ITEM, "zoho.recheck") is not None  # and that re-check is planned


def test_killed_after_a_comment_post(world):
    env, zoho, _, _ = world
    runtime = synced(env)
    deliver(
        runtime, "issue_comment", comment_event("created", comment_id=5, text="Seen on iOS.", commented=now_offset())
    )
    die_at(env, "POST", r"/issues/\d+/comments$")
    quiet(runtime)
    assert len(zoho.comments(zoho_issue(runtime))) == 1
    settled(runtime, "zoho.comment", "5")


@pytest.mark.parametrize("step", ["upload", "association"])
def test_killed_after_an_attachment_step(world, step):
    env, zoho, _, files = world
    runtime = opened(env, body=f"Broken: ![shot]({files.base_url}/shot.png)")
    die_at(env, "POST", r"/portal/\d+/attachments$" if step == "upload" else r"/issues/\d+/attachments$")
    quiet(runtime)
    assert len(zoho.attachments(zoho_issue(runtime))) == 1
    [op] = [o for o in journal_of(runtime) if o.kind == "zoho.attachment"]
    assert op.state == "confirmed"


def test_killed_after_the_back_link(world):
    env, _, github, _ = world
    runtime = opened(env)
    die_at(env, "POST", r"/repos/acme/web/issues/1/comments$")
    quiet(runtime)
    backlinks = [c for c in github.comments_of("acme/web", 1) if "Tracked in Zoho" in c["body"]]
    assert len(backlinks) == 1
    settled(runtime, "source.backlink")


def test_killed_after_copying_a_zoho_comment(world):
    env, zoho, github, _ = world
    runtime = synced(env)
    issue = zoho_issue(runtime)
    zoho.person_comments(issue, "Root cause found.")
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None
    nudge(runtime.engine, link, status="Open", modified=time.time(), dedup_key="zoho:poll:1")
    die_at(env, "POST", r"/repos/acme/web/issues/1/comments$")
    quiet(runtime)
    copies = [c for c in github.comments_of("acme/web", 1) if "Root cause found." in c["body"]]
    assert len(copies) == 1


def test_killed_after_closing_the_source(world):
    env, zoho, github, _ = world
    runtime = synced(env)
    issue = zoho_issue(runtime)
    zoho.person_sets_status(issue, "Closed")
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None
    nudge(runtime.engine, link, status="Closed", modified=time.time(), dedup_key="zoho:poll:2")
    die_at(env, "PATCH", r"/repos/acme/web/issues/1$")
    quiet(runtime)
    assert github.issue("acme/web", 1)["state"] == "closed"
    patches = [w for w in github.writes() if w["method"] == "PATCH" and w["path"] == "/repos/acme/web/issues/1"]
    assert len(patches) == 1  # the retry read the source first: closed already, nothing sent again


def journal_of(runtime: Runtime) -> list[journal.Operation]:
    with runtime.engine.connect() as conn:
        return journal.for_item(conn, "github", ITEM)
