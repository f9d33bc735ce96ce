"""`bridge zoho …`: look things up in Zoho, and let an admin verify a real portal in one command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.targets.zoho.client import ZohoClient


@click.group()
def zoho() -> None:
    """Look things up in Zoho (to fill in mapping files) and verify a portal."""


def _live_client() -> tuple[Settings, ZohoClient]:
    from bridge.cli.common import _engine, _settings
    from bridge.targets.zoho.client import ZohoClient

    settings = _settings()
    if settings.dry_run:
        raise click.ClickException("set ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and ZOHO_REFRESH_TOKEN to ask Zoho")
    return settings, ZohoClient(settings, _engine(settings, create=True))


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


@zoho.command("fields")
@click.option("--project", help="Zoho project id (default: every project the mappings route to)")
@click.option("--portal", help="Zoho portal id (default: ZOHO_PORTAL_ID)")
def zoho_fields(project: str | None, portal: str | None) -> None:
    """The valid names for status, severity, classification, module, priority and the custom fields."""
    from bridge.targets.zoho.errors import ZohoError

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


@zoho.command("projects")
def zoho_projects() -> None:
    """Portals and their projects, with ids, to fill in `zoho.portal` and the routing."""
    from bridge.targets.zoho.errors import ZohoError

    _, client = _live_client()
    try:
        for portal in client.portals():
            pid = str(portal.get("id") or portal.get("zsoid") or "")
            click.echo(f"portal {pid}: {portal.get('portal_name') or portal.get('name', '')}")
            for project in client.projects(pid):
                click.echo(f"  project {project.get('id')}: {project.get('name')}")
    except ZohoError as exc:
        raise click.ClickException(exc.reason) from None


@zoho.command("verify")
@click.option("--project", required=True, help="Zoho project id to run the self-test in (a test issue is made)")
@click.option("--portal", help="Zoho portal id (default: ZOHO_PORTAL_ID, else the mappings' portal)")
@click.option("--external-id-field", help="API name of the issue custom field (default: the mappings' field)")
@click.option("--tag", "tag_id", help="a Zoho tag id, to check tags add/remove")
@click.option(
    "--move-to",
    help="another project to move the test issue to and back (default: another project the mappings route to)",
)
def zoho_verify(
    project: str, portal: str | None, external_id_field: str | None, tag_id: str | None, move_to: str | None
) -> None:
    """Make every call the bridge will make, in order, with a clearly labelled test issue that is deleted
    at the end (read back, listed as the poll lists changes, assigned, given a small attachment, moved and
    moved back, commented, closed); print Zoho's answers, a verdict per call, what the bridge will do where a
    call is refused, and the throttle form Zoho answered with if it throttled the run. What is learned is
    stored and used by every worker. Exits 1 when the bridge cannot work here."""
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS
    from bridge.targets.zoho.verify import Verifier

    settings, client = _live_client()
    mappings = [m for m in MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS).all()]
    portal = portal or settings.zoho_portal_id or (mappings[0].routing.portal if mappings else "")
    if not portal:
        raise click.ClickException("give --portal or set ZOHO_PORTAL_ID")
    if external_id_field is None and client.dialect == "projects":
        external_id_field = next((m.external_id_field for m in mappings if m.external_id_field), None)
    closed = next((m.closed_status for m in mappings), "Closed")
    if move_to is None and client.dialect == "projects":
        move_to = next((p for p in _mapped_projects(settings, portal) if p != project), None)
    verifier = Verifier(
        client,
        portal,
        project,
        external_id_field=external_id_field,
        tag_id=tag_id,
        closed_status=closed,
        move_to=move_to,
    )
    report = verifier.run()
    click.echo(f"Zoho self-test: {client.dialect} dialect, portal {portal}, project {project}\n")
    click.echo(report.table())
    if report.learned:
        learned = ", ".join(f"{k}={v}" for k, v in sorted(report.learned.items()))
        click.echo(f"\nlearned (stored for every worker): {learned}")
    if not report.ok:
        click.echo("\nthe bridge cannot work with this portal as configured:", err=True)
        for reason in report.fatal:
            click.echo(f"  - {reason}", err=True)
        raise SystemExit(1)
    click.echo("\nthe bridge can work with this portal")


@zoho.command("unblock")
def zoho_unblock() -> None:
    """Lift the shared Zoho block (a throttle, a reset time, an outage pause) for every worker at once.

    A block a provider names is honoured up to RATE_BLOCK_MAX_SECONDS; use this when you know it is over
    sooner (another integration stopped spending the budget, Zoho's support lifted the lockout)."""
    from bridge.cli.common import _engine, _settings
    from bridge.outbound.budget import Budgets, blocked_until
    from bridge.targets.zoho.ratelimit import BUDGET

    settings = _settings()
    engine = _engine(settings, create=True)
    left, _until, reason = blocked_until(engine, BUDGET)
    if not Budgets(engine).unblock(BUDGET):
        click.echo("no block in force: Zoho calls are not held back")
        return
    click.echo(f"block lifted ({left:.0f}s early): {reason or 'no reason recorded'}")
    click.echo("workers call Zoho again at their next try; a new throttle answer blocks again")
