"""What a source declares for `issue-bridge backfill <source>`: its options and how its reader is opened.

The CLI (`bridge/cli/backfill.py`) builds one command per source from these and runs them all the same way
(progress, `--resume`, `--wait`, `--adopt-only`); it names no source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.engine import Engine

from bridge.settings import Settings


@dataclass(frozen=True)
class BackfillCommand:
    help: str
    options: tuple[Callable[[Any], Any], ...]  # `click.option(...)` decorators, in the order `--help` lists them
    # (settings_of, engine_of, on_wait, **options) -> the source's reader. It checks its options first, then
    # asks for the settings and the engine (so a bad option is reported even where no bridge is set up); a bad
    # option is a `click.BadParameter`, a missing setting a `click.ClickException`.
    open: Callable[..., Any]
    errors: tuple[type[Exception], ...]  # its client's errors: reported as the command's error


SettingsOf = Callable[[], Settings]
EngineOf = Callable[[Settings], Engine]
OnWait = Callable[[float, str], None]


def parse_since(value: str | None) -> str | None:
    """`2024-01-31` or an ISO-8601 time → `2024-01-31T00:00:00Z` (UTC); a clear error otherwise."""
    if value is None:
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise click.BadParameter(
            f"expected a date like 2024-01-31 or a time like 2024-01-31T12:00:00Z, got {value!r}", param_hint="--since"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
