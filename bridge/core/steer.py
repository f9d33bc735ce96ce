"""Steering: pause and resume a source, a mapping file or one item; link an item to an existing Zoho issue; resync
an item from its source's API. Used by the CLI (`bridge/cli/steer.py`) and the item page; each is recorded in the
item's story (`operator_actions`), and none can make a second Zoho issue:

- a pause only keeps the core from claiming the item (deliveries are still stored);
- a link refuses an issue another item holds, an item linked to another issue, or a create still in doubt, and
  records the create as confirmed with the adopted issue (the external id and marker are written by the update
  the link queues);
- a resync from the source stores the source's current state and comments as events the core processes like any
  other (comments are keyed by their id: never posted twice).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent
from bridge.mapping import MappingRegistry, RoutingError, translate
from bridge.settings import Settings
from bridge.sources import SOURCES as SOURCE_SPECS
from bridge.sources.spec import SourceReadError
from bridge.store import counters, journal, links, operator, steer
from bridge.store.clock import db_now
from bridge.store.found import issue_id_by_key
from bridge.store.story import SOURCES, find_items

RESUME_WAKE_LIMIT = 5000  # items woken at once on a resume (the sweeper wakes any others, oldest first)


class SteerError(Exception):
    """What the operator asked cannot be done as asked: the message says why and what to do instead."""


@dataclass(frozen=True)
class Target:
    kind: str  # "source" | "mapping" | "item"
    name: str  # the source, the mapping file's name, or the item key
    source: str  # the source (of the item, or the mapping's)

    def describe(self) -> str:
        if self.kind == "item":
            return f"item {self.source} {self.name}"
        return f"{self.kind} {self.name}"


def target_of(engine: Engine, registry: MappingRegistry, text: str, *, source: str | None = None) -> Target:
    """What `pause` / `resume` name: a source, a mapping file (its name, e.g. github.yaml), or one item."""
    text = text.strip()
    if text in SOURCES:
        return Target("source", text, text)
    name = os.path.basename(text)
    for mapping in registry.all():
        if os.path.basename(mapping.path) == name:
            return Target("mapping", name, mapping.source)
    if name.endswith((".yaml", ".yml")):
        with engine.connect() as conn:
            paused = {p.name for p in steer.pauses(conn) if p.kind == steer.MAPPING}
        if name in paused:  # a paused file since removed or broken: it can still be resumed
            return Target("mapping", name, "")
        raise SteerError(f"no mapping file {name} in {registry.directory}")
    with engine.connect() as conn:
        found = [(s, k) for s, k in find_items(conn, text) if source in (None, s)]
    if not found:
        raise SteerError(f"{text!r} is no source ({', '.join(SOURCES)}), mapping file or known item")
    if len(found) > 1:
        raise SteerError(
            f"{text!r} names {len(found)} items ({', '.join(f'{s} {k}' for s, k in found)}): give --source"
        )
    return Target("item", found[0][1], found[0][0])


# -- pause and resume ----------------------------------------------------------------------------------------------


def pause(engine: Engine, registry: MappingRegistry, target: Target, actor: str) -> tuple[bool, int]:
    """Pause the target: (whether it was running, pending events it holds back now)."""
    with engine.begin() as conn:
        if target.kind == "item":
            fresh = steer.hold(conn, target.source, target.name, steer.STOPPED)
            if fresh:
                steer.record(conn, target.source, target.name, "pause", "stopped syncing this item", actor)
            return fresh, _pending(conn, [(target.source, target.name)])
        fresh = steer.pause(conn, target.kind, target.name, actor)
        if fresh:
            steer.record(conn, target.source, "*", "pause", f"{target.describe()} paused", actor)
        if target.kind == "source":
            return fresh, steer.pending_of_source(conn, target.name)
    # A mapping file: every item with work waiting whose mapping it is, held now (those that come later are held
    # by the core the first time it claims them).
    held = hold_mapping_items(engine, registry, target)
    with engine.connect() as conn:
        return fresh, _pending(conn, held)


def hold_mapping_items(engine: Engine, registry: MappingRegistry, target: Target) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        newest = steer.newest_pending(conn, target.source)
    held: list[tuple[str, str]] = []
    why = steer.MAPPING_PREFIX + target.name
    for start in range(0, len(newest), 500):
        chunk = {int(event_id): str(key) for key, event_id in newest[start : start + 500]}
        with engine.connect() as conn:
            bodies = steer.event_bodies(conn, list(chunk))
        mine = []
        for event_id, body in bodies:
            try:
                event = NormalizedEvent.from_json(json.loads(body))
            except Exception:  # noqa: S112 - an unreadable event is failed by the core, not held
                continue
            mapping = registry.for_event(event)
            if mapping is not None and os.path.basename(mapping.path) == target.name:
                mine.append(chunk[int(event_id)])
        with engine.begin() as conn:
            for key in mine:
                steer.hold(conn, target.source, key, why)
        held += [(target.source, key) for key in mine]
    return held


def resume(engine: Engine, target: Target, actor: str) -> tuple[bool, list[tuple[str, str]]]:
    """Lift the pause: (whether it was paused, the items to wake now)."""
    with engine.begin() as conn:
        if target.kind == "item":
            was = steer.release(conn, target.source, target.name)
            if was is not None:
                steer.record(conn, target.source, target.name, "resume", f"syncing again (was {was.why})", actor)
            return was is not None, [(target.source, target.name)]
        was_paused, items = steer.resume(conn, target.kind, target.name)
        if was_paused:
            steer.record(conn, target.source, "*", "resume", f"{target.describe()} resumed", actor)
        if target.kind == "source":
            items = [(target.name, key) for key in steer.items_to_wake(conn, target.name, RESUME_WAKE_LIMIT)]
    return was_paused, items


def _pending(conn: Connection, items: list[tuple[str, str]]) -> int:
    total = 0
    for source, key in items:
        total += steer.pending_of_item(conn, source, key)
    return total


# -- link an item to an existing Zoho issue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Linked:
    source: str
    item_key: str
    external_id: str
    issue_id: str
    portal: str
    project: str
    resync_event: int | None


def link_item(
    engine: Engine,
    registry: MappingRegistry,
    client: Any,
    source: str,
    item_key: str,
    issue: str,
    actor: str,
    *,
    project: str | None = None,
) -> Linked:
    """Adopt Zoho issue `issue` (an id, or a key such as EC1-I14 the bridge has seen) for the item."""
    from bridge.store import state_events_of

    latest = state_events_of(engine, source, item_key, limit=50)
    if not latest:
        raise SteerError(f"no state of {source} {item_key} is stored: nothing says where it goes (resync it first)")
    event = latest[0]
    mapping = registry.for_event(event)
    if mapping is None:
        raise SteerError(f"no mapping takes {source} {item_key} (source project {event.source_project!r})")
    try:
        draft = translate(mapping, event, None)
    except RoutingError as exc:
        raise SteerError(str(exc)) from None
    portal, project = draft.portal, project or draft.project
    issue_id = _issue_id(engine, portal, issue)
    if not getattr(client, "dry_run", True) and client.get_issue(portal, project, issue_id) is None:
        raise SteerError(f"Zoho has no issue {issue_id} in project {project} (portal {portal}): give --project")
    with engine.begin() as conn:
        holder = links.issue_holder(conn, issue_id)
        if holder is not None and holder != (source, item_key):
            raise SteerError(f"Zoho issue {issue_id} is {holder[0]} {holder[1]}'s already: unlink it first")
        own = links.ref_for_item(conn, source, item_key)
        if own is not None and own.zoho_issue_id and own.state in ("linked", "deleted"):
            if own.zoho_issue_id == issue_id:
                raise SteerError(f"{source} {item_key} is linked to Zoho issue {issue_id} already")
            raise SteerError(
                f"{source} {item_key} is linked to Zoho issue {own.zoho_issue_id}: "
                f"`issue-bridge links unlink {own.external_id}` first"
            )
        create = journal.state_of(conn, source, item_key, "zoho.create")
        if own is not None and own.state == "creating" and create == journal.SENT:
            raise SteerError(
                f"a create for {source} {item_key} is in doubt (it may have made an issue): let the bridge look it up "
                "first (`issue-bridge explain` shows when), then link"
            )
        taken = links.external_id_holder(conn, source, draft.external_id)
        if taken is not None and taken != item_key:
            raise SteerError(f"external id {draft.external_id} is item {taken}'s: the mapping must tell them apart")
        write_link(conn, own, source, item_key, draft.external_id, portal, project, issue_id, actor)
        steer.record(conn, source, item_key, "link", f"linked to Zoho issue {issue_id} (project {project})", actor)
    try:
        queued = operator.resync(engine, draft.external_id, source, actor=actor)
        resync_event: int | None = queued.event_id
    except operator.NotFound:
        resync_event = None
    return Linked(source, item_key, draft.external_id, issue_id, portal, project, resync_event)


def write_link(
    conn: Connection,
    own: links.LinkRef | None,
    source: str,
    item_key: str,
    external_id: str,
    portal: str,
    project: str,
    issue_id: str,
    actor: str,
) -> None:
    """The item's link, confirmed with an adopted issue, and its create recorded as confirmed: nothing creates it
    again. `applied_hash` is cleared, so the next update sends the whole state (with the external id and marker)."""
    now = db_now(conn)
    values = dict(
        external_id=external_id,
        portal=portal,
        project=project,
        zoho_issue_id=issue_id,
        state="linked",
        last_state_ts=0.0,
        applied_hash=None,
        written=None,
        updated_at=now,
    )
    links.write_adopted(conn, own.id if own is not None else None, source, item_key, values, now)
    journal.save(
        conn,
        journal.Operation(source, item_key, "zoho.create", "", journal.CONFIRMED, payload={"adopted": actor},
                          result=issue_id, planned_at=now, sent_at=now, done_at=now),
    )  # fmt: skip


def adopt_link(engine: Engine, source: str, item_key: str, external_id: str, portal: str, project: str,
               issue_id: str, actor: str, why: str) -> bool:  # fmt: skip
    """`backfill --adopt-only`: link an item (stored or not) to the issue found for it, unless it has a link with an
    issue already or another item holds the issue or the external id. True when linked."""
    with engine.begin() as conn:
        own = links.ref_for_item(conn, source, item_key)
        if own is not None and own.zoho_issue_id and own.state in ("linked", "deleted"):
            return False
        if links.held_by_another(conn, source, item_key, issue_id, external_id):
            return False
        write_link(conn, own, source, item_key, external_id, portal, project, issue_id, actor)
        steer.record(conn, source, item_key, "adopt", f"linked to existing Zoho issue {issue_id} ({why})", actor)
    return True


def _issue_id(engine: Engine, portal: str, issue: str) -> str:
    issue = issue.strip()
    if issue.isdigit():
        return issue
    with engine.connect() as conn:
        issue_id = issue_id_by_key(conn, portal, issue)
    if issue_id is None:
        raise SteerError(f"{issue!r} is no Zoho issue id, and no issue the bridge has seen has that key: give its id")
    return issue_id


# -- resync from the source --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    source: str
    item_key: str
    stored: int  # events stored (its state and its comments)
    comments: int


def resync_from_source(
    settings: Settings, engine: Engine, source: str, item_key: str, actor: str, *, hold: float | None = None
) -> Fetched:
    """Fetch the item's current state and comments through its source's API and store them as events the core
    processes (a state applied even if nothing changed on the bridge's side; comments by their id, never twice).
    `hold`: how long to wait for the source's budget (a command waits up to an hour; the admin page a few seconds)."""
    from bridge.events import SourceUnavailable
    from bridge.outbound.budget import shared_budgets
    from bridge.sources.http import HOLD_COMMAND
    from bridge.store import state_events_of

    known = state_events_of(engine, source, item_key, limit=20)
    fields = known[0].fields if known else {}
    budgets = shared_budgets(engine)
    reads: list[Any] = []
    wait = HOLD_COMMAND if hold is None else hold
    spec = SOURCE_SPECS.get(source)
    if spec is None or not spec.read_item:
        raise SteerError(f"unknown source {source}" if spec is None else f"{source} items cannot be read one by one")
    try:
        reads = spec.load(spec.read_item)(settings, engine, budgets, item_key, fields, wait)
    except SourceReadError as exc:
        raise SteerError(str(exc)) from None
    except SourceUnavailable as exc:
        raise SteerError(f"{source} could not be asked now: {exc.reason}") from None
    except (ValueError, KeyError) as exc:
        raise SteerError(f"{source} could not be asked for {item_key}: {exc}") from None
    if not reads:
        raise SteerError(f"{source} answered nothing for {item_key}")
    marker = uuid.uuid4().hex[:12]
    stored = comments = 0
    with engine.begin() as conn:
        now = db_now(conn)
        for read in reads:
            event = dataclasses.replace(read.event, item_key=item_key, notes=(*read.event.notes, "resync from source"))
            steer.store_resync(
                conn,
                source=source,
                item_key=item_key,
                dedup_key=f"resync:{marker}:{read.dedup_key}"[:255],
                event_name=event.event_name.replace("backfill.", "resync."),
                event=event,
                payload=json.dumps(read.payload, sort_keys=True, default=str).encode(),
                now=now,
            )
            counters.delivery_stored(conn, source, event.event_name.replace("backfill.", "resync."))
            stored += 1
            comments += 1 if event.comment is not None else 0
        links.clear_applied(conn, source, item_key)
        journal.retry_failed(conn, now, kinds=journal.SIDE_KINDS, source=source, item_key=item_key)
        steer.record(
            conn, source, item_key, "resync", f"fetched from {source}: its state and {comments} comment(s)", actor
        )
    return Fetched(source, item_key, stored, comments)
