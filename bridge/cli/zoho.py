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
    call is refused, and the throttle form Zoho answered with if it throttled the run. What a run that made its
    test issue learned replaces what every worker uses; a run that made none (a wrong project) stores nothing but
    a throttle form. Exits 1 when the bridge cannot work here."""
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
    if report.learned and report.stored:
        learned = ", ".join(f"{k}={v}" for k, v in sorted(report.learned.items()))
        click.echo(f"\nlearned (stored for every worker): {learned}")
    elif not report.stored:
        click.echo("\nnothing stored: the run made no test issue, so what every worker knows of this portal stays")
    if not report.ok:
        click.echo("\nthe bridge cannot work with this portal as configured:", err=True)
        for reason in report.fatal:
            click.echo(f"  - {reason}", err=True)
        raise SystemExit(1)
    click.echo("\nthe bridge can work with this portal")


# -- connect ----------------------------------------------------------------------------------------------------

DEFAULT_CALLBACK = "http://127.0.0.1:8000/admin/zoho/callback"  # the admin page's "Connect Zoho" callback
ENV_KEYS = ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "ZOHO_ACCOUNTS_URL", "ZOHO_API_BASE")


@zoho.command("connect")
@click.option(
    "--dc",
    "data_centre",
    type=click.Choice(["com", "eu", "in", "com.au", "com.cn"]),
    help="the Zoho data centre whose API console holds the client (asked when not given)",
)
@click.option("--client-id", help="the client's id (API console; asked when not given)")
@click.option("--client-secret", help="the client's secret (asked, hidden, when not given)")
@click.option("--code", help="the grant code, or the whole address Zoho sent the browser to (asked when not given)")
@click.option(
    "--redirect-uri",
    help=f"a server-based client's registered redirect URI, for the grant URL (default {DEFAULT_CALLBACK})",
)
@click.option("--portal", help="the portal to use when the account has several (asked when not given)")
@click.option("--project", help="then run `zoho verify --project ID` (a test issue is created and deleted)")
@click.option("--accounts-url", help="the accounts server (default https://accounts.zoho.<dc>)")
@click.option("--api-base", help="the API root (default per dialect and data centre)")
@click.pass_context
def zoho_connect(
    ctx: click.Context,
    data_centre: str | None,
    client_id: str | None,
    client_secret: str | None,
    code: str | None,
    redirect_uri: str | None,
    portal: str | None,
    project: str | None,
    accounts_url: str | None,
    api_base: str | None,
) -> None:
    """Connect the bridge to Zoho: prints the grant URL and scopes, exchanges the grant code, stores the refresh
    token in the home's .env (mode 600, never printed), lists the portals and sets ZOHO_PORTAL_ID, and with
    --project runs `zoho verify`. Works with a Self Client (API console > Self Client > Generate Code) or a
    server-based client (open the grant URL, then paste the address Zoho sent you to)."""
    import os

    from bridge.cli.common import _settings
    from bridge.settings import env_file
    from bridge.targets.zoho import grant as oauth

    settings = _settings()
    dialect = settings.zoho_dialect
    if accounts_url is None:
        if data_centre is None:
            data_centre = click.prompt(
                "Zoho data centre (com, eu, in, com.au, com.cn)",
                default=oauth.data_centre_of(settings.zoho_accounts_url) or "com",
                type=click.Choice(list(oauth.DATA_CENTRES)),
                show_choices=False,
            )
        accounts_url = oauth.accounts_url(data_centre)
    accounts_url = accounts_url.rstrip("/")
    data_centre = data_centre or oauth.data_centre_of(accounts_url)
    if api_base is None:
        api_base = oauth.api_base(data_centre, dialect) if data_centre else settings.zoho_api_base
    client_id = (client_id or click.prompt("Client id", default=settings.zoho_client_id or None)).strip()
    if client_secret is None:
        client_secret = click.prompt("Client secret", hide_input=True)
    callback = redirect_uri or DEFAULT_CALLBACK
    click.echo(f"\nZoho {dialect} dialect, accounts server {accounts_url}, API {api_base}")
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    attachments = oauth.copies_attachments(MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS).all())
    click.echo(f"scopes: {','.join(oauth.scopes_for(dialect, attachments=attachments))}")
    click.echo("  Self Client (API console > Self Client > Generate Code): paste these scopes, then the code below.")
    click.echo(f"  Server-based client (redirect URI {callback}): open this grant URL, accept, and paste the address")
    click.echo("  your browser is sent to:")
    click.echo(f"  {oauth.grant_url(accounts_url, client_id, dialect, callback, attachments=attachments)}\n")
    if code is None:
        code = click.prompt("Grant code (or the address you were sent to)")
    code, exchange_redirect, accounts_url = _read_code(code.strip(), redirect_uri, accounts_url)
    try:
        granted = oauth.exchange_code(
            accounts_url, client_id, client_secret, code, redirect_uri=exchange_redirect, data_centre=data_centre
        )
    except oauth.GrantError as exc:
        raise click.ClickException(str(exc)) from None
    if missing := oauth.missing_scopes(granted.scope, dialect, attachments=attachments):
        click.echo(f"warning: the grant lacks {', '.join(missing)}: calls needing them will be refused", err=True)
    path = env_file(settings)
    values = {
        "ZOHO_CLIENT_ID": client_id,
        "ZOHO_CLIENT_SECRET": client_secret,
        "ZOHO_REFRESH_TOKEN": granted.refresh_token,
        "ZOHO_ACCOUNTS_URL": accounts_url,
        "ZOHO_API_BASE": api_base,
    }
    _store(path, values)
    click.echo(f"stored the client and its refresh token in {path} (mode 600)")
    live = settings.with_overrides(
        zoho_client_id=client_id,
        zoho_client_secret=client_secret,
        zoho_refresh_token=granted.refresh_token,
        zoho_accounts_url=accounts_url,
        zoho_api_base=api_base,
    )
    portal = _choose_portal(live, portal)
    _store(path, {"ZOHO_PORTAL_ID": portal})
    os.environ["ZOHO_PORTAL_ID"] = portal
    click.echo(f"set ZOHO_PORTAL_ID={portal} in {path}")
    if project:
        click.echo("")
        ctx.invoke(zoho_verify, project=project, portal=portal, external_id_field=None, tag_id=None)
        return
    click.echo("next: issue-bridge zoho verify --project <id>, then issue-bridge mappings init github --project <id>")


def _read_code(given: str, redirect_uri: str | None, accounts: str) -> tuple[str, str | None, str]:
    """(code, redirect URI to send with it, accounts server) from a pasted code or redirect address."""
    from urllib.parse import parse_qs, urlsplit

    from bridge.targets.zoho import grant as oauth

    if "code=" not in given and "error=" not in given:
        return given, redirect_uri, accounts
    parts = urlsplit(given)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if query.get("error"):
        raise click.ClickException(f"Zoho sent {query['error']}: the grant was not accepted; open the grant URL again")
    if not query.get("code"):
        raise click.ClickException("no code= in that address: paste the whole address Zoho sent the browser to")
    server = query.get("accounts-server", "")
    if server and oauth.is_zoho_accounts(server):  # the user's own data centre (seed 001:254-256)
        accounts = server
    base = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else redirect_uri
    return query["code"], base, accounts


def _store(path, values: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Write to the .env and to this process's environment; say when the shell's environment hides a value."""
    import os

    from dotenv import dotenv_values

    from bridge.settings import write_env_values

    before = dotenv_values(path) if path.exists() else {}
    for key, value in values.items():
        shell = os.environ.get(key)
        if shell is not None and shell != before.get(key) and shell != value:
            click.echo(f"warning: {key} is also set in the environment, which wins over {path}: unset it", err=True)
    write_env_values(path, values)
    os.environ.update(values)


