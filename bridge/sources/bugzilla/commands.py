"""Bugzilla's part of the command line: `issue-bridge backfill bugzilla`."""

from __future__ import annotations

from typing import Any

import click

from bridge.backfill.command import BackfillCommand, EngineOf, OnWait, SettingsOf, parse_since
from bridge.sources.bugzilla.api import BugzillaClient, BugzillaError


def _open(
    settings_of: SettingsOf, engine_of: EngineOf, on_wait: OnWait, *, product: str, component: str | None,
    since: str | None,
) -> Any:  # fmt: skip
    from bridge.outbound.budget import shared_budgets
    from bridge.sources.bugzilla.backfill import BugzillaReader
    from bridge.sources.http import HOLD_COMMAND

    since_iso = parse_since(since)
    if not product.strip():
        raise click.BadParameter("must not be empty", param_hint="--product")
    settings = settings_of()
    if not (settings.bugzilla_url and settings.bugzilla_api_key):
        raise click.ClickException("BUGZILLA_URL and BUGZILLA_API_KEY must both be set to read bugs from Bugzilla")
    engine = engine_of(settings)
    client = BugzillaClient(
        settings.bugzilla_url,
        settings.bugzilla_api_key,
        budgets=shared_budgets(engine),
        hold=HOLD_COMMAND,
        on_wait=on_wait,
    )
    return BugzillaReader(client, settings, product.strip(), component=component, since=since_iso)


BACKFILL = BackfillCommand(
    help="Backfill a Bugzilla product's bugs and their comments. Needs BUGZILLA_URL and BUGZILLA_API_KEY.",
    options=(
        click.option("--product", required=True),
        click.option("--component", default=None),
        click.option("--since", help="only bugs changed at or after this date (2024-01-31 or ISO-8601, UTC)"),
    ),
    open=_open,
    errors=(BugzillaError,),
)
