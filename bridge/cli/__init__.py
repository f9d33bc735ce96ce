"""The `bridge` command line, for administrators and operators."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge import store
from bridge.cli.common import _engine, _settings, _wake, _when
from bridge.settings import Settings, SettingsError, load_settings
from bridge.store import pages as store_pages

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bridge.targets.zoho.client import ZohoClient


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the bridge's folder (its .env, var/ and mappings/); default: BRIDGE_HOME, else found from here",
)
@click.version_option(package_name="issue-bridge")
def main(home: Path | None) -> None:
    """issue-bridge: keeps Zoho issues in step with GitHub, Bugzilla and BugHerd.

    Settings come from the environment and the .env file of the bridge's home folder: --home or
    BRIDGE_HOME, else the nearest folder above the working directory holding the project (or a .env
    beside a mappings/ folder), else the checkout it was installed from.
    """
    if home is not None:
        os.environ["BRIDGE_HOME"] = str(home.resolve())  # children of `run` inherit it


# -- run ----------------------------------------------------------------------------------------------


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="the web port  [default: PORT, else 8000]")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--concurrency", default=2, show_default=True, help="worker processes")
def run(port: int | None, host: str, concurrency: int) -> None:
    """Start web + worker + beat (and, on the embedded default, the private Redis).

    Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops all of them; if one dies, the others are stopped
    and the command exits non-zero saying why. Only one `run` at a time per data folder.
    """
    from bridge.cli.recover import restore_check
    from bridge.process.supervisor import Supervisor, SupervisorError

    settings = _settings()
    engine = _engine(settings, create=True)  # create the schema once, before anything forks
    if not settings.dry_run:
        _refuse_unknown_routes(settings)
    restore_check(settings, engine, fatal=False)  # a restored backup: relink its issues before a worker creates any
    supervisor = Supervisor(
        settings,
        host=host,
        port=settings.port if port is None else port,
        concurrency=concurrency,
        say=click.echo,
        warn=lambda line: click.echo(line, err=True),
    )
    try:
        code = supervisor.run()
    except SupervisorError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)


def _refuse_unknown_routes(settings: Settings) -> None:
    """Live mode: a mapping that routes to a portal or project Zoho does not know stops the start, naming the
    file and line (dry-run never asks Zoho). Zoho unreachable is a warning: the workers retry anyway."""
    from bridge.cli.routes import check_routes
    from bridge.mapping.loader import mapping_files
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    files = mapping_files(settings.mappings_dir)
    if not files:
        return
    try:
        problems = check_routes(ZohoClient(settings, _engine(settings)), files)
    except ZohoError as exc:
        click.echo(f"warning: Zoho unreachable, mapping routes not checked: {exc.reason}", err=True)
        return
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise click.ClickException(
            f"a mapping routes to a portal or project Zoho does not know; fix it and start again:\n{lines}"
        )


# -- db -----------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The bridge's own database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema; after a restored backup, relink the bridge's own Zoho issues made since it.

    A database whose last heartbeat (written by the beat's sweeper every 10 s) is older than 15 minutes was
    restored (or stopped that long): `links recover` runs from that heartbeat, less an hour, before anything can
    create an issue a second time.
    """
    from bridge.cli.recover import restore_check
    from bridge.store import schema as db

    settings = _settings()
    engine = db.make_engine(settings.database_url)
    upgraded = db.ensure_schema(engine)
    if upgraded is None:
        click.echo(f"schema is up to date ({_where(settings)})")
    elif upgraded[0] is None:
        click.echo(f"created the database, schema {upgraded[1]} ({_where(settings)})")
    else:
        click.echo(f"schema upgraded from {upgraded[0]} to {upgraded[1]} ({_where(settings)})")
    restore_check(settings, engine)


def _where(settings: Settings) -> str:
    from bridge.store.schema import shown_url

    return shown_url(settings.database_url)


# -- events -------------------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """Deliveries and what became of them."""


