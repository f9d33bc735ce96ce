"""The reads behind an item's story (`issue-bridge explain`, `/admin/items/<source>/<item key>`): every fact the bridge
stores about one item, read on one connection, bounded by the newest `limit` events; and finding the item an
operator names (item key, external id, source URL, Zoho issue id or key).

Each query walks an index by (source, item key) or by event id, so a page costs what the item's own history costs,
never the table's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from bridge.store import CommentLink, Link, StoredEvent, _link, budgets, calllog, journal, steer
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.store.journal import Operation

SOURCES = ("github", "bugzilla", "bugherd")
# The field of each source's item that holds its page (what "the source URL" names).
URL_FIELDS = {"github": "html_url", "bugzilla": "bug_url", "bugherd": "admin_link"}
_GITHUB_URL = re.compile(r"^https?://[^/]+/(?P<repo>[^/]+/[^/]+)/issues/(?P<number>\d+)/?(?:[#?].*)?$")
_BUGZILLA_URL = re.compile(r"^https?://.+/show_bug\.cgi\?(?:.*&)?id=(?P<id>\d+)(?:[&#].*)?$")
_EVENT_COLUMNS = [c for c in db.events.c if c.name != "payload"]


@dataclass
class Facts:
    """Everything stored about one item (the newest `limit` events and what belongs to them)."""

    source: str
    item_key: str
    now: float
    link: Link | None
    link_created_at: float | None
    events: list[StoredEvent]
    events_total: int
    origins: dict[int, str]  # event id -> origin ("live", "backfill:3", "resync", "zoho")
    senders: dict[int, str]  # event id -> the sender's User-Agent, as intake kept it
    processed: dict[int, float]  # event id -> when it ended
    attempts: list[dict[str, Any]]
    zoho_calls: list[dict[str, Any]]
    source_calls: list[calllog.SourceCall]
    repeats: list[calllog.Repeat]
    operations: list[Operation]
    comment_links: dict[str, CommentLink]
    actions: list[steer.Action]
    held: steer.Held | None
    pauses: list[steer.Pause]
    lease: dict[str, Any] | None
    budgets: list[budgets.State] = field(default_factory=list)


def facts(conn: Connection, source: str, item_key: str, *, limit: int | None = 300) -> Facts:
    e = db.events
    now = db_now(conn)
    link_row = conn.execute(
        select(db.links).where(db.links.c.source == source, db.links.c.item_key == item_key).order_by(db.links.c.id)
    ).first()
    link = _link(link_row) if link_row is not None else None
    total = int(conn.execute(select(func.count()).where(e.c.source == source, e.c.item_key == item_key)).scalar() or 0)
    query = select(*_EVENT_COLUMNS).where(e.c.source == source, e.c.item_key == item_key).order_by(e.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = list(reversed(conn.execute(query).all()))
    events = [StoredEvent.from_row(r, strict=False) for r in rows]
    ids = [int(r.id) for r in rows]
    origins = {int(r.id): str(r.origin or "live") for r in rows}
    processed = {int(r.id): float(r.processed_at) for r in rows if r.processed_at}
    senders = {}
    for r in rows:
        try:
            headers = json.loads(r.headers or "{}")
        except ValueError:
            headers = {}
        agent = headers.get("User-Agent") or headers.get("X-Bridge-Origin") or headers.get("X-Issue-Bridge")
        if agent:
            senders[int(r.id)] = str(agent)[:120]
    attempts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    if ids:
        low = min(ids)
        owned = select(e.c.id).where(e.c.source == source, e.c.item_key == item_key, e.c.id >= low)
        attempts = [
            dict(r._mapping)
            for r in conn.execute(
                select(db.attempts).where(db.attempts.c.event_id.in_(owned)).order_by(db.attempts.c.id)
            ).all()
        ]
        calls = [
            dict(r._mapping)
            for r in conn.execute(
                select(db.zoho_calls).where(db.zoho_calls.c.event_id.in_(owned)).order_by(db.zoho_calls.c.id)
            ).all()
        ]
    comment_rows = {}
    if link is not None:
        from bridge.store.links import comment_links

        comment_rows = comment_links(conn, source, link.external_id)
    lease_row = conn.execute(
        select(db.leases).where(db.leases.c.name == f"item:{source}:{item_key}")  # bridge.store.claims.claim_name
    ).first()
    return Facts(
        source=source,
        item_key=item_key,
        now=now,
        link=link,
        link_created_at=float(link_row.created_at) if link_row is not None else None,
        events=events,
        events_total=total,
        origins=origins,
        senders=senders,
        processed=processed,
        attempts=attempts,
        zoho_calls=calls,
        source_calls=calllog.calls_for_item(conn, source, item_key),
        repeats=calllog.repeats(conn, source, item_key),
        operations=journal.for_item(conn, source, item_key),
        comment_links=comment_rows,
        actions=steer.actions(conn, source, item_key) + steer.actions(conn, source, "*"),
        held=steer.held(conn, source, item_key),
        pauses=steer.pauses(conn),
        lease=dict(lease_row._mapping) if lease_row is not None else None,
        budgets=budgets.all_states(conn),
    )


# -- finding the item an operator names ----------------------------------------------------------------------------


def find_items(conn: Connection, text: str) -> list[tuple[str, str]]:
    """The items `text` names: an item key, an external id, a source URL, a Zoho issue id, or a Zoho issue key
    (EC1-I14). Several when it is ambiguous (one key in two sources); none when nothing is known by it."""
    text = text.strip()
    if not text:
        return []
    links = db.links.c
    found = _pairs(
        conn.execute(
            select(links.source, links.item_key)
            .where(
                or_(  # each branch on an index: (source, external_id), (source, item_key), zoho_issue_id
                    and_(links.source.in_(SOURCES), links.external_id == text),
                    and_(links.source.in_(SOURCES), links.item_key == text),
                    links.zoho_issue_id == text,
                )
            )
            .order_by(links.id)
            .limit(20)
        ).all()
    )
    if found:
        return found
    prefix, _, rest = text.partition(":")
    for source, key in [*([(prefix, rest)] if prefix in SOURCES and rest else []), *((s, text) for s in SOURCES)]:
        hit = conn.execute(
            select(db.events.c.id).where(db.events.c.source == source, db.events.c.item_key == key).limit(1)
        ).first()
        if hit is not None:
            found.append((source, key))
    if found:
        return found
    if text.startswith(("http://", "https://")):
        return _by_url(conn, text)
    return _by_zoho_key(conn, text)


def _pairs(rows: Any) -> list[tuple[str, str]]:
    return list(dict.fromkeys((str(r[0]), str(r[1])) for r in rows))


def _by_url(conn: Connection, url: str) -> list[tuple[str, str]]:
    e = db.events.c
    guesses: list[tuple[str, str]] = []
    if m := _GITHUB_URL.match(url):
        guesses.append(("github", f"{m['repo']}#{m['number']}"))
    if m := _BUGZILLA_URL.match(url):
        guesses.append(("bugzilla", m["id"]))
    for source, key in guesses:
        if conn.execute(select(e.id).where(e.source == source, e.item_key == key).limit(1)).first() is not None:
            return [(source, key)]
    # Renamed repositories, BugHerd's local task numbers: the URL as the item's last applied fields carry it.
    needle = json.dumps(url)
    rows = conn.execute(
        select(db.links.c.source, db.links.c.item_key)
        .where(db.links.c.last_fields.contains(needle, autoescape=True))
        .limit(20)
    ).all()
    return [(s, k) for s, k in _pairs(rows) if _url_of_fields(conn, s, k) == url]


def _url_of_fields(conn: Connection, source: str, item_key: str) -> str | None:
    value = conn.execute(
        select(db.links.c.last_fields).where(db.links.c.source == source, db.links.c.item_key == item_key)
    ).scalar()
    try:
        fields = json.loads(value) if value else {}
    except ValueError:
        return None
    url = fields.get(URL_FIELDS.get(source, "")) if isinstance(fields, dict) else None
    return str(url) if url else None


def _by_zoho_key(conn: Connection, key: str) -> list[tuple[str, str]]:
    """A Zoho issue key (prefix, e.g. EC1-I14) names the issue whose create answer carried it (the call log), or
    one `links recover` or the adoption index found."""
    issue_ids = list(
        conn.execute(select(db.zoho_found.c.issue_id).where(db.zoho_found.c.issue_key == key).limit(5)).scalars()
    )
    z = db.zoho_calls.c
    rows = conn.execute(
        select(z.response_text)
        .where(z.endpoint == "issue.create", z.status < 300, z.response_text.contains(key, autoescape=True))
        .limit(20)
    ).all()
    for row in rows:
        try:
            data = json.loads(row.response_text or "")
        except ValueError:
            continue
        for issue in data.get("issues", [data]) if isinstance(data, dict) else []:
            if isinstance(issue, dict) and key in (issue.get("prefix"), issue.get("key"), issue.get("bug_prefix")):
                issue_ids.append(str(issue.get("id")))
    found: list[tuple[str, str]] = []
    for issue_id in dict.fromkeys(issue_ids):
        found += _pairs(
            conn.execute(
                select(db.links.c.source, db.links.c.item_key).where(db.links.c.zoho_issue_id == issue_id)
            ).all()
        )
    return list(dict.fromkeys(found))
