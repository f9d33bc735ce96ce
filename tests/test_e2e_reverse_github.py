"""Talking back to GitHub, end to end on real processes: gunicorn + celery worker + beat + broker, a strict
FakeZoho and a FakeGitHub that records the writes and sends the webhooks GitHub would send for them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, BridgeStack, wait_for

pytestmark = pytest.mark.e2e

POLL_SECONDS = 2.0
HOOK_TOKEN = "zoho-hook-token-6f1d"
REVERSE_KEYS = """
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {close: completed}
    Reopened: {reopen: true}
    "In Progress": {reopen: true}
conflict: %s
"""


def _mapping(tmp: Path, conflict: str = "source_wins") -> Path:
    path = tmp / "src" / "github.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text((REPO / "mappings" / "examples" / "github.yaml").read_text() + REVERSE_KEYS % conflict)
    return path


def _stack(
    tmp: Path, zoho: FakeZoho, github: FakeGitHub, *, conflict: str, poll: float, extra: dict | None = None
) -> BridgeStack:
    tmp.mkdir(parents=True, exist_ok=True)
    stack = BridgeStack(
        tmp,
        zoho,
        mappings=[_mapping(tmp, conflict)],
        extra_env={
            "GITHUB_TOKEN": github.token,
            "GITHUB_API_URL": github.base_url,
            "ZOHO_POLL_SECONDS": str(poll),
            "ZOHO_WEBHOOK_TOKEN": HOOK_TOKEN,
            **(extra or {}),
        },
    )
    github.webhook_url = stack.base_url + "/webhooks/github"
    github.webhook_secret = GITHUB_SECRET
    return stack.start()


@pytest.fixture
def fakes():
    zoho, github = FakeZoho().start(), FakeGitHub().start()
    github.add_issue("acme/web", 7, title="Login button does nothing", labels=("bug", "area:auth"), at=0)
    yield zoho, github
    github.stop()
    zoho.stop()


def _open_and_link(stack: BridgeStack, zoho: FakeZoho, github: FakeGitHub) -> dict:
    github.deliver("issues", "opened", "acme/web", 7, sender="octocat")
    issue = wait_for(lambda: zoho.issues(), 30, what="the Zoho issue")[0]
    stack.wait_idle()
    return issue


@pytest.mark.scale_out
def test_backlink_once_loop_closed_and_reopened_and_no_echo(tmp_path, fakes):
    zoho, github = fakes
    stack = _stack(tmp_path, zoho, github, conflict="source_wins", poll=POLL_SECONDS)
    try:
        issue = _open_and_link(stack, zoho, github)

        # Exactly one back-link on the GitHub issue, naming the Zoho issue's key and URL.
        comments = wait_for(lambda: github.comments_of("acme/web", 7), 30, what="the back-link")
        time.sleep(POLL_SECONDS * 2)  # more ticks: still one
        comments = github.comments_of("acme/web", 7)
        assert len(comments) == 1, comments
        assert f"Tracked in Zoho as {issue['prefix']}" in comments[0]["body"]
        assert f"#issue/{issue['id']}" in comments[0]["body"]
        # Its webhook echo reached the bridge and was recognized: nothing posted to Zoho.
        stack.wait_idle()
        assert zoho.comments(issue["id"]) == []
        assert "a comment the bridge wrote on the source" in _notes(stack)

        # A person closes the Zoho issue: the GitHub issue is closed within one poll interval.
        zoho.person_sets_status(issue["id"], "Closed")
        started = time.monotonic()
        wait_for(lambda: github.issue("acme/web", 7)["state"] == "closed", POLL_SECONDS * 3, what="closed")
        close_latency = time.monotonic() - started
        assert github.issue("acme/web", 7)["state_reason"] == "completed"
        zoho_writes = len(zoho.writes())
        stack.wait_idle()

        # A person reopens it: reopened.
        zoho.person_sets_status(issue["id"], "Reopened")
        wait_for(lambda: github.issue("acme/web", 7)["state"] == "open", POLL_SECONDS * 3, what="reopened")
        # The echoes of our close and reopen (two `issues` webhooks, sent a moment later) were recognized
        # and caused no Zoho call at all.
        echo = "the source's echo of the bridge's own write"
        wait_for(lambda: _notes(stack).count(echo) == 2, 30, what="both echoes processed")
        stack.wait_idle()
        assert zoho.writes()[zoho_writes:] == []
        assert zoho.issue(issue["id"])["status"]["name"] == "Reopened"

        # A quiet period: no writes on either side, only the poll's one read per interval.
        gh_writes, z_writes, z_reads = len(github.writes()), len(zoho.writes()), len(zoho.api_calls("GET"))
        quiet = 20.0
        time.sleep(quiet)
        assert github.writes()[gh_writes:] == []
        assert zoho.writes()[z_writes:] == []
        reads = len(zoho.api_calls("GET")) - z_reads
        assert reads <= quiet / POLL_SECONDS + 2, reads
        print(f"\nclose latency {close_latency:.1f}s (poll {POLL_SECONDS}s); quiet {quiet:.0f}s: {reads} Zoho reads")
        # GitHub writes over the whole run: one back-link comment, one close, one reopen.
        assert [(w["method"], w["path"].rsplit("/", 1)[-1]) for w in github.writes()] == [
            ("POST", "comments"),
            ("PATCH", "7"),
            ("PATCH", "7"),
        ]
    finally:
        stack.stop()


@pytest.mark.parametrize("rule", ["source_wins", "zoho_wins"])
def test_conflict_rule_decides_once(tmp_path, fakes, rule):
    """Both sides change the status between two looks at Zoho: the rule wins, the other side moves once."""
    zoho, github = fakes
    stack = _stack(tmp_path, zoho, github, conflict=rule, poll=3600)  # looks only through the Zoho webhook
    try:
        issue = _open_and_link(stack, zoho, github)
        before_gh = len(github.writes())
        _look(stack, issue["id"])
        assert github.writes()[before_gh:] == []  # in step: nothing to do
        before_gh, before_z = len(github.writes()), len(zoho.writes())

        zoho.person_sets_status(issue["id"], "In Progress")  # a person in Zoho
        github.person_edits("acme/web", 7, "closed", state="closed", state_reason="completed")  # one on GitHub
        stack.wait_idle()
        wait_for(lambda: stack.counts().get("done", 0) >= 2, 30, what="the close synced")
        stack.wait_idle()
        _look(stack, issue["id"])
        after_first = len(github.writes())
        _look(stack, issue["id"])  # a second look changes nothing: no oscillation

        gh_writes, z_writes = github.writes()[before_gh:], zoho.writes()[before_z:]
        status = zoho.issue(issue["id"])["status"]["name"]
        state = github.issue("acme/web", 7)["state"]
        assert len(github.writes()) == after_first
        if rule == "source_wins":
            assert (status, state) == ("Closed", "closed")
            assert gh_writes == []
            assert len(z_writes) == 1 and "status" in (z_writes[0]["json"] or {})
        else:
            assert (status, state) == ("In Progress", "open")
            assert len(gh_writes) == 1 and gh_writes[0]["method"] == "PATCH"
            assert all("status" not in (w["json"] or {}) for w in z_writes)
        assert f"conflict on status: {rule}" in stack.log_text()
    finally:
        stack.stop()


def test_zoho_webhook_endpoint(tmp_path, fakes):
    zoho, github = fakes
    stack = _stack(tmp_path, zoho, github, conflict="source_wins", poll=3600)
    try:
        issue = _open_and_link(stack, zoho, github)
        wrong = requests.post(f"{stack.base_url}/webhooks/zoho/nope", json={"issue_id": issue["id"]}, timeout=5)
        assert wrong.status_code == 401 and wrong.json()["status"] == "error"
        bad = _post_hook(stack, {"issue": "x"})
        assert bad.status_code == 400
        reads = len(zoho.api_calls("GET"))
        unlinked = _post_hook(stack, {"issue_id": "1752587000000999999", "status": "Closed"})
        assert unlinked.status_code == 200 and unlinked.json()["status"] == "ignored"
        assert "event_id" in unlinked.json() and unlinked.json()["event_id"] is None  # every delivery answer has it
        assert len(zoho.api_calls("GET")) == reads  # nothing fetched for an issue that is not ours

        # The body's status is never trusted: it says Closed, Zoho says Open → nothing happens. The request
        # only stores a nudge and wakes a worker: no web request calls an outside system.
        fetches, reads = _issue_fetches(zoho, issue["id"]), len(zoho.api_calls("GET"))
        lie = _post_hook(stack, {"issue_id": issue["id"], "status": "Closed"})
        assert lie.status_code == 200 and lie.json()["status"] == "accepted" and lie.json()["event_id"]
        stack.wait_idle()
        assert github.issue("acme/web", 7)["state"] == "open"
        assert _issue_fetches(zoho, issue["id"]) - fetches == 1  # the worker's one fetch of the issue
        _only_issue_or_metadata(zoho, reads, issue["id"])

        zoho.person_sets_status(issue["id"], "Closed")
        fetches, reads = _issue_fetches(zoho, issue["id"]), len(zoho.api_calls("GET"))
        valid = _post_hook(stack, {"issue_id": issue["id"], "status": "Closed", "modified_time": "now"})
        assert valid.json()["status"] == "accepted"
        wait_for(lambda: github.issue("acme/web", 7)["state"] == "closed", 30, what="the close on GitHub")
        assert _issue_fetches(zoho, issue["id"]) - fetches == 1  # one fetch of the issue, as a poll would have done
        _only_issue_or_metadata(zoho, reads, issue["id"])
    finally:
        stack.stop()


def _issue_fetches(zoho: FakeZoho, issue_id: str) -> int:
    return len(zoho.api_calls("GET", f"/issues/{issue_id}"))


def _only_issue_or_metadata(zoho: FakeZoho, since: int, issue_id: str) -> None:
    """Besides the issue, a worker may read the project's field options once per process (each worker process
    keeps its own copy): which process takes a nudge is Celery's choice, so that read is allowed, nothing else."""
    for call in zoho.api_calls("GET")[since:]:
        assert call["path"].endswith(f"/issues/{issue_id}") or "/bugs/defaultfields" in call["path"], call["path"]


