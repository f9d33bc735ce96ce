"""The validation boundary at intake: what a delivery must be before anything is stored.

Two layers, both raising `BadDelivery` naming the field and the rule (answered 400):
- the body's JSON: bounded nesting depth (`check_parsed_depth` on what `json.loads` parsed; `json.loads`'s own
  recursion is bounded by the interpreter's, and a body too deep for it is measured by `check_depth` on the bytes);
- the normalized event, after a source parsed it (`check_event`): every string valid Unicode without NUL
  and within its column's length, ids in range, field values flat (nothing a template could recurse into;
  `FLAT_RECORD_FIELDS` may be one record of scalars),
  numbers finite, timestamps inside a sane window. Future-dated timestamps are clamped to the receipt
  time with a note, so one sender's bad clock cannot freeze an item (later real edits would look older).

What passes can always be stored and processed: nothing accepted can crash a worker.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from bridge.events import EARLIEST_TIMESTAMP, BadDelivery, Comment, NormalizedEvent
from bridge.store import schema as db

# Real deliveries nest 5 to 8 levels (GitHub's issue.labels[].…); 32 leaves room and is far below recursion.
MAX_DEPTH = 32
# Timestamps: a sender clock a few minutes fast is tolerated; further ahead is clamped.
EARLIEST = EARLIEST_TIMESTAMP
FUTURE_SKEW = timedelta(minutes=5)
# Ids are stored as text and compared as numbers by some trackers: keep them inside a signed 64-bit int.
MAX_ID = 2**63 - 1
MAX_FIELD_LIST = 1000
# Fields that may hold one flat record (scalars only): Bugzilla's `attachment` on `attachment.create`,
# which mapping v3's `attachments: true` copies to Zoho (bridge/core/attachments.py).
FLAT_RECORD_FIELDS = frozenset({"attachment"})  # labels, keywords, assignees: more than this is not a real item

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
# The whole text as runs outside strings and whole strings: possessive, so linear on any input (an
# unterminated string stops the match early instead of being rescanned from every later quote).
_TOKENS = re.compile(rb'(?:[^"]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _column_limit(table: Any, column: str) -> int:
    return int(table.c[column].type.length)


ITEM_KEY_LIMIT = _column_limit(db.events, "item_key")
EVENT_NAME_LIMIT = _column_limit(db.events, "event_name")
DEDUP_KEY_LIMIT = _column_limit(db.events, "dedup_key")
COMMENT_ID_LIMIT = _column_limit(db.comment_links, "comment_id")


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse a JSON text nested deeper than `limit`, without parsing it (strings are skipped)."""
    tokens = _TOKENS.match(body)
    if tokens is None or tokens.end() != len(body):
        raise BadDelivery("body is not valid JSON: a string is not terminated")
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return
    depth = max(accumulate(1 if c in b"[{" else -1 for c in brackets))
    if depth > limit:
        raise BadDelivery(f"body: nested {depth} levels deep, more than the {limit} allowed")


def depth_of(value: Any) -> int:
    """How many levels of objects and lists a parsed JSON value nests (a scalar: 0), level by level, no recursion."""
    depth, level = 0, [value] if type(value) in (dict, list) else []
    while level:
        depth += 1
        level = [v for o in level for v in (o.values() if type(o) is dict else o) if type(v) in (dict, list)]
    return depth


def check_parsed_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """`check_depth` for a value `json.loads` already parsed (its own recursion is bounded: deeper bodies raise
    RecursionError); the same answer, in a fraction of the time (no pass over the raw text)."""
    depth = depth_of(value)
    if depth > limit:
        raise BadDelivery(f"body: nested {depth} levels deep, more than the {limit} allowed")


