"""Frozen, validated mapping objects (built by `schema.py`) and the engine's output, `IssueDraft`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ON_DELETE_CHOICES = ("close", "comment", "ignore")
# Zoho option fields a value map may target; their values are Zoho *names*, resolved to ids later.
OPTION_FIELDS = ("status", "severity", "classification", "module", "priority")


@dataclass(frozen=True)
class ValueMap:
    """`from` a source field, through `map` (first entry matching a list value wins), else `default`."""

    source_field: str
    entries: tuple[tuple[str, str], ...]  # (source value, Zoho name), in file order
    default: str | None = None


@dataclass(frozen=True)
class Routing:
    portal: str
    default_project: str | None
    by_source_project: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Mapping:
    name: str  # instance name: the file's stem unless `name:` says otherwise
    source: str
    path: str
    routing: Routing
    external_id_template: str
    external_id_field: str | None  # API name of the Zoho custom field that carries the external id
    title_template: str
    description_template: str
    value_maps: tuple[tuple[str, ValueMap], ...]  # (zoho field, map), for OPTION_FIELDS
    comments: bool = True
    comment_template: str = "{author} commented:\n\n{body}\n\n{url}"
    on_delete: str = "close"
    closed_status: str = "Closed"
    custom_fields: tuple[tuple[str, str], ...] = ()  # (Zoho API name, template)

    def value_map(self, zoho_field: str) -> ValueMap | None:
        return dict(self.value_maps).get(zoho_field)


@dataclass(frozen=True)
class IssueDraft:
    """What one Zoho issue should look like, in Zoho *names*; the Zoho client's dialect builds the body."""

    portal: str
    project: str
    external_id: str
    external_id_field: str | None
    title: str
    description: str
    options: dict[str, str] = field(default_factory=dict)  # zoho option field -> Zoho name
    custom_fields: dict[str, Any] = field(default_factory=dict)
