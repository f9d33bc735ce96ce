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


def _wake(settings: Settings, engine: Engine, ids: list[int]) -> None:
    """Give a worker the items of these stored events now (the beat job would, later)."""
    from bridge import store
    from bridge.process.broker import TASK_SYNC_ITEM, ensure_embedded_redis, make_celery

    if settings.embedded_broker:
        ensure_embedded_redis(settings)
    celery = make_celery(settings)
    items = {(ev.source, ev.item_key) for ev in (store.get_event(engine, i) for i in ids) if ev}
    for source, item_key in items:
        try:
            celery.send_task(TASK_SYNC_ITEM, args=(source, item_key))
        except Exception as exc:  # the beat job re-enqueues pending events anyway
            click.echo(f"broker unreachable ({type(exc).__name__}); the beat job will pick them up", err=True)
            return
