"""Settings: read once, validated at start-up, every error naming the variable it is about."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings

CREDS = {"ZOHO_CLIENT_ID": "1000.CLIENT", "ZOHO_CLIENT_SECRET": "s3cret", "ZOHO_REFRESH_TOKEN": "1000.refresh"}


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BRIDGE_DATA_DIR": str(tmp_path / "var"), **extra}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZOHO_DIALECT", "jira"),
        ("ZOHO_DIALECT", "PROJECT"),
        ("DATABASE_URL", "mysql://bridge@db/bridge"),
        ("DATABASE_URL", "bridge.db"),
        ("BROKER_URL", "http://127.0.0.1:6379/0"),
        ("BROKER_URL", "127.0.0.1:6379"),
        ("ZOHO_RATE_LIMIT_PER_MINUTE", "lots"),
        ("ZOHO_RATE_LIMIT_PER_MINUTE", "1.5"),
        ("ZOHO_RATE_LIMIT_PER_MINUTE", "-1"),
        ("ZOHO_TIMEOUT_SECONDS", "soon"),
        ("ZOHO_TIMEOUT_SECONDS", "nan"),
        ("ZOHO_TIMEOUT_SECONDS", "inf"),
        ("ZOHO_TIMEOUT_SECONDS", "0"),  # requests refuses a zero timeout: every call would fail
        ("ZOHO_RATE_WINDOW_SECONDS", "0"),  # a budget per zero seconds: `status` divided by it
        ("PORT", "abc"),
        ("PORT", "99999"),
        ("PORT", "0"),
        ("WEB_THREADS", "abc"),
        ("WEB_THREADS", "0"),
        ("WEB_CONCURRENCY", "0"),
        ("RETRY_BASE_SECONDS", "-2"),
        ("MAX_WEBHOOK_BYTES", "10"),
        ("ZOHO_API_BASE", "projectsapi.zoho.com"),
        ("ZOHO_ACCOUNTS_URL", "ftp://accounts.zoho.com"),
        ("BUGZILLA_WEBHOOK_HEADER", "X Bad Header"),
        ("LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_value_fails_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env(tmp_path, **{name: value}))
    message = str(err.value)
    assert message.startswith(name + ":"), message
    assert "\n" not in message  # one clear line


@pytest.mark.parametrize("missing", sorted(CREDS))
def test_partial_zoho_credentials_name_the_missing_one(tmp_path: Path, missing: str) -> None:
    partial = {k: v for k, v in CREDS.items() if k != missing}
    with pytest.raises(SettingsError) as err:
        load_settings(env(tmp_path, **partial))
    assert str(err.value).startswith(missing + ":")
    assert "dry-run" in str(err.value)


def test_one_credential_alone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ZOHO_CLIENT_SECRET"):
        load_settings(env(tmp_path, ZOHO_CLIENT_ID="1000.CLIENT"))


def test_dry_run_without_credentials_and_not_with_them(tmp_path: Path) -> None:
    assert load_settings(env(tmp_path)).dry_run is True
    blank = {k: "  " for k in CREDS}  # blank values count as unset
    assert load_settings(env(tmp_path, **blank)).dry_run is True
    live = load_settings(env(tmp_path, **CREDS))
    assert live.dry_run is False
    assert (live.zoho_client_id, live.zoho_client_secret, live.zoho_refresh_token) == (
        "1000.CLIENT",
        "s3cret",
        "1000.refresh",
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/bridge", "postgresql+psycopg://u:p@db:5432/bridge"),
        ("postgresql://u:p@db:5432/bridge", "postgresql+psycopg://u:p@db:5432/bridge"),
        ("postgresql+psycopg://u@db/bridge", "postgresql+psycopg://u@db/bridge"),
        ("sqlite:////tmp/x/bridge.db", "sqlite:////tmp/x/bridge.db"),
    ],
)
def test_database_url_is_normalized(tmp_path: Path, given: str, expected: str) -> None:
    assert load_settings(env(tmp_path, DATABASE_URL=given)).database_url == expected


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path))
    assert s.database_url == f"sqlite:///{tmp_path / 'var' / 'bridge.db'}"
    assert s.data_dir == (tmp_path / "var").resolve()
    assert s.broker_url == "" and s.embedded_broker
    assert s.effective_broker_url == f"redis+socket://{tmp_path / 'var' / 'redis.sock'}"
    assert s.zoho_api_base == "https://projectsapi.zoho.com"
    assert s.zoho_accounts_url == "https://accounts.zoho.com"
    assert s.zoho_dialect == "projects"
    assert s.zoho_rate_limit_per_minute == 100
    assert s.bugzilla_webhook_header == "Authorization"


def test_valid_values_are_taken(tmp_path: Path) -> None:
    s = load_settings(
        env(
            tmp_path,
            ZOHO_DIALECT="bugtracker",
            BROKER_URL="amqp://guest@mq//",
            ZOHO_RATE_LIMIT_PER_MINUTE="0",
            ZOHO_API_BASE="https://projectsapi.zoho.eu/",
            LOG_LEVEL="debug",
        )
    )
    assert s.zoho_dialect == "bugtracker"
    assert s.broker_url == "amqp://guest@mq//" and not s.embedded_broker
    assert s.zoho_rate_limit_per_minute == 0
    assert s.zoho_api_base == "https://projectsapi.zoho.eu"  # trailing slash dropped: paths start with /
    assert s.log_level == "DEBUG"


def test_sources_are_disabled_without_their_secrets(tmp_path: Path) -> None:
    from bridge.sources import enabled_sources

    s = load_settings(env(tmp_path))
    assert s.enabled_sources() == {"github": False, "bugzilla": False, "bugherd": False}
    assert enabled_sources(s) == {}
    s = load_settings(env(tmp_path, GITHUB_WEBHOOK_SECRET="It's a Secret to Everybody"))
    assert s.enabled_sources()["github"] is True
    assert set(enabled_sources(s)) == {"github"}


def test_secrets_are_listed_for_redaction(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path, GITHUB_WEBHOOK_SECRET="gh-secret-value", **CREDS))
    assert {"gh-secret-value", "s3cret", "1000.refresh"} <= set(s.secrets())
    assert "1000.CLIENT" not in s.secrets()  # the client id is not a secret
