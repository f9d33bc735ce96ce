"""Settings that take effect: every process re-reads the home's .env when it changes, with the rule mapping files
have (a broken edit is refused in one line, the last good settings stay), the real environment still winning;
settings only a restart can apply say "restart needed"; a missing database or broker driver is one line naming
what to install."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import settings as settings_module
from bridge import store
from bridge.cli import main
from bridge.process.runtime import Runtime
from bridge.settings import SettingsError, SettingsWatcher, load_settings, write_env_values
from bridge.sources.github.webhook import GitHubSource
from bridge.web import create_app
from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO

OLD, NEW = "old-webhook-secret", "new-webhook-secret"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A bridge home whose settings come from the process environment and its .env, as in a real process; the
    environment and what .env put into it are restored afterwards."""
    saved_env, saved_applied = dict(os.environ), dict(settings_module._DOTENV_APPLIED)
    for key in [k for k in os.environ if k.startswith(("ZOHO_", "GITHUB_", "ADMIN_", "DATABASE_", "BROKER_"))]:
        monkeypatch.delenv(key)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "github.yaml").write_text((REPO / "mappings" / "examples" / "github.yaml").read_text())
    monkeypatch.setenv("BRIDGE_HOME", str(tmp_path))
    monkeypatch.setenv("BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ZOHO_RATE_LIMIT_PER_MINUTE", "0")
    monkeypatch.setenv("COALESCE_MS", "0")
    write_env_values(tmp_path / ".env", {"GITHUB_WEBHOOK_SECRET": OLD})
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved_env)
    settings_module._DOTENV_APPLIED.clear()
    settings_module._DOTENV_APPLIED.update(saved_applied)


def _edit(home: Path, **values: str) -> None:
    write_env_values(home / ".env", values)


def test_an_edit_is_taken_a_broken_one_refused_and_restart_only_settings_announced(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings()
    assert settings.github_webhook_secret == OLD and settings.from_environment
    watcher = SettingsWatcher(settings, min_interval=0)
    assert watcher.check() is None  # nothing changed
    _edit(home, GITHUB_WEBHOOK_SECRET=NEW, METRICS_TOKEN="scrape-me")
    fresh = watcher.check()
    assert fresh is not None and fresh.github_webhook_secret == NEW and fresh.metrics_token == "scrape-me"

    caplog.set_level(logging.INFO, logger="bridge.settings")
    _edit(home, ZOHO_DIALECT="jira", GITHUB_WEBHOOK_SECRET="third")
    assert watcher.check() is None and watcher.settings.github_webhook_secret == NEW  # the last good stays
    [refused] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "edit refused: ZOHO_DIALECT: expected one of projects, bugtracker" in refused
    assert "\n" not in refused and "the last good settings stay in force" in refused
    _edit(home, ZOHO_DIALECT="projects")
    assert watcher.check() is not None and watcher.problem is None and watcher.settings.github_webhook_secret == "third"

    _edit(home, DATABASE_URL=f"sqlite:///{home}/elsewhere.db", LOG_LEVEL="DEBUG", WEB_THREADS="32")
    assert watcher.check() is None  # nothing this process can take
    assert watcher.pending_restart == ["DATABASE_URL", "LOG_LEVEL", "WEB_THREADS"]
    assert watcher.settings.database_url == settings.database_url and watcher.settings.web_threads == 64
    message = "DATABASE_URL, LOG_LEVEL, WEB_THREADS changed: restart needed"
    assert any(message in r.getMessage() for r in caplog.records)


def test_the_real_environment_still_wins_over_dotenv(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "from-the-environment")
    watcher = SettingsWatcher(load_settings(), min_interval=0)
    _edit(home, METRICS_TOKEN="from-dotenv", GITHUB_WEBHOOK_SECRET=NEW)
    fresh = watcher.check()
    assert fresh is not None and fresh.metrics_token == "from-the-environment" and fresh.github_webhook_secret == NEW
    assert os.environ["GITHUB_WEBHOOK_SECRET"] == NEW  # child processes and code reading os.environ follow


def test_the_web_process_takes_a_new_secret_and_admin_token_without_restart(home: Path) -> None:
    app = create_app(load_settings())
    client = app.test_client()
    body, headers = github_request(OLD, "issues", issues_event("opened", number=1))
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 200
    assert client.get("/admin/login").status_code == 404
    _edit(home, GITHUB_WEBHOOK_SECRET=NEW, ADMIN_TOKEN="admin-token-0123456789abcdef")
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 401  # the old secret
    body, headers = github_request(NEW, "issues", issues_event("opened", number=2))
    assert client.post("/webhooks/github", data=body, headers=headers).json["status"] == "accepted"
    assert client.get("/admin/login").status_code == 200
    app.extensions["bridge"].engine.dispose()


def test_trusted_proxies_added_to_dotenv_apply_without_a_restart(home: Path) -> None:
    """TRUSTED_PROXIES is read per request (before, the proxy layer kept its start-up value and said nothing)."""
    app = create_app(load_settings())
    client = app.test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "bridge.example"}

    def front() -> str:  # the front page names the webhook URLs as a sender reaches them
        return client.get("/", headers=forwarded).get_data(as_text=True)

    assert "https://bridge.example/webhooks/github" not in front()
    _edit(home, TRUSTED_PROXIES="127.0.0.1")
    client.get("/healthz")  # the request that takes the edit over
    assert "https://bridge.example/webhooks/github" in front()
    app.extensions["bridge"].engine.dispose()


def test_a_worker_goes_live_when_credentials_appear_in_dotenv(home: Path) -> None:
    """Dry-run to live without a restart: `zoho connect` writes .env, the next event is sent to Zoho."""
    with FakeZoho() as fake:
        _edit(home, ZOHO_API_BASE=fake.base_url, ZOHO_ACCOUNTS_URL=fake.base_url)
        runtime = Runtime(load_settings())
        assert runtime.zoho.dry_run
        _edit(
            home,
            ZOHO_CLIENT_ID=fake.client_id,
            ZOHO_CLIENT_SECRET=fake.client_secret,
            ZOHO_REFRESH_TOKEN=fake.refresh_token,
        )
        assert runtime.refresh() and not runtime.zoho.dry_run and not runtime.sync.client.dry_run
        body, _ = github_request(OLD, "issues", issues_event("opened", number=3, title="Live at once"))
        event = GitHubSource(OLD).parse(body, {"X-GitHub-Event": "issues"})
        store.record_delivery(runtime.engine, event, dedup_key="x", headers={}, payload=body)
        runtime.sync.process_item("github", event.item_key)
        assert [i["name"] for i in fake.issues()] == ["Live at once"]
        runtime.engine.dispose()


def test_a_missing_driver_is_one_line_naming_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine without the postgres extra
    with pytest.raises(SettingsError, match=r"DATABASE_URL: the 'psycopg' driver is not installed: pip install "):
        load_settings({"DATABASE_URL": "postgresql://bridge@db/bridge", "BRIDGE_DATA_DIR": str(tmp_path)})
    env = {"DATABASE_URL": "postgresql://bridge@db/bridge", "BRIDGE_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 1
    assert result.output == (
        "Error: DATABASE_URL: the 'psycopg' driver is not installed: pip install 'issue-bridge[postgres]'\n"
    )
    monkeypatch.setitem(sys.modules, "amqp", None)
    with pytest.raises(SettingsError, match=r"BROKER_URL: the 'amqp' driver is not installed"):
        load_settings({"BROKER_URL": "amqp://guest@mq//", "BRIDGE_DATA_DIR": str(tmp_path)})