@events.command("list")
@click.option("--status", type=click.Choice(store.EVENT_STATUSES))
@click.option("--source")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def events_list(status: str | None, source: str | None, limit: int, as_json: bool) -> None:
    """Recent events, newest first, with the Zoho calls each made (or, in dry-run, would make)."""
    settings = _settings()
    engine = _engine(settings)
    rows = itertools.islice(store_pages.iter_events(engine, status=status, source=source), limit)
    if as_json:
        out = []
        for ev in rows:
            calls = store.calls_for_event(engine, ev.id)
            out.append(
                {
                    "id": ev.id,
                    "source": ev.source,
                    "event": ev.event_name,
                    "item": ev.item_key,
                    "status": ev.status,
                    "attempts": ev.attempts,
                    "error": ev.last_error,
                    "notes": ev.notes,
                    "calls": [
                        {
                            "method": c["method"],
                            "path": c["path"],
                            "status": c["status"],
                            "dry_run": c["dry_run"],
                            "body": json.loads(c["request_json"]) if c["request_json"] else None,
                        }
                        for c in calls
                    ],
                }
            )
        click.echo(json.dumps(out, indent=2))
        return
    if settings.dry_run:
        click.echo("DRY-RUN: no Zoho credentials; calls below were recorded, not sent")
    for ev in rows:
        click.echo(
            f"{ev.id:>6}  {_when(ev.received_at)}  {ev.status:<10} {ev.source:<8} {ev.event_name:<24} {ev.item_key}"
        )
        if ev.last_error:
            click.echo(f"        error: {ev.last_error}")
        for call in store.calls_for_event(engine, ev.id):
            mark = "would " if call["dry_run"] else ""
            status = "" if call["status"] is None else f" → {call['status']}"
            click.echo(f"        {mark}{call['method']} {call['path']}{status}")


@events.command("show")
@click.argument("event_id", type=int)
def events_show(event_id: int) -> None:
    """One event: raw delivery, normalized event, every attempt and Zoho call with Zoho's answer."""
    engine = _engine(_settings())
    ev = store.get_event(engine, event_id)
    if ev is None:
        raise click.ClickException(f"no event {event_id}")
    raw = store.get_raw_delivery(engine, event_id)
    assert raw is not None
    headers, payload = raw
    click.echo(
        f"event {ev.id}: {ev.source} {ev.event_name} item {ev.item_key} — {ev.status} after {ev.attempts} attempt(s)"
    )
    if ev.last_error:
        click.echo(f"error: {ev.last_error}")
    if ev.notes:
        click.echo(f"notes: {ev.notes}")
    click.echo("\nheaders: " + json.dumps(headers))
    click.echo("raw delivery:\n" + payload.decode("utf-8", errors="replace")[:20000])
    click.echo("\nnormalized event:\n" + json.dumps(ev.event.to_json(), indent=2, default=str))
    click.echo("\nattempts:")
    for a in store.attempts_for_event(engine, event_id):
        click.echo(f"  #{a['number']} {_when(a['started_at'])} {a['outcome'] or 'running'} {a['detail'] or ''}")
    click.echo("\nzoho calls:")
    for c in store.calls_for_event(engine, event_id):
        click.echo(
            f"  {_when(c['at'])} {c['method']} {c['path']} → {c['status'] if c['status'] is not None else 'dry-run'}"
        )
        if c["request_json"]:
            click.echo(f"    body: {c['request_json']}")
        if c["response_text"]:
            click.echo(f"    answer: {c['response_text'][:1000]}")


