"""`issue-bridge links recover --since TIME`: relink the bridge's own Zoho issues by their marker (after a restore)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from bridge.cli.common import _engine, _settings, _when


def parse_time(value: str) -> float:
    """`2024-01-31`, an ISO-8601 time (UTC unless it says), or a duration back from now: `36h`, `2d`, `90m`."""
    text = value.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC).timestamp() - int(text[:-1]) * units[text[-1]]
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise click.BadParameter(
            f"expected a date (2024-01-31), a time (2024-01-31T12:00:00Z) or a duration back (36h, 2d), got {value!r}",
            param_hint="--since",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@click.command("recover")
@click.option("--since", "since_text", required=True, help="when the backup was taken (a date, a time, or 36h / 2d)")
def links_recover(since_text: str) -> None:
    """Find the bridge's own Zoho issues made since TIME by their marker and relink them, before anything creates
    them again (after restoring a database backup, or a second deployment on the same project).

    Reads each routed project's issues created since TIME (and the description of each one not known yet). Items
    the database knows are relinked at once; items it does not know yet adopt their issue at their first event.
    """
    since = parse_time(since_text)
    settings = _settings()
    engine = _engine(settings)
    if settings.dry_run:
        raise click.ClickException("no Zoho credentials (dry-run): nothing to read in Zoho")
    report = run_recover(settings, engine, since)
    if report.conflicts:
        raise SystemExit(1)


def run_recover(settings, engine, since: float):  # type: ignore[no-untyped-def]
    from bridge.core.recover import recover
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    registry = MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)
    try:
        report = recover(engine, registry, ZohoClient(settings, engine), since, actor="cli", say=click.echo)
    except ZohoError as exc:
        raise click.ClickException(
            f"Zoho could not be read: {exc.reason}; nothing was relinked: run `issue-bridge links recover "
            f"--since {datetime.fromtimestamp(since, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}` before starting the workers"
        ) from None
    click.echo(
        f"since {_when(since)}: {report.listed} issue(s) listed in {len(report.projects)} project(s), "
        f"{report.read} description(s) read, {report.marked} carry a marker"
    )
    click.echo(f"  relinked now: {len(report.relinked)}")
    for source, item_key, issue_id in report.relinked:
        click.echo(f"    {source} {item_key} → Zoho issue {issue_id}")
    click.echo(f"  already linked: {report.known}")
    click.echo(f"  remembered for items not stored yet (adopted at their first event): {len(report.waiting)}")
    for external_id, issue_id in report.waiting[:50]:
        click.echo(f"    {external_id} → Zoho issue {issue_id}")
    for conflict in report.conflicts:
        click.echo(f"  conflict: {conflict}", err=True)
    return report


def restore_check(settings, engine, *, fatal: bool = True) -> None:  # type: ignore[no-untyped-def]
    """`db upgrade` and `run`: a database whose heartbeat is old was restored (or stopped long): relink first.
    `fatal=False` (`run`): Zoho unreachable is a loud warning, and the bridge starts (a long stop is far more common
    than a restore, and the workers cannot create anything while Zoho is unreachable either)."""
    from bridge.core.recover import RESTORE_MARGIN_SECONDS, restore_suspected

    suspected = restore_suspected(engine)
    if suspected is None:
        return
    beat, now = suspected
    since = beat - RESTORE_MARGIN_SECONDS
    hours = (now - beat) / 3600
    click.echo(
        f"the database's last heartbeat is {_when(beat)} ({hours:.1f} h ago): a restored backup, or a long stop; "
        "looking for the bridge's own Zoho issues made since, so none is created twice"
    )
    if settings.dry_run:
        click.echo("  no Zoho credentials (dry-run): nothing to look up")
        return
    try:
        report = run_recover(settings, engine, since)
    except click.ClickException as exc:
        if fatal:
            raise
        click.echo(f"WARNING: {exc.message}", err=True)
        return
    if report.conflicts:
        click.echo("  conflicts above: resolve them by hand (`issue-bridge explain <item>` shows each)", err=True)
