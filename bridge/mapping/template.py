"""A tiny, sandboxed template language for mapping files.

`{path}` looks up a dotted path in a dict, `{{` / `}}` are literal braces, and filters chain:
`{labels|join:" / "|default:"none"|upper}`; `{due_at|date}` keeps the YYYY-MM-DD of a date or ISO timestamp.
Templates come from YAML that administrators edit, so
nothing here evaluates code: the text is parsed by hand and rendering only ever walks plain dicts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

# Which filters exist and what argument each takes: None (no argument), "text" or "int".
FILTERS: dict[str, str | None] = {
    "date": None,
    "default": "text",
    "join": "text",
    "lower": None,
    "truncate": "int",
    "upper": None,
}

_PATH = re.compile(r"\s*([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\s*")
_FILTER = re.compile(r"\|\s*([A-Za-z_]\w*)\s*(?::\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|-?\d+))?\s*")


class TemplateError(ValueError):
    """A template that cannot be compiled; `position` is the 0-based character offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.message = message
        self.position = position


def to_text(value: Any) -> str:
    """How a value looks inside rendered text (also used by the engine to compare values)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(to_text(item) for item in value if item is not None)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        # Readable rather than a Python repr, so a `{user}` mistake is obvious in Zoho.
        return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return str(value)


def _default(value: Any, text: str) -> Any:
    return text if value is None or value == "" or value == [] or value == () else value


def _join(value: Any, sep: str) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return sep.join(to_text(item) for item in value if item is not None)
    return to_text(value)


def _truncate(value: Any, limit: int) -> str:
    text = to_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _date(value: Any, _arg: Any) -> str:
    """The calendar date (YYYY-MM-DD) of a date, a datetime or an ISO 8601 text; "" when it is none of them."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    match = _ISO_DATE.match(to_text(value).strip())
    if not match:
        return ""
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        return ""


_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ].*)?$")

_APPLY: dict[str, Callable[[Any, Any], Any]] = {
    "date": _date,
    "default": _default,
    "join": _join,
    "lower": lambda value, _arg: to_text(value).lower(),
    "truncate": _truncate,
    "upper": lambda value, _arg: to_text(value).upper(),
}


class _Placeholder:
    __slots__ = ("filters", "path")

    def __init__(self, path: tuple[str, ...], filters: tuple[tuple[str, Any], ...]) -> None:
        self.path = path
        self.filters = filters

    def render(self, context: dict[str, Any]) -> str:
        value: Any = context
        for segment in self.path:
            # Only plain dicts are walked: no attributes, no indexing, no method calls.
            value = value.get(segment) if isinstance(value, dict) else None
        for name, arg in self.filters:
            value = _APPLY[name](value, arg)
        return to_text(value)


class Template:
    """A compiled template; build it with `compile_template`."""

    __slots__ = ("_parts", "fields", "source")

    def __init__(self, source: str, parts: list[str | _Placeholder]) -> None:
        self.source = source
        self._parts = tuple(parts)
        # Top-level names referenced, so a mapping can be checked against a source's known fields.
        self.fields: frozenset[str] = frozenset(p.path[0] for p in parts if isinstance(p, _Placeholder))

    def render(self, context: dict[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else p.render(context) for p in self._parts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(text: str) -> Template:
    if not isinstance(text, str):
        raise TemplateError(f"a template must be a string, not {type(text).__name__}", 0)
    parts: list[str | _Placeholder] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(char)
            i += 2
        elif char == "}":
            raise TemplateError("unbalanced '}' (write '}}' for a literal brace)", i)
        elif char == "{":
            end = _closing_brace(text, i)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_placeholder(text[i + 1 : end], i + 1))
            i = end + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, parts)


def _closing_brace(text: str, start: int) -> int:
    quote: str | None = None
    i = start + 1
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "}":
            return i
        elif char == "{":
            raise TemplateError("unexpected '{' inside a placeholder (write '{{' for a literal brace)", i)
        i += 1
    raise TemplateError("unclosed '{' (write '{{' for a literal brace)", start)


def _parse_placeholder(body: str, offset: int) -> _Placeholder:
    match = _PATH.match(body)
    if not match:
        what = "empty placeholder '{}'" if not body.strip() else f"invalid field name in '{{{body}}}'"
        raise TemplateError(what, offset)
    path = tuple(match.group(1).split("."))
    for segment in path:
        if segment.startswith("_"):
            raise TemplateError(f"'{segment}' is not allowed: names starting with '_' are private", offset)
    filters: list[tuple[str, Any]] = []
    pos = match.end()
    while pos < len(body):
        match = _FILTER.match(body, pos)
        if not match:
            raise TemplateError(f"expected '|filter' after the field name, got {body[pos:]!r}", offset + pos)
        filters.append(_check_filter(match.group(1), match.group(2), offset + pos))
        pos = match.end()
    return _Placeholder(path, tuple(filters))


def _check_filter(name: str, raw: str | None, position: int) -> tuple[str, Any]:
    if name not in FILTERS:
        raise TemplateError(f"unknown filter '{name}' (known: {', '.join(sorted(FILTERS))})", position)
    kind = FILTERS[name]
    if kind is None:
        if raw is not None:
            raise TemplateError(f"filter '{name}' takes no argument", position)
        return name, None
    if kind == "int":
        if raw is None or not raw.lstrip("-").isdigit() or int(raw) < 1:
            raise TemplateError(f"filter '{name}' needs a whole number of at least 1, e.g. {name}:80", position)
        return name, int(raw)
    if raw is None or raw[0] not in "\"'":
        raise TemplateError(f"filter '{name}' needs a quoted text argument, e.g. {name}:\"text\"", position)
    return name, re.sub(r"\\(.)", r"\1", raw[1:-1])