@events.command("replay")
@click.argument("event_id", type=int, required=False)
@click.option("--failed", "all_failed", is_flag=True, help="replay every failed event")
@click.option(
    "--from-dry-run",
    "from_dry_run",
    is_flag=True,
    help="after going live: send Zoho what dry-run only recorded (once; nothing is created twice)",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation (--from-dry-run)")
def events_replay(event_id: int | None, all_failed: bool, from_dry_run: bool = False, yes: bool = False) -> None:
    """Put an event (or every failed one) back in the queue, e.g. after fixing a mapping.

    --from-dry-run, once Zoho credentials are set: the events dry-run processed (their Zoho calls recorded, not
    sent) go again, live. Each item gets its newest state in one create-or-update (an item already in Zoho is
    updated, not created again) and each comment once; run it again and it finds nothing left to send.
    """
    if sum((event_id is not None, all_failed, from_dry_run)) != 1:
        raise click.UsageError("give one of EVENT_ID, --failed or --from-dry-run")
    settings = _settings()
    engine = _engine(settings)
    if from_dry_run:
        _replay_dry_run(settings, engine, yes)
        return
    if all_failed:  # a batch at a time: bounded memory however many failed
        count = sum(_replay_batch(settings, engine, b) for b in store_pages.id_batches(engine, store.FAILED))
        click.echo(f"replaying {count} event(s)")
        return
    assert event_id is not None
    if store.get_event(engine, event_id) is None:
        raise click.ClickException(f"no event {event_id}")
    ids = [event_id]
    count = store.reset_for_replay(engine, ids)
    _wake(settings, engine, ids)
    click.echo(f"replaying {count} event(s)")


def _replay_dry_run(settings: Settings, engine: Engine, yes: bool) -> None:
    from bridge.cli.replay import REPLAYED_KEY, dry_run_batches

    if settings.dry_run:
        raise click.ClickException(
            "still in dry-run (no Zoho credentials): connect Zoho first (`issue-bridge zoho connect`), then replay"
        )
    refs = [ref for batch in dry_run_batches(engine) for ref in batch]
    if not refs:
        click.echo("nothing to replay: no event was processed in dry-run only")
        return
    items = {(ref.source, ref.item_key) for ref in refs}
    click.echo(f"{len(refs)} event(s) of {len(items)} item(s) were processed in dry-run only (Zoho calls recorded)")
    if not yes:
        click.confirm("send them to Zoho now?", abort=True)
    count = sum(_replay_batch(settings, engine, refs[i : i + 500]) for i in range(0, len(refs), 500))
    store.kv_set(engine, REPLAYED_KEY, str(max(ref.id for ref in refs)))  # once: a second replay starts after it
    click.echo(f"replaying {count} event(s); follow them with `issue-bridge status` or `issue-bridge events list`")


def _replay_batch(settings: Settings, engine, batch: list[store_pages.EventRef]) -> int:  # type: ignore[no-untyped-def]
    count = store.reset_for_replay(engine, [ref.id for ref in batch])
    _wake(settings, engine, [ref.id for ref in batch])
    return count


# -- links --------------------------------------------------------------------------------------------


@main.group()
def links() -> None:
    """External items and their Zoho issues."""


@links.command("list")
@click.option("--source", help="only this source (github, bugzilla, bugherd)")
@click.option("--limit", default=100, show_default=True)
def links_list(source: str | None, limit: int) -> None:
    """Newest links first: source, external id, Zoho issue id, state and project."""
    engine = _engine(_settings())
    for link in store.list_links(engine, source=source, limit=limit):
        click.echo(
            f"{link.source:<8} {link.external_id:<40} → {link.zoho_issue_id or '-':<22} "
            f"{link.state} (project {link.project})"
        )


@links.command("show")
@click.argument("external_id")
@click.option("--source", default=None)
def links_show(external_id: str, source: str | None) -> None:
    """Everything the bridge knows about one link (by external id, e.g. github:acme/web#5)."""
    engine = _engine(_settings())
    candidates = [
        link for link in store.list_links(engine, source=source, limit=100_000) if link.external_id == external_id
    ]
    if not candidates:
        raise click.ClickException(f"no link for {external_id}")
    for link in candidates:
        click.echo(json.dumps(link.__dict__, indent=2))


@links.command("unlink")
@click.argument("external_id")
@click.option("--source", default=None, help="when the id names items of several sources")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def links_unlink(external_id: str, source: str | None, yes: bool) -> None:
    """Forget an item's link to its Zoho issue (EXTERNAL_ID like github:acme/web#5, or the item key).

    The Zoho issue is not touched. The item's next event (or `issue-bridge resync EXTERNAL_ID`) finds the
    issue again on Zoho by its external id, or creates a new one if it is gone.
    """
    from bridge.store import operator as operations

    engine = _engine(_settings())
    found = operations.find_links(engine, external_id, source)
    if not found:
        raise click.ClickException(f"no link for {external_id!r}" + (f" in {source}" if source else ""))
    for link in found:
        click.echo(f"{link.source} {link.external_id} → Zoho issue {link.zoho_issue_id or '-'} ({link.state})")
    if not yes:
        click.confirm(f"forget {len(found)} link(s)?", abort=True)
    removed, comments = operations.unlink(engine, external_id, source)
    click.echo(
        f"forgot {len(removed)} link(s) and {comments} comment link(s); the next event re-finds or creates the issue"
    )


# -- resync -------------------------------------------------------------------------------------------


@main.command("resync")
@click.argument("external_id")
@click.option("--source", default=None, help="when the id names items of several sources")
@click.option("--from-source", "from_source", is_flag=True, help="fetch the item's state and comments from its source")
def resync_command(external_id: str, source: str | None, from_source: bool = False) -> None:
    """Apply an item's latest known state to Zoho again (EXTERNAL_ID like github:acme/web#5, or the item key).

    Queues a copy of the item's newest stored state event and sends the update even if nothing changed on
    the bridge's side: for a Zoho issue edited by hand, or one re-created after `links unlink`. Comments
    are not sent again. With --from-source, the item's current state and comments are fetched through its
    source's API instead (a missed webhook, a stored body that lacked fields): comments Zoho has are not
    posted twice.
    """
    from bridge.store import operator as operations

    settings = _settings()
    engine = _engine(settings)
    if from_source:
        _resync_from_source(settings, engine, external_id, source)
        return
    try:
        done = operations.resync(engine, external_id, source)
    except operations.NotFound as exc:
        raise click.ClickException(str(exc)) from None
    _wake(settings, engine, [done.event_id])
    click.echo(
        f"queued event {done.event_id} for {done.source} {done.item_key} (the state of event {done.copied_from}); "
        f"follow it with `issue-bridge events show {done.event_id}`"
    )


def _resync_from_source(settings: Settings, engine: Engine, text: str, source: str | None) -> None:
    from bridge.cli.steer import wake
    from bridge.core import steer

    found = [(s, k) for s, k in store_story_items(engine, text) if source in (None, s)]
    if len(found) != 1:
        names = ", ".join(f"{s} {k}" for s, k in found) or "nothing known by that name"
        raise click.ClickException(f"{text!r} must name one item ({names}): give --source")
    item_source, item_key = found[0]
    try:
        done = steer.resync_from_source(settings, engine, item_source, item_key, "cli")
    except steer.SteerError as exc:
        raise click.ClickException(str(exc)) from None
    wake(settings, [(item_source, item_key)])
    click.echo(
        f"fetched {item_source} {item_key} from {item_source}: {done.stored} event(s) stored "
        f"(its state and {done.comments} comment(s)); follow it with `issue-bridge explain {text}`"
    )


def store_story_items(engine: Engine, text: str) -> list[tuple[str, str]]:
    from bridge.core.story import find_items

    return find_items(engine, text)


# -- status -------------------------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


@main.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_command(as_json: bool) -> None:
    """One screen: events by state, failing items and why, lag, the Zoho budget and any back-off."""
    from bridge.cli.journal import operation_lines
    from bridge.store import operator as operations

    settings = _settings()
    engine = _engine(settings)
    report = operations.status(engine)
    report.extra_sections.append(("backfills (newest first)", _backfill_lines(engine, settings)))
    report.extra_sections.append(("outside operations (side work, writes in doubt)", operation_lines(engine)))
    from bridge.targets.zoho import poll as zoho_poll

    if poll_lines := zoho_poll.status_lines(settings, engine):  # BugTracker: the reverse poll's pace
        report.extra_sections.append(("zoho reverse poll", poll_lines))
    from bridge.core import budget_view

    budgets_now = budget_view.view(engine, settings)
    report.extra_sections.append(("paused (deliveries stored, nothing sent)", budget_view.pause_lines(budgets_now)))
    report.extra_sections.append(("outside systems (calls per minute, the last hour)", budget_view.lines(budgets_now)))
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2, default=str))
        return
    mode = "DRY-RUN (no Zoho credentials: calls recorded, not sent)" if settings.dry_run else "live"
    click.echo(f"issue-bridge {mode}, {settings.zoho_dialect} dialect — {_where(settings)}")
    click.echo(f"as of {_when(report.now)}")
    counts = report.counts
    order = [*store.EVENT_STATUSES, *sorted(set(counts) - set(store.EVENT_STATUSES))]
    click.echo("events: " + "  ".join(f"{name} {counts.get(name, 0)}" for name in order))
    if report.oldest_pending_at is not None:
        click.echo(
            f"lag: oldest pending event received {_ago(report.now - report.oldest_pending_at)} ago; "
            f"{report.due_now} due now"
        )
    else:
        click.echo("lag: none (nothing pending)")
    if report.last_event_at is not None:
        click.echo(f"last delivery: {_when(report.last_event_at)} ({_ago(report.now - report.last_event_at)} ago)")
    limit = settings.zoho_rate_limit_per_minute  # calls per ZOHO_RATE_WINDOW_SECONDS, whatever its name says
    window = f"{settings.zoho_rate_window_seconds:g} s"
    budget = f"limit {limit} per {window}, shared by every worker" if limit else "no limit configured"
    click.echo(
        f"zoho: {report.zoho_calls_last_minute} calls in the last minute ({budget}); "
        f"{report.zoho_failed_last_hour} refused or failed in the last hour"
    )
    if report.backoff_until is not None:
        click.echo(
            f"zoho back-off: blocked until {_when(report.backoff_until)} "
            f"({_ago(report.backoff_until - report.now)} from now; every worker waits): {report.backoff_reason or ''}"
            "\n  (lift it by hand: issue-bridge zoho unblock)"
        )
    else:
        click.echo("zoho back-off: none")
    if report.failing:
        click.echo("failing items (newest first):")
        for row in report.failing:
            state = "failed" if row["status"] == store.FAILED else "retrying"
            click.echo(f"  {row['source']:<8} {row['item']:<28} event {row['event_id']:<6} {state}  {_when(row['at'])}")
            click.echo(f"      {row['reason'][:300]}")
        click.echo("  (details: issue-bridge events show ID; again: issue-bridge events replay --failed)")
    else:
        click.echo("failing items: none")
    for title, lines in report.extra_sections:  # other parts (e.g. backfills) add their sections here
        click.echo(f"{title}:")
        for line in lines:
            click.echo(f"  {line}")


