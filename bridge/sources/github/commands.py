"""GitHub's part of the command line: `issue-bridge backfill github`."""

from __future__ import annotations

import re
from typing import Any

import click

from bridge.backfill.command import BackfillCommand, EngineOf, OnWait, SettingsOf, parse_since
from bridge.sources.github.api import GitHubClient, GitHubError

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _open(
    settings_of: SettingsOf,
    engine_of: EngineOf,
    on_wait: OnWait,
    *,
    repo: str,
    state: str,
    since: str | None,
    labels: tuple[str, ...],
) -> Any:
    from bridge.outbound.budget import shared_budgets
    from bridge.sources.github.backfill import GitHubReader
    from bridge.sources.http import HOLD_COMMAND

    if not REPO_RE.match(repo):
        raise click.BadParameter(f"expected OWNER/NAME, got {repo!r}", param_hint="--repo")
    since_iso = parse_since(since)
    settings = settings_of()
    if not settings.github_token:
        raise click.ClickException("GITHUB_TOKEN is not set: the backfill reads issues through GitHub's REST API")
    engine = engine_of(settings)
    try:
        client = GitHubClient(
            settings.github_token,
            budgets=shared_budgets(engine),
            base_url=settings.github_api_url,
            hold=HOLD_COMMAND,
            on_wait=on_wait,
        )
    except GitHubError as exc:
        raise click.ClickException(str(exc)) from None
    return GitHubReader(client, engine, repo, state=state, since=since_iso, labels=labels)


BACKFILL = BackfillCommand(
    help="Backfill a GitHub repository's issues and their comments (pull requests are skipped). Needs GITHUB_TOKEN.",
    options=(
        click.option("--repo", required=True, help="OWNER/NAME"),
        click.option("--state", type=click.Choice(["open", "closed", "all"]), default="open", show_default=True),
        click.option("--since", help="only issues updated at or after this date (2024-01-31 or ISO-8601, UTC)"),
        click.option("--label", "labels", multiple=True, help="only issues with this label (repeat: all must match)"),
    ),
    open=_open,
    errors=(GitHubError,),
)
