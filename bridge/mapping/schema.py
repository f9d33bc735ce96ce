"""Marshmallow schemas for mapping files; `post_load` builds the frozen objects of `model.py`.

Messages are written for administrators ("must be a string, got a list"), not for programmers. Checks
that need to know the file (its path, its source's known fields) read them from `_CONTEXT`, set by
`load_mapping_data`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from collections.abc import Mapping as AbcMapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validates_schema

from bridge.mapping.talkback import CONFLICT_RULES, BacklinkField, ReverseField

from .model import (
    COMBINATION_SEPARATOR,
    FIELD_OPERATORS,
    FLAGS,
    ON_DELETE_CHOICES,
    ON_ROUTE_CHANGE_CHOICES,
    ON_UNMATCH_CHOICES,
    OPTION_FIELDS,
    SYNC_POLICIES,
    WILDCARD,
    Assignee,
    Condition,
    Mapping,
    MappingV3,
    Routing,
    ValueMap,
)
from .template import TemplateError, compile_template

SOURCES = ("github", "bugzilla", "bugherd")
DEFAULT_COMMENT_TEMPLATE = "{author} commented:\n\n{body}\n\n{url}"
# Names the comment template may use on top of the item's fields (see engine.render_comment).
COMMENT_NAMES = frozenset({"body", "author", "url", "comment_id", "item"})
NOT_A_MAPPING = "must be a mapping of keys to values"
UNKNOWN_KEY = "unknown key"
KnownFields = AbcMapping[str, frozenset[str]]  # source -> the field names its events carry


@dataclass(frozen=True)
class _Context:
    path: str
    source: str | None = None
    known: frozenset[str] | None = None


_CONTEXT: ContextVar[_Context | None] = ContextVar("mapping_load_context", default=None)


def _context() -> _Context:
    return _CONTEXT.get() or _Context(path="<mapping>")


def kind(value: Any) -> str:
    """`a list`, `a number`...: what an administrator wrote, in their words."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "a boolean (true/false/yes/no; quote it if you mean the word)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _check_known(names: Iterable[str], extra: frozenset[str] = frozenset()) -> None:
    ctx = _context()
    if ctx.known is None:
        return
    allowed = ctx.known | extra
    for name in sorted(names):
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            raise ValidationError(
                f"unknown field '{name}' for source {ctx.source}{hint} (known: {', '.join(sorted(allowed))})"
            )


class _Field(fields.Field):
    default_error_messages = {"required": "required key is missing", "null": "must have a value"}


