"""Bugzilla webhooks (bugzilla.mozilla.org's `Webhooks` extension) → NormalizedEvent.

Authentication: Bugzilla signs nothing; the webhook owner can set one custom header. Its name is
BUGZILLA_WEBHOOK_HEADER (default `Authorization`) and its value must equal BUGZILLA_WEBHOOK_SECRET,
compared in constant time. Admins often type `Token <secret>` or `Bearer <secret>` into Bugzilla,
so that prefix is accepted too when the secret itself has none.

Body: `{"webhook_id", "webhook_name", "event": {"action", "target", "routing_key", "time", "user",
"changes"}, "bug": {..., "comment" | "attachment": {...}}}`. Times are UTC without an offset.
A private bug arrives reduced to `{"id", "is_private"}`; a private comment to `{"id", "is_private"}`.
There is no delivery id: the dedup key is built from the event's identity (see `dedup_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.events import BadDelivery, Comment, IgnoredEvent, NormalizedEvent, Unauthorized, parse_timestamp
from bridge.sources.common import load_json_object
from bridge.sources.validate import check_id, named_text, text_field

NAME = "bugzilla"
AUTH_SCHEMES = ("token", "bearer")
# (target, action) → normalized action. Comment #0 (the description) is handled apart.
ACTIONS = {
    ("bug", "create"): "created",
    ("bug", "modify"): "updated",
    ("comment", "create"): "comment_created",
}
PRIVATE_BUG_NOTE = "private bug: fields not in the webhook; set BUGZILLA_URL and BUGZILLA_API_KEY to fetch them"
# Keys of a bug that Bugzilla reduced for privacy; anything else means the bug's fields are present.
REDUCED_BUG_KEYS = frozenset({"id", "is_private", "comment", "attachment"})

# The fields a mapping can use (templates, `from:`), all taken from the bug object.
FIELDS = frozenset(
    {
        "id",
        "alias",
        "summary",
        "status",
        "resolution",
        "status_resolution",  # "RESOLVED/FIXED", or just "NEW" when there is no resolution
        "severity",  # "--" when unset
        "priority",  # "" when unset
        "classification",
        "product",
        "component",
        "keywords",  # a list
        "keywords_and_type",  # a list: the keywords plus the bug type (defect, enhancement, task)
        "whiteboard",
        "url",
        "version",
        "target_milestone",
        "type",
        "assigned_to",
        "creator",
        "qa_contact",
        "op_sys",
        "platform",
        "creation_time",
        "last_change_time",
        "is_private",
        "bug_url",  # BUGZILLA_URL + /show_bug.cgi?id=<id>; "" when BUGZILLA_URL is not set
        "description",  # comment 0's text: only in the event of comment 0 itself, kept from then on
    }
)


class BugzillaSource:
    name = NAME
    fields = FIELDS

    def __init__(self, secret: str, header: str = "Authorization", bugzilla_url: str = "") -> None:
        if not secret.strip():
            raise ValueError("BUGZILLA_WEBHOOK_SECRET is not set: the Bugzilla source is disabled")
        self._secret = secret.strip().encode()
        # "Token <secret>" in the header is accepted unless the secret itself starts with a scheme.
        self._strip_scheme = secret.split()[0].lower() not in AUTH_SCHEMES
        self.header = header
        self.bugzilla_url = bugzilla_url.rstrip("/")

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        value = (headers.get(self.header) or "").strip()
        if not value:
            raise Unauthorized(f"missing {self.header} header")
        parts = value.split(None, 1)
        if self._strip_scheme and len(parts) == 2 and parts[0].lower() in AUTH_SCHEMES:
            value = parts[1].strip()
        if not hmac.compare_digest(self._secret, value.encode()):
            raise Unauthorized(f"{self.header} header does not match BUGZILLA_WEBHOOK_SECRET")

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent:
        payload = load_json_object(body)
        event, bug, bug_id = _envelope(payload)
        action = event["action"]
        target = _target(event, bug)
        event_name = f"{target}.{action}"
        attachment = _attachment(bug) if (target, action) == ("attachment", "create") else None
        if target == "attachment" and attachment is None:
            raise IgnoredEvent("attachments are not synced" if action != "create" else "private attachment: not synced")
        if target != "attachment" and (target, action) not in ACTIONS:
            raise IgnoredEvent(f"Bugzilla event {event_name} is not synced")
        reduced = bool(bug.get("is_private")) and set(bug) <= REDUCED_BUG_KEYS
        fields = self.bug_fields(bug, bug_id, reduced=reduced)
        normalized_action = ACTIONS.get((target, action), "updated")
        if attachment is not None:  # copied to Zoho by mappings with `attachments: true` (bridge/core/attachments.py)
            fields["attachment"] = attachment
        comment: Comment | None = None
        if target == "comment":
            raw = bug.get("comment")
            if not isinstance(raw, dict) or raw.get("id") is None:
                raise BadDelivery("bug.comment: expected an object with an id")
            check_id("bug.comment.id", raw["id"])
            if "body" not in raw:
                raise IgnoredEvent("private comment: its text is not in the webhook")
            if raw.get("number") == 0:
                # Comment 0 is the bug's description, not a discussion comment.
                normalized_action = "updated"
                fields["description"] = str(raw.get("body") or "")
            else:
                comment = self._comment(raw, event, fields)
        return NormalizedEvent(
            source=NAME,
            item_kind="bug",
            item_key=str(bug_id),
            action=normalized_action,
            event_name=event_name,
            source_ts=_source_ts(bug, event),
            fields=fields,
            comment=comment,
            source_project=str(fields.get("product") or ""),
            has_state=not reduced,
            notes=(PRIVATE_BUG_NOTE,) if reduced else (),
        )

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str:
        """`webhook:bug:routing key:time:comment or attachment id:hash of changes`.

        Bugzilla has no delivery id and one-second times: two modifies of one bug in the same second
        share the rest of the key, so a short hash of the whole delivery keeps them apart.
        """
        payload = load_json_object(body)
        event, bug, bug_id = _envelope(payload)
        target = _target(event, bug)
        routing_key = str(event.get("routing_key") or f"{target}.{event['action']}")
        sub = bug.get(target) if target in ("comment", "attachment") else None
        sub_id = sub.get("id") if isinstance(sub, dict) and sub.get("id") is not None else ""
        # A hash of the whole delivery (canonical JSON), not only of `changes`: two distinct deliveries in
        # one second can carry the same changes (P3->P1, P1->P3, P3->P1) and differ elsewhere; a resend
        # of the same delivery is the same JSON and still collapses to one event.
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        key = f"{payload.get('webhook_id', '')}:{bug_id}:{routing_key[:100]}:{event.get('time', '')}:{sub_id}:{digest}"
        return key[:255]

    def event_label(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str:
        """`target.action` of a delivery that parsed to no event (ignored), for metrics; "" if unreadable."""
        try:
            event, bug, _ = _envelope(load_json_object(body))
        except BadDelivery:
            return ""
        return f"{_target(event, bug)}.{event['action']}"[:64]

    # -- fields ---------------------------------------------------------------------------------------

    def bug_url(self, bug_id: int) -> str:
        return f"{self.bugzilla_url}/show_bug.cgi?id={bug_id}" if self.bugzilla_url else ""

    def bug_fields(self, bug: dict[str, Any], bug_id: int, *, reduced: bool = False) -> dict[str, Any]:
        return bug_fields(bug, bug_id, bugzilla_url=self.bugzilla_url, reduced=reduced)

    def _comment(self, raw: dict[str, Any], event: dict[str, Any], fields: dict[str, Any]) -> Comment:
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        created = raw.get("creation_time")
        number = raw.get("number")
        url = fields.get("bug_url") or ""
        return Comment(
            id=str(raw["id"]),
            body=text_field("bug.comment.body", raw.get("body")),
            author=named_text("event.user.login", user.get("login")),
            url=f"{url}#c{number}" if url and number is not None else url,
            created_at=parse_timestamp(created, field_name="bug.comment.creation_time") if created else None,
        )


def _attachment(bug: dict[str, Any]) -> dict[str, Any] | None:
    """`bug.attachment` of an `attachment.create` (webhook-formats.md: id, file_name, content_type, ...); its
    content is fetched later through `GET /rest/bug/attachment/{id}`. None for a private one (no file_name)."""
    raw = bug.get("attachment")
    if not isinstance(raw, dict) or raw.get("id") is None:
        raise BadDelivery("bug.attachment: expected an object with an id")
    if raw.get("is_private") and not raw.get("file_name"):
        return None
    keep = ("id", "file_name", "content_type", "description", "size", "is_patch", "is_obsolete", "creation_time")
    return {k: raw[k] for k in keep if k in raw}


def bug_fields(bug: dict[str, Any], bug_id: int, *, bugzilla_url: str = "", reduced: bool = False) -> dict[str, Any]:
    """The mapping fields of a bug object (webhook or REST `GET /rest/bug/{id}`: same field names)."""
    if reduced:
        return {"id": bug_id, "is_private": True}
    keywords = bug.get("keywords") or []
    if not isinstance(keywords, list):
        raise BadDelivery("bug.keywords: expected a list")
    keywords = [named_text("bug.keywords", k) for k in keywords if k is not None]
    status, resolution = _field(bug, "status"), _field(bug, "resolution")
    alias = bug.get("alias")
    bug_type = _field(bug, "type")
    return {
        "id": bug_id,
        "alias": ", ".join(_alias(a) for a in alias) if isinstance(alias, list) else _alias(alias),
        "summary": _field(bug, "summary"),
        "status": status,
        "resolution": resolution,
        "status_resolution": f"{status}/{resolution}" if resolution else status,
        "severity": _field(bug, "severity"),
        "priority": _field(bug, "priority"),
        "classification": _field(bug, "classification"),
        "product": _field(bug, "product"),
        "component": _field(bug, "component"),
        "keywords": keywords,
        "keywords_and_type": [*keywords, bug_type] if bug_type else list(keywords),
        "whiteboard": _field(bug, "whiteboard"),
        "url": _field(bug, "url"),
        "version": _field(bug, "version"),
        "target_milestone": _field(bug, "target_milestone"),
        "type": bug_type,
        "assigned_to": _field(bug, "assigned_to"),
        "creator": _field(bug, "creator"),
        "qa_contact": _field(bug, "qa_contact"),
        "op_sys": _field(bug, "operating_system") or _field(bug, "op_sys"),
        "platform": _field(bug, "platform"),
        "creation_time": bug.get("creation_time"),
        "last_change_time": bug.get("last_change_time"),
        "is_private": bool(bug.get("is_private")),
        "bug_url": bug_url(bugzilla_url, bug_id),
    }


def bug_url(bugzilla_url: str, bug_id: int) -> str:
    return f"{bugzilla_url.rstrip('/')}/show_bug.cgi?id={bug_id}" if bugzilla_url else ""


def _field(bug: dict[str, Any], name: str) -> str:
    """A text field of the bug, by name when the installation sends it as an object (Red Hat style)."""
    return named_text(f"bug.{name}", bug.get(name))


def _alias(value: Any) -> str:
    """One alias: text, or a number some installations send."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return named_text("bug.alias", value)


