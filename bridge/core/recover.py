"""Never a second issue after a restore: find the bridge's own Zoho issues by their marker and relink them.

A database restored from a backup (or a second deployment pointed at the same project) does not know the issues the
bridge made after the backup: their items' next events would create them again. `issue-bridge links recover --since
TIME` lists each routed project's issues created since TIME (the documented list, sorted by `created_time`, newest
first, down to TIME), reads the description of each issue it does not know yet (one call each: the list carries no
description), and takes the marker line `[issue-bridge:<external id>]` (or the external id custom field, where the
list shows it):

- an item whose link lacks its issue (a create planned or in doubt, a link forgotten) is relinked at once, its create
  confirmed with that issue;
- an item the database does not know yet (its events were lost with the restore) is remembered (`zoho_found`): its
  first create finds the issue by a database lookup and adopts it, without a Zoho call;
- an item linked to another issue already has two: reported, never changed.

Comments are not listed (that would be a call per issue of the project): the window [TIME, now] is remembered, and
a source comment from that window that the database has no link for is looked for on its issue by its marker
before it is posted (`comment_window`, used by bridge/core/apply.py). A delivery redelivered after the restore
(the sender's "Redeliver" button, a backfill, a resync) finds its comment instead of posting it twice.

`db upgrade` runs it by itself when it finds a restore: the sweeper writes the database's heartbeat every ten
seconds, so a database whose last heartbeat is older than RESTORE_GAP_SECONDS was restored (or stopped that long);
it recovers from that heartbeat, less a margin. A stop costs one list call per project (nothing unknown is found).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from bridge import store
from bridge.mapping import MappingRegistry
from bridge.store import calllog, found, journal, links, steer
from bridge.store.clock import db_now
from bridge.store.found import Found
from bridge.targets.zoho.dialects import parse_time
from bridge.targets.zoho.errors import ZohoRateLimited, ZohoTransientError

log = logging.getLogger("bridge.recover")
MARKER = re.compile(r"^\[issue-bridge:(?P<id>.+)\]$")
URLS = re.compile(r"https?://[^\s<>\"'`)\]]+")
RESTORE_GAP_SECONDS = 900.0  # a heartbeat older than this when `db upgrade` runs: a restore (or a long stop)
COMMENT_WINDOW_KEY = "recover.comment_window"  # kv: {"since", "until"} (database time) of comments maybe unknown
WINDOW_CACHE_SECONDS = 30.0  # a worker reads the window this often (it changes when `links recover` runs)
RESTORE_MARGIN_SECONDS = 3600.0  # recover from this long before the last heartbeat
CLOCK_SLACK = 600.0  # Zoho's clock against the database's
PATIENCE_SECONDS = 3600.0  # how long a command waits for Zoho's budget in all
T = TypeVar("T")


@dataclass
class Recovered:
    since: float
    projects: list[tuple[str, str]] = field(default_factory=list)
    listed: int = 0  # issues listed
    read: int = 0  # descriptions read (issues not known yet)
    marked: int = 0  # issues carrying a marker
    known: int = 0  # already linked to their item
    relinked: list[tuple[str, str, str]] = field(default_factory=list)  # (source, item key, issue id)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (external id, issue id): no item stored yet
    conflicts: list[str] = field(default_factory=list)


def patiently(call: Callable[[], T], *, say: Callable[[str], None] | None = None) -> T:
    """A Zoho call from a command: a budget wait or a throttle is waited out (up to PATIENCE_SECONDS in all), an
    outage retried a few times."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    transient = 0
    while True:
        try:
            return call()
        except ZohoRateLimited as exc:
            wait = max(1.0, exc.retry_after or 1.0)
            if time.monotonic() + wait > deadline:
                raise
            if say is not None and wait >= 5:
                say(f"waiting {wait:.0f}s for Zoho's budget")
            time.sleep(min(wait, 60.0))
        except ZohoTransientError:
            transient += 1
            if transient > 4:
                raise
            time.sleep(2.0**transient)


