"""Field ownership (`sync: always | create_only | if_unchanged_in_zoho`): which fields an update sends.

A field is named as in the mapping's `fields:` block: `title`, `status`, `assignee`, `custom.<api name>`.
`draft_values` flattens an `IssueDraft` into those names; the delivery core stores what it last sent
(`last_applied`) and, only when `needs_zoho_current` says so, reads the issue back from Zoho.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .model import IssueDraft, Mapping

_MARKER = re.compile(r"\s*\[issue-bridge:[^\]]*\]\s*")


def draft_values(draft: IssueDraft) -> dict[str, Any]:
    values: dict[str, Any] = {"title": draft.title, "description": draft.description}
    values.update(draft.options)
    values.update({f"custom.{k}": v for k, v in draft.custom_fields.items()})
    if draft.assignee_email is not None or draft.assignee_fallback is not None:
        values["assignee"] = draft.assignee_email or draft.assignee_fallback
    if draft.flag is not None:
        values["flag"] = draft.flag
    if draft.due_date is not None:
        values["due_date"] = draft.due_date
    if draft.tags:
        values["tags"] = sorted(draft.tags)
    return values


def same(a: Any, b: Any) -> bool:
    """Zoho echoes names in its own case and spacing, and BugTracker descriptions carry our marker line."""

    def norm(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return sorted(norm(x) for x in v)
        if v is None:
            return ""
        return " ".join(_MARKER.sub(" ", str(v)).split()).casefold()

    return bool(norm(a) == norm(b))


@dataclass(frozen=True)
class FieldsDecision:
    send: frozenset[str]  # draft fields the update body keeps
    held: tuple[tuple[str, str], ...] = ()  # (field, why it is not sent), for the event's notes


def needs_zoho_current(mapping: Mapping, draft: IssueDraft, last_applied: dict[str, Any] | None) -> bool:
    """Whether some `if_unchanged_in_zoho` field changed in the source, so Zoho's value must be read."""
    last = last_applied or {}
    return any(
        mapping.v3.policy(name) == "if_unchanged_in_zoho" and name in last and not same(value, last[name])
        for name, value in draft_values(draft).items()
    )


def fields_to_send(
    mapping: Mapping,
    draft: IssueDraft,
    last_applied: dict[str, Any] | None,
    zoho_current: dict[str, Any] | None,
    *,
    creating: bool = False,
) -> FieldsDecision:
    """The fields an update sends. On create every field goes. `create_only` fields never go again.
    `if_unchanged_in_zoho` fields go only when the source changed them and Zoho still holds the value the
    bridge last wrote; a field the bridge never wrote (`last_applied` lacks it) goes, as before."""
    values = draft_values(draft)
    if creating:
        return FieldsDecision(frozenset(values))
    last = last_applied or {}
    send: set[str] = set()
    held: list[tuple[str, str]] = []
    for name, value in values.items():
        policy = mapping.v3.policy(name)
        if policy == "create_only":
            held.append((name, "create_only: set when the issue was created, now Zoho's"))
            continue
        if policy == "if_unchanged_in_zoho" and name in last:
            if same(value, last[name]):
                held.append((name, "unchanged in the source: Zoho's value left alone"))
                continue
            if zoho_current is None or name not in zoho_current:
                held.append((name, "Zoho's current value unknown: not overwritten"))
                continue
            if not same(zoho_current[name], last[name]):
                held.append((name, "edited in Zoho since the bridge wrote it: Zoho's value kept"))
                continue
        send.add(name)
    return FieldsDecision(frozenset(send), tuple(held))


def applied_after(last_applied: dict[str, Any] | None, draft: IssueDraft, decision: FieldsDecision) -> dict[str, Any]:
    """What the bridge has written after this update: the sent fields' new values, the others as before."""
    values = draft_values(draft)
    result = dict(last_applied or {})
    result.update({k: v for k, v in values.items() if k in decision.send})
    return result


# What a state re-check compares: fields Zoho echoes back in the form the bridge sent (names, option names).
VERIFIED_FIELDS = ("title", "status", "severity", "classification", "module", "priority")


def overwritten(mapping: Mapping, draft: IssueDraft, zoho_current: dict[str, Any]) -> list[str]:
    """The fields the bridge owns (`sync: always`) that Zoho shows with another value than `draft`: what a
    write landing late (applied by Zoho after a newer one) left behind."""
    want = draft_values(draft)
    return [
        name
        for name in VERIFIED_FIELDS
        if name in want
        and name in zoho_current
        and mapping.v3.policy(name) == "always"
        and not same(want[name], zoho_current[name])
    ]


# Draft field -> the body key each Zoho dialect uses for it (custom fields keep their API name).
BODY_KEYS = {
    "projects": {"title": "name"},
    "bugtracker": {},
}


def restrict_body(body: dict[str, Any], dialect: str, held: set[str] | frozenset[str]) -> dict[str, Any]:
    """`body` (from `ZohoClient.issue_body`) without the keys of the `held` fields."""
    renames = BODY_KEYS.get(dialect, {})
    drop = {renames.get(name, name.removeprefix("custom.")) for name in held}
    return {k: v for k, v in body.items() if k not in drop}


def zoho_values(issue: dict[str, Any], dialect: str) -> dict[str, Any]:
    """A Zoho issue as Zoho returns it, in draft field names (option fields by name)."""
    values: dict[str, Any] = {}
    title_key = "name" if dialect == "projects" else "title"
    if title_key in issue:
        values["title"] = issue[title_key]
    for key, value in issue.items():
        if key in (title_key, "id"):
            continue
        if isinstance(value, dict):  # v3 options: {"id": …, "name": …}; the assignee: {"email": …}
            value = value.get("name") or value.get("email") or value.get("value")
        if key == "tags" and isinstance(value, list):
            value = sorted(str(t.get("id") if isinstance(t, dict) else t) for t in value)
        values[
            key
            if key
            in (
                "description",
                "status",
                "severity",
                "classification",
                "module",
                "priority",
                "assignee",
                "flag",
                "due_date",
                "tags",
            )
            else f"custom.{key}"
        ] = value
    return values
