"""One module per source; each turns a delivery into one NormalizedEvent (or IgnoredEvent)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

from sqlalchemy.engine import Engine

from bridge.events import NormalizedEvent
from bridge.outbound.budget import shared_budgets
from bridge.settings import Settings
from bridge.sources.bugherd import webhook as bugherd_hook
from bridge.sources.bugzilla import webhook as bugzilla_hook
from bridge.sources.github import webhook as github_hook


class Source(Protocol):
    name: str
    fields: frozenset[str]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent: ...

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str: ...


class PathTokenSource(Source, Protocol):
    """A source authenticated by a token in the URL path (BugHerd signs nothing), one URL per event.

    `verify` also takes the path token; `path_events` are the event names the URL may carry.
    """

    display_name: str
    path_events: tuple[str, ...]

    def verify(self, body: bytes, headers: Mapping[str, str], path_token: str | None = None) -> None: ...


# The fields each source provides, for validating mapping templates and `from:` keys.
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    github_hook.NAME: github_hook.FIELDS,
    bugzilla_hook.NAME: bugzilla_hook.FIELDS,
    bugherd_hook.NAME: bugherd_hook.FIELDS,
}


def enabled_sources(settings: Settings) -> dict[str, Source]:
    """Sources whose secret is configured. A source without one is disabled, not open."""
    sources: dict[str, Source] = {}
    if settings.github_webhook_secret:
        sources[github_hook.NAME] = github_hook.GitHubSource(settings.github_webhook_secret)
    if settings.bugzilla_webhook_secret:
        sources[bugzilla_hook.NAME] = bugzilla_hook.BugzillaSource(
            settings.bugzilla_webhook_secret,
            header=settings.bugzilla_webhook_header,
            bugzilla_url=settings.bugzilla_url,
        )
    if settings.bugherd_webhook_token:
        sources[bugherd_hook.NAME] = bugherd_hook.BugHerdSource(settings.bugherd_webhook_token)
    return sources


# source -> "module:function" completing an event its delivery reduced: (settings, event, budgets) -> event.
ENRICHERS: dict[str, str] = {
    bugzilla_hook.NAME: "bridge.sources.bugzilla.api:enrich",
    bugherd_hook.NAME: "bridge.sources.bugherd.api:enrich",
}


def enrich(settings: Settings, event: NormalizedEvent, engine: Engine) -> NormalizedEvent:
    """Complete an event whose delivery lacked the item's fields, by asking the source's API.

    Called by the worker (never on the webhook's path) for events with `has_state=False`. Returns the
    event unchanged when the source cannot be asked (no API credentials): the event's notes say so.
    Raises `bridge.events.SourceUnavailable` when asking failed for now, and `SourceBusy` (a `LimitWait`)
    when the source's shared budget says wait: neither is an attempt.
    """
    if event.has_state or event.source not in ENRICHERS:
        return event
    module, name = ENRICHERS[event.source].split(":")
    completed: NormalizedEvent = getattr(importlib.import_module(module), name)(settings, event, shared_budgets(engine))
    return completed
