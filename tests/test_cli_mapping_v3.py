"""`bridge mappings check` for mapping v3: a saved payload's match and reason; `users:` emails against Zoho."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from bridge.cli import main
from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO


@pytest.fixture
def env(tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(mappings),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ZOHO_CLIENT_ID": "",
        "ZOHO_CLIENT_SECRET": "",
        "ZOHO_REFRESH_TOKEN": "",
    }


def with_v3(env, text: str) -> None:
    path = f"{env['MAPPINGS_DIR']}/github.yaml"
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text)


def test_check_shows_whether_and_why_a_saved_payload_matches(tmp_path, env):
    with_v3(env, "when:\n  - label: bug\n")
    bug = tmp_path / "bug.json"
    bug.write_text(json.dumps(issues_event("opened", number=5, labels=("bug",))))
    other = tmp_path / "question.json"
    other.write_text(json.dumps(issues_event("opened", number=6, labels=("question",))))
    shown = CliRunner().invoke(main, ["mappings", "check", "--payload", str(bug), env["MAPPINGS_DIR"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "github.yaml (github acme/web#5): matches, synced: label 'bug' present" in shown.output
    shown = CliRunner().invoke(main, ["mappings", "check", "--payload", str(other), env["MAPPINGS_DIR"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "does NOT match, not sent to Zoho: no label 'bug' in labels (question)" in shown.output


def test_check_verifies_every_users_email_through_the_one_user_call(env):
    with_v3(env, "users:\n  octocat: alice@example.com\n  hubot: nobody@example.com\n")
    with FakeZoho() as fake:
        env = env | {
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        }
        result = CliRunner().invoke(main, ["mappings", "check", env["MAPPINGS_DIR"]], env=env)
        assert result.exit_code == 1, result.output
        example = REPO / "mappings" / "examples" / "github.yaml"
        lines = example.read_text().count("\n") + 4  # appended: "", users, octocat, hubot
        assert f"github.yaml:{lines}: users.hubot: nobody@example.com is not a user of Zoho project" in result.output
        assert "alice@example.com" not in result.output
        asked = fake.api_calls(method="GET", path_contains="/users/")
        assert {c["path"].rsplit("/", 1)[1] for c in asked} == {"alice@example.com", "nobody@example.com"}
        offline = CliRunner().invoke(main, ["mappings", "check", "--offline", env["MAPPINGS_DIR"]], env=env)
        assert offline.exit_code == 0, offline.output


def test_dry_run_says_whether_the_filter_matches(tmp_path, env):
    with_v3(env, "when:\n  - label: bug\n")
    payload = tmp_path / "q.json"
    payload.write_text(json.dumps(issues_event("opened", number=7, labels=("question",))))
    result = CliRunner().invoke(main, ["dry-run", "github", str(payload), "--json"], env=env)
    assert result.exit_code == 0, result.output
    [line] = json.loads(result.output)["filter"]
    assert "does NOT match" in line and "no label 'bug'" in line


def test_dry_run_names_the_attachments_it_would_copy_without_fetching_them(tmp_path, env):
    with_v3(env, "attachments: true\n")
    opened = issues_event("opened", number=8)
    opened["issue"]["body"] = "Broken: ![shot](https://user-images.githubusercontent.com/1/shot.png)"
    payload = tmp_path / "img.json"
    payload.write_text(json.dumps(opened))
    result = CliRunner().invoke(main, ["dry-run", "github", str(payload), "--json"], env=env)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert "dry-run: attachment shot.png would be copied" in out["notes"]
    assert out["status"] == "done"
