"""What every command shares: the settings, the database (never created by accident), times as read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.engine import Engine

from bridge.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _engine(settings: Settings, *, create: bool = False) -> Engine:
    """The bridge's database. Only `run` and `db upgrade` may create a new one: elsewhere a missing
    SQLite file means this command is looking in the wrong place, and it says where it looked."""
    from bridge.store import schema as db

    if not create and settings.database_url.startswith("sqlite:///"):
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        if not path.exists():
            raise click.ClickException(
                f"no bridge database at {path}\n"
                f"  looked in the home folder {settings.home} ({settings.home_reason}).\n"
                "  Run the command inside the bridge's folder, give --home DIR (or BRIDGE_HOME=DIR), set "
                "DATABASE_URL, or create it here with `issue-bridge db upgrade`."
            )
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    return engine


def _when(ts: float | None) -> str:
    """A time as the operator reads it: local time with its zone (and UTC offset)."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z (%z)")