def _backfill_lines(engine: Engine, settings: Settings) -> list[str]:
    from bridge.backfill.runner import list_backfills

    lines = []
    for b in list_backfills(engine, limit=5, settings=settings):
        eta = f", ETA {b['eta_seconds']:.0f}s" if b.get("eta_seconds") else ""
        lines.append(
            f"#{b['id']} {b['source']} {b['state']}: {b['items_read']} read, {b['events_stored']} stored, "
            f"{b['synced']} synced, {b['failed']} failed, {b['pending']} pending{eta}"
        )
    return lines or ["none"]


# -- send-test ----------------------------------------------------------------------------------------


@main.command("send-test")
@click.argument("source", type=click.Choice(["github", "bugzilla", "bugherd"]))
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", help="the bridge's base URL (default: http://127.0.0.1:$PORT, PORT default 8000)")
@click.option(
    "--event",
    "event_name",
    help="github: issues, issue_comment, ping; bugzilla: create, modify, comment; "
    "bugherd: task_create, task_update, comment, task_destroy (default: the first; a FILE's own for github)",
)
@click.option("--wait", default=30.0, show_default=True, help="seconds to wait for the resulting Zoho calls")
def send_test(source: str, file: Path | None, url: str | None, event_name: str | None, wait: float) -> None:
    """Post a correctly authenticated sample delivery (or FILE) to a running bridge, as the tracker would.

    Prints the bridge's answer, then the Zoho calls the delivery led to (in dry-run: the calls it would
    make). Live, the sample creates one clearly labelled test issue in Zoho.
    """
    import time

    import requests

    from bridge.cli import samples

    settings = _settings()
    try:
        delivery = samples.build(settings, source, event_name, file.read_bytes() if file else None)
    except samples.SampleError as exc:
        raise click.ClickException(str(exc)) from None
    _require_mapping(settings, source)
    base = (url or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}").rstrip("/")
    shown = (
        delivery.path.replace(settings.bugherd_webhook_token, "<BUGHERD_WEBHOOK_TOKEN>")
        if source == "bugherd"
        else delivery.path
    )
    click.echo(f"POST {base}{shown} ({source} {delivery.event})")
    try:
        answer = requests.post(base + delivery.path, data=delivery.body, headers=delivery.headers, timeout=15)
    except requests.RequestException as exc:
        raise click.ClickException(
            f"nothing answers at {base} ({type(exc).__name__}): is `issue-bridge run` running? (--url names another)"
        ) from None
    click.echo(f"answer: {answer.status_code} {answer.text.strip()}")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or body.get("status") != "accepted":
        if answer.status_code == 401:
            raise click.ClickException("refused: the bridge at --url has other secrets than this one's settings")
        if answer.status_code != 200:
            raise SystemExit(1)
        return
    event_id = int(body["event_id"])
    try:
        engine = _engine(settings)
    except click.ClickException:
        click.echo(f"(event {event_id} is not in this bridge's database: is {base} another bridge?)")
        return
    deadline = time.monotonic() + wait
    ev = store.get_event(engine, event_id)
    while ev is not None and ev.status == store.PENDING and time.monotonic() < deadline:
        time.sleep(0.3)
        ev = store.get_event(engine, event_id)
    if ev is None:
        click.echo(f"(event {event_id} is not in this bridge's database: is {base} another bridge?)")
        return
    if ev.status == store.PENDING:
        click.echo(f"event {event_id}: still pending after {wait:g}s (is a worker running? `issue-bridge status`)")
    else:
        click.echo(f"event {event_id}: {ev.status}" + (f": {ev.last_error}" if ev.last_error else ""))
    calls = store.calls_for_event(engine, event_id)
    if not calls:
        click.echo("zoho calls: none" + (f" ({ev.notes})" if ev.notes else ""))
    for call in calls:
        mark = "would " if call["dry_run"] else ""
        status = "" if call["status"] is None else f" → {call['status']}"
        click.echo(f"  {mark}{call['method']} {call['path']}{status}")


