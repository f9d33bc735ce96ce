"""`bridge mappings check` additions for mapping language v3 (called from cli.py in two places):
whether and why a saved payload matches a mapping's `when:`, and every `users:` table email checked
against Zoho through the dialect's user lookup (Projects v3: the one-user call `GET …/projects/{j}/users/{email}`,
seed 001:13627; BugTracker, which documents no lookup by email: the project's user list, seed 000:39)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.mapping import MappingError, MappingProblem, load_mapping
from bridge.mapping.filters import matches
from bridge.mapping.model import Mapping
from bridge.mapping.users import zoho_emails
from bridge.settings import Settings, SettingsError, load_settings


def guess_source(body: bytes) -> str:
    """github (an `issue`), bugzilla (`bug` and `event`) or bugherd (a `task`): what a saved body looks like."""
    try:
        data = json.loads(body)
    except ValueError:
        raise click.ClickException("the payload is not JSON") from None
    if isinstance(data, dict) and "issue" in data and "repository" in data:
        return "github"
    if isinstance(data, dict) and "bug" in data and "event" in data:
        return "bugzilla"
    if isinstance(data, dict) and ("task" in data or "comment" in data):
        return "bugherd"
    raise click.ClickException("cannot tell the payload's source (GitHub issue, Bugzilla bug, BugHerd task)")


def parse_payload(settings: Settings, body: bytes, event_name: str | None = None) -> NormalizedEvent | str:
    """The payload as the intake would parse it (signatures not checked), or why it is ignored."""
    from bridge.sources import enabled_sources

    source = guess_source(body)
    placeholder = "check"
    parsers = enabled_sources(
        settings.with_overrides(
            github_webhook_secret=placeholder, bugzilla_webhook_secret=placeholder, bugherd_webhook_token=placeholder
        )
    )
    headers = {"Content-Type": "application/json"}
    if source == "github":
        headers["X-GitHub-Event"] = event_name or ("issue_comment" if b'"comment"' in body else "issues")
    try:
        return parsers[source].parse(body, headers, event_name)
    except IgnoredEvent as exc:
        return f"ignored by the {source} intake: {exc.reason}"
    except BadDelivery as exc:
        raise click.ClickException(f"the payload is not a valid {source} delivery: {exc.reason}") from None


def match_lines(mappings: list[Mapping], event: NormalizedEvent) -> list[str]:
    """One line per mapping of the event's source: which one takes the event, and whether its `when:` matches."""
    own = [m for m in mappings if m.source == event.source]
    if not own:
        return [f"no mapping for source {event.source}: the item is not synced"]
    taker = next(
        (m for m in sorted(own, key=lambda m: m.match_source_projects is None) if m.accepts(event.source_project)), None
    )
    if taker is None:
        return [f"no mapping's match.source_project takes {event.source_project!r}: the item is not synced"]
    ok, reason = matches(taker, event)
    verdict = "matches, synced" if ok else "does NOT match, not sent to Zoho"
    return [f"{Path(taker.path).name} ({event.source} {event.item_key}): {verdict}: {reason}"]


def show_match(target: Path, payload: Path, event_name: str | None = None) -> None:
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    parsed = parse_payload(settings, payload.read_bytes(), event_name)
    if isinstance(parsed, str):
        click.echo(f"{payload}: {parsed}")
        return
    if target.is_file():
        mappings = [load_mapping(target, known_fields=KNOWN_FIELDS)]
    else:
        mappings = MappingRegistry(target, known_fields=KNOWN_FIELDS).all()
    for line in match_lines(mappings, parsed):
        click.echo(f"{payload}: {line}")


def _line_of(mapping: Mapping, login: str) -> tuple[str, int | None]:
    """Where a users-table entry is written: the mapping file, else the shared users file beside it."""
    key = re.compile(rf"^\s*[\"']?{re.escape(login)}[\"']?\s*:")
    for file in [Path(mapping.path), *(Path(mapping.path).parent / n for n in ("users.yaml", "users.yml"))]:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for number, text in enumerate(lines, 1):
            if key.match(text):
                return str(file), number
    return mapping.path, None


def user_problems(files: list[Path]) -> list[MappingProblem]:
    """Every `users:` email that is not a user of a Zoho project the file routes to; [] without Zoho."""
    from bridge.sources import KNOWN_FIELDS
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    try:
        settings = load_settings()
    except SettingsError:
        return []
    mappings: list[Mapping] = []
    for file in files:
        try:
            mapping = load_mapping(file, known_fields=KNOWN_FIELDS)
        except MappingError:
            continue
        if mapping.v3.users:
            mappings.append(mapping)
    if settings.dry_run or not mappings:
        return []
    from bridge.store import schema as db

    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    client = ZohoClient(settings, engine)
    problems: list[MappingProblem] = []
    try:
        for mapping in mappings:
            projects = [mapping.routing.default_project, *dict(mapping.routing.by_source_project).values()]
            portal = mapping.routing.portal
            for project in dict.fromkeys(p for p in projects if p):
                for email in zoho_emails(mapping):
                    # through the dialect: v3's one-user call (001:13627), BugTracker's user list (000:39)
                    if client.user_id(portal, project, email) is None:
                        login = next(s for s, e in mapping.v3.users if e == email)
                        where, line = _line_of(mapping, login)
                        problems.append(
                            MappingProblem(
                                where, line, f"users.{login}", f"{email} is not a user of Zoho project {project}"
                            )
                        )
    except ZohoError as exc:
        click.echo(f"(Zoho unreachable, users not checked: {exc.reason})", err=True)
    finally:
        engine.dispose()
    return problems