def _choose_portal(settings: Settings, portal: str | None) -> str:
    from bridge.cli.common import _engine
    from bridge.cli.routes import portal_ids
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    client = ZohoClient(settings, _engine(settings, create=True))
    try:
        portals = [(portal_ids(p), p) for p in client.portals()]
        portals = [(ids, p) for ids, p in portals if ids]
        if not portals:
            raise click.ClickException("Zoho lists no portal for this account: create one, or connect another user")
        click.echo("portals:")
        for ids, p in portals:
            click.echo(f"  {ids[0]}: {p.get('portal_name') or p.get('name') or ''}")
        if portal is None:
            if len(portals) == 1:
                portal = portals[0][0][0]
            else:
                portal = click.prompt("Portal id", type=click.Choice([ids[0] for ids, _ in portals]))
        chosen = next((ids[0] for ids, _ in portals if portal in ids), None)
        if chosen is None:
            listed = ", ".join(ids[0] for ids, _ in portals)
            raise click.ClickException(f"--portal {portal}: not one of this account's portals ({listed})")
        click.echo(f"projects in portal {chosen}:")
        for project in client.projects(chosen):
            click.echo(f"  {project.get('id')}: {project.get('name')}")
    except ZohoError as exc:
        raise click.ClickException(f"Zoho refused the new token: {exc.reason}") from None
    return chosen


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
