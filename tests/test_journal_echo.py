"""Talking back without swallowing a person's change (issue #21): echoes matched against the journal.

In process: the delivery core (Runtime) against a strict FakeZoho and a FakeGitHub that records the bridge's
writes; GitHub's webhooks are delivered by the test (or not: a lost echo). The bridge closes the GitHub issue
because a person closed the Zoho issue; then a person on GitHub changes the state, and it must reach Zoho
whether the bridge's own echo was lost, came stale, or a backfill came between.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge import store
from bridge.core.zoho_poll import nudge
from bridge.events import NormalizedEvent
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import journal
from testkit.factories import BASE_TIME, comment_event, github_request, issues_event
from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

SOURCE = GitHubSource(GITHUB_SECRET)
ITEM = "acme/web#1"
REVERSE = """
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {close: completed}
    Reopened: {reopen: true}
"""


@pytest.fixture
def world(tmp_path: Path):
    with FakeZoho() as zoho, FakeGitHub() as github:
        env = in_process_env(
            tmp_path, zoho, "github", GITHUB_TOKEN=github.token, GITHUB_API_URL=github.base_url, COALESCE_MS="0"
        )
        mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
        mapping.write_text(mapping.read_text() + REVERSE)
        runtime = Runtime(load_settings(env))
        github.add_issue("acme/web", 1, title="Login button does nothing")
        yield runtime, zoho, github


def now_offset() -> float:
    """`updated=` for a webhook that happens now (the factories count seconds from BASE_TIME)."""
    return time.time() - BASE_TIME.timestamp()


def deliver(runtime: Runtime, event: str, payload: dict) -> None:
    body, headers = github_request(GITHUB_SECRET, event, payload)
    normalized: NormalizedEvent = SOURCE.parse(body, headers)
    store.record_delivery(runtime.engine, normalized, dedup_key=SOURCE.dedup_key(body, headers), headers={},
                          payload=body)  # fmt: skip


def drain(runtime: Runtime) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        runtime.sync.process_item("github", ITEM)
        with runtime.engine.connect() as conn:
            open_ops = [o for o in journal.open_for_item(conn, "github", ITEM) if o.state in ("planned", "sent")]
        due = [o for o in open_ops if o.kind.startswith("source.") or o.kind == "zoho.attachment"]
        if not store.pending_for_item(runtime.engine, "github", ITEM, float("inf")) and not due:
            return
        time.sleep(0.05)
    raise AssertionError("the item still has work")


def zoho_closes(runtime: Runtime, zoho: FakeZoho) -> None:
    """A person closes the Zoho issue; the poll's nudge reaches the item; the bridge closes the GitHub issue."""
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None and link.zoho_issue_id
    zoho.person_sets_status(link.zoho_issue_id, "Closed")
    nudge(runtime.engine, link, status="Closed", modified=time.time(), dedup_key=f"zoho:{time.time()}")
    drain(runtime)


def zoho_status(runtime: Runtime, zoho: FakeZoho) -> str:
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None and link.zoho_issue_id
    return str(zoho.issue(link.zoho_issue_id)["status"]["name"])


def opened_and_closed_by_the_bridge(runtime: Runtime, zoho: FakeZoho, github: FakeGitHub) -> None:
    deliver(runtime, "issues", issues_event("opened", updated=now_offset() - 60))
    drain(runtime)
    zoho_closes(runtime, zoho)
    assert github.issue("acme/web", 1)["state"] == "closed"  # the bridge closed it on GitHub
    assert zoho_status(runtime, zoho) == "Closed"


def test_a_persons_close_after_a_lost_echo_reaches_zoho(world):
    runtime, zoho, github = world
    opened_and_closed_by_the_bridge(runtime, zoho, github)
    # The bridge's close never comes back as a webhook (lost). A person reopens on GitHub, then closes again.
    deliver(runtime, "issues", issues_event("reopened", updated=now_offset()))
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Open"
    deliver(runtime, "issues", issues_event("closed", state="closed", updated=now_offset() + 1))
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Closed"  # not swallowed as the bridge's own echo


