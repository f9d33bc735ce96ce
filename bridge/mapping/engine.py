"""Translate a `NormalizedEvent` through a `Mapping` into an `IssueDraft` (Zoho names, not ids)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..events import NormalizedEvent
from .model import IssueDraft, Mapping, ValueMap
from .template import Template, compile_template, to_text


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


def map_value(value_map: ValueMap, value: Any) -> str | None:
    """The Zoho name for a source value: for a list, the first map entry (file order) present in it wins."""
    values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    values = [v for v in values if v is not None]
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


def route(mapping: Mapping, source_project: str) -> str:
    routes = dict(mapping.routing.by_source_project)
    project = routes.get(source_project)
    if project is None:
        # Repository and product names are usually case-insensitive in the trackers themselves.
        wanted = source_project.casefold()
        project = next((p for name, p in routes.items() if name.casefold() == wanted), None)
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


def translate(mapping: Mapping, event: NormalizedEvent, known: dict[str, Any] | None = None) -> IssueDraft:
    """`known` are the item's fields as last applied: a field this event does not carry keeps its value."""
    context = {**known, **event.fields} if known else event.fields
    options: dict[str, str] = {}
    for zoho_field, value_map in mapping.value_maps:
        name = map_value(value_map, context.get(value_map.source_field))
        if name is not None:
            options[zoho_field] = name
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