def _require_mapping(settings: Settings, source: str) -> None:
    """A delivery no mapping takes is stored and never synced: say so before sending, and what to do."""
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    registry = MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)
    if registry.for_source(source):
        return
    refused = [str(p) for problems in registry.problems.values() for p in problems]
    if refused:
        raise click.ClickException(
            f"no usable {source} mapping in {settings.mappings_dir}: fix it first (`issue-bridge mappings check`):\n  "
            + "\n  ".join(refused)
        )
    raise click.ClickException(
        f"no {source} mapping in {settings.mappings_dir}, so the bridge would store this delivery and sync nothing.\n"
        f"  Write one for your Zoho project: issue-bridge mappings init {source} --project <Zoho project id>\n"
        "  (project ids: issue-bridge zoho projects; without Zoho credentials, copy "
        f"mappings/examples/{source}.yaml into {settings.mappings_dir} instead)"
    )


# -- mappings -----------------------------------------------------------------------------------------


@main.group()
def mappings() -> None:
    """The YAML mapping files."""


@mappings.command("check")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--offline", is_flag=True, help="do not ask Zoho for its field names, even with credentials")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a saved webhook body: "
              "show whether and why it matches the mapping's `when:`")  # fmt: skip
def mappings_check(path: Path | None, offline: bool, payload: Path | None = None) -> None:
    """Validate mapping files; exits non-zero on any problem (for the admins' own CI).

    With Zoho credentials, the names each file maps to (statuses, severities, …, custom fields) are
    also checked against the routed projects' field metadata.
    """
    from bridge.cli import mapping_rules as cli_mapping_v3
    from bridge.mapping import MappingError, MappingProblem, check_directory, load_mapping
    from bridge.sources import KNOWN_FIELDS

    if path is None:
        try:
            path = load_settings().mappings_dir
        except SettingsError:
            path = Path(os.environ.get("MAPPINGS_DIR", "mappings"))
    target = path
    files = [target] if target.is_file() else sorted([*target.glob("*.yaml"), *target.glob("*.yml")])

    def check(zoho_options: dict | None) -> list[MappingProblem]:
        if not target.is_file():
            return check_directory(target, known_fields=KNOWN_FIELDS, zoho_options=zoho_options)
        try:
            load_mapping(target, known_fields=KNOWN_FIELDS, zoho_options=zoho_options)
        except MappingError as exc:
            return exc.problems
        return []

    problems = check(None)
    if not problems:  # what the configured Zoho dialect cannot take (no settings: the default dialect)
        from bridge.mapping.loader import dialect_problems

        problems = dialect_problems(target, os.environ.get("ZOHO_DIALECT", "").strip() or "projects")
    zoho_options = None
    if not problems and not offline:
        live = _live_zoho()
        if live is not None:
            problems = _route_problems(live[1], files)  # every portal and project must exist in Zoho
            if not problems:
                zoho_options = _zoho_options_for(live, files)
        if zoho_options:
            problems = check(zoho_options)
        problems = problems or cli_mapping_v3.user_problems(files)  # `users:` emails, one Zoho call each
    if not problems:  # back-links and reverse sync need the source's token (bridge/reverse)
        problems = _talkback_problems(files, zoho_options)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{target}: ok")
    if payload is not None:
        cli_mapping_v3.show_match(target, payload)