def routed_projects(engine: Engine, registry: MappingRegistry) -> list[tuple[str, str]]:
    """Every (portal, project) a mapping routes to or a link is in."""
    projects: set[tuple[str, str]] = set()
    for mapping in registry.all():
        routing = mapping.routing
        for project in [routing.default_project, *dict(routing.by_source_project).values()]:
            if project:
                projects.add((routing.portal, project))
    with engine.connect() as conn:
        rows = links.projects(conn)
    projects |= {(str(portal), str(project)) for portal, project in rows if portal and project}
    return sorted(projects)


def external_id_fields(registry: MappingRegistry) -> set[str]:
    return {m.external_id_field for m in registry.all() if m.external_id_field}


def issues_since(client: Any, portal: str, project: str, since: float | None) -> Iterator[dict[str, Any]]:
    """The project's issues, newest first, down to `since` (None: every one), through the documented list."""
    path = client.d.issues_path(portal, project)
    if client.dialect == "projects":
        pages = client.pages(path, "issues", params={"sort_by": "DESC(created_time)"})
    else:  # BugTracker: its full-text search for the marker (seed 000:563-583); every bug when indexing
        pages = client.pages(path, "bugs") if since is None else client.pages(
            f"{path}/search", "bugs", params={"search_text": "issue-bridge:"}
        )  # fmt: skip
    while True:
        try:
            issue = patiently(lambda: next(pages))
        except StopIteration:
            return
        created = parse_time(issue.get("created_time"))
        if since is not None and created is not None and created < since - CLOCK_SLACK:
            if client.dialect == "projects":
                return  # sorted newest first: the rest is older
            continue
        yield issue


def read_issue(
    client: Any, portal: str, project: str, issue: dict[str, Any], id_fields: set[str], via: str
) -> tuple[Found, bool]:
    """What an issue says about its item: the external id (its custom field where the list shows it, else the marker
    line of its description) and the URLs its description names. (found, whether a description was read)."""
    issue_id = str(issue["id"])
    external_id = next((str(issue[f]) for f in sorted(id_fields) if issue.get(f)), None)
    description = issue.get("description")
    fetched = False
    if not isinstance(description, str):
        description = ""
        if external_id is None and client.dialect == "projects":  # the list carries none (seed 001:3555)
            path = f"{client.d.issues_path(portal, project)}/{issue_id}/description"
            answer = patiently(lambda: client.call("GET", path))
            description = str((answer.data or {}).get("description") or "") if isinstance(answer.data, dict) else ""
            fetched = True
    markers = [m["id"] for line in description.splitlines() if (m := MARKER.match(line.strip()))]
    if external_id is None and markers:
        external_id = markers[-1]
    urls = tuple(dict.fromkeys(u.rstrip(".,;:") for u in URLS.findall(description)))
    found_issue = Found(
        portal=portal,
        project=project,
        issue_id=issue_id,
        issue_key=str(issue.get("prefix") or issue.get("key") or issue.get("bug_prefix") or "") or None,
        title=str(issue.get("name") or issue.get("title") or "") or None,
        created_at=parse_time(issue.get("created_time")),
        external_id=external_id,
        urls=urls,
        via=via,
    )
    return found_issue, fetched


def recover(
    engine: Engine,
    registry: MappingRegistry,
    client: Any,
    since: float,
    *,
    actor: str = "cli",
    say: Callable[[str], None] | None = None,
) -> Recovered:
    report = Recovered(since=since, projects=routed_projects(engine, registry))
    id_fields = external_id_fields(registry)
    for portal, project in report.projects:
        if say is not None:
            say(f"reading project {project} (portal {portal}): issues created since {_t(since)}")
        listed = list(issues_since(client, portal, project, since))
        report.listed += len(listed)
        with engine.connect() as conn:
            known = found.known_ids(conn, portal, [str(i["id"]) for i in listed])
        for issue in listed:
            if str(issue["id"]) in known and not _unlinked(engine, portal, str(issue["id"])):
                report.known += 1
                continue
            seen, fetched = read_issue(client, portal, project, issue, id_fields, via="recover")
            report.read += int(fetched)
            if seen.external_id is None:
                continue
            report.marked += 1
            _settle(engine, seen, report, actor)
    with engine.begin() as conn:  # recovered: the heartbeat is fresh again, so `db upgrade` does not repeat it
        calllog.touch_heartbeat(conn)
        now = db_now(conn)
    _widen_comment_window(engine, since, now)
    return report


