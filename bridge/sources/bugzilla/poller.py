"""Polling Bugzilla for changes, for installations without webhooks (upstream Bugzilla 5.x has none).

Per configured product, a durable high-water mark in `kv` (`bugzilla.poll.<product>`: the newest
`last_change_time` seen and the ids of the bugs changed at exactly that second). A poll searches
`GET /rest/bug?last_change_time=<mark>&product=…` ("at or after": polls overlap) with only the documented
parameters (`search_all`: paged by offset until an empty page, since an installation's maximum replaces
`limit`; deduplicated by id and ordered here, since the order is not documented), and stores each bug as an
`updated` event and each new comment as `comment_created`, through `store.record_delivery` like a webhook.
A poll that needed several pages moves its mark only as far as no page boundary can have hidden a bug.
The mark advances only after every page was stored, so a
crash or an error mid-poll repeats work: the dedup keys absorb it (`poll:<id>:<time>:<hash of the fields>`
and `poll-comment:<comment id>`). A restart reads the mark back: nothing skipped, nothing stored twice.

Bugzilla times have one-second precision, so the bugs at the mark's second are looked at again on the next
poll (their comments too): a change in the same second as the last poll is still found, and an unchanged
bug is a duplicate at the store. Private comments are not copied (a webhook does not carry them either).

The worker wake-up is the caller's business: `poll_bugzilla` returns the items that got new events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from bridge import store
from bridge.events import Comment, NormalizedEvent, parse_timestamp
from bridge.outbound.budget import shared_budgets
from bridge.settings import Settings
from bridge.sources.bugzilla import webhook as bugzilla
from bridge.sources.bugzilla.api import BugzillaClient, change_ts, client_from_settings, description_of, fields_of
from bridge.sources.http import HOLD_POLL

log = logging.getLogger("bridge.polling")
MARK_KEY = "bugzilla.poll.{product}"
LEASE = "poll:bugzilla"
MAX_PAGES = 1000  # a guard against a runaway search; the rest waits for the next poll
FIRST_POLL_LOOKBACK = 300.0  # without a mark, start this far back (clock skew between us and Bugzilla)


@dataclass(frozen=True)
class PollConfig:
    products: tuple[str, ...]  # BUGZILLA_POLL_PRODUCTS
    interval: float = 60.0  # BUGZILLA_POLL_SECONDS: the beat schedule's period
    page_size: int = 100  # the search `limit`; Bugzilla may cap it lower, which is fine
    start: datetime | None = None  # the first poll's mark when none is stored (default: now - lookback)


@dataclass(frozen=True)
class Mark:
    time: datetime
    ids: tuple[int, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"last_change_time": rest_time(self.time), "ids": sorted(self.ids)})

    @classmethod
    def from_json(cls, text: str) -> Mark:
        data = json.loads(text)
        ts = parse_timestamp(data["last_change_time"], field_name="poll mark")
        return cls(ts, tuple(int(i) for i in data.get("ids") or ()))


def rest_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_mark(engine: Engine, product: str) -> Mark | None:
    raw = store.kv_get(engine, MARK_KEY.format(product=product))
    return Mark.from_json(raw) if raw else None


def poll(engine: Engine, settings: Settings) -> set[tuple[str, str]]:
    """The beat job's poll (`SourceSpec.poll`): every product of BUGZILLA_POLL_PRODUCTS."""
    return poll_bugzilla(engine, settings, config_from_settings(settings))


def poll_bugzilla(
    engine: Engine, settings: Settings, config: PollConfig, client: BugzillaClient | None = None
) -> set[tuple[str, str]]:
    """One poll of every configured product. Returns the (source, item_key) pairs that got new events.

    Raises `SourceUnavailable` when Bugzilla cannot be asked now (the marks stay where they were).
    """
    hold = min(HOLD_POLL, config.interval / 2)  # a wait longer than half the period is the next tick's
    client = client or client_from_settings(settings, shared_budgets(engine), hold=hold)
    if client is None or not config.products:
        return set()
    holder = f"{socket.gethostname()}:{os.getpid()}"
    ttl = max(120.0, 2 * config.interval)
    if not store.acquire_lease(engine, LEASE, holder, ttl):
        log.info("another poll of Bugzilla is running: skipped")
        return set()
    try:
        fed: set[tuple[str, str]] = set()
        for product in config.products:
            fed |= poll_product(engine, settings, client, product, config)
        return fed
    finally:
        store.release_lease(engine, LEASE, holder)


def poll_product(
    engine: Engine, settings: Settings, client: BugzillaClient, product: str, config: PollConfig
) -> set[tuple[str, str]]:
    mark = load_mark(engine, product)
    if mark is None:
        start = config.start or datetime.now(UTC) - timedelta(seconds=max(FIRST_POLL_LOOKBACK, config.interval))
        mark = Mark(start.replace(microsecond=0))
    comments_since = rest_time(mark.time - timedelta(seconds=1))  # `new_since` is strictly after
    fed: set[tuple[str, str]] = set()
    stored = 0
    pages = search_all(client, since=rest_time(mark.time), product=product, page_size=config.page_size)
    bugs = [b for b in pages.bugs if b[1] >= mark.time]
    for bug, ts in bugs:  # oldest change first, ordered here (the search's order is not documented)
        stored += _feed_bug(engine, settings, client, bug, ts, comments_since, fed)
    high, high_ids = mark.time, set(mark.ids)
    for bug, ts in bugs:
        if ts > high:
            high, high_ids = ts, {int(bug["id"])}
        elif ts == high:
            high_ids.add(int(bug["id"]))
    if pages.count > 1 and pages.page_maxima and min(pages.page_maxima) < high:
        # Offsets over a result that re-orders while it is read (a bug changed meanwhile moves to the end)
        # can skip a bug at a page boundary; it is no newer than the newest change of the page before it.
        # The mark stops there: the next poll reads the rest again (the store's dedup keys absorb it).
        high = min(pages.page_maxima)
        high_ids = {int(b["id"]) for b, ts in bugs if ts == high}
    new_mark = Mark(high, tuple(high_ids))
    if new_mark != mark:
        store.kv_set(engine, MARK_KEY.format(product=product), new_mark.to_json())
    log.info(
        "polled Bugzilla",
        extra={"product": product, "stored": stored, "items": len(fed), "mark": rest_time(high)},
    )
    return fed