@mappings.command("init")
@click.argument("source", type=click.Choice(["github", "bugzilla", "bugherd"]))
@click.option("--project", required=True, help="the Zoho project id items land in (`issue-bridge zoho projects`)")
@click.option("--portal", help="the Zoho portal id (default: ZOHO_PORTAL_ID)")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write (default: MAPPINGS_DIR/SOURCE.yaml)",
)
def mappings_init(source: str, project: str, portal: str | None, output: Path | None) -> None:
    """Write a commented mapping for SOURCE from the Zoho project's real option lists (statuses, severities,
    classifications, modules, priorities) and the source's conventions. Never overwrites a file."""
    from bridge.cli import mapping_init
    from bridge.cli.routes import known_routes
    from bridge.mapping import MappingError, MappingRegistry, load_mapping
    from bridge.sources import KNOWN_FIELDS
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    settings = _settings()
    if settings.dry_run:
        raise click.ClickException(
            "mappings init reads the project's option lists from Zoho: connect first (`issue-bridge zoho connect`), "
            f"or start from mappings/examples/{source}.yaml"
        )
    portal = portal or settings.zoho_portal_id
    if not portal:
        raise click.ClickException("give --portal or set ZOHO_PORTAL_ID (`issue-bridge zoho connect` sets it)")
    target = output or settings.mappings_dir / f"{source}.yaml"
    if target.exists():
        raise click.ClickException(f"{target} exists: not overwritten (remove it, or give --output another.yaml)")
    if target.parent.resolve() == settings.mappings_dir.resolve():
        for other in MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS).for_source(source):
            if other.match_source_projects is None:
                raise click.ClickException(
                    f"{other.path} already takes every {source} event: a second such file would be a duplicate "
                    "route; edit that one, or write this one elsewhere with --output"
                )
    client = ZohoClient(settings, _engine(settings, create=True))
    try:
        known = known_routes(client, [portal])
        if portal not in known:
            raise click.ClickException(f"portal {portal} is not one these credentials can see ({', '.join(known)})")
        if project not in known[portal]:
            listed = ", ".join(f"{pid} ({name})" for pid, name in sorted(known[portal].items()))
            raise click.ClickException(f"project {project} is not in portal {portal} (its projects: {listed})")
        table = client.options(portal, project)
        custom = [str(f.get("api_name")) for f in client.custom_fields(portal)] if client.dialect == "projects" else []
    except ZohoError as exc:
        raise click.ClickException(f"Zoho could not be asked: {exc.reason}") from None
    options = {field: [display for _id, display in names.values()] for field, names in table.items()}
    id_field = next((n for n in custom if n == "external_id"), None) or next(
        (n for n in custom if "external" in n), None
    )
    text = mapping_init.render(
        source,
        portal=portal,
        project=project,
        project_name=known[portal][project],
        options=options,
        external_id_field=id_field,
        command=f"issue-bridge mappings init {source} --project {project}",
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as handle:  # "x": never over a file that appeared meanwhile
        handle.write(text)
    try:
        load_mapping(target, known_fields=KNOWN_FIELDS, zoho_options={(portal, project): options | {"custom": custom}})
    except MappingError as exc:  # a bug here, not the admin's: say so, keep nothing half-right
        target.unlink()
        raise click.ClickException(f"the written mapping did not validate (please report this):\n{exc}") from None
    status = mapping_init.status_roles(options.get("status", []))
    click.echo(f"wrote {target} for Zoho project {project} ({known[portal][project]}) in portal {portal}")
    if status:
        click.echo(f"  statuses: open -> {status['open']}, closed -> {status['closed']} (review the file's maps)")
    click.echo("next: issue-bridge mappings check, then issue-bridge send-test " + source)


def _talkback_problems(files: list[Path], zoho_options: dict | None) -> list:
    from bridge.cli.talkback_checks import talkback_problems

    try:
        settings = load_settings()
    except SettingsError:
        settings = None
    return talkback_problems(files, settings, zoho_options)


def _live_zoho() -> tuple[Settings, ZohoClient] | None:
    """The settings and a Zoho client when Zoho credentials are set; else None (saying so)."""
    from bridge.targets.zoho.client import ZohoClient

    try:
        settings = load_settings()
    except SettingsError:
        return None
    if settings.dry_run:
        click.echo("(no Zoho credentials: portals, projects and Zoho names not checked)", err=True)
        return None
    return settings, ZohoClient(settings, _engine(settings, create=True))


def _route_problems(client: ZohoClient, files: list[Path]) -> list:
    from bridge.cli.routes import check_routes
    from bridge.targets.zoho.errors import ZohoError

    try:
        return check_routes(client, files)
    except ZohoError as exc:
        click.echo(f"(Zoho unreachable, portals and projects not checked: {exc.reason})", err=True)
        return []


def _zoho_options_for(live: tuple[Settings, ZohoClient], files: list[Path]) -> dict | None:
    """{(portal, project): {field: [names], "custom": [api names]}} for every project the files route to."""
    from bridge.mapping import MappingError, load_mapping
    from bridge.sources import KNOWN_FIELDS
    from bridge.targets.zoho.errors import ZohoError

    settings, client = live
    if settings.zoho_dialect != "projects":  # BugTracker takes names and documents no option-list call
        return None
    routes: set[tuple[str, str]] = set()
    for file in files:
        try:
            mapping = load_mapping(file, known_fields=KNOWN_FIELDS)
        except MappingError:
            continue
        for project in [mapping.routing.default_project, *dict(mapping.routing.by_source_project).values()]:
            if project:
                routes.add((mapping.routing.portal, project))
    options: dict = {}
    try:
        custom: dict[str, list[str]] = {}
        for portal, project in sorted(routes):
            table = client.options(portal, project)
            if portal not in custom:
                custom[portal] = [str(f.get("api_name")) for f in client.custom_fields(portal)]
            options[(portal, project)] = {
                field: [display for _id, display in names.values()] for field, names in table.items()
            } | {"custom": custom[portal]}
    except ZohoError as exc:
        click.echo(f"(Zoho unreachable, names not checked: {exc.reason})", err=True)
        return None
    return options


# -- dry-run ------------------------------------------------------------------------------------------


@main.command("dry-run")
@click.argument("source")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--event",
    "event_name",
    help="GitHub: the X-GitHub-Event (default: detected from the body: issues, issue_comment or ping); "
    "BugHerd: the event (task_create, task_update, comment, task_destroy)",
)
@click.option("--json", "as_json", is_flag=True)
def dry_run(source: str, payload: Path, event_name: str | None, as_json: bool) -> None:
    """Show the normalized event and the exact Zoho calls a payload would produce, touching nothing.

    The payload goes through the real pipeline (parse, mapping, sync) against a throw-away database
    with a Zoho client that records calls instead of sending them.
    """
    import tempfile

    from bridge.cli import mapping_rules as cli_mapping_v3
    from bridge.events import BadDelivery, IgnoredEvent
    from bridge.process.runtime import Runtime
    from bridge.sources import enabled_sources

    settings = _settings()
    body = payload.read_bytes()
    # Parse without verifying: signatures are the intake's business, not the admin's file's.
    placeholder = "dry-run"
    parsers = enabled_sources(
        settings.with_overrides(
            github_webhook_secret=placeholder, bugzilla_webhook_secret=placeholder, bugherd_webhook_token=placeholder
        )
    )
    if source not in parsers:
        raise click.ClickException(f"unknown source {source!r} (known: {', '.join(sorted(parsers))})")
    headers = {"Content-Type": "application/json"}
    if source == "github":
        event_name = _github_event_for(body, event_name)
        headers["X-GitHub-Event"] = event_name
    path_events = getattr(parsers[source], "path_events", ())  # a source whose URL, not its body, names the event
    if path_events and event_name is None:
        raise click.ClickException(
            f"a {source} body does not say which event it is (its URL does): give --event, one of "
            + ", ".join(path_events)
        )
    try:
        event = parsers[source].parse(body, headers, event_name)
    except IgnoredEvent as exc:
        click.echo(f"ignored: {exc.reason}")
        if source == "github" and event_name == "ping":
            click.echo(
                "GitHub sends a ping once, when the webhook is created or tested; the bridge answers it "
                "200 ignored and syncs nothing. Issue and comment deliveries are what create Zoho calls."
            )
        return
    except BadDelivery as exc:
        raise click.ClickException(f"{payload}: {exc.reason}") from None
    with tempfile.TemporaryDirectory() as tmp:
        scratch = settings.with_overrides(
            database_url=f"sqlite:///{tmp}/dry-run.db",
            data_dir=Path(tmp),
            zoho_client_id="",
            zoho_client_secret="",
            zoho_refresh_token="",
            coalesce_ms=0,
        )
        runtime = Runtime(scratch)
        for file, problems in runtime.registry.problems.items():
            for problem in problems:
                click.echo(f"mapping problem: {problem}", err=True)
            if problems and not runtime.registry.for_source(source):
                raise click.ClickException(f"{file}: refused, see above")
        recorded = store.record_delivery(runtime.engine, event, dedup_key="dry-run", headers={}, payload=body)
        event_id = recorded[0]
        runtime.sync.process_item(event.source, recorded.item_key)
        stored = store.get_event(runtime.engine, event_id)
        calls = [
            {
                "method": c["method"],
                "path": c["path"],
                "body": json.loads(c["request_json"]) if c["request_json"] else None,
            }
            for c in store.calls_for_event(runtime.engine, event_id)
        ]
        filter_lines = cli_mapping_v3.match_lines(runtime.registry.all(), event)  # `when:`: whether and why
        result = {
            "event": event.to_json(),
            "status": stored.status if stored else None,
            "error": stored.last_error if stored else None,
            "notes": stored.notes if stored else None,
            "zoho_calls": calls,
            "filter": filter_lines,
        }
        runtime.engine.dispose()
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo("normalized event:")
    click.echo(json.dumps(result["event"], indent=2, default=str))
    click.echo("\n".join(["", *filter_lines]))
    if result["error"]:
        click.echo(f"\nwould FAIL: {result['error']}")
    click.echo(f"\nZoho calls ({settings.zoho_dialect} dialect; option ids are resolved from Zoho when live):")
    for call in calls:
        click.echo(f"  {call['method']} {call['path']}")
        if call["body"] is not None:
            click.echo("    " + json.dumps(call["body"], ensure_ascii=False))


