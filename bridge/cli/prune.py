"""`bridge db prune`: retention by hand (the beat job runs the same prune every RETENTION_CHECK interval)."""

from __future__ import annotations

import json

import click


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="only count what would be pruned")
@click.option("--json", "as_json", is_flag=True)
def prune(dry_run: bool, as_json: bool) -> None:
    """Drop raw bodies after RETENTION_PAYLOAD_DAYS and finished events (with their attempts and Zoho calls)
    after RETENTION_DAYS. Links, comment links, pending and failed events are kept."""
    from bridge.cli.common import _engine, _settings
    from bridge.store import retention

    settings = _settings()
    report = retention.prune_from_settings(_engine(settings), settings, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    verb = "would drop" if dry_run else "dropped"
    click.echo(
        f"{verb}: {report.payloads} raw bodies ({report.payload_bytes} bytes) older than "
        f"{settings.retention_payload_days:g} days; {report.events} finished events, {report.attempts} attempts, "
        f"{report.zoho_calls} Zoho call records older than {settings.retention_days:g} days; "
        f"{report.leases} expired leases"
    )