@dataclass
class SearchPages:
    bugs: list[tuple[dict[str, Any], datetime]]  # each bug once (its newest change seen), oldest change first
    count: int = 0  # non-empty pages read
    page_maxima: list[datetime] = field(default_factory=list)  # each page's newest change
    complete: bool = True  # False when MAX_PAGES stopped it


def search_all(
    client: BugzillaClient,
    *,
    since: str,
    product: str,
    component: str | None = None,
    page_size: int = 100,
    offset: int = 0,
    max_pages: int = MAX_PAGES,
) -> SearchPages:
    """Every bug changed at `since` or later, as seed 003 documents the search: `limit` may be replaced by the
    installation's maximum (003:1563-1567), so a page shorter than `limit` is not the last one; paged by
    `offset` until an empty page (or a page with nothing new: a server that ignores `offset`); the order of
    the results is not documented, so bugs are deduplicated by id and ordered here by (change, id)."""
    seen: dict[int, tuple[dict[str, Any], datetime]] = {}
    result = SearchPages([])
    while result.count < max_pages:
        page = client.search(
            last_change_time=since, product=product, component=component, limit=page_size, offset=offset
        )
        if not page:
            break
        result.count += 1
        times = [change_ts(b) for b in page]
        result.page_maxima.append(max(times))
        new = 0
        for bug, ts in zip(page, times, strict=True):
            bug_id = int(bug["id"])
            if bug_id not in seen:
                new += 1
            if bug_id not in seen or ts > seen[bug_id][1]:
                seen[bug_id] = (bug, ts)
        if not new:
            break
        offset += len(page)
    else:
        result.complete = False
        log.warning("Bugzilla search stopped after %d pages; the rest comes next time", max_pages)
    result.bugs = sorted(seen.values(), key=lambda pair: (pair[1], int(pair[0]["id"])))
    return result


def _feed_bug(
    engine: Engine,
    settings: Settings,
    client: BugzillaClient,
    bug: dict[str, Any],
    ts: datetime,
    comments_since: str,
    fed: set[tuple[str, str]],
) -> int:
    """Store the bug's state and its new comments; returns how many new events were stored."""
    bug_id = int(bug["id"])
    comments = client.comments(bug_id, new_since=comments_since)
    fields = fields_of(bug, settings.bugzilla_url, description_of(comments))
    # The description is left out of the key: whether comment 0 is among the new comments depends on the mark.
    state = {k: v for k, v in fields.items() if k != "description"}
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]
    event = NormalizedEvent(
        source=bugzilla.NAME,
        item_kind="bug",
        item_key=str(bug_id),
        action="updated",  # the sync creates the Zoho issue when the bug has no link yet
        event_name="poll.bug",
        source_ts=ts,
        fields=fields,
        source_project=str(fields.get("product") or ""),
        notes=("polled from Bugzilla",),
    )
    stored = _record(engine, event, f"poll:{bug_id}:{rest_time(ts)}:{digest}", bug, fed)
    for raw in comments:
        number = raw.get("count", raw.get("number"))
        if number == 0 or raw.get("is_private") or raw.get("id") is None:
            continue
        created = raw.get("creation_time") or raw.get("time")
        created_at = parse_timestamp(created, field_name="comment.creation_time") if created else ts
        url = fields.get("bug_url") or ""
        comment = Comment(
            id=str(raw["id"]),
            body=str(raw.get("text") or ""),
            author=str(raw.get("creator") or ""),
            url=f"{url}#c{number}" if url and number is not None else url,
            created_at=created_at,
        )
        comment_event = NormalizedEvent(
            source=bugzilla.NAME,
            item_kind="bug",
            item_key=str(bug_id),
            action="comment_created",
            event_name="poll.comment",
            source_ts=min(created_at, ts),
            fields=state,
            comment=comment,
            source_project=event.source_project,
            notes=("polled from Bugzilla",),
        )
        stored += _record(engine, comment_event, f"poll-comment:{raw['id']}", raw, fed)
    return stored


def _record(engine: Engine, event: NormalizedEvent, dedup_key: str, raw: Any, fed: set[tuple[str, str]]) -> int:
    body = json.dumps(raw, sort_keys=True, default=str).encode()
    _, new = store.record_delivery(engine, event, dedup_key=dedup_key[:255], headers={}, payload=body)
    if new:
        fed.add((event.source, event.item_key))
    return int(new)


def config_from_settings(settings: Settings) -> PollConfig:
    """The poll configuration from BUGZILLA_POLL_PRODUCTS (comma list) and BUGZILLA_POLL_SECONDS (default 60).

    No products means no polling.
    """
    raw = settings.bugzilla_poll_products
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    products = tuple(dict.fromkeys(p.strip() for p in items if p and p.strip()))
    interval = settings.bugzilla_poll_seconds
    return PollConfig(products=products, interval=interval)