def _github_event_for(body: bytes, given: str | None) -> str:
    """The X-GitHub-Event for a saved body: detected from its shape; a contradicting --event is corrected."""
    from bridge.cli.samples import detect_github_event

    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return given or "issues"  # the parser says what is wrong with the body
    detected = detect_github_event(parsed)
    if detected is None:
        if given:
            return given
        raise click.ClickException(
            "cannot tell which GitHub event this body is (GitHub names it only in the X-GitHub-Event header, "
            "shown under the hook's Recent Deliveries): give --event"
        )
    if given and given != detected and detected != "issues":
        click.echo(
            f"note: this body is a GitHub {detected!r} delivery, not {given!r}: showing it as {detected!r}", err=True
        )
        return detected
    return given or detected


def _register_source_commands() -> None:
    from bridge.cli import backfill as cli_backfill
    from bridge.cli.journal import links_backlink

    links.add_command(links_backlink)
    from bridge.sources import SOURCES

    for spec in SOURCES.values():  # a source's own commands (`issue-bridge bugherd register-webhooks`)
        if spec.cli_group:
            main.add_command(spec.load(spec.cli_group))
    from bridge.cli.zoho import zoho

    main.add_command(zoho)
    from bridge.cli import prune as cli_db

    db.add_command(cli_db.prune)
    main.add_command(cli_backfill.backfill)
    from bridge.cli import explain as cli_explain
    from bridge.cli import steer as cli_steer

    main.add_command(cli_explain.explain)
    cli_steer.register(main, links)


_register_source_commands()

if __name__ == "__main__":
    main()
