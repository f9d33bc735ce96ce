"""`issue-bridge backfill <source>`: bring the items that existed before the webhook into Zoho. Each source
declares its command's options and reader (`SourceSpec.backfill_command`); the rest is the same for all."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from bridge.backfill.command import BackfillCommand
from bridge.settings import Settings
from bridge.sources import SOURCES


@click.group()
def backfill() -> None:
    """Read existing items from a source's API and sync them like webhooks, within a share of the Zoho budget
    (BACKFILL_BUDGET_SHARE, default 0.5). Resumable with --resume; re-running stores nothing new."""


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--dry-run", is_flag=True, help="read and count, store nothing, estimate the Zoho calls")(func)
    func = click.option("--resume", is_flag=True, help="continue the interrupted backfill with the same options")(func)
    func = click.option("--wait", is_flag=True, help="after reading, show progress until everything is synced")(func)
    func = click.option(
        "--adopt-only",
        is_flag=True,
        help="link each item to the existing Zoho issue naming it (marker, custom field or URL); store nothing",
    )(func)
    return func


def _source_command(name: str, declared: BackfillCommand) -> click.Command:
    """`issue-bridge backfill <name>`: the source's options and reader, run the way every backfill runs."""

    def command(dry_run: bool, resume: bool, wait: bool, adopt_only: bool = False, **options: Any) -> None:
        engines: dict[str, Any] = {}

        def engine_of(settings: Settings) -> Any:
            if "engine" not in engines:
                engines["engine"] = _engine(settings)
            return engines["engine"]

        reader = declared.open(_settings_for_backfill, engine_of, _say_wait, **options)
        settings = _settings_for_backfill()
        _run(
            settings,
            engine_of(settings),
            reader,
            resume=resume,
            dry_run=dry_run,
            wait=wait,
            errors=declared.errors,
            adopt_only=adopt_only,
        )

    command = _common(command)
    for option in reversed(declared.options):  # listed by `--help` in the order declared, before the common ones
        command = option(command)
    return backfill.command(name, help=declared.help)(command)


for _spec in SOURCES.values():
    if _spec.backfill_command:
        _source_command(_spec.name, _spec.load(_spec.backfill_command))


@backfill.command("list")
@click.option("--json", "as_json", is_flag=True)
def backfill_list(as_json: bool) -> None:
    """Running and finished backfills with their progress (also in `issue-bridge status`)."""
    import json

    from bridge.backfill import list_backfills

    settings = _settings_for_backfill()
    rows = list_backfills(_engine(settings), settings=settings)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no backfills yet")
        return
    for r in rows:
        scope = " ".join(f"{k}={v}" for k, v in r["scope"].items() if v not in (None, [], ""))
        started = datetime.fromtimestamp(r["started_at"], UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"#{r['id']} {r['source']} {scope} [{r['state']}] started {started}: read {r['items_read']}, "
            f"stored {r['events_stored']} (+{r['duplicates']} dup), synced {r['synced']}, failed {r['failed']}, "
            f"pending {r['pending']}, ETA {_duration(r['eta_seconds'])}"
            + (f" | {r['last_error']}" if r["last_error"] else "")
        )


# -- shared -------------------------------------------------------------------------------------------------


def _settings_for_backfill() -> Settings:
    from bridge.cli.common import _settings

    return _settings()


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from bridge.cli.common import _engine as make

    return make(settings)


def _say_wait(seconds: float, why: str) -> None:
    click.echo(f"\nwaiting {seconds:.0f}s: {why}", err=True)


