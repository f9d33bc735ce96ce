"""Issue 22, noise: a note once per event, a backfill dry-run that says each wait once and never claims to have
stored anything, and a dry-run that recognises every GitHub event body (ignored ones included) on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import store
from bridge.cli import main
from bridge.cli.samples import detect_github_event
from bridge.sources.github.webhook import GitHubSource
from bridge.store import outcomes
from bridge.store import schema as db
from testkit.factories import comment_event, issues_event
from testkit.fakes.github import TOKEN, FakeGitHub
from testkit.harness import GITHUB_SECRET, REPO


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "github.yaml").write_text((REPO / "mappings" / "examples" / "github.yaml").read_text())
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(mappings),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ZOHO_CLIENT_ID": "",
        "ZOHO_CLIENT_SECRET": "",
        "ZOHO_REFRESH_TOKEN": "",
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "GITHUB_TOKEN": TOKEN,
    }


def test_a_note_is_added_once_however_often_it_is_noted(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    db.ensure_schema(engine)
    body = json.dumps(issues_event("opened", number=1)).encode()
    event = GitHubSource(GITHUB_SECRET).parse(body, {"X-GitHub-Event": "issues"})
    event_id = store.record_delivery(engine, event, dedup_key="d1", headers={}, payload=body)[0]
    for _ in range(7):  # seven attempts of one event, each noting the same things
        with engine.begin() as conn:
            outcomes.add_notes(conn, event_id, ["attachment a.png skipped: too large", "a; b", "a; b"])
    with engine.begin() as conn:
        outcomes.add_notes(conn, event_id, ["a", "timestamp clamped"])
    stored = store.get_event(engine, event_id)
    assert stored is not None
    # "a" reads as already there: notes are kept as one "; "-separated line
    assert stored.notes == "attachment a.png skipped: too large; a; b; timestamp clamped"
    engine.dispose()


SUB_ISSUE = {
    "action": "sub_issue_added",
    "sub_issue_id": 11,
    "sub_issue": issues_event("opened", number=11)["issue"],
    "parent_issue_id": 10,
    "parent_issue": issues_event("opened", number=10)["issue"],
    "parent_issue_repo": issues_event("opened")["repository"],
    "repository": issues_event("opened")["repository"],
    "sender": issues_event("opened")["sender"],
}
DEPENDENCY = {
    "action": "blocked_by_added",
    "blocked_issue": issues_event("opened", number=12)["issue"],
    "blocking_issue": issues_event("opened", number=13)["issue"],
    "blocking_issue_repo": issues_event("opened")["repository"],
    "repository": issues_event("opened")["repository"],
    "sender": issues_event("opened")["sender"],
}


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (SUB_ISSUE, "sub_issues"),
        ({**SUB_ISSUE, "action": "parent_issue_removed"}, "sub_issues"),
        (DEPENDENCY, "issue_dependencies"),
        ({**DEPENDENCY, "action": "blocking_removed"}, "issue_dependencies"),
        ({"action": "created", "label": {"name": "bug"}, "repository": {}}, "label"),
        ({"action": "opened", "number": 3, "pull_request": {}, "repository": {}}, "pull_request"),
        ({"action": "created", "comment": {}, "pull_request": {}}, "pull_request_review_comment"),
        (comment_event("created", comment_id=1, text="x", commented=1), "issue_comment"),
        (issues_event("labeled", number=1), "issues"),
        ({"zen": "Design for failure.", "hook_id": 1, "hook": {}}, "ping"),
    ],
)
def test_every_github_event_body_is_recognised(body: dict, event: str) -> None:
    assert detect_github_event(body) == event


@pytest.mark.parametrize(("body", "event"), [(SUB_ISSUE, "sub_issues"), (DEPENDENCY, "issue_dependencies")])
def test_dry_run_explains_an_ignored_event_without_event(
    tmp_path: Path, env: dict[str, str], body: dict, event: str
) -> None:
    payload = tmp_path / "body.json"
    payload.write_text(json.dumps(body))
    result = CliRunner().invoke(main, ["dry-run", "github", str(payload)], env=env)
    assert result.exit_code == 0, result.output
    assert f"ignored: event '{event}' is not synced" in result.output
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"something": "else"}))
    result = CliRunner().invoke(main, ["dry-run", "github", str(unknown)], env=env)
    assert result.exit_code == 1 and "cannot tell which GitHub event this body is" in result.output


def test_backfill_dry_run_says_each_wait_once_and_stores_nothing(env: dict[str, str]) -> None:
    CliRunner().invoke(main, ["db", "upgrade"], env=env)
    with FakeGitHub(rate_limit=1, rate_window=100_000) as github:
        github.add_repo("acme/web")
        github.add_issue("acme/web", 1, title="one", at=1)
        github.add_comment("acme/web", 1, "a comment", at=2)
        github.secondary_limit_next(1, retry_after=1)
        live = env | {"GITHUB_API_URL": github.base_url}
        result = CliRunner().invoke(main, ["backfill", "github", "--repo", "acme/web", "--dry-run"], env=live)
    assert result.exit_code == 1, result.output
    waits = [line for line in result.output.splitlines() if "waiting" in line]
    # Said once: the limit's end (capped at the hour) is past what the command waits for (an hour, less its last
    # second), so no wait line, only the final error. Before, a fraction of a second decided between the error
    # and an hour-long wait.
    assert waits == [], result.output
    assert "X-RateLimit-Remaining is 0" in result.output, result.output
    assert "is stored" not in result.output
    assert "nothing was stored (dry run)" in result.output
