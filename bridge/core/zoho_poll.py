"""Learning of changes made in Zoho, and closing the loop on the source.

The seeds document no Zoho webhook endpoint, so each linked project is polled with the documented issue list
(`GET …/issues?page&per_page&sort_by=DESC(last_modified_time)`, seed 001 lines 3467-3553) from a stored
high-water mark: a quiet project costs one call per interval, a busy one a page per 100 changed issues.
BugTracker's bug list (seed 000:1267-1298) documents paging by `index`/`range` and no sort at all (its search,
seed 000:563-583, filters by dates but names no modified time), so there every page is read and the bugs whose
`modified_time` reaches the mark are kept: a project costs one call per 100 bugs per interval.
Polling is forward sync's junior: a tick does nothing while live forward events are due, and a long one stops
between issues when they come (the mark stays at the last issue handled, so nothing is skipped).

With `reverse.comments: true`, a changed issue's comments are read (the paged list, `comments_of`) and each
person's comment is copied to the source once, keyed by its Zoho id in `source_writes`; the bridge's own
forward comments carry `(issue-bridge <source> comment <id>)` and are never copied back.

Whose change is it? The bridge only ever writes to Zoho the status its forward map gives for the source's
state, so a Zoho status that equals that is the bridge's own (or agreement) and is never sent back. A status
that differs from it *and* from the one the bridge last saw is a person's: its `reverse.status` actions are
applied to the source, through a writer that records each write so the source's echo is not synced forward.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from bridge import store
from bridge.core.backlink import mapping_for
from bridge.mapping import MappingRegistry
from bridge.mapping.engine import apply_map
from bridge.mapping.model import IssueDraft, Mapping
from bridge.settings import Settings
from bridge.sources.writers import writer_for
from bridge.store import Link
from bridge.store import reverse as state
from bridge.store import schema as db
from bridge.targets.zoho.client import ZohoClient, normalize_name

log = logging.getLogger("bridge.reverse")
BUSY_CHECK_EVERY = 10  # issues handled between two looks at whether forward events are due
# bridge/core/apply.py `comment_marker`: a comment the bridge itself copied into Zoho.
FORWARD_MARKER = re.compile(r"\(issue-bridge [a-z]+ comment [^)\s]+\)")
COPIED_COMMENT = "Comment in Zoho Projects:\n\n{text}"


def forward_status(mapping: Mapping, fields: dict[str, Any] | None) -> str | None:
    """The Zoho status the forward map gives for the source's state: what the bridge itself writes."""
    status_map = mapping.value_map("status")
    return apply_map(status_map, fields or {}) if status_map and fields else None


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and normalize_name(a) == normalize_name(b)


def forward_busy(engine: Engine) -> bool:
    """Live forward events are due now: reverse work waits (it is the lower priority in the shared budget).

    A backfill's events do not hold it back: a backfill can run for hours, a person's close should not wait.
    """
    t = db.events
    with engine.connect() as conn:
        due = conn.execute(
            select(func.count()).where(
                and_(t.c.status == "pending", t.c.origin == "live", t.c.next_attempt_at <= time.time())
            )
        ).scalar()
    return bool(due)


def _ts(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _status_name(issue: dict[str, Any]) -> str | None:
    status = issue.get("status")
    if isinstance(status, dict):
        return str(status.get("name") or "") or None
    return str(status) if status else None


def modified_ts(issue: dict[str, Any]) -> float:
    """Projects v3 names it `last_updated_time` (seed 001); BugTracker `modified_time` (seed 000:135)."""
    return _ts(issue.get("last_updated_time") or issue.get("modified_time"))


def changed_issues(client: ZohoClient, portal: str, project: str, since: float) -> list[dict[str, Any]]:
    """Issues modified at or after `since`, oldest first: the client reads the list as its dialect documents it
    (bridge/targets/zoho/poll.py: paged until a short page or the mark; BugTracker paced to its daily quota)."""
    return client.changed_issues(portal, project, since)


def link_by_issue(engine: Engine, zoho_issue_id: str) -> Link | None:
    with engine.connect() as conn:
        row = conn.execute(select(db.links).where(db.links.c.zoho_issue_id == zoho_issue_id)).first()
    return store._link(row) if row else None


def linked_projects(engine: Engine, sources: list[str]) -> list[tuple[str, str]]:
    t = db.links
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.portal, t.c.project).where(and_(t.c.source.in_(sources), t.c.state == "linked")).distinct()
        ).all()
    return [(r.portal, r.project) for r in rows]


