"""Reading what changed in Zoho (the reverse poll's list calls), per dialect; the decisions stay in
`bridge/core/zoho_poll.py`.

- Projects v3: `GET …/issues?page&per_page&sort_by=DESC(last_modified_time)` (seed 001:3467-3555), newest first,
  paged until a page shorter than `per_page`, an empty page (204), or the first issue older than the mark. The
  documented list carries no `has_next_page` (its `page_info` is `per_page`, `page`, `sort_by`: 001:3554), so
  paging never depends on it.
- BugTracker: the bug list (000:147, 1267-1298) documents paging by `index`/`range` and no sort or modified-time
  filter, so a poll reads every bug of the project: a 400-bug project costs 5 calls a poll, 7,200 a day at one
  poll a minute, more than the Free plan's 5,000 (000:761-765). The poll is therefore paced: every linked
  project is polled once per interval, the interval chosen so that the polls of all of them spend at most
  `ZOHO_POLL_SHARE` (default 20%) of the plan's daily quota, and never more often than `ZOHO_POLL_SECONDS`.
  The pace is kept in the database (kv `zoho.poll.bugtracker`: each project's pages and next poll, database
  time) and shown by `issue-bridge status`.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from bridge import store
from bridge.settings import Settings
from bridge.store.clock import engine_now
from bridge.targets.zoho.dialects import BT_RANGE, PER_PAGE, parse_time

if TYPE_CHECKING:
    from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge.reverse")
MAX_PAGES = 50  # 5,000 changed issues in one interval; beyond that the oldest are skipped (logged)
PACE_KEY = "zoho.poll.bugtracker"
DAY = 86400.0


def modified_ts(issue: dict[str, Any]) -> float:
    """Projects v3 names it `last_updated_time` (seed 001:3554); BugTracker `modified_time` (seed 000:135)."""
    return parse_time(issue.get("last_updated_time") or issue.get("modified_time")) or 0.0


def changed_issues(client: ZohoClient, portal: str, project: str, since: float) -> list[dict[str, Any]]:
    """Issues modified at or after `since`, oldest first ([] when a BugTracker project is not due yet)."""
    if client.dialect == "bugtracker":
        return _bugtracker_changes(client, portal, project, since)
    return sorted(_newest_first(client, portal, project, since), key=modified_ts)


def _newest_first(client: ZohoClient, portal: str, project: str, since: float) -> list[dict[str, Any]]:
    path = client.d.issues_path(portal, project)
    found: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"page": str(page), "per_page": str(PER_PAGE), "sort_by": "DESC(last_modified_time)"}
        resp = client.call("GET", path, params=params)
        issues = (resp.data or {}).get("issues", []) if isinstance(resp.data, dict) else []  # 204: none
        issues = [i for i in issues if isinstance(i, dict)]
        for issue in issues:
            if modified_ts(issue) < since:
                return found  # the mark: everything after it is older
            found.append(issue)
        if resp.status == 204 or len(issues) < PER_PAGE:
            return found  # a short or empty page is the last one
    log.warning(
        "more than %s issues changed in project %s since the last poll: the oldest are skipped", len(found), project
    )
    return found


def _pace(engine: Engine) -> dict[str, dict[str, float]]:
    raw = store.kv_get(engine, PACE_KEY)
    try:
        pace = json.loads(raw) if raw else {}
    except ValueError:
        pace = {}
    return pace if isinstance(pace, dict) else {}


def interval(settings: Settings, total_pages: int) -> float:
    """Seconds between two polls of each project: the polls of all linked projects (`total_pages` calls)
    spend at most ZOHO_POLL_SHARE of the plan's daily quota, and no poll comes sooner than ZOHO_POLL_SECONDS."""
    allowed = settings.zoho_poll_share * settings.zoho_daily_limit
    paced = total_pages * DAY / allowed if allowed > 0 else 0.0
    return max(settings.zoho_poll_seconds, paced)


def _bugtracker_changes(client: ZohoClient, portal: str, project: str, since: float) -> list[dict[str, Any]]:
    key = f"{portal}/{project}"
    now = engine_now(client.engine)
    pace = _pace(client.engine)
    mine = pace.get(key) if isinstance(pace.get(key), dict) else None
    if mine is not None and now < float(mine.get("next_at", 0.0)):
        return []  # not due: the project's share of the daily quota is spent for this interval
    bugs: list[dict[str, Any]] = []
    pages, index = 0, 1
    while True:  # every page (no documented sort): "if len(bugs) < range_size: break" (000:1287-1293)
        resp = client.call(
            "GET", client.d.issues_path(portal, project), params={"index": str(index), "range": str(BT_RANGE)}
        )
        pages += 1
        page = (resp.data or {}).get("bugs", []) if isinstance(resp.data, dict) else []
        page = [b for b in page if isinstance(b, dict)]
        bugs.extend(page)
        if resp.status == 204 or len(page) < BT_RANGE:
            break
        index += BT_RANGE
    pace = _pace(client.engine)  # (read again: another project's poll may have written meanwhile)
    pace[key] = {"pages": pages, "bugs": len(bugs), "next_at": 0.0}
    total = sum(int(v.get("pages", 1)) for v in pace.values() if isinstance(v, dict))
    every = interval(client.settings, total)
    pace[key]["next_at"] = now + every
    pace[key]["every"] = every
    store.kv_set(client.engine, PACE_KEY, json.dumps(pace, sort_keys=True))
    found = [b for b in bugs if modified_ts(b) >= since]
    return sorted(found, key=modified_ts)


def status_lines(settings: Settings, engine: Engine) -> list[str]:
    """What `issue-bridge status` says about the BugTracker poll's pace."""
    if settings.zoho_dialect != "bugtracker":
        return []
    pace = {k: v for k, v in _pace(engine).items() if isinstance(v, dict)}
    share, daily = settings.zoho_poll_share, settings.zoho_daily_limit
    if not pace:
        return [f"bugtracker reverse poll: no linked project polled yet (at most {share:.0%} of {daily:,} calls a day)"]
    total = sum(int(v.get("pages", 1)) for v in pace.values())
    bugs = sum(int(v.get("bugs", 0)) for v in pace.values())
    every = interval(settings, total)
    per_day = total * DAY / every
    return [
        f"bugtracker reverse poll: {bugs} bugs in {len(pace)} project(s), {total} calls a poll: every "
        f"{math.ceil(every)} s, about {per_day:,.0f} calls a day, within {share:.0%} of the {settings.zoho_plan} "
        f"plan's {daily:,} calls a day (ZOHO_POLL_SHARE; ZOHO_POLL_SECONDS {settings.zoho_poll_seconds:g})"
    ]