def _widen_comment_window(engine: Engine, since: float, until: float) -> None:
    old = _read_window(engine)
    lo, hi = (min(since, old[0]), max(until, old[1])) if old else (since, until)
    store.kv_set(engine, COMMENT_WINDOW_KEY, json.dumps({"since": lo, "until": hi}))
    _window_cache.pop(id(engine), None)


def _read_window(engine: Engine) -> tuple[float, float] | None:
    raw = store.kv_get(engine, COMMENT_WINDOW_KEY)
    try:
        data = json.loads(raw) if raw else None
        return (float(data["since"]), float(data["until"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


_window_cache: dict[int, tuple[float, tuple[float, float] | None]] = {}


def maybe_posted_before_restore(engine: Engine, comment_ts: float) -> bool:
    """Whether a source comment of this time may have been copied to Zoho by a database that was since restored
    from a backup (its link lost): then it is looked for by its marker before it is posted. Read from the
    database at most every WINDOW_CACHE_SECONDS per process (monotonic clock: a process-local cache)."""
    cached = _window_cache.get(id(engine))
    if cached is None or time.monotonic() - cached[0] > WINDOW_CACHE_SECONDS:
        cached = (time.monotonic(), _read_window(engine))
        _window_cache[id(engine)] = cached
    window = cached[1]
    return window is not None and window[0] - CLOCK_SLACK <= comment_ts <= window[1] + CLOCK_SLACK


def _unlinked(engine: Engine, portal: str, issue_id: str) -> bool:
    """An issue known only from an earlier read (not linked): looked at again (its item may be known now)."""
    with engine.connect() as conn:
        return not links.issue_linked(conn, portal, issue_id)


def _settle(engine: Engine, seen: Found, report: Recovered, actor: str) -> None:
    with engine.begin() as conn:
        found.save(conn, seen)
        rows = links.refs_by_external_id(conn, str(seen.external_id))
        if not rows:
            report.waiting.append((str(seen.external_id), seen.issue_id))
            return
        if len(rows) > 1:
            report.conflicts.append(f"external id {seen.external_id} names {len(rows)} items: not relinked")
            return
        link = rows[0]
        if link.zoho_issue_id == seen.issue_id:
            report.known += 1
            return
        if link.zoho_issue_id and link.state in ("linked", "deleted"):
            report.conflicts.append(
                f"{link.source} {link.item_key} is linked to Zoho issue {link.zoho_issue_id}, and issue {seen.issue_id}"
                f" carries its marker too: a second issue made earlier (delete one by hand, or keep both)"
            )
            return
        now = db_now(conn)
        links.relink(conn, link.id, seen.issue_id, seen.portal, seen.project, now)
        journal.save(
            conn,
            journal.Operation(link.source, link.item_key, "zoho.create", "", journal.CONFIRMED,
                              payload={"recovered": actor}, result=seen.issue_id, planned_at=now, sent_at=now,
                              done_at=now),
        )  # fmt: skip
        steer.record(
            conn, link.source, link.item_key, "recover", f"relinked to Zoho issue {seen.issue_id} by its marker", actor
        )
        report.relinked.append((link.source, link.item_key, seen.issue_id))


# -- a restore, as `db upgrade` tells it ------------------------------------------------------------------------


def restore_suspected(engine: Engine) -> tuple[float, float] | None:
    """(the last heartbeat, the database's time now) when the heartbeat is older than RESTORE_GAP_SECONDS and the
    bridge has made issues (links); None otherwise (a new database, or one that was alive a moment ago)."""
    with engine.connect() as conn:
        beat = calllog.last_heartbeat(conn)
        now = db_now(conn)
        linked = links.any_issue_linked(conn)
    if beat is None or not linked or now - beat <= RESTORE_GAP_SECONDS:
        return None
    return beat, now


def _t(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
