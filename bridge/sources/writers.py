"""Writing to the source: what a writer offers (the protocol), the markers it leaves, and the registry of
writers by source (one `writer.py` in each source's package turns reverse actions into its API calls).

Every write the bridge makes is recorded in `source_writes` before its echo can matter: comments by the
source's comment id (and, for the race where the webhook outruns our bookkeeping, a hidden marker that the
code appends, not the admin's template), state changes by the value written.

Every writer's client sends through the source's declared calls and the budgets every process shares
(`bridge/sources/http.py`): a limit is `SourceBusy` (a wait, never an attempt), an outage or a comment POST
that timed out is `SourceUnavailable` (never repeated blindly: the caller's "posting" record makes it in
doubt, and `find_comment` looks it up by its marker), and a write the source refuses for what it says
(closing a Bugzilla bug without a resolution, a deleted GitHub issue) is `WriteRefused`, never repeated.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.engine import Engine

from bridge.outbound.budget import Budgets, shared_budgets
from bridge.outbound.errors import Permanent
from bridge.settings import Settings
from bridge.store import Link

MARKER_PREFIX = "<!-- issue-bridge:"
# Bugzilla and BugHerd show comments as plain text: an HTML comment would be shown as is, so there the marker
# is a short last line in brackets. Neither is part of a template an admin edits.
PLAIN_MARKER_PREFIX = "(issue-bridge:"
MARKER_PREFIXES = (MARKER_PREFIX, PLAIN_MARKER_PREFIX)


class WriteRefused(Permanent):
    """The source refused a write for what it says (or would, by its documents): repeating it cannot help, so
    it is reported with the reason and never repeated until what was asked changes."""


def hidden_marker(kind: str, link: Link) -> str:
    """An HTML comment: invisible in GitHub's rendering, and not part of any template an admin edits."""
    return f"{MARKER_PREFIX}{kind} {link.external_id} -->"


def plain_marker(kind: str, link: Link) -> str:
    return f"{PLAIN_MARKER_PREFIX}{kind} {link.external_id})"


def marker(kind: str, link: Link) -> str:
    """The marker a write of `kind` carries at the end of its text on the link's source (as its writer adds it)."""
    from bridge.sources import SOURCES

    spec = SOURCES.get(link.source)
    return hidden_marker(kind, link) if spec is not None and spec.hidden_markers else plain_marker(kind, link)


class SourceWriter(Protocol):
    source: str

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str: ...

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None: ...

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]: ...


def writer_for(
    source: str, settings: Settings, engine: Engine, *, via: str = "comment", budgets: Budgets | None = None
) -> SourceWriter | None:
    """The source's writer (its client spending the process's shared budgets), or None when the source has
    none or a setting it needs is missing (`missing_credential` says which)."""
    from bridge.sources import SOURCES

    spec = SOURCES.get(source)
    if spec is None or not spec.writer or missing_credential(source, settings):
        return None
    writer: SourceWriter = spec.load(spec.writer)(settings, engine, budgets or shared_budgets(engine), via)
    return writer


def missing_credential(source: str, settings: Settings) -> str | None:
    """What `mappings check` reports when a mapping asks to talk back but a setting is missing: the same
    settings the sources already use to fetch (enrichment, backfill), plus BugHerd's comment author."""
    from bridge.sources import SOURCES

    needs = SOURCES[source].writer_settings if source in SOURCES else ()
    missing = [env for env, attr in needs if not getattr(settings, attr)]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: back-links and reverse sync need it"
    )
