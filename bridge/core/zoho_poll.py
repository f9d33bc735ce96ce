"""Learning of changes made in Zoho: a poll (beat) and Zoho's webhook store a *nudge* for the item.

The seeds document no Zoho webhook endpoint, so each linked project is polled with the documented issue list
(`GET …/issues?page&per_page&sort_by=DESC(last_modified_time)`, seed 001 lines 3467-3553) from a stored
high-water mark: a quiet project costs one call per interval, a busy one a page per 100 changed issues.
BugTracker's bug list (seed 000:1267-1298) documents paging by `index`/`range` and no sort at all, so there
every page is read and the bugs whose `modified_time` reaches the mark are kept.

Nothing is decided here and nothing is written to a source: each change of a linked issue is stored as an
event of its item (`zoho_changed`, the status the list showed, deduplicated by the issue's modified time) and
a worker is woken; under the item's claim the delivery core decides what the source should do
(`bridge/core/talkback.py`) and plans it as journal operations. Polling is forward sync's junior: a tick does
nothing while live forward events are due.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from bridge import store
from bridge.core.talkback import status_name
from bridge.events import NormalizedEvent
from bridge.mapping import MappingRegistry
from bridge.store import Link
from bridge.store import operator as links_read
from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge.reverse")
ORIGIN = "zoho"
Items = set[tuple[str, str]]


def _ts(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def modified_ts(issue: dict[str, Any]) -> float:
    """Projects v3 names it `last_updated_time` / `last_modified_time` (seed 001); BugTracker `modified_time`
    (seed 000:135)."""
    return _ts(issue.get("last_updated_time") or issue.get("last_modified_time") or issue.get("modified_time"))


def changed_issues(client: ZohoClient, portal: str, project: str, since: float) -> list[dict[str, Any]]:
    """Issues modified at or after `since`, oldest first: the client reads the list as its dialect documents it
    (bridge/targets/zoho/poll.py: paged until a short page or the mark; BugTracker paced to its daily quota)."""
    return client.changed_issues(portal, project, since)


def nudge(
    engine: Engine, link: Link, *, status: str | None, modified: float | None, dedup_key: str
) -> tuple[int, bool]:
    """Store a change seen in Zoho as an event of the item; (event id, stored now)."""
    when = modified or 0.0
    event = NormalizedEvent(
        source=link.source,
        item_kind="issue",
        item_key=link.item_key,
        action="zoho_changed",
        event_name="zoho.issue",
        source_ts=datetime.fromtimestamp(when, UTC) if when else datetime.now(UTC),
        fields={"zoho_issue_id": link.zoho_issue_id, "status": status, "modified": modified},
        has_state=False,
        notes=("a change seen in Zoho",),
    )
    recorded = store.record_delivery(engine, event, dedup_key=dedup_key, headers={}, payload=b"", origin=ORIGIN)
    return int(recorded[0]), bool(recorded[1])


def polled_sources(registry: MappingRegistry) -> list[str]:
    """The sources whose mappings talk back from Zoho (`reverse:`), after a look for mapping edits."""
    registry.reload_if_changed()
    return sorted({m.source for m in registry.all() if m.reverse is not None})


def poll_zoho(
    engine: Engine, registry: MappingRegistry, client: ZohoClient, *, sources: list[str] | None = None
) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """One beat tick: read each linked project's changes since its high-water mark and store a nudge for each
    linked issue. Returns (counts, items to wake)."""
    counts = {"projects": 0, "changed": 0, "nudged": 0, "skipped_busy": 0}
    wake: Items = set()
    sources = polled_sources(registry) if sources is None else sources  # the tick has looked already
    if not sources:
        return counts, wake
    if store.forward_busy(engine):
        counts["skipped_busy"] = 1
        return counts, wake
    for portal, project in links_read.linked_projects(engine, sources):
        key = f"reverse.hwm.{portal}.{project}"
        since = float(store.kv_get(engine, key) or 0.0)
        issues = changed_issues(client, portal, project, since)
        counts["projects"] += 1
        mark = since
        for issue in issues:
            ts = modified_ts(issue)
            link = links_read.link_by_issue(engine, str(issue.get("id")))
            mark = max(mark, ts)
            if link is None or link.state != "linked" or link.source not in sources:
                continue  # an issue the bridge did not create: not ours to talk back about
            counts["changed"] += 1
            _, fresh = nudge(
                engine, link, status=status_name(issue), modified=ts, dedup_key=f"zoho:{issue.get('id')}:{ts}"
            )
            if fresh:
                counts["nudged"] += 1
                wake.add((link.source, link.item_key))
        if mark > since:
            store.kv_set(engine, key, repr(mark))
    return counts, wake