def poll_zoho(settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient) -> dict[str, int]:
    """One beat tick: read each linked project's changes since its high-water mark and act on them."""
    counts = {"projects": 0, "changed": 0, "applied": 0, "comments": 0, "skipped_busy": 0}
    registry.reload_if_changed()
    sources = sorted({m.source for m in registry.all() if m.reverse is not None})
    if not sources:
        return counts
    if forward_busy(engine):
        counts["skipped_busy"] = 1
        return counts
    for portal, project in linked_projects(engine, sources):
        key = f"reverse.hwm.{portal}.{project}"
        since = float(store.kv_get(engine, key) or 0.0)
        issues = changed_issues(client, portal, project, since)
        counts["projects"] += 1
        mark, failed = since, False
        for n, issue in enumerate(issues):
            if n and n % BUSY_CHECK_EVERY == 0 and forward_busy(engine):
                counts["skipped_busy"] = 1  # forward sync first: the rest waits for the next tick
                break
            ts = modified_ts(issue)
            if not failed:
                mark = max(mark, ts)
            link = link_by_issue(engine, str(issue.get("id")))
            if link is None or link.state != "linked":
                continue  # an issue the bridge did not create: not ours to talk back about
            counts["changed"] += 1
            try:
                if apply_zoho_status(settings, engine, registry, link, _status_name(issue)):
                    counts["applied"] += 1
                counts["comments"] += copy_zoho_comments(settings, engine, registry, client, link, ts)
            except Exception as exc:  # the source is down or refused: this issue is read again next tick
                log.warning("reverse sync failed, retried next poll: %s", exc, extra={"item": link.item_key})
                failed = True  # the mark stops at this issue (oldest first: it and everything newer are read again)
        if mark > since:
            store.kv_set(engine, key, repr(mark))
        if counts["skipped_busy"]:
            break
    return counts


def copy_zoho_comments(
    settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient, link: Link, modified: float
) -> int:
    """`reverse.comments: true`: each person's Zoho comment copied to the source once (by its Zoho id)."""
    mapping = mapping_for(registry, link)
    if mapping is None or mapping.reverse is None or not mapping.reverse.comments or not link.zoho_issue_id:
        return 0
    seen_key = f"reverse.comments.{link.source}.{link.external_id}"
    seen = store.kv_get(engine, seen_key)
    if seen is not None and modified <= float(seen):
        return 0  # the issue has not changed since its comments were read
    writer = writer_for(link.source, settings, engine)
    if writer is None:
        return 0
    fields, copied = link.last_fields or {}, 0
    for zoho_id, text in client.comments_of(link.portal, link.project, link.zoho_issue_id):
        if FORWARD_MARKER.search(text):
            continue  # the bridge's own copy of a source comment
        done = state.zoho_comment_state(engine, link.source, zoho_id)
        if done == "posted":
            continue
        kind = f"zoho-comment {zoho_id}"
        if done == "posting" and writer.find_comment(link, fields, kind):  # an earlier tick posted it, then died
            state.zoho_comment_posted(engine, link.source, link.external_id, zoho_id)
            continue
        if done is None:
            state.zoho_comment_posting(engine, link.source, link.external_id, zoho_id)
        writer.post_comment(link, fields, COPIED_COMMENT.format(text=text), kind)
        state.zoho_comment_posted(engine, link.source, link.external_id, zoho_id)
        copied += 1
    store.kv_set(engine, seen_key, repr(modified))
    if copied:
        log.info("copied %s Zoho comment(s) to the source", copied, extra={"item": link.item_key})
    return copied