def check_text(name: str, value: str, limit: int | None = None) -> str:
    """A string the bridge stores or sends: encodable as UTF-8 (no lone surrogate), no NUL, within `limit`."""
    if not isinstance(value, str):
        raise BadDelivery(f"{name}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadDelivery(f"{name}: not valid Unicode (a lone surrogate)") from None
    if "\x00" in value:
        raise BadDelivery(f"{name}: contains a NUL character")
    if limit is not None and len(value) > limit:
        raise BadDelivery(f"{name}: {len(value)} characters, more than the {limit} allowed")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def text_field(name: str, value: Any) -> str:
    """A text field of a delivery (a title, a body, a state): a string, "" when null or absent. Anything else
    (an object, a list, a number, a boolean) is refused naming the field: never stored, never sent to Zoho as
    its Python repr."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise BadDelivery(f"{name}: expected text, got {_kind(value)}")


# The keys an object-valued field is read by: Red Hat's Bugzilla sends `{"id": 49, "name": "Fedora"}` where
# bugzilla.mozilla.org sends "Fedora"; a user is read by its login.
NAME_KEYS = ("name", "login", "email")


def named_text(name: str, value: Any) -> str:
    """A text field that some senders give as an object: the object's `name` (or a user's `login`); else as
    `text_field`."""
    if isinstance(value, dict):
        for key in NAME_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
        raise BadDelivery(f'{name}: an object without a name, expected text or {{"name": ...}}')
    return text_field(name, value)


def check_id(name: str, value: Any, *, allow_text: bool = True) -> int:
    """An id: a JSON integer (never a boolean), or text of ASCII digits when `allow_text`; 1..2**63-1."""
    if isinstance(value, bool):
        raise BadDelivery(f"{name}: expected an integer id, got a boolean")
    if isinstance(value, str) and allow_text:
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise BadDelivery(f"{name}: expected an id of ASCII digits, got {value[:40]!r}")
        if len(text) > 19:  # past 2**63-1 whatever its digits: said as the range, not as a format
            raise BadDelivery(f"{name}: id {text[:40]}{'…' if len(text) > 40 else ''} is out of range (1 to {MAX_ID})")
        value = int(text)
    if not isinstance(value, int):
        raise BadDelivery(f"{name}: expected an integer id, got {type(value).__name__}")
    if not 1 <= value <= MAX_ID:
        raise BadDelivery(f"{name}: id {value} is out of range (1 to {MAX_ID})")
    return value


def check_timestamp(name: str, value: datetime) -> datetime:
    if value < EARLIEST:
        raise BadDelivery(f"{name}: {value.isoformat()} is before {EARLIEST.year}")
    return value


def _check_scalar(name: str, value: Any) -> None:
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ID:
            raise BadDelivery(f"{name}: {value} is out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadDelivery(f"{name}: not a finite number")
        return
    if isinstance(value, str):
        check_text(name, value)
        return
    raise BadDelivery(f"{name}: expected text, a number or null, got {type(value).__name__}")


def _check_fields(fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        name = f"field {key}"
        if key in FLAT_RECORD_FIELDS and isinstance(value, dict):  # one level of scalars, never deeper
            for sub, entry in value.items():
                _check_scalar(f"{name}.{check_text(name, str(sub), 64)}", entry)
        elif isinstance(value, list):
            if len(value) > MAX_FIELD_LIST:
                raise BadDelivery(f"{name}: {len(value)} entries, more than the {MAX_FIELD_LIST} allowed")
            for entry in value:
                _check_scalar(name, entry)
        else:
            _check_scalar(name, value)


def _clamp(ts: datetime, received: datetime) -> datetime | None:
    """The receipt time when `ts` is further in the future than the allowed skew, else None."""
    return received if ts > received + FUTURE_SKEW else None


def check_event(event: NormalizedEvent, received: datetime) -> NormalizedEvent:
    """The event as it may be stored (future timestamps clamped, with a note), or BadDelivery."""
    check_text("item key", event.item_key, ITEM_KEY_LIMIT)
    if not event.item_key:
        raise BadDelivery("item key: empty")
    check_text("event name", event.event_name, EVENT_NAME_LIMIT)
    _check_fields(event.fields)  # before the project: a bad product names its field, not the project
    check_text("project", event.source_project, ITEM_KEY_LIMIT)
    for note in event.notes:
        check_text("note", note)
    changes: dict[str, Any] = {}
    notes = list(event.notes)
    check_timestamp("timestamp", event.source_ts)
    clamped = _clamp(event.source_ts, received)
    if clamped is not None:
        changes["source_ts"] = clamped
        notes.append(f"timestamp {event.source_ts.isoformat()} is in the future: used the receipt time instead")
    if event.comment is not None:
        comment = _check_comment(event.comment, received, notes)
        if comment is not event.comment:
            changes["comment"] = comment
    if not changes:
        return event
    return dataclasses.replace(event, notes=tuple(notes), **changes)


def _check_comment(comment: Comment, received: datetime, notes: list[str]) -> Comment:
    check_text("comment id", comment.id, COMMENT_ID_LIMIT)
    if not comment.id:
        raise BadDelivery("comment id: empty")
    check_text("comment body", comment.body)
    check_text("comment author", comment.author)
    check_text("comment url", comment.url)
    changes: dict[str, datetime] = {}
    for attr in ("created_at", "updated_at"):
        ts = getattr(comment, attr)
        if ts is None:
            continue
        check_timestamp(f"comment {attr}", ts)
        clamped = _clamp(ts, received)
        if clamped is not None:
            changes[attr] = clamped
            notes.append(f"comment {attr} {ts.isoformat()} is in the future: used the receipt time instead")
    return dataclasses.replace(comment, **changes) if changes else comment
