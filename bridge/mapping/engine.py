"""Translate a `NormalizedEvent` through a `Mapping` into an `IssueDraft` (Zoho names, not ids)."""

from __future__ import annotations

import logging
import re
from datetime import date
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from ..events import NormalizedEvent
from .model import COMBINATION_SEPARATOR, WILDCARD, IssueDraft, Mapping, ValueMap
from .template import Template, compile_template, to_text
from .users import resolve_user

log = logging.getLogger("bridge.mapping")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


class RoutingError(Exception):
    """No Zoho project is configured for the event's source project."""


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    # Mappings are validated at load time, so their templates compile; caching saves re-parsing per event.
    return compile_template(text)


def _render(text: str, context: dict[str, Any]) -> str:
    return _compiled(text).render(context)


def _normalize(value: Any) -> str:
    return to_text(value).strip().casefold()


def _as_list(value: Any) -> list[Any]:
    values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    return [v for v in values if v is not None]


def map_value(value_map: ValueMap, value: Any) -> str | None:
    """The Zoho name for a source value: for a list, the first map entry (file order) present in it wins."""
    values = _as_list(value)
    exact = {to_text(v) for v in values}
    for source_value, zoho_name in value_map.entries:
        if source_value in exact:
            return zoho_name
    # Admins write `bug`, trackers send ` Bug `: fall back to a trimmed, case-insensitive match.
    loose = {_normalize(v) for v in values}
    for source_value, zoho_name in value_map.entries:
        if _normalize(source_value) in loose:
            return zoho_name
    return value_map.default


def split_key(key: str, parts: int) -> list[str]:
    """`RESOLVED/FIXED` -> ["RESOLVED", "FIXED"]; the last part keeps any further separators."""
    return [p.strip() for p in key.split(COMBINATION_SEPARATOR, parts - 1)]


def _part_matches(pattern: str, values: list[Any], loose: bool) -> bool:
    if pattern == WILDCARD:
        return True
    texts = [to_text(v) for v in values] or [""]  # a missing value matches an empty part: `NEW/`
    if loose:
        return _normalize(pattern) in {_normalize(t) for t in texts}
    return pattern in texts


def map_combination(value_map: ValueMap, values: list[Any]) -> str | None:
    """First key (file order) whose every part matches its field's value; exact matches before loose ones."""
    count = len(value_map.source_fields)
    split = [(split_key(key, count), name) for key, name in value_map.entries]
    columns = [_as_list(v) for v in values]
    for loose in (False, True):
        for parts, name in split:
            if len(parts) == count and all(_part_matches(p, c, loose) for p, c in zip(parts, columns, strict=True)):
                return name
    return value_map.default


def apply_map(value_map: ValueMap, context: dict[str, Any]) -> str | None:
    fields = value_map.source_fields
    if not fields:
        return value_map.default  # a constant
    if value_map.is_combination:
        return map_combination(value_map, [context.get(f) for f in fields])
    return map_value(value_map, context.get(fields[0]))


def all_matches(value_map: ValueMap, value: Any) -> list[str]:
    """Every entry's value found in a list (tags): file order, without repeats; else the default, if any."""
    loose = {_normalize(v) for v in _as_list(value)}
    found: list[str] = []
    for source_value, target in value_map.entries:
        if _normalize(source_value) in loose and target not in found:
            found.append(target)
    if not found and value_map.default is not None:
        found.append(value_map.default)
    return found


def route(mapping: Mapping, source_project: str) -> str:
    routes = mapping.routing.by_source_project
    project = dict(routes).get(source_project)
    wanted = (source_project or "").casefold()
    if project is None:
        # Repository and product names are usually case-insensitive in the trackers themselves.
        project = next((p for name, p in routes if name.casefold() == wanted), None)
    if project is None:  # globs such as `acme/*`, first in file order
        project = next((p for name, p in routes if fnmatchcase(wanted, name.casefold())), None)
    project = project or mapping.routing.default_project
    if not project:
        raise RoutingError(
            f"no Zoho project for source project {source_project!r} in {mapping.path} "
            "(add it under zoho.project.by_source_project or set zoho.project.default)"
        )
    return project


def external_id_of(mapping: Mapping, fields: dict[str, Any]) -> str:
    """The item's external id alone: no routing, so it works for events that lack routing fields."""
    return _render(mapping.external_id_template, fields)


def due_date_of(text: str) -> str | None:
    text = text.strip()
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


def translate(mapping: Mapping, event: NormalizedEvent, known: dict[str, Any] | None = None) -> IssueDraft:
    """`known` are the item's fields as last applied: a field this event does not carry keeps its value."""
    context = {**known, **event.fields} if known else event.fields
    notes: list[str] = []
    options: dict[str, str] = {}
    for zoho_field, value_map in mapping.value_maps:
        name = apply_map(value_map, context)
        if name is not None:
            options[zoho_field] = name
    assignee_email = None
    if mapping.assignee is not None:
        # A `users:` table turns a source login (or a differing email) into the Zoho user's email.
        assignee_email = resolve_user(mapping, _render(mapping.assignee.email_template, context))
        if assignee_email is not None and not _EMAIL.fullmatch(assignee_email):
            notes.append(f"assignee {assignee_email!r} is not an email address: left to the fallback")
            assignee_email = None
    due = None
    if mapping.due_date_template is not None:
        rendered = _render(mapping.due_date_template, context)
        due = due_date_of(rendered)
        if due is None and rendered.strip():
            notes.append(f"due date {rendered.strip()[:40]!r} is not a YYYY-MM-DD date: left out")
    tags: tuple[str, ...] = ()
    if mapping.tags is not None:
        tags = tuple(all_matches(mapping.tags, context.get(mapping.tags.source_fields[0])))
    for note in notes:
        log.info("mapping %s, %s: %s", mapping.name, event.item_key, note)
    return IssueDraft(
        portal=mapping.routing.portal,
        project=route(mapping, event.source_project),
        external_id=_render(mapping.external_id_template, context),
        external_id_field=mapping.external_id_field,
        title=_render(mapping.title_template, context),
        description=_render(mapping.description_template, context),
        options=options,
        # The Zoho client writes the external id field itself, from `external_id`.
        custom_fields={
            api_name: _render(text, context)
            for api_name, text in mapping.custom_fields
            if api_name != mapping.external_id_field
        },
        assignee_email=assignee_email,
        assignee_fallback=mapping.assignee.fallback if mapping.assignee else None,
        flag=apply_map(mapping.flag, context) if mapping.flag is not None else None,
        due_date=due,
        tags=tags,
        notes=tuple(notes),
        source_url=str(event.fields.get("html_url") or "") or None,
    )


def render_comment(mapping: Mapping, event: NormalizedEvent) -> str:
    comment = event.comment
    if comment is None:
        raise ValueError(f"{event.action} event for {event.item_key} carries no comment")
    # The comment's body deliberately shadows the item's; the item stays reachable as `item`.
    context = {
        **event.fields,
        "body": comment.body,
        "author": comment.author,
        "url": comment.url,
        "comment_id": comment.id,
        "item": event.fields,
    }
    return _render(mapping.comment_template, context)
