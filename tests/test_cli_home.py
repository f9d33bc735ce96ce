"""The CLI finds its bridge from any working directory, and never silently creates an empty database;
`dry-run` detects a GitHub body's event and explains a ping."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.settings import SettingsError, find_home, load_settings
from testkit.factories import comment_event
from testkit.harness import REPO

SCRIPT = str(Path(sys.executable).parent / "issue-bridge")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ZOHO_", "GITHUB_", "BUGZILLA_", "BUGHERD_", "BRIDGE_"))
        and k not in ("DATABASE_URL", "BROKER_URL", "MAPPINGS_DIR")
    }
    return {**env, **extra}


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder set up to run a bridge: a .env beside mappings/ (what the README describes)."""
    folder = tmp_path / "bridge-home"
    (folder / "mappings").mkdir(parents=True)
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", folder / "mappings" / "github.yaml")
    (folder / ".env").write_text("GITHUB_WEBHOOK_SECRET=from-the-dot-env\nBROKER_URL=redis://127.0.0.1:1/0\n")
    return folder


def test_commands_from_a_subfolder_use_the_home_above_it(home):
    assert _cli(home, "db", "upgrade").returncode == 0
    deep = home / "notes" / "2026"
    deep.mkdir(parents=True)
    result = _cli(deep, "status")
    assert result.returncode == 0, result.stderr
    assert str(home / "var" / "bridge.db") in result.stdout  # the home's database, not ./var under notes/2026
    assert not (deep / "var").exists()
    settings_seen = load_settings({}, read_dotenv=False)  # sanity: the test process itself is unaffected
    assert settings_seen.home == REPO


def test_home_option_and_bridge_home_work_from_anywhere(home, tmp_path):
    assert _cli(home, "db", "upgrade").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_option = _cli(elsewhere, "--home", str(home), "events", "list")
    assert by_option.returncode == 0, by_option.stderr
    by_env = _cli(elsewhere, "status", BRIDGE_HOME=str(home))
    assert by_env.returncode == 0 and str(home / "var" / "bridge.db") in by_env.stdout, by_env.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_command_that_would_create_an_empty_database_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty-home"
    empty.mkdir()
    result = _cli(tmp_path, "events", "list", BRIDGE_HOME=str(empty))
    assert result.returncode != 0
    assert f"no bridge database at {empty / 'var' / 'bridge.db'}" in result.stderr
    assert f"looked in the home folder {empty} (BRIDGE_HOME)" in result.stderr
    assert "--home" in result.stderr
    assert not (empty / "var" / "bridge.db").exists()


def test_find_home_order(home, tmp_path):
    sub = home / "a" / "b"
    sub.mkdir(parents=True)
    assert find_home({}, cwd=sub)[0] == home
    assert find_home({"BRIDGE_HOME": str(tmp_path)}, cwd=sub) == (tmp_path.resolve(), "BRIDGE_HOME")
    with pytest.raises(SettingsError, match="BRIDGE_HOME: no such folder"):
        find_home({"BRIDGE_HOME": str(tmp_path / "missing")})
    # Nothing above: the checkout this code is installed from (an editable install).
    assert find_home({}, cwd=Path("/"))[0] == REPO
    settings = load_settings({"BRIDGE_HOME": str(home), "BRIDGE_DATA_DIR": "data"}, read_dotenv=False)
    assert settings.data_dir == home / "data" and settings.mappings_dir == home / "mappings"


def test_dry_run_detects_the_event_and_explains_a_ping(home, tmp_path):
    comment = tmp_path / "comment.json"
    comment.write_text(json.dumps(comment_event("created", comment_id=3, text="hi", commented=5)))
    result = _cli(home, "dry-run", "github", str(comment), "--event", "issues")
    assert result.returncode == 0, result.stderr
    assert "is a GitHub 'issue_comment' delivery" in result.stderr and "/comments" in result.stdout
    detected = _cli(home, "dry-run", "github", str(comment))
    assert detected.returncode == 0 and "/comments" in detected.stdout
    ping = tmp_path / "ping.json"
    ping.write_text(json.dumps({"zen": "Design for failure.", "hook_id": 42, "hook": {"type": "Repository"}}))
    explained = _cli(home, "dry-run", "github", str(ping))
    assert explained.returncode == 0, explained.stderr
    assert "ignored: ping" in explained.stdout and "GitHub sends a ping once" in explained.stdout


def test_every_command_has_help_text():
    from bridge.cli import main

    def walk(group, prefix):  # type: ignore[no-untyped-def]
        for name, command in group.commands.items():
            yield f"{prefix} {name}".strip(), command
            if hasattr(command, "commands"):
                yield from walk(command, f"{prefix} {name}")

    missing = [name for name, command in walk(main, "") if not (command.help or "").strip()]
    assert missing == []


def test_db_upgrade_says_whether_it_created_upgraded_or_found_the_schema_current(tmp_path):
    from click.testing import CliRunner

    from bridge.cli import main

    env = {"BRIDGE_HOME": str(tmp_path), "BROKER_URL": "redis://127.0.0.1:1/0"}
    first = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert first.exit_code == 0 and "created the database, schema" in first.output, first.output
    again = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert again.exit_code == 0 and "schema is up to date" in again.output, again.output
