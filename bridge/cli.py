"""The `bridge` command line, for administrators and operators."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from bridge import store
from bridge.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from bridge import db

    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    return engine


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@click.group()
def main() -> None:
    """issue-bridge: keeps Zoho issues in step with GitHub, Bugzilla and BugHerd."""


# -- run ----------------------------------------------------------------------------------------------


@main.command()
@click.option("--port", default=lambda: int(os.environ.get("PORT", "8000")), show_default="8000 or $PORT")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--concurrency", default=2, show_default=True, help="worker processes")
def run(port: int, host: str, concurrency: int) -> None:
    """Start web + worker + beat (and, on the embedded default, the private Redis); stop all on exit."""
    from bridge.broker import ensure_embedded_redis, stop_embedded_redis

    settings = _settings()
    _engine(settings)  # create the schema once, before anything forks
    started_redis = settings.embedded_broker and ensure_embedded_redis(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    commands = {
        "web": [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:bridge.gunicorn_conf",
            "-b",
            f"{host}:{port}",
            "bridge.wsgi:app",
        ],
        "worker": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-c",
            str(concurrency),
            "--loglevel",
            settings.log_level,
            "-Q",
            "bridge",
        ],
        "beat": [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", settings.log_level],
    }
    procs = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
    click.echo(
        f"issue-bridge running on http://{host}:{port} ({'dry-run' if settings.dry_run else 'live'}); Ctrl-C stops it"
    )

    stopping = False

    def _stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    click.echo(f"{name} exited with {proc.returncode}; stopping", err=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_redis:
            stop_embedded_redis(settings)


# -- db -----------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The bridge's own database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema."""
    _engine(_settings())
    click.echo("schema is up to date")


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
    rows = store.list_events(engine, status=status, source=source, limit=limit)
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
def events_replay(event_id: int | None, all_failed: bool) -> None:
    """Put an event (or every failed one) back in the queue, e.g. after fixing a mapping."""
    if (event_id is None) == (not all_failed):
        raise click.UsageError("give an EVENT_ID or --failed")
    settings = _settings()
    engine = _engine(settings)
    if all_failed:
        ids = [e.id for e in store.list_events(engine, status=store.FAILED, limit=100_000)]
    else:
        if store.get_event(engine, event_id) is None:  # type: ignore[arg-type]
            raise click.ClickException(f"no event {event_id}")
        ids = [event_id]  # type: ignore[list-item]
    count = store.reset_for_replay(engine, ids)
    _wake(settings, engine, ids)
    click.echo(f"replaying {count} event(s)")


def _wake(settings: Settings, engine, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    from bridge.broker import TASK_SYNC_ITEM, ensure_embedded_redis, make_celery

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


# -- links --------------------------------------------------------------------------------------------


@main.group()
def links() -> None:
    """External items and their Zoho issues."""


@links.command("list")
@click.option("--source")
@click.option("--limit", default=100, show_default=True)
def links_list(source: str | None, limit: int) -> None:
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
    engine = _engine(_settings())
    candidates = [
        link for link in store.list_links(engine, source=source, limit=100_000) if link.external_id == external_id
    ]
    if not candidates:
        raise click.ClickException(f"no link for {external_id}")
    for link in candidates:
        click.echo(json.dumps(link.__dict__, indent=2))


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
    from bridge import cli_mapping_v3
    from bridge.mapping import MappingError, MappingProblem, check_directory, load_mapping
    from bridge.sources import KNOWN_FIELDS

    target = path or Path(os.environ.get("MAPPINGS_DIR", "mappings"))
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
    if not problems and not offline:
        zoho_options = _zoho_options_for(files)
        if zoho_options:
            problems = check(zoho_options)
        problems = problems or cli_mapping_v3.user_problems(files)  # `users:` emails, one Zoho call each
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{target}: ok")
    if payload is not None:
        cli_mapping_v3.show_match(target, payload)


def _zoho_options_for(files: list[Path]) -> dict | None:
    """{(portal, project): {field: [names], "custom": [api names]}} for every project the files route to."""
    from bridge.mapping import MappingError, load_mapping
    from bridge.sources import KNOWN_FIELDS
    from bridge.zoho.client import ZohoClient
    from bridge.zoho.errors import ZohoError

    try:
        settings = load_settings()
    except SettingsError:
        return None
    if settings.dry_run:
        click.echo("(no Zoho credentials: Zoho names not checked)", err=True)
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
    client = ZohoClient(settings, _engine(settings))
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


# -- zoho ---------------------------------------------------------------------------------------------


@main.group()
def zoho() -> None:
    """Look things up in Zoho, to fill in mapping files."""


def _live_client():  # type: ignore[no-untyped-def]
    from bridge.zoho.client import ZohoClient

    settings = _settings()
    if settings.dry_run:
        raise click.ClickException("set ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and ZOHO_REFRESH_TOKEN to ask Zoho")
    return settings, ZohoClient(settings, _engine(settings))


@zoho.command("fields")
@click.option("--project", help="Zoho project id (default: every project the mappings route to)")
@click.option("--portal", help="Zoho portal id (default: ZOHO_PORTAL_ID)")
def zoho_fields(project: str | None, portal: str | None) -> None:
    """The valid names for status, severity, classification, module, priority and the custom fields."""
    from bridge.zoho.errors import ZohoError

    settings, client = _live_client()
    portal = portal or settings.zoho_portal_id
    if not portal:
        raise click.ClickException("give --portal or set ZOHO_PORTAL_ID")
    projects = [project] if project else _mapped_projects(settings, portal)
    if not projects:
        raise click.ClickException("give --project (no mapping routes to a project in this portal)")
    try:
        for pid in projects:
            click.echo(f"project {pid}:")
            for field, names in client.options(portal, pid).items():
                click.echo(f"  {field}: {', '.join(sorted(v[1] for v in names.values())) or '(none)'}")
        custom = client.custom_fields(portal)
    except ZohoError as exc:
        raise click.ClickException(exc.reason) from None
    click.echo("custom fields (API name: display name, type):")
    for f in custom:
        click.echo(f"  {f.get('api_name')}: {f.get('display_name')} ({f.get('type')})")


def _mapped_projects(settings: Settings, portal: str) -> list[str]:
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    found: list[str] = []
    for mapping in MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS).all():
        if mapping.routing.portal != portal:
            continue
        for pid in [mapping.routing.default_project, *dict(mapping.routing.by_source_project).values()]:
            if pid and pid not in found:
                found.append(pid)
    return found


