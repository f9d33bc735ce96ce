"""The admin's command line: mappings check, dry-run, zoho fields/projects (against the fake Zoho over HTTP)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from testkit.factories import comment_event, issues_event
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


def test_dry_run_prints_event_and_exact_calls_and_touches_nothing(tmp_path, env):
    payload = tmp_path / "opened.json"
    payload.write_text(json.dumps(issues_event("opened", number=5, labels=("security", "bug"))))
    result = CliRunner().invoke(main, ["dry-run", "github", str(payload), "--json"], env=env)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["event"]["item_key"] == "acme/web#5" and out["status"] == "done"
    [create] = out["zoho_calls"]  # a new issue costs one call: the lookup runs only for an intent in doubt
    assert create["method"] == "POST" and create["path"].endswith("/projects/1752587000000097024/issues")
    assert create["body"]["name"] == "Login button does nothing"
    assert create["body"]["external_id"] == "github:acme/web#5"
    assert create["body"]["classification"] == {"id": "<id of classification 'Security'>"}
    assert not (tmp_path / "var").exists()  # nothing written where the bridge keeps its data


def test_dry_run_comment_and_ignored_and_bad_payload(tmp_path, env):
    payload = tmp_path / "comment.json"
    payload.write_text(json.dumps(comment_event("created", comment_id=3, text="hi", commented=5)))
    result = CliRunner().invoke(main, ["dry-run", "github", str(payload), "--event", "issue_comment"], env=env)
    assert result.exit_code == 0, result.output
    assert "/comments" in result.output and "hubot commented" in result.output
    pr = tmp_path / "pr.json"
    pr.write_text(json.dumps(issues_event("opened", pull_request=True)))
    result = CliRunner().invoke(main, ["dry-run", "github", str(pr)], env=env)
    assert result.exit_code == 0 and "ignored: issues.opened on a pull request" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["dry-run", "github", str(bad)], env=env)
    assert result.exit_code != 0 and "body must be a JSON object" in result.output


def test_mappings_check_exit_codes(tmp_path, env):
    ok = CliRunner().invoke(main, ["mappings", "check", env["MAPPINGS_DIR"]], env=env)
    assert ok.exit_code == 0, ok.output
    broken = tmp_path / "broken.yaml"
    example = (REPO / "mappings" / "examples" / "github.yaml").read_text()
    broken.write_text(example.replace("on_delete: close", "on_delete: shred"))
    result = CliRunner().invoke(main, ["mappings", "check", str(broken)], env=env)
    assert result.exit_code == 1
    assert "broken.yaml:" in result.output and "on_delete" in result.output


def test_zoho_fields_and_projects_from_zoho_metadata(env):
    with FakeZoho() as fake:
        env = env | {
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_PORTAL_ID": fake.portal_id,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        }
        fields = CliRunner().invoke(main, ["zoho", "fields"], env=env)
        assert fields.exit_code == 0, fields.output
        assert "project 1752587000000097024:" in fields.output and "project 1752587000000098001:" in fields.output
        assert "severity: Blocker, Critical, Major, Minor, None" in fields.output
        assert "external_id:" in fields.output
        projects = CliRunner().invoke(main, ["zoho", "projects"], env=env)
        assert projects.exit_code == 0, projects.output
        assert f"portal {fake.portal_id}" in projects.output and "project 1752587000000098001: API" in projects.output


def test_mappings_check_asks_zoho_for_the_names_when_it_can(env):
    mapping = REPO / "mappings" / "examples" / "github.yaml"
    with FakeZoho() as fake:
        env = env | {
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        }
        ok = CliRunner().invoke(main, ["mappings", "check", env["MAPPINGS_DIR"]], env=env)
        assert ok.exit_code == 0, ok.output
        broken = Path(env["MAPPINGS_DIR"]) / "github.yaml"
        broken.write_text(mapping.read_text().replace("bug: Major", "bug: Majr"))
        result = CliRunner().invoke(main, ["mappings", "check", env["MAPPINGS_DIR"]], env=env)
        assert result.exit_code == 1
        assert "github.yaml:" in result.output and "Majr" in result.output and "Major" in result.output
        offline = CliRunner().invoke(main, ["mappings", "check", "--offline", env["MAPPINGS_DIR"]], env=env)
        assert offline.exit_code == 0  # the file itself is valid; only Zoho knows the name is wrong


def test_dry_run_of_a_bugherd_body_without_its_event_asks_for_it(tmp_path, env):
    from testkit.factories_trackers import bugherd_event

    payload = tmp_path / "task.json"
    payload.write_text(json.dumps(bugherd_event("task_create")))
    result = CliRunner().invoke(main, ["dry-run", "bugherd", str(payload)], env=env)
    assert result.exit_code != 0
    assert "give --event, one of task_create, task_update, comment, task_destroy" in result.output
    assert "None" not in result.output


def test_resume_of_what_is_not_paused_says_so_once(tmp_path, env):
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["resume", "github"], env=env)
    assert result.exit_code == 0, result.output
    assert "was not paused: nothing to resume" in result.output and "resumed" not in result.output


def test_metrics_names_its_charset_once(tmp_path, env, monkeypatch):
    from bridge.settings import load_settings
    from bridge.web import create_app

    app = create_app(load_settings(env, read_dotenv=False))
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200 and answer.headers["Content-Type"].count("charset") == 1
    app.extensions["bridge"].engine.dispose()


def test_status_names_the_zoho_limit_with_its_window(tmp_path, env):
    """`status` said `11/100 calls in the last minute (window 120s)`: a minute's count over a two-minute limit."""
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["status"], env={**env, "ZOHO_RATE_LIMIT_PER_MINUTE": "100"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("zoho:"))
    assert "0 calls in the last minute (limit 100 per 120 s, shared by every worker)" in line, line
