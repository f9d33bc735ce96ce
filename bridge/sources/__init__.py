"""One module per source; each turns a delivery into one NormalizedEvent (or IgnoredEvent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bridge.events import NormalizedEvent
from bridge.settings import Settings
from bridge.sources import github


class Source(Protocol):
    name: str
    fields: frozenset[str]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent: ...

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str: ...


# The fields each source provides, for validating mapping templates and `from:` keys.
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    github.NAME: github.FIELDS,
}


def enabled_sources(settings: Settings) -> dict[str, Source]:
    """Sources whose secret is configured. A source without one is disabled, not open."""
    sources: dict[str, Source] = {}
    if settings.github_webhook_secret:
        sources[github.NAME] = github.GitHubSource(settings.github_webhook_secret)
    return sources