@zoho.command("projects")
def zoho_projects() -> None:
    """Portals and their projects, with ids, to fill in `zoho.portal` and the routing."""
    from bridge.zoho.errors import ZohoError

    _, client = _live_client()
    try:
        for portal in client.portals():
            pid = str(portal.get("id") or portal.get("zsoid") or "")
            click.echo(f"portal {pid}: {portal.get('portal_name') or portal.get('name', '')}")
            for project in client.projects(pid):
                click.echo(f"  project {project.get('id')}: {project.get('name')}")
    except ZohoError as exc:
        raise click.ClickException(exc.reason) from None


# -- dry-run ------------------------------------------------------------------------------------------


@main.command("dry-run")
@click.argument("source")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--event", "event_name", help="GitHub: the X-GitHub-Event (issues, issue_comment); BugHerd: the event")
@click.option("--json", "as_json", is_flag=True)
def dry_run(source: str, payload: Path, event_name: str | None, as_json: bool) -> None:
    """Show the normalized event and the exact Zoho calls a payload would produce, touching nothing.

    The payload goes through the real pipeline (parse, mapping, sync) against a throw-away database
    with a Zoho client that records calls instead of sending them.
    """
    import tempfile

    from bridge import cli_mapping_v3
    from bridge.events import BadDelivery, IgnoredEvent
    from bridge.runtime import Runtime
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
        headers["X-GitHub-Event"] = event_name or _guess_github_event(body)
    try:
        event = parsers[source].parse(body, headers, event_name)
    except IgnoredEvent as exc:
        click.echo(f"ignored: {exc.reason}")
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
        event_id, _ = store.record_delivery(runtime.engine, event, dedup_key="dry-run", headers={}, payload=body)
        runtime.sync.process_item(event.source, event.item_key)
        stored = store.get_event(runtime.engine, event_id)
        calls = [
            {
                "method": c["method"],
                "path": c["path"],
                "body": json.loads(c["request_json"]) if c["request_json"] else None,
            }
            for c in store.calls_for_event(runtime.engine, event_id)
        ]
        result = {
            "event": event.to_json(),
            "status": stored.status if stored else None,
            "error": stored.last_error if stored else None,
            "notes": stored.notes if stored else None,
            "zoho_calls": calls,
            "filter": cli_mapping_v3.match_lines(runtime.registry.all(), event),  # `when:`: whether and why
        }
        runtime.engine.dispose()
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo("normalized event:")
    click.echo(json.dumps(result["event"], indent=2, default=str))
    click.echo("\n".join(["", *result["filter"]]))
    if result["error"]:
        click.echo(f"\nwould FAIL: {result['error']}")
    click.echo(f"\nZoho calls ({settings.zoho_dialect} dialect; option ids are resolved from Zoho when live):")
    for call in calls:
        click.echo(f"  {call['method']} {call['path']}")
        if call["body"] is not None:
            click.echo("    " + json.dumps(call["body"], ensure_ascii=False))


def _guess_github_event(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "issues"
    return "issue_comment" if isinstance(data, dict) and "comment" in data else "issues"


def _register_source_commands() -> None:
    from bridge import cli_sources

    main.add_command(cli_sources.bugherd)


_register_source_commands()

if __name__ == "__main__":
    main()