class Text(_Field):
    """A non-empty string; `numbers` also accepts numbers (ids written without quotes) as their digits."""

    def __init__(self, *, numbers: bool = False, choices: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.numbers = numbers
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return text_value(value, numbers=self.numbers, choices=self.choices)


def text_value(value: Any, *, numbers: bool = False, choices: tuple[str, ...] = ()) -> str:
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {kind(value)}")
    if not value.strip():
        raise ValidationError("must not be empty")
    if choices and value not in choices:
        raise ValidationError(f"must be one of: {', '.join(choices)} (got '{value}')")
    return value


def template_value(value: Any, extra: frozenset[str] = frozenset(), *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be a template string, got {kind(value)}")
    if not allow_empty and not value.strip():
        raise ValidationError("must not be empty")
    try:
        template = compile_template(value)
    except TemplateError as exc:
        raise ValidationError(f"invalid template: {exc}") from exc
    _check_known(template.fields, extra)
    return value


class TemplateField(_Field):
    def __init__(self, *, extra: frozenset[str] = frozenset(), allow_empty: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra = extra
        self.allow_empty = allow_empty

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return template_value(value, self.extra, allow_empty=self.allow_empty)


class SourceField(_Field):
    """The name of a field of the source (`from:`), checked against the source's known fields."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        name = text_value(value)
        _check_known([name])
        return name


class SourceFields(_Field):
    """`from:`: one field name, or a list of them for a combination (`from: [status, resolution]`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | tuple[str, ...]:
        if not isinstance(value, list):
            if not isinstance(value, str):
                raise ValidationError(f"must be a field name or a list of field names, got {kind(value)}")
            return SourceField()._deserialize(value, attr, data)
        if not value:
            raise ValidationError("must list at least one field")
        names = [text_value(item) for item in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValidationError(f"lists '{repeated[0]}' more than once")
        _check_known(names)
        return names[0] if len(names) == 1 else tuple(names)


def flag_value(value: Any) -> str:
    text = text_value(value)
    found = next((f for f in FLAGS if f.casefold() == " ".join(text.split()).casefold()), None)
    if found is None:
        raise ValidationError(
            "must be one of: Internal, External (Zoho Projects) or Bug, Feature, Enhancement, Task "
            f"(Zoho BugTracker), got '{text}'"
        )
    return found


def tag_id_value(value: Any) -> str:
    text = text_value(value, numbers=True).strip()
    if not text.isdigit():
        raise ValidationError(f"must be a Zoho tag id (digits only; tags are set by id), got '{text}'")
    return text


def email_value(value: Any) -> str:
    text = text_value(value).strip()
    if " " in text or text.count("@") != 1 or text.startswith("@") or text.endswith("@"):
        raise ValidationError(f"must be an email address, got '{text}'")
    return text


class Bool(_Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"must be true or false, got {kind(value)}")
        return value


class StrMap(_Field):
    """A mapping of text keys to values checked by `check`; key order (file order) is kept."""

    def __init__(self, check: Callable[[Any], str], *, non_empty: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.non_empty = non_empty

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValidationError(f"{NOT_A_MAPPING}, got {kind(value)}")
        if self.non_empty and not value:
            raise ValidationError("must have at least one entry")
        result: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        for key, item in value.items():
            # YAML reads keys like `yes` as bools; the loader keeps their text, this is the fallback.
            name = ("true" if key else "false") if isinstance(key, bool) else str(key)
            try:
                result[name] = self.check(item)
            except ValidationError as exc:
                errors[name] = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
        if errors:
            raise ValidationError(errors)  # type: ignore[arg-type]
        return result


class _Nested(fields.Nested):
    default_error_messages = _Field.default_error_messages


class _Schema(Schema):
    class Meta:
        unknown = RAISE

    error_messages = {"type": NOT_A_MAPPING}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The loader inserts the offending key's name after "unknown key".
        expected = ", ".join(f.data_key or name for name, f in self.fields.items())
        self.error_messages = {
            **self.error_messages,
            "unknown": f"{UNKNOWN_KEY} (expected one of: {expected})",
        }


class ProjectSchema(_Schema):
    default = Text(numbers=True, load_default=None)
    by_source_project = StrMap(lambda v: text_value(v, numbers=True), load_default=dict)

    @validates_schema
    def _has_a_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("default") is None and not data.get("by_source_project"):
            raise ValidationError("needs a default project or at least one by_source_project entry")


class ZohoSchema(_Schema):
    portal = Text(required=True, numbers=True)
    external_id_field = Text(load_default=None)
    closed_status = Text(load_default="Closed")
    project = _Nested(ProjectSchema, required=True)


def _check_keys(data: dict[str, Any]) -> None:
    """Combination keys need one part per `from` field; `*` is a wildcard only in combinations."""
    source, errors = data["source_field"], {}
    count = 1 if isinstance(source, str) else len(source)
    for key in data["entries"]:
        if count == 1:
            if key.strip() == WILDCARD:
                errors[key] = [
                    "'*' is a wildcard only in combinations (`from: [field, field]`); "
                    "use `default:` for every other value"
                ]
            continue
        parts = key.split(COMBINATION_SEPARATOR, count - 1)
        if len(parts) != count:
            example = COMBINATION_SEPARATOR.join([parts[0].strip() or "VALUE", *([WILDCARD] * (count - 1))])
            errors[key] = [
                f"'{key}' has {len(parts)} part(s) but `from` lists {count} fields ({', '.join(source)}); "
                f"write one value or * per field, separated by '{COMBINATION_SEPARATOR}', e.g. '{example}'"
            ]
    if errors:
        raise ValidationError({"map": errors})


class ValueMapSchema(_Schema):
    source_field = SourceFields(required=True, data_key="from")
    entries = StrMap(lambda v: text_value(v, numbers=True), required=True, non_empty=True, data_key="map")
    default = Text(numbers=True, load_default=None)

    @validates_schema
    def _keys(self, data: dict[str, Any], **kwargs: Any) -> None:
        _check_keys(data)

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> ValueMap:
        return ValueMap(data["source_field"], tuple(data["entries"].items()), data["default"])


class FlagMapSchema(ValueMapSchema):
    entries = StrMap(flag_value, required=True, non_empty=True, data_key="map")
    default = _Field(load_default=None)

    @validates_schema
    def _flag_default(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("default") is not None:
            try:
                data["default"] = flag_value(data["default"])
            except ValidationError as exc:
                raise ValidationError({"default": exc.messages}) from None


class OneSourceField(SourceField):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, list):
            raise ValidationError("takes one source field (such as labels, tag_names or keywords), not a list")
        return super()._deserialize(value, attr, data, **kwargs)


class TagsSchema(_Schema):
    source_field = OneSourceField(required=True, data_key="from")
    entries = StrMap(tag_id_value, required=True, non_empty=True, data_key="map")
    default = _Field(load_default=None)

    @validates_schema
    def _tag_default(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("default") is not None:
            try:
                data["default"] = tag_id_value(data["default"])
            except ValidationError as exc:
                raise ValidationError({"default": exc.messages}) from None

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> ValueMap:
        return ValueMap(data["source_field"], tuple(data["entries"].items()), data["default"])


class AssigneeSchema(_Schema):
    email = TemplateField(required=True, allow_empty=False)
    fallback = _Field(load_default=None)

    @validates_schema
    def _fallback(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("fallback") is not None:
            try:
                data["fallback"] = email_value(data["fallback"])
            except ValidationError as exc:
                raise ValidationError({"fallback": exc.messages}) from None

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> Assignee:
        return Assignee(data["email"], data["fallback"])


class AssigneeField(_Field):
    """`assignee: "{assigned_to}"` or `assignee: {email: "{assigned_to}", fallback: triage@example.com}`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Assignee:
        if isinstance(value, str):
            return Assignee(template_value(value, allow_empty=False))
        if not isinstance(value, dict):
            raise ValidationError(f"must be an email template or a mapping with email and fallback, got {kind(value)}")
        return AssigneeSchema().load(value)


class FlagField(_Field):
    """`flag: External` (always) or a value map `{from, map, default}` giving Internal/External."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> ValueMap:
        if isinstance(value, str):
            return ValueMap("", (), flag_value(value))
        if not isinstance(value, dict):
            raise ValidationError(f"must be a flag name or a mapping with from, map and default, got {kind(value)}")
        return FlagMapSchema().load(value)


class MatchSchema(_Schema):
    source_project = _Field(required=True)

    @validates_schema
    def _globs(self, data: dict[str, Any], **kwargs: Any) -> None:
        value = data["source_project"]
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise ValidationError({"source_project": ["must list at least one source project or glob"]})
        try:
            data["source_project"] = tuple(text_value(v, numbers=True).strip() for v in items)
        except ValidationError as exc:
            raise ValidationError({"source_project": exc.messages}) from None


class FieldsSchema(_Schema):
    title = TemplateField(required=True, allow_empty=False)
    description = TemplateField(load_default="")
    status = _Nested(ValueMapSchema)
    severity = _Nested(ValueMapSchema)
    classification = _Nested(ValueMapSchema)
    module = _Nested(ValueMapSchema)
    priority = _Nested(ValueMapSchema)
    custom = StrMap(template_value, load_default=dict)
    assignee = AssigneeField(load_default=None)
    flag = FlagField(load_default=None)
    due_date = TemplateField(load_default=None, allow_empty=False)
    tags = _Nested(TagsSchema, load_default=None)

    @pre_load
    def _sync_keys(self, data: Any, **kwargs: Any) -> Any:
        # Per-field `sync:` is taken out here so every field keeps its own schema; see split_sync.
        data, self._policies = split_sync(data)
        return data

    @post_load
    def _with_sync(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {**data, "sync": getattr(self, "_policies", {})}


# -- mapping language v3: `when:`, `users:`, per-field `sync:` ----------------------------------------------

CONDITION_KEYS = ("label", "field", *FIELD_OPERATORS, "order", "any", "all")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f", did you mean '{close[0]}'?" if close else ""


def choice_value(value: Any, choices: tuple[str, ...]) -> str:
    text = text_value(value).strip()
    if text not in choices:
        raise ValidationError(f"must be one of: {', '.join(choices)} (got '{text}'){_did_you_mean(text, choices)}")
    return text


def _texts(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ValidationError(f"must list at least one {what}")
    return tuple(text_value(v, numbers=True).strip() for v in items)


def condition_value(value: Any, source: str | None) -> Condition:
    """One condition (see docs/mappings.md "Filters"); errors are keyed like the YAML, for file:line."""
    if not isinstance(value, dict):
        raise ValidationError(
            f"a condition must be a mapping such as `label: bug` or `field: component, in: [A, B]`, got {kind(value)}"
        )
    errors: dict[str, Any] = {}
    for key in value:
        if key not in CONDITION_KEYS:
            errors[str(key)] = [
                f"{UNKNOWN_KEY} '{key}' in a condition{_did_you_mean(str(key), CONDITION_KEYS)} "
                f"(expected one of: {', '.join(CONDITION_KEYS)})"
            ]
    if errors:
        raise ValidationError(errors)
    groups = [k for k in ("any", "all") if k in value]
    operators = [k for k in FIELD_OPERATORS if k in value]
    if groups:
        if len(value) != 1:
            raise ValidationError(f"`{groups[0]}:` stands alone in its condition; put the others inside its list")
        return Condition(groups[0], children=_condition_list(value[groups[0]], source, groups[0]))
    if "label" in value:
        if len(value) != 1:
            raise ValidationError("`label:` stands alone: `- label: bug` (write other conditions as list items)")
        try:
            return Condition("label", values=_texts(value["label"], "label"))
        except ValidationError as exc:
            raise ValidationError({"label": exc.messages}) from None
    if "field" not in value:
        raise ValidationError("needs `label:`, `any:`, `all:` or `field:` with one of: " + ", ".join(FIELD_OPERATORS))
    try:
        name = text_value(value["field"]).strip()
        _check_known([name])
    except ValidationError as exc:
        raise ValidationError({"field": exc.messages}) from None
    if len(operators) != 1:
        found = ", ".join(operators) or "none"
        raise ValidationError(f"`field: {name}` needs exactly one of: {', '.join(FIELD_OPERATORS)} (found: {found})")
    op = operators[0]
    if "order" in value and op != "at_least":
        raise ValidationError({"order": ["only `at_least` uses an order"]})
    try:
        values = _texts(value[op], "value")
        if op in ("equals", "at_least") and len(values) != 1:
            raise ValidationError("takes one value; use `in:` for several")
    except ValidationError as exc:
        raise ValidationError({op: exc.messages}) from None
    order: tuple[str, ...] = ()
    if op == "at_least":
        from .filters import PRIORITY_ORDERS

        try:
            order = _texts(value["order"], "value") if "order" in value else ()
        except ValidationError as exc:
            raise ValidationError({"order": exc.messages}) from None
        known = order or (PRIORITY_ORDERS.get(source or "", ()) if name == "priority" else ())
        if not known:
            raise ValidationError({op: [f"`at_least` on {name} needs `order:`, the values from highest to lowest"]})
        if values[0].casefold() not in {v.casefold() for v in known}:
            raise ValidationError(
                {op: [f"'{values[0]}' is not in the order ({', '.join(known)}){_did_you_mean(values[0], known)}"]}
            )
    return Condition(op, field=name, values=values, order=order)


def _condition_list(value: Any, source: str | None, key: str) -> tuple[Condition, ...]:
    if not isinstance(value, list) or not value:
        raise ValidationError({key: [f"must be a list of conditions, got {kind(value)}"]})
    out: list[Condition] = []
    errors: dict[str, Any] = {}
    for i, item in enumerate(value):
        try:
            out.append(condition_value(item, source))
        except ValidationError as exc:
            errors[str(i)] = exc.messages
    if errors:
        raise ValidationError({key: errors})
    return tuple(out)


class WhenField(_Field):
    """`when:` a list of conditions (all must hold) or one condition (`any:`, `all:`, `label:`, `field:`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Condition:
        source = data.get("source") if isinstance(data, dict) else None
        if isinstance(value, list):
            if not value:
                raise ValidationError("must list at least one condition")
            errors: dict[str, Any] = {}
            out: list[Condition] = []
            for i, item in enumerate(value):
                try:
                    out.append(condition_value(item, source))
                except ValidationError as exc:
                    errors[str(i)] = exc.messages
            if errors:
                raise ValidationError(errors)
            return Condition("all", children=tuple(out))
        return condition_value(value, source)


def _users_table(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValidationError(f"must map source logins or emails to Zoho emails, got {kind(value)}")
    errors: dict[str, list[str]] = {}
    table: list[tuple[str, str]] = []
    for key, email in value.items():
        try:
            table.append((str(key).strip(), email_value(email)))
        except ValidationError as exc:
            errors[str(key)] = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
    if errors:
        raise ValidationError(errors)  # type: ignore[arg-type]
    return tuple(table)


class UsersField(_Field):
    """`users: {octocat: jane@example.com}` or `users: users.yaml` (a shared file beside the mappings)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[tuple[str, str], ...]:
        if isinstance(value, str):
            import yaml

            file = Path(_context().path).parent / value.strip()
            try:
                shared = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ValidationError(f"cannot read the users file {file}: {exc}") from None
            if isinstance(shared, dict) and set(shared) == {"users"}:
                shared = shared["users"]
            try:
                return _users_table(shared)
            except ValidationError as exc:
                raise ValidationError(f"in {file}: {exc.messages}") from None
        return _users_table(value)


# Fields whose short form is a template string; their long form is `{template: ..., sync: ...}`.
_TEMPLATE_FIELDS = ("title", "description", "due_date")


def split_sync(mapped: Any) -> tuple[Any, dict[str, str]]:
    """The `fields:` block without its `sync:` keys, and {draft field: policy}; errors keyed for file:line."""
    if not isinstance(mapped, dict):
        return mapped, {}
    out = dict(mapped)
    policies: dict[str, str] = {}
    errors: dict[str, Any] = {}

    def take(spec: Any, name: str, path: list[str], template: bool) -> Any:
        if not isinstance(spec, dict) or "sync" not in spec:
            return spec
        spec = dict(spec)
        try:
            policies[name] = choice_value(spec.pop("sync"), SYNC_POLICIES)
        except ValidationError as exc:
            node = errors
            for part in path:
                node = node.setdefault(part, {})
            node["sync"] = exc.messages
        if template:
            if set(spec) != {"template"}:
                node = errors
                for part in path:
                    node = node.setdefault(part, {})
                node.setdefault("_schema", []).append('the long form is `{template: "...", sync: ...}`')
                return spec
            return spec["template"]
        return spec

    for key, spec in mapped.items():
        if key == "custom" and isinstance(spec, dict):
            out["custom"] = {api: take(item, f"custom.{api}", ["custom", str(api)], True) for api, item in spec.items()}
        elif key != "custom":
            out[key] = take(spec, str(key), [str(key)], key in _TEMPLATE_FIELDS)
    if errors:
        raise ValidationError(errors)
    return out, policies


class MappingSchema(_Schema):
    source = Text(required=True, choices=SOURCES)
    name = Text(load_default=None)
    match = _Nested(MatchSchema, load_default=None)
    zoho = _Nested(ZohoSchema, required=True)
    external_id = TemplateField(required=True, allow_empty=False)
    fields_ = _Nested(FieldsSchema, required=True, data_key="fields")
    comments = Bool(load_default=True)
    comment_template = TemplateField(load_default=DEFAULT_COMMENT_TEMPLATE, extra=COMMENT_NAMES)
    on_delete = Text(load_default="close", choices=ON_DELETE_CHOICES)
    on_route_change = Text(load_default="keep", choices=ON_ROUTE_CHANGE_CHOICES)
    backlink = BacklinkField(load_default=None)
    reverse = ReverseField(load_default=None)
    conflict = Text(load_default="source_wins", choices=CONFLICT_RULES)
    when = WhenField(load_default=None)
    on_unmatch = _Field(load_default="keep")
    users = UsersField(load_default=())
    attachments = Bool(load_default=False)

    @validates_schema
    def _on_unmatch(self, data: dict[str, Any], **kwargs: Any) -> None:
        try:
            data["on_unmatch"] = choice_value(data["on_unmatch"], ON_UNMATCH_CHOICES)
        except ValidationError as exc:
            raise ValidationError({"on_unmatch": exc.messages}) from None

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> Mapping:
        path = _context().path
        zoho, mapped = data["zoho"], data["fields_"]
        project = zoho["project"]
        return Mapping(
            name=data["name"] or Path(path).stem,
            source=data["source"],
            path=path,
            routing=Routing(
                portal=zoho["portal"],
                default_project=project["default"],
                by_source_project=tuple(project["by_source_project"].items()),
            ),
            external_id_template=data["external_id"],
            external_id_field=zoho["external_id_field"],
            title_template=mapped["title"],
            description_template=mapped["description"],
            value_maps=tuple((name, mapped[name]) for name in OPTION_FIELDS if mapped.get(name) is not None),
            comments=data["comments"],
            comment_template=data["comment_template"],
            on_delete=data["on_delete"],
            on_route_change=data["on_route_change"],
            closed_status=zoho["closed_status"],
            custom_fields=tuple(mapped["custom"].items()),
            match_source_projects=data["match"]["source_project"] if data["match"] else None,
            assignee=mapped["assignee"],
            flag=mapped["flag"],
            due_date_template=mapped["due_date"],
            tags=mapped["tags"],
            backlink=data["backlink"],
            reverse=data["reverse"],
            conflict=data["conflict"],
            v3=MappingV3(
                when=data["when"],
                on_unmatch=data["on_unmatch"],
                users=tuple(data["users"]),
                sync=tuple(mapped["sync"].items()),
                attachments=data["attachments"],
            ),
        )


def load_mapping_data(data: Any, *, path: str, known_fields: KnownFields | None = None) -> Mapping:
    """Validate parsed YAML and build a `Mapping`; raises marshmallow's nested `ValidationError`."""
    source = data.get("source") if isinstance(data, dict) else None
    known = known_fields.get(source) if known_fields and isinstance(source, str) else None
    token = _CONTEXT.set(_Context(path=path, source=source if known is not None else None, known=known))
    try:
        return MappingSchema().load(data)
    finally:
        _CONTEXT.reset(token)
