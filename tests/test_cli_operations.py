"""The operator commands on a running bridge (real gunicorn + celery worker + beat, the strict fake Zoho):
send-test, status, resync, links unlink, as an admin types them (the installed `issue-bridge` script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import samples
from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

pytestmark = pytest.mark.e2e
SCRIPT = str(Path(sys.executable).parent / "issue-bridge")
TEST_ITEM = "github:example/issue-bridge-test#1"


def _cli(stack: BridgeStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=stack.tmp, env=stack.env, capture_output=True, text=True, timeout=90)


def _hand_edit(fake: FakeZoho, issue_id: str, name: str) -> None:
    """Someone renames the issue in Zoho's UI."""
    with fake._lock:
        fake._issues[issue_id]["obj"]["name"] = name


def test_send_test_status_resync_and_unlink_on_a_running_bridge(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake)
    try:
        stack.start()
        # send-test: a signed sample, the answer, then the Zoho calls it led to.
        sent = _cli(stack, "send-test", "github", "--url", stack.base_url)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert 'answer: 200 {"event_id":1,"status":"accepted"}' in sent.stdout, sent.stdout
        assert "event 1: done" in sent.stdout, sent.stdout
        assert "POST /api/v3/portal/" in sent.stdout and "/issues → 200" in sent.stdout, sent.stdout
        [issue] = fake.issues()
        assert issue["name"] == samples.TITLE
        ping = _cli(stack, "send-test", "github", "--event", "ping", "--url", stack.base_url)
        assert ping.returncode == 0 and '"status":"ignored"' in ping.stdout.replace(" ", ""), ping.stdout

        # A delivery Zoho refuses for good: status shows it among the failing items, with Zoho's reason.
        fake.fail_next(1, status=400)
        assert stack.github("issues", issues_event("opened", number=8)).status_code == 200
        wait_for(lambda: stack.counts().get("failed") == 1, 60, what="the event to fail")
        status = _cli(stack, "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout
        assert "events: pending 0  done 1  failed 1" in lines, lines
        assert "failing items (newest first):" in lines and "acme/web#8" in lines and "400" in lines, lines
        assert "lag: none (nothing pending)" in lines and "zoho back-off: none" in lines, lines
        assert "backfills (newest first):" in lines, lines  # running and finished backfills have their place
        assert "UTC" in lines or "+0000" in lines or "(+" in lines or "(-" in lines  # times carry their zone

        # resync: a hand edit in Zoho is put back to the item's latest known state.
        _hand_edit(fake, issue["id"], "renamed by hand")
        again = _cli(stack, "resync", TEST_ITEM)
        assert again.returncode == 0, again.stderr
        assert "queued event" in again.stdout
        wait_for(lambda: fake.issue(issue["id"])["name"] == samples.TITLE, 60, what="resync to restore the title")

        # links unlink: the link is forgotten; the next event re-finds the same Zoho issue (nothing doubled).
        unlinked = _cli(stack, "links", "unlink", TEST_ITEM, "--yes")
        assert unlinked.returncode == 0, unlinked.stderr
        assert f"→ Zoho issue {issue['id']}" in unlinked.stdout and "forgot 1 link(s)" in unlinked.stdout
        assert _cli(stack, "links", "show", TEST_ITEM).returncode != 0
        assert _cli(stack, "links", "unlink", TEST_ITEM, "--yes").returncode != 0  # nothing left to forget
        _hand_edit(fake, issue["id"], "renamed again")
        assert _cli(stack, "resync", TEST_ITEM).returncode == 0
        wait_for(lambda: fake.issue(issue["id"])["name"] == samples.TITLE, 60, what="the unlinked item to sync")
        assert [i["id"] for i in fake.issues() if i["name"] == samples.TITLE] == [issue["id"]]
        shown = _cli(stack, "links", "show", TEST_ITEM)
        assert shown.returncode == 0 and issue["id"] in shown.stdout
        assert stack.wait_idle().get("failed") == 1  # only the refused one
    finally:
        stack.stop()
        fake.stop()


def test_send_test_in_dry_run_shows_the_calls_it_would_make(tmp_path):
    stack = BridgeStack(tmp_path, None, dry_run=True)
    try:
        stack.start(beat=False)
        sent = _cli(stack, "send-test", "github", "--event", "issue_comment", "--url", stack.base_url)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "event 1: done" in sent.stdout and "would POST" in sent.stdout and "/comments" in sent.stdout
        refused = _cli(stack, "send-test", "bugzilla", "--url", stack.base_url)
        assert refused.returncode != 0 and "BUGZILLA_WEBHOOK_SECRET is not set" in refused.stderr
        nobody = _cli(stack, "send-test", "github", "--url", "http://127.0.0.1:9")
        assert nobody.returncode != 0 and "is `issue-bridge run` running?" in nobody.stderr
    finally:
        stack.stop()
