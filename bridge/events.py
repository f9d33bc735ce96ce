"""The one normalized event type every source produces, and the errors sources raise.

Workers only ever see a `NormalizedEvent` (serialized as JSON in the event row): never a raw
Flask request, never a source's own payload shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.outbound.errors import Transient

# What happened to the external item. Comment actions carry `comment`; item actions carry `fields`.
ITEM_ACTIONS = ("created", "updated", "deleted")
COMMENT_ACTIONS = ("comment_created", "comment_updated", "comment_deleted")
# A change seen in Zoho (a poll, Zoho's webhook): a nudge to the item's talk-back, never a source state.
ZOHO_ACTIONS = ("zoho_changed",)
# Nothing these trackers send predates 1995 (Bugzilla dates from 1998, GitHub from 2008).
EARLIEST_TIMESTAMP = datetime(1995, 1, 1, tzinfo=UTC)


class IgnoredEvent(Exception):
    """A delivery the bridge deliberately skips (answered 200 "ignored"). `reason` becomes the log key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadDelivery(Exception):
    """A delivery whose body is malformed or of the wrong shape (answered 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthorized(Exception):
    """Bad or missing signature, token or header (answered 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceUnavailable(Transient):
    """Fetching more of an item from its source failed for now (network, 5xx, 429): retry later."""

    def __init__(self, reason: str, retry_after: float | None = None, *, status: int | None = None) -> None:
        super().__init__(reason, status=status, retry_after=retry_after)


@dataclass(frozen=True)
class Comment:
    id: str
    body: str
    author: str = ""
    url: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class NormalizedEvent:
    source: str  # "github" | "bugzilla" | "bugherd"
    item_kind: str  # the source's word for the item: "issue", "bug", "task"
    # The item's handle in the bridge ("acme/web#12", "1629704", "41000217"): what events, links and claims are
    # filed under. For GitHub it is the name the item had when first seen: `identity` decides which item a
    # delivery belongs to (bridge/store/identities.py), so a rename or a transfer keeps the handle.
    item_key: str
    action: str  # one of ITEM_ACTIONS or COMMENT_ACTIONS
    event_name: str  # the source's own name, e.g. "issues.labeled", "bug.modify", "task_update"
    source_ts: datetime  # the item's (or comment's) own timestamp, for latest-state-wins
    fields: dict[str, Any] = field(default_factory=dict)  # the item's fields as of this event
    comment: Comment | None = None
    source_project: str = ""  # repository / product / BugHerd project, for routing
    has_state: bool = True  # False when the body lacked the item's fields (private Bugzilla bug)
    notes: tuple[str, ...] = ()  # what the source could not provide, shown in the event's record
    # What never changes in the source (GitHub: the issue id); "" when the item key itself is that.
    identity: str = ""
    # A transfer: the identity the item had before (the old repository's issue), whose link it keeps.
    previous_identity: str = ""

    def __post_init__(self) -> None:
        if self.action not in ITEM_ACTIONS + COMMENT_ACTIONS + ZOHO_ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if self.action in COMMENT_ACTIONS and self.comment is None:
            raise ValueError(f"{self.action} needs a comment")
        if self.source_ts.tzinfo is None:
            raise ValueError("source_ts must be timezone-aware (UTC)")

    def to_json(self) -> dict[str, Any]:
        # Shallow (intake's hot path): `dataclasses.asdict` deep-copied every field value only to be dumped.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["fields"] = dict(self.fields)
        data["source_ts"] = self.source_ts.isoformat()
        data["notes"] = list(self.notes)
        if self.comment is not None:
            data["comment"] = {
                **{f.name: getattr(self.comment, f.name) for f in dataclasses.fields(self.comment)},
                "created_at": _iso(self.comment.created_at),
                "updated_at": _iso(self.comment.updated_at),
            }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NormalizedEvent:
        data = dict(data)
        data["source_ts"] = datetime.fromisoformat(data["source_ts"])
        data["notes"] = tuple(data.get("notes") or ())
        comment = data.get("comment")
        if comment is not None:
            data["comment"] = Comment(
                **{
                    **comment,
                    "created_at": _parse_iso(comment.get("created_at")),
                    "updated_at": _parse_iso(comment.get("updated_at")),
                }
            )
        return cls(**data)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def parse_timestamp(value: Any, *, field_name: str) -> datetime:
    """Parse the sources' timestamps into aware UTC datetimes.

    GitHub sends `2019-05-15T15:20:33Z`, BugHerd `2026-01-09T15:45:04.910Z`, Bugzilla
    `2020-10-16T06:28:41` with no offset (it is UTC). Anything else (non-ASCII digits, a lone surrogate,
    a time that leaves the calendar once moved to UTC) is a BadDelivery naming the field.
    """
    if not isinstance(value, str) or not value:
        raise BadDelivery(f"{field_name}: expected an ISO-8601 timestamp, got {_short(value)}")
    text = value.strip()
    if not text.isascii() or len(text) > 64:
        raise BadDelivery(f"{field_name}: not an ISO-8601 timestamp: {_short(value)}")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadDelivery(f"{field_name}: not an ISO-8601 timestamp: {_short(value)}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise BadDelivery(f"{field_name}: {_short(value)} is outside the calendar in UTC") from None
    if parsed < EARLIEST_TIMESTAMP:
        raise BadDelivery(f"{field_name}: {_short(value)} is before {EARLIEST_TIMESTAMP.year}")
    return parsed


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut, and never a lone surrogate (it could not be logged)."""
    return repr(value)[:80].encode("utf-8", "backslashreplace").decode("utf-8")
