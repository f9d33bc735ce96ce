"""`bridge` commands that talk to the sources' own APIs (BugHerd, Bugzilla)."""

from __future__ import annotations

import click


@click.group()
def bugherd() -> None:
    """BugHerd: webhooks and tasks through the BugHerd API (needs BUGHERD_API_KEY)."""