def apply_zoho_status(
    settings: Settings, engine: Engine, registry: MappingRegistry, link: Link, zoho_status: str | None
) -> bool:
    """Act on the Zoho issue's current status; True when the source was written."""
    mapping = mapping_for(registry, link)
    if mapping is None or mapping.reverse is None or not zoho_status:
        return False
    item = state.get_item(engine, link.source, link.external_id)
    forward = forward_status(mapping, link.last_fields)
    last_seen = (item.zoho_status if item else None) or forward
    if _same(zoho_status, last_seen):
        return False  # nothing new since the bridge last looked
    state.set_zoho_status(engine, link.source, link.external_id, zoho_status)
    if _same(zoho_status, forward):
        return False  # what the bridge itself wrote (or the two sides agree): never sent back
    actions = mapping.reverse.actions_for(zoho_status)
    if not actions:
        log.info("zoho status %s has no reverse action", zoho_status, extra={"item": link.item_key})
        return False
    writer = writer_for(link.source, settings, engine)
    if writer is None:
        log.warning("no writer for %s: reverse action skipped", link.source, extra={"item": link.item_key})
        return False
    try:
        done = writer.apply(link, link.last_fields or {}, actions)
    except Exception:
        # Not applied: forget that we saw it, so the next look tries again.
        state.set_zoho_status(engine, link.source, link.external_id, last_seen or "")
        raise
    log.info(
        "closed the loop: Zoho status %s → %s",
        zoho_status,
        ", ".join(done) or "source already matches",
        extra={"item": link.item_key, "source": link.source},
    )
    return bool(done)


def guard_status(
    client: ZohoClient, engine: Engine, mapping: Mapping, link: Link, draft: IssueDraft, new_fields: dict[str, Any]
) -> IssueDraft:
    """Called by the sync service before a forward update (one line in `sync.py`). With `reverse:` on, the
    status is sent only when the source's state changed it, so a person's status in Zoho is not overwritten by
    an unrelated edit; when both sides changed it since the last sync, `conflict:` decides and is logged."""
    if mapping.reverse is None or "status" not in draft.options:
        return draft
    old, new = forward_status(mapping, link.last_fields), draft.options["status"]
    without_status = dataclasses.replace(draft, options={k: v for k, v in draft.options.items() if k != "status"})
    if _same(old, new):
        return without_status
    assert link.zoho_issue_id is not None
    in_zoho = client.status_of(link.portal, link.project, link.zoho_issue_id)  # through the dialect (wrapped or not)
    item = state.get_item(engine, link.source, link.external_id)
    last_seen = (item.zoho_status if item else None) or old
    if in_zoho is None or _same(in_zoho, last_seen) or _same(in_zoho, new):
        state.set_zoho_status(engine, link.source, link.external_id, new)
        return draft  # only the source changed it
    if mapping.conflict == "zoho_wins":
        log.warning(
            "conflict on status: zoho_wins, Zoho keeps %s, the source's change to %s is undone at the next poll",
            in_zoho,
            new,
            extra={"item": link.item_key, "source": link.source},
        )
        return without_status  # the next poll sees Zoho differ from the source and applies its actions
    log.warning(
        "conflict on status: source_wins, Zoho %s is replaced by %s",
        in_zoho,
        new,
        extra={"item": link.item_key, "source": link.source},
    )
    state.set_zoho_status(engine, link.source, link.external_id, new)
    return draft


def refresh_issue(
    settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient, link: Link
) -> bool:
    """Fetch one linked issue from Zoho (the Zoho webhook's nudge) and decide as a poll would."""
    assert link.zoho_issue_id is not None
    issue = client.get_issue(link.portal, link.project, link.zoho_issue_id) or {}
    applied = apply_zoho_status(settings, engine, registry, link, _status_name(issue))
    copied = copy_zoho_comments(settings, engine, registry, client, link, modified_ts(issue)) if issue else 0
    return applied or bool(copied)
