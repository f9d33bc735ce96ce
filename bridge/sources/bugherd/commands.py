"""BugHerd's part of the command line: `issue-bridge backfill bugherd` and `issue-bridge bugherd …` (its webhooks
are made through its API)."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.engine import Engine

from bridge.backfill.command import BackfillCommand, EngineOf, OnWait, SettingsOf
from bridge.sources.bugherd.api import BugHerdClient, BugHerdError, mask


def _open(settings_of: SettingsOf, engine_of: EngineOf, on_wait: OnWait, *, project_id: int) -> Any:
    from bridge.outbound.budget import shared_budgets
    from bridge.sources.bugherd.backfill import BugHerdReader
    from bridge.sources.http import HOLD_COMMAND

    settings = settings_of()
    if not settings.bugherd_api_key:
        raise click.ClickException("BUGHERD_API_KEY is not set: the backfill reads tasks through BugHerd's API")
    engine = engine_of(settings)
    client = BugHerdClient(
        settings.bugherd_api_key,
        budgets=shared_budgets(engine),
        base_url=settings.bugherd_api_url,
        hold=HOLD_COMMAND,
        on_wait=on_wait,
    )
    return BugHerdReader(client, project_id)


BACKFILL = BackfillCommand(
    help="Backfill a BugHerd project's tasks and their comments (60 API requests a minute). Needs BUGHERD_API_KEY.",
    options=(click.option("--project", "project_id", required=True, type=int, help="BugHerd project id"),),
    open=_open,
    errors=(BugHerdError,),
)


@click.group()
def bugherd() -> None:
    """BugHerd: webhooks and tasks through the BugHerd API (needs BUGHERD_API_KEY)."""


@bugherd.command("register-webhooks")
@click.argument("public_base_url")
@click.option("--project-id", type=int, default=None, help="Only this BugHerd project (default: all projects).")
@click.option("--api-url", default=None, hidden=True, help="BugHerd's address (tests).")
def register_webhooks(public_base_url: str, project_id: int | None, api_url: str | None) -> None:
    """Create the four BugHerd webhooks (task_create, task_update, comment, task_destroy) pointing at
    PUBLIC_BASE_URL/webhooks/bugherd/<BUGHERD_WEBHOOK_TOKEN>/<event>; ones already there are left alone."""
    from bridge.cli.common import _engine, _settings
    from bridge.events import SourceUnavailable
    from bridge.outbound.budget import shared_budgets
    from bridge.sources.bugherd import webhook as source
    from bridge.sources.http import HOLD_POLL

    settings = _settings()
    if not settings.bugherd_api_key:
        raise click.ClickException("BUGHERD_API_KEY is not set: it is needed to create webhooks through the API")
    token = settings.bugherd_webhook_token
    if not token:
        raise click.ClickException("BUGHERD_WEBHOOK_TOKEN is not set: the webhook URLs need it")
    if not public_base_url.startswith(("https://", "http://")):
        raise click.ClickException(f"PUBLIC_BASE_URL: expected https://…, got {public_base_url!r}")
    base = public_base_url.rstrip("/")
    try:
        engine = _engine(settings)  # the key's 60 a minute, shared with the bridge's processes
    except click.ClickException:  # no bridge database here: nothing else spends the key's budget
        engine = _private_engine()
    budgets = shared_budgets(engine)
    client = BugHerdClient(
        settings.bugherd_api_key, budgets=budgets, base_url=api_url or settings.bugherd_api_url, hold=HOLD_POLL
    )
    try:
        existing = {(h.get("event"), h.get("target_url"), h.get("project_id")) for h in client.webhooks()}
        for event in source.EVENTS:
            target = f"{base}/webhooks/bugherd/{token}/{event}"
            shown = target.replace(token, mask(token))
            if (event, target, project_id) in existing:
                click.echo(f"{event}: already registered → {shown}")
                continue
            hook = client.create_webhook(event, target, project_id)
            hook_id = f" (id {hook['id']})" if isinstance(hook, dict) and hook.get("id") is not None else ""
            click.echo(f"{event}: created{hook_id} → {shown}")
    except (BugHerdError, SourceUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    if not public_base_url.startswith("https://"):
        click.echo("warning: the URL is not https; BugHerd's token travels in the path", err=True)


def _private_engine() -> Engine:
    import tempfile

    from bridge.store import schema as db

    folder = tempfile.mkdtemp(prefix="issue-bridge-budgets-")
    engine = db.make_engine(f"sqlite:///{folder}/budgets.db")
    db.ensure_schema(engine)
    return engine