def _run(
    settings: Settings,
    engine: Any,
    reader: Any,
    *,
    resume: bool,
    dry_run: bool,
    wait: bool,
    errors: tuple[type[Exception], ...],
    adopt_only: bool = False,
) -> None:
    if adopt_only or (dry_run and settings.adopt_existing):  # the pairs: adopt / create / ambiguous
        _adopt(settings, engine, reader, link=adopt_only and not dry_run, errors=errors)
        return
    from bridge.backfill import feeder
    from bridge.backfill.feeder import budget_rate
    from bridge.backfill.runner import BackfillError, refresh, run_backfill
    from bridge.events import SourceUnavailable

    waker = _Waker(settings)
    bar = _Bar(dry_run)
    rate = budget_rate(settings)

    def feed() -> None:
        # The feeder's chain of tasks feeds the lane every second while events are parked (started here, and by
        # the stale sweeper); feeding here too starts it at once and keeps a `--wait` going where no worker
        # runs. The feeder's lease and pace make the two one lane.
        waker.wake(set(feeder.release(engine, settings)))
        waker.start_feeder()

    def on_batch(progress: Any) -> None:
        if not dry_run:
            feed()
        bar.show(progress)

    try:
        result = run_backfill(engine, settings, reader, resume=resume, dry_run=dry_run, on_batch=on_batch)
    except KeyboardInterrupt:
        bar.done()
        if dry_run:
            click.echo("interrupted: nothing was stored (dry run)", err=True)
        else:
            click.echo("interrupted: what was read is stored; continue with the same command and --resume", err=True)
        sys.exit(130)
    except BackfillError as exc:
        raise click.ClickException(str(exc)) from None
    except SourceUnavailable as exc:
        bar.done()
        if dry_run:
            raise click.ClickException(f"{exc.reason}; nothing was stored (dry run): try again later") from None
        raise click.ClickException(f"{exc.reason}; what was read is stored: continue later with --resume") from None
    except errors as exc:
        bar.done()
        raise click.ClickException(str(exc)) from None
    bar.done()
    p = result.progress
    if dry_run:
        budget = f"{p.planned_zoho_calls / rate:.0f}s at {rate:.2f} calls/s" if rate else "unlimited budget"
        click.echo(
            f"dry run: {p.items_read} items, {p.events_stored} events would be stored, "
            f"~{p.planned_zoho_calls:.0f} Zoho calls ({budget}), {p.source_calls} source API calls; nothing stored"
        )
        return
    click.echo(
        f"backfill {result.backfill_id}: {p.items_read} items read, {p.events_stored} events stored "
        f"({p.duplicates} already there), {p.source_calls} source API calls, ~{p.planned_zoho_calls:.0f} Zoho calls"
        f" planned; ETA {_duration(p.eta_seconds)} at the backfill's share of the Zoho budget"
    )
    if wait:
        while True:
            feed()
            progress = refresh(engine, p, rate)
            bar.show(progress)
            if not progress.pending:
                break
            time.sleep(1.0)
        bar.done()
        click.echo(f"synced: {p.synced}, failed: {p.failed}")


def _adopt(settings: Settings, engine: Any, reader: Any, *, link: bool, errors: tuple[type[Exception], ...]) -> None:
    from bridge.cli.adopt import run_adopt
    from bridge.events import SourceUnavailable
    from bridge.targets.zoho.errors import ZohoError

    if settings.dry_run:
        raise click.ClickException("no Zoho credentials (dry-run): nothing in Zoho to adopt")
    try:
        run_adopt(settings, engine, reader, link=link)
    except (ZohoError, SourceUnavailable) as exc:
        raise click.ClickException(f"{exc.reason}; what was linked stays linked: run it again later") from None
    except errors as exc:
        raise click.ClickException(str(exc)) from None


class _Bar:
    """One progress line, redrawn in place on a terminal (a line per update otherwise)."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.tty = sys.stderr.isatty()
        self.drawn = False

    def show(self, p: Any) -> None:
        total = f"/{p.total}" if p.total else ""
        if self.dry_run:
            line = f"read {p.items_read}{total} items, {p.events_stored} events, ~{p.planned_zoho_calls:.0f} Zoho calls"
        else:
            line = (
                f"read {p.items_read}{total} | stored {p.events_stored} (+{p.duplicates} dup) | "
                f"synced {p.synced} | failed {p.failed} | pending {p.pending} | ETA {_duration(p.eta_seconds)}"
            )
        if self.tty:
            click.echo("\r" + line.ljust(110), nl=False, err=True)
            self.drawn = True
        else:
            click.echo(line, err=True)

    def done(self) -> None:
        if self.drawn:
            click.echo("", err=True)
            self.drawn = False


class _Waker:
    """Wakes a worker for each item the feeder released (the stale sweeper wakes any it misses)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery: Any = None
        self.broken = False
        self.feeder_started = False

    def wake(self, items: set[tuple[str, str]]) -> None:
        from bridge.process.broker import TASK_SYNC_ITEM

        for source, item_key in sorted(items):
            self._send(TASK_SYNC_ITEM, (source, item_key))

    def start_feeder(self) -> None:
        """Once per command: the feeder's chain (a no-op while one runs; the stale sweeper starts it too)."""
        from bridge.process.broker import TASK_FEED_BACKFILL

        if not self.feeder_started:
            self.feeder_started = True
            self._send(TASK_FEED_BACKFILL, ())

    def _send(self, task: str, args: tuple[str, ...]) -> None:
        if self.broken:
            return
        from bridge.process.broker import ensure_embedded_redis, make_celery

        try:
            if self._celery is None:
                if self.settings.embedded_broker:
                    ensure_embedded_redis(self.settings)
                self._celery = make_celery(self.settings)
            self._celery.send_task(task, args=args)
        except Exception as exc:  # the events are stored and due: the beat job wakes them
            self.broken = True
            click.echo(f"\nbroker unreachable ({type(exc).__name__}); the beat job will pick the items up", err=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
