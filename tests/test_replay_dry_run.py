"""Going live after dry-run: `issue-bridge events replay --from-dry-run` sends Zoho what dry-run only recorded,
once: an item already created live is updated, not created again; a comment is posted once; a second replay
finds nothing."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bridge import store
from bridge.cli import main
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from testkit.factories import comment_event, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

PARSER = GitHubSource(GITHUB_SECRET)


def _deliver(runtime: Runtime, name: str, payload: dict, key: str) -> str:
    body = json.dumps(payload).encode()
    event = PARSER.parse(body, {"X-GitHub-Event": name})
    store.record_delivery(runtime.engine, event, dedup_key=key, headers={}, payload=body)
    runtime.sync.process_item("github", event.item_key)
    return event.item_key


def test_replay_from_dry_run_sends_each_item_once_and_only_once(tmp_path: Path) -> None:
    with FakeZoho() as fake:
        live_env = in_process_env(tmp_path, fake, "github")
        dry_env = live_env | {"ZOHO_CLIENT_ID": "", "ZOHO_CLIENT_SECRET": "", "ZOHO_REFRESH_TOKEN": ""}
        dry = Runtime(load_settings(dry_env))
        _deliver(dry, "issues", issues_event("opened", number=1, title="First"), "d1")
        _deliver(
            dry, "issue_comment", comment_event("created", comment_id=11, text="seen", commented=1, title="First"), "d2"
        )
        _deliver(dry, "issues", issues_event("opened", number=2, title="Second"), "d3")
        dry.engine.dispose()
        assert fake.issues() == []  # dry-run sent nothing

        refused = CliRunner().invoke(main, ["events", "replay", "--from-dry-run", "--yes"], env=dry_env)
        assert refused.exit_code == 1 and "still in dry-run" in refused.output

        live = Runtime(load_settings(live_env))  # credentials set: live from now on
        _deliver(live, "issues", issues_event("edited", number=2, title="Second, edited", updated=50), "d4")
        assert [i["name"] for i in fake.issues()] == ["Second, edited"]

        result = CliRunner().invoke(main, ["events", "replay", "--from-dry-run", "--yes"], env=live_env)
        assert result.exit_code == 0, result.output
        assert "3 event(s) of 2 item(s) were processed in dry-run only" in result.output
        for key in ("acme/web#1", "acme/web#2"):  # what the woken workers do
            live.sync.process_item("github", key)
        names = sorted(i["name"] for i in fake.issues())
        assert names == ["First", "Second, edited"]  # #2 was not created twice nor rolled back
        [first] = [i for i in fake.issues() if i["name"] == "First"]
        assert len(fake.comments(first["id"])) == 1

        again = CliRunner().invoke(main, ["events", "replay", "--from-dry-run", "--yes"], env=live_env)
        assert again.exit_code == 0 and "nothing to replay" in again.output
        for key in ("acme/web#1", "acme/web#2"):
            live.sync.process_item("github", key)
        assert len(fake.issues()) == 2 and len(fake.comments(first["id"])) == 1
        live.engine.dispose()