def test_a_persons_reopen_after_a_stale_echo_reaches_zoho(world):
    runtime, zoho, github = world
    opened_and_closed_by_the_bridge(runtime, zoho, github)
    reopen_at = now_offset()
    deliver(runtime, "issues", issues_event("reopened", updated=reopen_at))  # a person, right after
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Open"
    # The bridge's close webhook arrives late, older than the reopen: it changes nothing.
    deliver(runtime, "issues", issues_event("closed", state="closed", updated=reopen_at - 1))
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Open"
    # The person closes it later: not taken for the (long consumed or expired) echo.
    deliver(runtime, "issues", issues_event("closed", state="closed", updated=reopen_at + 5))
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Closed"


def test_the_echo_itself_changes_nothing_in_zoho(world):
    runtime, zoho, github = world
    opened_and_closed_by_the_bridge(runtime, zoho, github)
    writes = len(zoho.writes())
    deliver(runtime, "issues", issues_event("closed", state="closed", updated=now_offset()))  # the echo
    drain(runtime)
    assert len(zoho.writes()) == writes
    [echo] = [e for e in store.list_events(runtime.engine) if e.event_name == "issues.closed"]
    assert "echo of the bridge's own write" in (echo.notes or "")


def test_a_persons_change_after_a_backfill_reaches_zoho(world):
    """A backfill reads the issue after the bridge closed it (its body shows the close); the first webhook
    after it is a person's reopen: it reaches Zoho, and the backfilled state is not sent as a change."""
    runtime, zoho, github = world
    opened_and_closed_by_the_bridge(runtime, zoho, github)
    writes = len(zoho.writes())
    backfilled = issues_event("closed", state="closed", updated=now_offset())
    body, headers = github_request(GITHUB_SECRET, "issues", backfilled)
    event = SOURCE.parse(body, headers)
    store.record_delivery(runtime.engine, event, dedup_key="backfill:1:x", headers={}, payload=body,
                          origin="backfill:1")  # fmt: skip
    drain(runtime)
    assert len(zoho.writes()) == writes  # the backfill showed nothing new
    deliver(runtime, "issues", issues_event("reopened", updated=now_offset() + 1))
    drain(runtime)
    assert zoho_status(runtime, zoho) == "Open"


def test_a_person_quoting_the_back_link_is_synced(world):
    """Bugzilla's Reply quotes a comment; a person quoting the bridge's back-link on GitHub is a person."""
    runtime, zoho, github = world
    deliver(runtime, "issues", issues_event("opened", updated=now_offset() - 60))
    drain(runtime)
    [backlink] = [c for c in github.comments_of("acme/web", 1)]
    quoted = "> " + backlink["body"].replace("\n", "\n> ") + "\n\nThanks, but this is still broken on Safari."
    deliver(runtime, "issue_comment", comment_event("created", comment_id=77, text=quoted, commented=now_offset()))
    # The bridge's own back-link comes back as a webhook too: known by its id, not synced.
    own = comment_event("created", comment_id=int(backlink["id"]), text=backlink["body"], commented=now_offset())
    deliver(runtime, "issue_comment", own)
    drain(runtime)
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None and link.zoho_issue_id
    comments = zoho.comments(link.zoho_issue_id)
    assert len(comments) == 1 and "still broken on Safari" in comments[0]["comment"]


def test_a_webhook_racing_the_back_links_answer_is_known_by_its_marker_in_place(world):
    """The back-link's webhook arrives before the bridge read the POST's answer (the operation is still sent):
    the comment that ends with exactly that marker is the bridge's; the id it carries confirms the operation."""
    runtime, zoho, _ = world
    deliver(runtime, "issues", issues_event("opened", updated=now_offset() - 60))
    drain(runtime)
    op = journal.get(runtime.engine, "github", ITEM, "source.backlink")
    assert op is not None and op.state == "confirmed"
    marker = op.payload["marker"]
    with runtime.engine.begin() as conn:  # stage the race: the post sent, its answer not read yet
        journal.save(conn, journal.Operation("github", ITEM, "source.backlink", "", "sent", payload=op.payload,
                                             planned_at=op.planned_at, sent_at=op.sent_at))  # fmt: skip
    body = f"Tracked in Zoho as X\n\n{marker}"
    deliver(runtime, "issue_comment", comment_event("created", comment_id=4242, text=body, commented=now_offset()))
    runtime.sync.process_item("github", ITEM)
    link = store.get_link(runtime.engine, "github", f"github:{ITEM}")
    assert link is not None and zoho.comments(link.zoho_issue_id) == []
    op = journal.get(runtime.engine, "github", ITEM, "source.backlink")
    assert op is not None and op.state == "confirmed" and op.result == "4242"
