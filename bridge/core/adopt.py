"""Adopt what already exists: before the bridge creates an item's Zoho issue, an existing issue for the item is taken
instead, never a second one made.

Two sources of existing issues, both kept in `zoho_found` (bridge/store/found.py):

- issues `links recover` found carrying the item's marker (the bridge's own, after a restore): always looked up, a
  database read per create, no Zoho call;
- with `ADOPT_EXISTING=on` (off by default), the route's project's index: every issue of the project read once
  (the issue list, and the description of each issue: one call each, as the list carries none), then only the
  issues created since. An issue carrying the item's marker or external id custom field is the item's; else an issue
  whose description names the item's source URL (made by hand, or by an earlier tool). Exactly one such issue is
  adopted; several are ambiguous: the event fails saying which, and an operator links one (`issue-bridge links
  link`). Off by default because the first read of a project costs one Zoho call per issue in it (1,500 issues:
  about 1,500 calls, 30 minutes of the Projects budget shared with live work), and because a URL in a
  description is a person's text, not a promise.

`issue-bridge backfill … --dry-run` prints what each item would do (adopt / create / ambiguous), and
`--adopt-only` links the adoptable ones without storing or creating anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from bridge.core.recover import issues_since, read_issue
from bridge.mapping.model import IssueDraft
from bridge.store import found, links
from bridge.store.clock import db_now
from bridge.store.found import Found
from bridge.targets.zoho.dialects import parse_time

log = logging.getLogger("bridge.adopt")
SLACK = 600.0  # an index read looks this far below the newest issue it read before (Zoho's clock, late commits)
ADOPT, CREATE, AMBIGUOUS, LINKED = "adopt", "create", "ambiguous", "linked"


class Ambiguous(Exception):
    """Several existing issues could be the item's: none is linked without a person choosing."""

    def __init__(self, candidates: list[Found], why: str) -> None:
        ids = ", ".join(f.issue_id + (f" ({f.issue_key})" if f.issue_key else "") for f in candidates)
        super().__init__(
            f"{len(candidates)} Zoho issues {why} ({ids}): link the right one with `issue-bridge links link`"
        )
        self.candidates = candidates


@dataclass(frozen=True)
class Match:
    verdict: str  # adopt | create | ambiguous | linked
    issue: Found | None = None
    candidates: tuple[Found, ...] = ()
    why: str = ""


def _unlinked(engine: Engine, hits: list[Found]) -> list[Found]:
    if not hits:
        return hits
    with engine.connect() as conn:
        linked = links.linked_issue_ids(conn, [f.issue_id for f in hits])
    return [f for f in hits if f.issue_id not in linked]


def match(engine: Engine, draft: IssueDraft) -> Match:
    """What the stored reads say about the item's issue: one carrying its marker (the oldest: the bridge's first), or
    else exactly one naming its source URL; several naming the URL are ambiguous."""
    with engine.connect() as conn:
        marked = found.by_external_id(conn, draft.portal, draft.project, draft.external_id)
        named = found.by_url(conn, draft.portal, draft.project, draft.source_url) if draft.source_url else []
    marked = _unlinked(engine, marked)
    if marked:
        return Match(ADOPT, marked[0], tuple(marked), f"carries the marker of {draft.external_id}")
    named = _unlinked(engine, [f for f in named if f.external_id in (None, draft.external_id)])
    if len(named) == 1:
        return Match(ADOPT, named[0], tuple(named), f"names {draft.source_url}")
    if named:
        return Match(AMBIGUOUS, None, tuple(named), f"name {draft.source_url}")
    return Match(CREATE)


def refresh_index(
    engine: Engine,
    client: Any,
    portal: str,
    project: str,
    id_fields: set[str],
    *,
    say: Callable[[str], None] | None = None,
) -> int:
    """Read the project's issues not read yet (every one the first time, then those created since): returns how
    many descriptions were read. Each issue read is committed at once, so an interrupted read (a budget wait, a
    worker's claim running out) goes on where it stopped."""
    with engine.connect() as conn:
        state = found.index_state(conn, portal, project)
    complete, newest = bool(state.get("complete")), float(state.get("newest") or 0.0)
    read = 0
    top = newest
    if say is not None and not complete:
        say(f"indexing Zoho project {project} (portal {portal}): every issue's description is read once")
    for issue in issues_since(client, portal, project, newest - SLACK if complete else None):
        top = max(top, parse_time(issue.get("created_time")) or 0.0)
        with engine.connect() as conn:
            known = found.known_ids(conn, portal, [str(issue["id"])])
        if str(issue["id"]) in known:
            continue
        seen, fetched = read_issue(client, portal, project, issue, id_fields, via="index")
        with engine.begin() as conn:
            found.save(conn, seen)
        read += int(fetched)
    with engine.begin() as conn:
        found.save_index_state(conn, portal, project, {"complete": True, "newest": top, "at": db_now(conn)})
    return read


def existing_issue(engine: Engine, client: Any, draft: IssueDraft, *, index: bool) -> Match:
    """For the create path: the issue to adopt instead of creating (`Match.verdict` adopt). Always: one `links
    recover` (or an index) found carrying the item's marker. With `index` (ADOPT_EXISTING): the project's index is
    read up to now first, and an issue naming the item's source URL counts too."""
    with engine.connect() as conn:
        marked = _unlinked(engine, found.by_external_id(conn, draft.portal, draft.project, draft.external_id))
    if marked:
        return Match(ADOPT, marked[0], tuple(marked), f"carries the marker of {draft.external_id}")
    if not index:
        return Match(CREATE)
    fields = {draft.external_id_field} if draft.external_id_field else set()
    refresh_index(engine, client, draft.portal, draft.project, fields)
    return match(engine, draft)


__all__ = ["ADOPT", "AMBIGUOUS", "CREATE", "LINKED", "Ambiguous", "Match", "existing_issue", "match", "refresh_index"]