def _post_hook(stack: BridgeStack, body: dict) -> requests.Response:
    return requests.post(f"{stack.base_url}/webhooks/zoho/{HOOK_TOKEN}", json=body, timeout=10)


def _look(stack: BridgeStack, issue_id: str) -> None:
    """Zoho's webhook asks the bridge to look at the issue; wait until the worker has (and its side work)."""
    response = _post_hook(stack, {"issue_id": issue_id})
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    wait_for(lambda: _status(stack, event_id) == "done", 30, what=f"the nudge {event_id} handled")
    stack.wait_idle()


def _status(stack: BridgeStack, event_id: int) -> str | None:
    from sqlalchemy import select

    from bridge.store import schema as db

    with stack.engine.connect() as conn:
        return conn.execute(select(db.events.c.status).where(db.events.c.id == event_id)).scalar()


def _notes(stack: BridgeStack) -> str:
    from sqlalchemy import select

    from bridge.store import schema as db

    with stack.engine.connect() as conn:
        rows = conn.execute(select(db.events.c.notes)).all()
    return "\n".join(str(r.notes or "") for r in rows)


def _backlink_states(stack: BridgeStack) -> dict[str, int]:
    from bridge.store import journal

    with stack.engine.connect() as conn:
        return {state: n for (kind, state), n in journal.counts(conn).items() if kind == "source.backlink"}


