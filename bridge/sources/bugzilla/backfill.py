"""Backfill reader for Bugzilla: a product's bugs (optionally one component) and their comments.

Search: `GET /rest/bug?product=…&component=…&last_change_time=…&limit&offset` (003:1498-1631, documented
parameters only), paged by offset until an empty page (an installation's maximum replaces `limit`, so a
short page is not the last), each page ordered here and each bug read once (the order is not documented).
Comments: `GET /rest/bug/{id}/comment`, one call per bug (comment 0 is the description).

The events and their dedup keys are the poller's (`bridge.sources.bugzilla.poller`: `poll:<id>:<time>:<hash>` and
`poll-comment:<comment id>`), so a bug both polled and backfilled is stored once. Private comments are not
copied, as with webhooks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine

from bridge.backfill.runner import BackfillError, Batch, Item, ReadEvent
from bridge.events import Comment, NormalizedEvent, parse_timestamp
from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.bugzilla.api import BugzillaClient, BugzillaError, change_ts, description_of, fields_of
from bridge.sources.bugzilla.poller import rest_time
from bridge.sources.bugzilla.webhook import NAME
from bridge.sources.spec import SourceReadError

EPOCH = "1970-01-01T00:00:00Z"
PAGE_SIZE = 100
NOTE = "backfilled from Bugzilla"


class BugzillaReader:
    source = NAME

    def __init__(
        self,
        client: BugzillaClient,
        settings: Settings,
        product: str,
        *,
        component: str | None = None,
        since: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.client, self.settings = client, settings
        self.product, self.component, self.since = product, component, since
        self.page_size = page_size
        self.calls = 0
        self._ids: set[int] = set()  # bugs read by this run

    @property
    def source_calls(self) -> int:
        return self.calls

    def scope(self) -> dict[str, Any]:
        return {"product": self.product, "component": self.component, "since": self.since}

    def batches(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Pages of `limit` bugs by offset, from the backfill's start time, until an empty page: an
        installation's maximum replaces `limit` (003:1563-1567), so a short page is not the last one. The
        search's order is not documented: each page is ordered here, and a bug seen on an earlier page is
        not read again (a page with nothing new ends it: a server that ignores `offset`)."""
        cursor = dict(cursor or {"time": self.since or EPOCH, "offset": 0, "seen": 0})
        if "offset" not in cursor:  # a cursor written before offsets (keyset by time): read from its time again
            cursor = {"time": cursor.get("time") or self.since or EPOCH, "offset": 0, "seen": cursor.get("seen", 0)}
        while True:
            self.calls += 1
            page = self.client.search(
                last_change_time=cursor["time"],
                product=self.product,
                component=self.component,
                limit=self.page_size,
                offset=cursor["offset"],
            )
            if not page:
                if not cursor["seen"] and not self.since:
                    where = f"product {self.product!r}" + (f", component {self.component!r}" if self.component else "")
                    raise BackfillError(f"Bugzilla has no bugs in {where}: is the name right (it must match exactly)?")
                return
            fresh = [b for b in page if int(b["id"]) not in self._ids]
            fresh.sort(key=lambda b: (change_ts(b), int(b["id"])))
            self._ids.update(int(b["id"]) for b in fresh)
            cursor["offset"] += len(page)
            cursor["seen"] += len(fresh)
            yield Batch([self._item(bug) for bug in fresh], dict(cursor), len(fresh))
            if not fresh:
                return

    def _item(self, bug: dict[str, Any]) -> Item:
        bug_id = int(bug["id"])
        ts = change_ts(bug)
        self.calls += 1
        comments = self.client.comments(bug_id)
        fields = fields_of(bug, self.settings.bugzilla_url, description_of(comments))
        state = {k: v for k, v in fields.items() if k != "description"}  # the poller's key leaves it out
        digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]
        event = NormalizedEvent(
            source=NAME,
            item_kind="bug",
            item_key=str(bug_id),
            action="updated",  # the sync creates the Zoho issue when the bug has no link yet
            event_name="backfill.bug",
            source_ts=ts,
            fields=fields,
            source_project=str(fields.get("product") or ""),
            notes=(NOTE,),
        )
        events = [ReadEvent(event, f"poll:{bug_id}:{rest_time(ts)}:{digest}", bug)]
        url = fields.get("bug_url") or ""
        for raw in comments:
            number = raw.get("count", raw.get("number"))
            if number == 0 or raw.get("is_private") or raw.get("id") is None:
                continue
            created = raw.get("creation_time") or raw.get("time")
            created_at = parse_timestamp(created, field_name="comment.creation_time") if created else ts
            comment = Comment(
                id=str(raw["id"]),
                body=str(raw.get("text") or ""),
                author=str(raw.get("creator") or ""),
                url=f"{url}#c{number}" if url and number is not None else url,
                created_at=created_at,
            )
            comment_event = NormalizedEvent(
                source=NAME,
                item_kind="bug",
                item_key=str(bug_id),
                action="comment_created",
                event_name="backfill.comment",
                source_ts=min(created_at, ts),
                fields=state,
                comment=comment,
                source_project=event.source_project,
                notes=(NOTE,),
            )
            events.append(ReadEvent(comment_event, f"poll-comment:{raw['id']}", raw))
        return Item(str(bug_id), events)


def read_item(
    settings: Settings, engine: Engine, budgets: Budgets, item_key: str, fields: dict[str, Any], hold: float
) -> list[ReadEvent]:
    """One bug now, its state and its comments (`issue-bridge resync`)."""
    if not (settings.bugzilla_url and settings.bugzilla_api_key):
        raise SourceReadError("BUGZILLA_URL and BUGZILLA_API_KEY must both be set to read the bug from Bugzilla")
    try:
        client = BugzillaClient(settings.bugzilla_url, settings.bugzilla_api_key, budgets=budgets, hold=hold)
        bug = client.bug(item_key)
        return list(BugzillaReader(client, settings, str(bug.get("product") or ""))._item(bug).events)
    except BugzillaError as exc:
        raise SourceReadError(str(exc)) from None
