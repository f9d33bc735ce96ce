"""Mapping keys for talking back to the source: `backlink:`, `reverse:` and `conflict:`.

A self-contained nested schema; `bridge/mapping/schema.py` adds it with three lines.

    backlink:                      # opt-in: post once to the source item where its Zoho issue is
      template: "Tracked in Zoho as {key}: {url}"
      url: "https://projects.zoho.com/portal/{portal}#issue/{issue_id}"
      via: comment                 # Bugzilla only: comment | see_also
    reverse:                       # opt-in: Zoho status (by name) → what happens in the source
      status:
        Closed: {close: completed}           # GitHub: close (completed | not_planned), reopen, add/remove_label
        Reopened: {reopen: true}
      comments: false              # copy each person's Zoho comment to the source item, once
    conflict: source_wins          # both sides changed the status since the last sync: source_wins | zoho_wins
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from bridge.sources import SOURCES

BACKLINK_NAMES = frozenset({"key", "url", "issue_id", "portal", "project", "external_id"})
DEFAULT_BACKLINK = "Tracked in Zoho Projects as {key}: {url}"
DEFAULT_URL = "https://projects.zoho.com/portal/{portal}#issue/{issue_id}"
CONFLICT_RULES = ("source_wins", "zoho_wins")
_NAME = re.compile(r"\{([A-Za-z_]+)\}")


@dataclass(frozen=True)
class Backlink:
    template: str = DEFAULT_BACKLINK
    url: str = DEFAULT_URL
    via: str = "comment"  # Bugzilla: comment | see_also


@dataclass(frozen=True)
class Reverse:
    status: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # (Zoho status name, actions), file order
    comments: bool = False

    def actions_for(self, zoho_status: str) -> dict[str, Any] | None:
        wanted = " ".join(zoho_status.split()).casefold()
        for name, actions in self.status:
            if " ".join(name.split()).casefold() == wanted:
                return dict(actions)
        return None


def render(template: str, values: dict[str, str]) -> str:
    return _NAME.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _check_template(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("must be a non-empty text")
    unknown = sorted({n for n in _NAME.findall(text) if n not in BACKLINK_NAMES})
    if unknown:
        raise ValidationError(f"unknown name(s) {', '.join(unknown)}; known: {', '.join(sorted(BACKLINK_NAMES))}")
    return text


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class BacklinkSchema(_Strict):
    template = fields.Raw(load_default=DEFAULT_BACKLINK)
    url = fields.Raw(load_default=DEFAULT_URL)
    via = fields.String(load_default="comment", validate=validate.OneOf(("comment", "see_also")))

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> Backlink:
        errors = {}
        for key in ("template", "url"):
            try:
                _check_template(data[key])
            except ValidationError as exc:
                errors[key] = exc.messages
        if errors:
            raise ValidationError(errors)
        return Backlink(data["template"], data["url"], data["via"])


def _check_actions(source: str, name: str, actions: Any) -> tuple[tuple[str, Any], ...]:
    spec = SOURCES.get(source)
    allowed = spec.reverse_actions if spec is not None else {}
    if not isinstance(actions, dict) or not actions:
        raise ValidationError(f"{name}: expected a mapping of actions ({', '.join(allowed)})")
    out = []
    for key, value in actions.items():
        kind = allowed.get(key)
        if kind is None:
            raise ValidationError(
                f"{name}: unknown action {key!r} for {source} (expected one of: {', '.join(allowed)})"
            )
        if isinstance(kind, tuple):
            if str(value) not in kind:
                raise ValidationError(f"{name}: {key} must be one of {', '.join(kind)}, got {value!r}")
            value = str(value)
        elif kind is bool:
            if value is not True:
                raise ValidationError(f"{name}: {key} takes true")
        elif not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{name}: {key} must be a non-empty text")
        out.append((str(key), value))
    if source == "github" and {"close", "reopen"} <= {k for k, _ in out}:
        raise ValidationError(f"{name}: close and reopen exclude each other")
    return tuple(out)


class ReverseSchema(_Strict):
    status = fields.Dict(load_default=dict)
    comments = fields.Boolean(load_default=False)


class ReverseField(fields.Field):
    """`reverse:` validated against the file's `source:` (each tracker has its own actions)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Reverse:
        source = data.get("source") if isinstance(data, dict) else None
        loaded = ReverseSchema().load(value)
        source = source if isinstance(source, str) else "github"
        entries = tuple((str(n), _check_actions(source, str(n), a)) for n, a in loaded["status"].items())
        return Reverse(entries, loaded["comments"])


class BacklinkField(fields.Field):
    """`backlink: true` (the defaults) or a mapping with template, url, via."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Backlink | None:
        if value is True:
            return Backlink()
        if value is False or value is None:
            return None
        loaded: Backlink = BacklinkSchema().load(value)
        source = data.get("source") if isinstance(data, dict) else None
        if loaded.via == "see_also" and not (source in SOURCES and SOURCES[source].see_also):
            raise ValidationError({"via": [f"see_also is a Bugzilla field; {source} takes via: comment"]})
        return loaded
