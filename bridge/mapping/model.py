"""Frozen, validated mapping objects (built by `schema.py`) and the engine's output, `IssueDraft`."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

ON_DELETE_CHOICES = ("close", "comment", "ignore")
# What a routing change does to an item already linked: `keep` its issue where it is, or `move` it.
ON_ROUTE_CHANGE_CHOICES = ("keep", "move")
# Zoho option fields a value map may target; their values are Zoho *names*, resolved to ids later.
OPTION_FIELDS = ("status", "severity", "classification", "module", "priority")
# `flag` values: Projects v3 takes Internal/External, BugTracker Bug/Feature/Enhancement/Task (seeds 001, 000).
V3_FLAGS = ("Internal", "External")
BT_FLAGS = ("Bug", "Feature", "Enhancement", "Task")
FLAGS = V3_FLAGS + BT_FLAGS
COMBINATION_SEPARATOR = "/"
WILDCARD = "*"


@dataclass(frozen=True)
class ValueMap:
    """`from` a source field (or several: a combination), through `map`, else `default`.

    With one field, a list value (labels, tags, keywords) is matched entry by entry in file order: the first
    map entry present in the list wins. With several fields (`from: [status, resolution]`), each key is the
    fields' values joined by `/` (`RESOLVED/FIXED`), any part may be `*`, and the first key in file order
    whose every part matches wins. A map without a source field and without entries is a constant (`default`).
    """

    source_field: str | tuple[str, ...]
    entries: tuple[tuple[str, str], ...]  # (source value or combination key, Zoho name), in file order
    default: str | None = None

    @property
    def source_fields(self) -> tuple[str, ...]:
        if isinstance(self.source_field, str):
            return (self.source_field,) if self.source_field else ()
        return tuple(self.source_field)

    @property
    def is_combination(self) -> bool:
        return not isinstance(self.source_field, str)


@dataclass(frozen=True)
class Assignee:
    email_template: str  # renders to an email, resolved against the Zoho project's users
    fallback: str | None = None  # email used when the rendered one is not a Zoho user


@dataclass(frozen=True)
class Routing:
    portal: str
    default_project: str | None
    by_source_project: tuple[tuple[str, str], ...] = ()  # (source project or glob, Zoho project), file order


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
    on_route_change: str = "keep"
    closed_status: str = "Closed"
    custom_fields: tuple[tuple[str, str], ...] = ()  # (Zoho API name, template)
    match_source_projects: tuple[str, ...] | None = None  # globs; None: every source project (tried last)
    assignee: Assignee | None = None
    flag: ValueMap | None = None
    due_date_template: str | None = None
    tags: ValueMap | None = None  # every matching entry contributes its tag id
    backlink: Any = None  # bridge.mapping.talkback.Backlink, or None: no back-link
    reverse: Any = None  # bridge.mapping.talkback.Reverse, or None: Zoho changes stay in Zoho
    conflict: str = "source_wins"  # both sides changed the status: source_wins | zoho_wins
    v3: MappingV3 = field(default_factory=lambda: MappingV3())

    def value_map(self, zoho_field: str) -> ValueMap | None:
        return dict(self.value_maps).get(zoho_field)

    def accepts(self, source_project: str) -> bool:
        """Whether this mapping's `match:` takes events of `source_project` (glob, case-insensitive)."""
        if self.match_source_projects is None:
            return True
        wanted = (source_project or "").casefold()
        return any(fnmatchcase(wanted, pattern.casefold()) for pattern in self.match_source_projects)


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
    assignee_email: str | None = None
    assignee_fallback: str | None = None
    flag: str | None = None
    due_date: str | None = None  # YYYY-MM-DD
    tags: tuple[str, ...] = ()  # Zoho tag ids
    notes: tuple[str, ...] = ()  # what the engine left out and why (never a failure)
    source_url: str | None = None  # the item's page in the source: where a cut text is read in full


# -- mapping language v3: filters, users, field ownership ------------------------------------------------

ON_UNMATCH_CHOICES = ("keep", "close", "comment")
SYNC_POLICIES = ("always", "create_only", "if_unchanged_in_zoho")
# Condition operators on one source field (`field: component, in: [A, B]`).
FIELD_OPERATORS = ("equals", "in", "matches", "at_least")


@dataclass(frozen=True)
class Condition:
    """One `when:` condition: `label` present, or a source field compared by an operator.

    `kind` is "label", one of FIELD_OPERATORS, or "any"/"all" (then `children` holds the conditions).
    `values` are the values as written; `order` ranks values highest first for `at_least`.
    """

    kind: str
    field: str = ""
    values: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    children: tuple[Condition, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class MappingV3:
    """What v3 adds to a mapping; `Mapping.v3` holds it, defaults mean "behave as before"."""

    when: Condition | None = None  # None: every item syncs
    on_unmatch: str = "keep"
    users: tuple[tuple[str, str], ...] = ()  # (source login or email, Zoho email), file order
    sync: tuple[tuple[str, str], ...] = ()  # (draft field such as `status` or `custom.cf_x`, policy)
    attachments: bool = False

    def policy(self, draft_field: str) -> str:
        return dict(self.sync).get(draft_field, "always")