def _envelope(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The `event` and `bug` objects and the bug id, or BadDelivery naming what is missing."""
    event = payload.get("event")
    if not isinstance(event, dict):
        raise BadDelivery("event: expected an object")
    if not isinstance(event.get("action"), str) or not event["action"]:
        raise BadDelivery("event.action: expected a string")
    bug = payload.get("bug")
    if not isinstance(bug, dict):
        raise BadDelivery("bug: expected an object")
    bug_id = check_id("bug.id", bug.get("id"))
    if event.get("time") is not None:  # part of the dedup key: it must be a real time
        parse_timestamp(event["time"], field_name="event.time")
    return event, bug, bug_id


def _target(event: dict[str, Any], bug: dict[str, Any]) -> str:
    target = event.get("target")
    if isinstance(target, str) and target:
        return target
    routing_key = event.get("routing_key")
    if isinstance(routing_key, str) and "." in routing_key:
        return routing_key.split(".", 1)[0]
    # Older Bugzilla Harmony copies strip `target` and `routing_key`: infer it from what is nested
    # (a bug modify may carry the latest comment too, so a comment counts only on create).
    if isinstance(bug.get("attachment"), dict):
        return "attachment"
    if event.get("action") == "create" and isinstance(bug.get("comment"), dict):
        return "comment"
    return "bug"


def _source_ts(bug: dict[str, Any], event: dict[str, Any]) -> datetime:
    if bug.get("last_change_time"):
        return parse_timestamp(bug["last_change_time"], field_name="bug.last_change_time")
    return parse_timestamp(event.get("time"), field_name="event.time")
