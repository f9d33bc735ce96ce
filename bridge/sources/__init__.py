"""The sources: one package per tracker, each declaring its `SourceSpec` (`bridge/sources/spec.py`).

`SOURCES` is the registry the rest of the bridge reads instead of naming a source: intake (which sources are
enabled), the mapping engine (fields, label and project fields, reverse actions), the core (enrichment, the
writer and its markers, attachments). Adding a source is its package and one line here.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from bridge.events import NormalizedEvent
from bridge.outbound.budget import shared_budgets
from bridge.settings import Settings
from bridge.sources import bugherd, bugzilla, github
from bridge.sources.spec import PathTokenSource, Source, SourceSpec

SOURCES: dict[str, SourceSpec] = {spec.name: spec for spec in (github.SPEC, bugzilla.SPEC, bugherd.SPEC)}

# The fields each source provides, for validating mapping templates and `from:` keys.
KNOWN_FIELDS: dict[str, frozenset[str]] = {name: spec.fields for name, spec in SOURCES.items()}

__all__ = ["KNOWN_FIELDS", "SOURCES", "PathTokenSource", "Source", "SourceSpec", "enabled_sources", "enrich"]


def enabled_sources(settings: Settings) -> dict[str, Source]:
    """Sources whose secret is configured. A source without one is disabled, not open."""
    found = {name: spec.webhook(settings) for name, spec in SOURCES.items()}
    return {name: source for name, source in found.items() if source is not None}


def enrich(settings: Settings, event: NormalizedEvent, engine: Engine) -> NormalizedEvent:
    """Complete an event whose delivery lacked the item's fields, by asking the source's API.

    Called by the worker (never on the webhook's path) for events with `has_state=False`. Returns the
    event unchanged when the source cannot be asked (no API credentials): the event's notes say so.
    Raises `bridge.events.SourceUnavailable` when asking failed for now, and `SourceBusy` (a `LimitWait`)
    when the source's shared budget says wait: neither is an attempt.
    """
    spec = SOURCES.get(event.source)
    if event.has_state or spec is None or not spec.enricher:
        return event
    completed: NormalizedEvent = spec.load(spec.enricher)(settings, event, shared_budgets(engine))
    return completed