@pytest.mark.scale_out
def test_a_backlink_refused_for_a_missing_token_is_posted_once_after_the_token_is_set(tmp_path, fakes):
    """A new admin turns `backlink:` on before setting GITHUB_TOKEN: the back-link fails visibly (status says so,
    the item's event still ends `done`), and once the token is in `.env` the running processes take it and post
    the back-link exactly once, without a restart or a replay."""
    zoho, github = fakes
    home = tmp_path / "home"
    home.mkdir()
    stack = BridgeStack(
        tmp_path,
        zoho,
        mappings=[_mapping(tmp_path)],
        extra_env={"BRIDGE_HOME": str(home), "GITHUB_API_URL": github.base_url, "ZOHO_POLL_SECONDS": "3600"},
    )
    github.webhook_url = stack.base_url + "/webhooks/github"
    github.webhook_secret = GITHUB_SECRET
    stack.start()
    try:
        _open_and_link(stack, zoho, github)
        wait_for(lambda: _backlink_states(stack).get("failed"), 60, what="the back-link failing for the token")
        assert stack.counts() == {"done": 1}  # side work never fails the item
        status = stack.cli("status").stdout
        assert "back-links: 1 failed" in status and "GITHUB_TOKEN" in status, status
        assert github.comments_of("acme/web", 7) == []

        (home / ".env").write_text(f"GITHUB_TOKEN={github.token}\n")
        wait_for(lambda: github.comments_of("acme/web", 7), 60, what="the back-link after the token was set")
        wait_for(lambda: _backlink_states(stack) == {"confirmed": 1}, 30, what="the back-link confirmed")
        stack.wait_idle()
        assert len(github.comments_of("acme/web", 7)) == 1
        assert [w["method"] for w in github.writes()] == ["POST"]
        assert "back-links" not in stack.cli("status").stdout  # nothing failing any more
    finally:
        stack.stop()
