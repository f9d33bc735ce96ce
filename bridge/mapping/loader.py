"""Load mapping files: YAML with line numbers, validation reporting every problem, a live registry."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import tempfile
import threading
import time
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

import yaml
from marshmallow import ValidationError

from ..events import NormalizedEvent
from .model import COMBINATION_SEPARATOR, OPTION_FIELDS, WILDCARD, Mapping
from .schema import NOT_A_MAPPING, UNKNOWN_KEY, KnownFields, kind, load_mapping_data
from .users import USERS_FILES

# (portal, project) -> {zoho field: [valid names]}, as `ZohoClient.options` reports them; the optional
# "custom" entry lists the issue custom fields' API names (`ZohoClient.custom_fields`).
ZohoOptions = AbcMapping[tuple[str, str], AbcMapping[str, Iterable[str]]]

log = logging.getLogger("bridge.mapping")
PATTERNS = ("*.yaml", "*.yml")
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# Bounds checked before anything is expanded, so a hostile file (a YAML "billion laughs": a few hundred bytes of
# nested aliases that expand to billions of nodes) is refused in milliseconds, in every process that loads it.
# A real mapping is a few KiB with a few hundred values; a few aliases may share a map between fields.
MAX_MAPPING_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 20_000
MAX_DEPTH = 64  # a mapping nests 5 levels deep; PyYAML's composer recurses once per level


@dataclass(frozen=True)
class MappingProblem:
    file: str
    line: int | None  # 1-based
    key: str  # dotted path such as `fields.severity.map`; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class MappingError(Exception):
    """A mapping file that cannot be used; `problems` lists all of them, not just the first."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _TooLarge(Exception):
    """The document would expand beyond the bounds; `line` is where (1-based)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LineLoader(yaml.SafeLoader):
    """Safe loader that builds plain data while recording each key's line and any duplicate keys."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.lines: dict[str, int] = {}
        self.problems: list[MappingProblem] = []
        self._active: set[int] = set()
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        # An alias costs nothing while composing (it points at a node already read); counting them here
        # bounds what `build` could be asked to expand.
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()
            raise _TooLarge(event.start_mark.line + 1, f"the YAML nests more than {MAX_DEPTH} levels deep")
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise _TooLarge(
                    event.start_mark.line + 1,
                    f"more than {MAX_ALIASES} YAML aliases (*name): refused before expanding them; "
                    "write the values out instead",
                )
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def check_expansion(self, node: yaml.Node) -> None:
        """The number of values `build` would produce, counted on the composed graph (each node once): a
        document whose aliases multiply it beyond MAX_EXPANDED_NODES is refused before it is expanded."""
        sizes: dict[int, int] = {}

        def size(current: yaml.Node) -> int:
            key = id(current)
            if key in sizes:
                return sizes[key]
            sizes[key] = 1  # a node inside itself (a recursive alias) counts once; `build` refuses it
            total = 1
            if isinstance(current, yaml.MappingNode):
                total += sum(size(k) + size(v) for k, v in current.value)
            elif isinstance(current, yaml.SequenceNode):
                total += sum(size(item) for item in current.value)
            if total > MAX_EXPANDED_NODES:
                raise _TooLarge(
                    _line(current),
                    f"the YAML aliases here expand to more than {MAX_EXPANDED_NODES} values: refused before "
                    "expanding them; write the values out instead",
                )
            sizes[key] = total
            return total

        size(node)

    def build(self, node: yaml.Node, path: str = "") -> Any:
        if id(node) in self._active:  # an alias that contains itself
            self.problems.append(MappingProblem(self.file, _line(node), path, "recursive alias"))
            return None
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
            # Explicit tags such as !!python/object are never constructed, and never silently ignored.
            self.problems.append(
                MappingProblem(
                    self.file,
                    _line(node),
                    path,
                    f"unsupported YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')}",
                )
            )
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._build_mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(node.value)]
            return self.construct_object(node, deep=True)
        finally:
            self._active.discard(id(node))

    def _build_mapping(self, node: yaml.MappingNode, path: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(MappingProblem(self.file, _line(key_node), path, "keys must be plain text"))
                continue
            # The key as written: `yes` and `1` stay "yes" and "1" instead of becoming True and 1.
            key = key_node.value
            key_path = f"{path}.{key}" if path else key
            if key in result:
                self.problems.append(
                    MappingProblem(
                        self.file,
                        _line(key_node),
                        key_path,
                        f"duplicate key '{key}' (first at line {self.lines.get(key_path)}); "
                        "YAML would silently keep only the last one",
                    )
                )
            else:
                self.lines[key_path] = _line(key_node)
            result[key] = self.build(value_node, key_path)
        return result


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _line_of(lines: dict[str, int], path: str) -> int | None:
    # A missing key has no line of its own: use its closest parent that has one.
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return lines.get("")


def _value_at(data: Any, path: str) -> Any:
    for segment in path.split(".") if path else ():
        if isinstance(data, dict):
            data = data.get(segment)
        elif isinstance(data, list) and segment.isdigit() and int(segment) < len(data):
            data = data[int(segment)]
        else:
            return None
    return data


def _flatten(messages: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(messages, dict):
        for key, value in messages.items():
            _flatten(value, path if key == "_schema" else (f"{path}.{key}" if path else str(key)), out)
    elif isinstance(messages, list):
        for message in messages:
            _flatten(message, path, out)
    else:
        out.append((path, str(messages)))


def _reword(path: str, message: str, data: Any) -> str:
    if message.startswith(UNKNOWN_KEY + " ("):
        key = path.rpartition(".")[2]
        expected = message[len(UNKNOWN_KEY) :].strip().removeprefix("(expected one of:").removesuffix(")")
        near = difflib.get_close_matches(key, [k.strip() for k in expected.split(",")], n=1, cutoff=0.6)
        hint = f", did you mean '{near[0]}'?" if near else ""
        return f"{UNKNOWN_KEY} '{key}'{hint}{message[len(UNKNOWN_KEY) :]}"
    if message == NOT_A_MAPPING:
        return f"{message}, got {kind(_value_at(data, path))}"
    return message


def _normalize(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def _covers(earlier: list[str], later: list[str]) -> bool:
    return all(a in (WILDCARD, b) for a, b in zip(earlier, later, strict=True))


def _unreachable_entries(file: str, data: dict, lines: dict[str, int]) -> list[MappingProblem]:
    """Combination entries that an earlier entry (wildcards included) always matches first."""
    problems: list[MappingProblem] = []
    mapped = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    for field, spec in mapped.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("map"), dict):
            continue
        source = spec.get("from")
        if not isinstance(source, list) or len(source) < 2:
            continue
        count = len(source)
        seen: list[tuple[str, list[str]]] = []
        for key in spec["map"]:
            parts = [p.strip() for p in str(key).split(COMBINATION_SEPARATOR, count - 1)]
            if len(parts) != count:
                continue  # reported by the schema
            earlier = next((k for k, ps in seen if _covers(ps, parts)), None)
            if earlier is not None:
                path = f"fields.{field}.map.{key}"
                problems.append(
                    MappingProblem(
                        file,
                        _line_of(lines, path),
                        path,
                        f"unreachable: '{earlier}' (line {lines.get(f'fields.{field}.map.{earlier}')}) comes first "
                        "and matches everything this entry matches; move this entry above it or remove it",
                    )
                )
            seen.append((str(key), parts))
    return problems


def _patterns(data: dict) -> list[str] | None:
    match = data.get("match")
    if not isinstance(match, dict):
        return None
    value = match.get("source_project")
    items = value if isinstance(value, list) else [value]
    found = [str(v).strip() for v in items if isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip()]
    return found or None


def _overlap(a: str, b: str) -> bool:
    """Whether two source-project globs can accept the same project (exact for literals, a heuristic for globs)."""
    a, b = a.casefold(), b.casefold()
    return a == b or fnmatchcase(a, b) or fnmatchcase(b, a)


def _unreachable_routes(file: str, data: dict, lines: dict[str, int]) -> list[MappingProblem]:
    patterns = _patterns(data)
    zoho = data.get("zoho") if isinstance(data.get("zoho"), dict) else {}
    project = zoho.get("project") if isinstance(zoho.get("project"), dict) else {}
    routes = project.get("by_source_project")
    if patterns is None or not isinstance(routes, dict):
        return []
    problems = []
    for name in routes:
        if not any(_overlap(str(name), p) for p in patterns):
            path = f"zoho.project.by_source_project.{name}"
            problems.append(
                MappingProblem(
                    file,
                    _line_of(lines, path),
                    path,
                    f"unreachable route: match.source_project ({', '.join(patterns)}) never accepts '{name}', "
                    "so its events never reach this file; add it to match.source_project or remove this route",
                )
            )
    return problems


def check_name(name: str, valid: Iterable[str]) -> tuple[str | None, str | None]:
    """(the Zoho name meant, or None; a message when it is unknown or ambiguous): case/space tolerant."""
    valid = list(dict.fromkeys(str(v) for v in valid))
    if name in valid:
        return name, None
    close = [v for v in valid if _normalize(v) == _normalize(name)]
    if len(close) == 1:
        return close[0], None
    if close:
        return None, f"'{name}' is ambiguous among Zoho {{field}} names: {', '.join(close)}; write one of them exactly"
    near = difflib.get_close_matches(name, valid, n=1)
    hint = f", did you mean '{near[0]}'?" if near else ""
    return None, f"'{name}' is not a Zoho {{field}}{hint} (valid: {', '.join(sorted(valid)) or '(none)'})"


def _zoho_names(file: str, data: dict, lines: dict[str, int], zoho_options: ZohoOptions) -> list[MappingProblem]:
    """Names in maps and defaults checked against the Zoho metadata of every project the file routes to."""
    zoho = data.get("zoho") if isinstance(data.get("zoho"), dict) else {}
    portal = str(zoho.get("portal", ""))
    project = zoho.get("project") if isinstance(zoho.get("project"), dict) else {}
    targets = [project.get("default")]
    if isinstance(project.get("by_source_project"), dict):
        targets += list(project["by_source_project"].values())
    projects = list(dict.fromkeys(str(t) for t in targets if isinstance(t, str | int) and not isinstance(t, bool)))
    # (path, zoho field, name) to check
    wanted: list[tuple[str, str, str]] = []
    mapped = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    for field in OPTION_FIELDS:
        spec = mapped.get(field)
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("map"), dict):
            wanted += [(f"fields.{field}.map.{k}", field, v) for k, v in spec["map"].items() if isinstance(v, str)]
        if isinstance(spec.get("default"), str):
            wanted.append((f"fields.{field}.default", field, spec["default"]))
    if isinstance(zoho.get("closed_status"), str):
        wanted.append(("zoho.closed_status", "status", zoho["closed_status"]))
    if isinstance(mapped.get("custom"), dict):
        wanted += [(f"fields.custom.{k}", "custom", str(k)) for k in mapped["custom"]]
    if isinstance(zoho.get("external_id_field"), str):
        wanted.append(("zoho.external_id_field", "custom", zoho["external_id_field"]))
    problems: list[MappingProblem] = []
    for path, field, name in wanted:
        for target in projects:
            valid = (zoho_options.get((portal, target)) or {}).get(field)
            if valid is None:
                continue  # Zoho not reachable for this project, or the field is not reported
            if not valid and field != "custom":  # an empty option list (issue #10): no name can resolve
                message = f"Zoho reports an empty {field} list for project {target}: {name!r} cannot be set"
                problems.append(MappingProblem(file, _line_of(lines, path), path, message))
                break
            _, message = check_name(name, valid)
            if message:
                what = "custom field API name" if field == "custom" else field
                message = message.replace("{field}", f"{what} (project {target})")
                problems.append(MappingProblem(file, _line_of(lines, path), path, message))
                break
    return problems


def _semantic(file: str, data: Any, lines: dict[str, int], zoho_options: ZohoOptions | None) -> list[MappingProblem]:
    if not isinstance(data, dict):
        return []
    problems = _unreachable_entries(file, data, lines) + _unreachable_routes(file, data, lines)
    if zoho_options:
        problems += _zoho_names(file, data, lines, zoho_options)
    return problems


# PyYAML's wording, as a person editing a mapping file would put it. (problem, context) substrings -> sentence;
# `{start}` is the line where the unclosed thing (quote, bracket) began.
_YAML_SENTENCES: list[tuple[str, str, str]] = [
    ("cannot start any token", "'\\t'", "a tab character: YAML indents with spaces only, replace the tab with spaces"),
    (
        "mapping values are not allowed here",
        "",
        "a ':' where YAML expected none: this line is probably indented "
        "differently from the lines above it, or a value containing ': ' needs quotes",
    ),
    (
        "could not find expected ':'",
        "",
        "a line without 'key: value' where one was expected: check the indentation and the ':' of the lines around it",
    ),
    ("did not find expected key", "", "this line's indentation does not match the lines above it"),
    ("but found '<block mapping start>'", "", "this line's indentation does not match the lines above it"),
    (
        "expected <block end>",
        "",
        "YAML read a value as finished before this point: look for a quote left open on "
        "the line above (a quoted value must close on its own line) or a wrong indentation",
    ),
    ("found unexpected end of stream", "quoted scalar", "a quote opened at line {start} is never closed"),
    ("found unexpected end of stream", "", "the file ends in the middle of a value (a quote or bracket never closed)"),
    ("expected ',' or '}'", "", "a {{…}} opened at line {start} is missing a ',' or its closing '}}'"),
    ("expected ',' or ']'", "", "a […] opened at line {start} is missing a ',' or its closing ']'"),
    ("found undefined alias", "", "a '*' starts a YAML alias here: put the value in quotes"),
    ("found character '@' that cannot start any token", "", "a value starting with '@' needs quotes"),
    ("found character '`' that cannot start any token", "", "a value starting with '`' needs quotes"),
]


def plain_yaml_error(exc: yaml.YAMLError) -> str:
    """A plain sentence for a YAML syntax error, with the parser's own words after it for the curious."""
    problem = str(getattr(exc, "problem", "") or "")
    context = str(getattr(exc, "context", "") or "")
    context_mark = getattr(exc, "context_mark", None)
    start = context_mark.line + 1 if context_mark is not None else "?"
    raw = " ".join(p for p in (context, problem) if p) or str(exc)
    for needle, in_context, sentence in _YAML_SENTENCES:
        if needle in problem and (not in_context or in_context in context or in_context in problem):
            return f"{sentence.format(start=start)} (YAML parser: {raw})"
    if context and context_mark is not None:
        raw = f"{context} at line {start}, {problem}"
    return raw


def _load(
    path: Path, known_fields: KnownFields | None, zoho_options: ZohoOptions | None = None
) -> tuple[Mapping | None, list[MappingProblem], dict]:
    """Read and validate one file: (mapping or None, problems, {dotted key: line})."""
    file = str(path)
    try:
        if path.stat().st_size > MAX_MAPPING_BYTES:
            message = f"the file is larger than {MAX_MAPPING_BYTES // 1024} KiB: not read (a mapping is a few KiB)"
            return None, [MappingProblem(file, None, "", message)], {}
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [MappingProblem(file, None, "", f"cannot read the file: {exc}")], {}
    if len(text) > MAX_MAPPING_BYTES:  # grew between the stat and the read
        message = f"the file is larger than {MAX_MAPPING_BYTES // 1024} KiB: not read (a mapping is a few KiB)"
        return None, [MappingProblem(file, None, "", message)], {}
    loader = _LineLoader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [MappingProblem(file, None, "", "the file is empty")], {}
        loader.lines[""] = _line(node)
        loader.check_expansion(node)
        data = loader.build(node)
    except _TooLarge as exc:
        return None, [MappingProblem(file, exc.line, "", exc.message)], {}
    except RecursionError:
        return None, [MappingProblem(file, None, "", "the YAML is nested too deeply to be a mapping file")], {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if "end of stream" in str(getattr(exc, "problem", "")) and getattr(exc, "context_mark", None) is not None:
            mark = exc.context_mark  # type: ignore[attr-defined]  # the file's end says little: where it opened
        message = f"invalid YAML: {plain_yaml_error(exc)}"
        return None, [MappingProblem(file, mark.line + 1 if mark else None, "", message)], {}
    finally:
        loader.dispose()
    problems = list(loader.problems)
    problems += _semantic(file, data, loader.lines, zoho_options)
    mapping = None
    try:
        mapping = load_mapping_data(data, path=file, known_fields=known_fields)
    except ValidationError as exc:
        flat: list[tuple[str, str]] = []
        _flatten(exc.messages, "", flat)
        # One problem per key is enough: a refused tag also "has no value" for the schema.
        seen = {p.key for p in loader.problems}
        problems += [
            MappingProblem(file, _line_of(loader.lines, k), k, _reword(k, m, data)) for k, m in flat if k not in seen
        ]
    problems.sort(key=lambda p: (p.line is None, p.line or 0, p.key))
    return (None if problems else mapping), problems, loader.lines


def load_mapping(
    path: str | Path, *, known_fields: KnownFields | None = None, zoho_options: ZohoOptions | None = None
) -> Mapping:
    """Load and validate one mapping file; raises `MappingError` listing every problem found."""
    mapping, problems, _ = _load(Path(path), known_fields, zoho_options)
    if mapping is None:
        raise MappingError(problems)
    return mapping


def _files(directory: Path) -> list[Path]:
    # A shared users table (`users: users.yaml`) sits beside the mappings but is not one.
    found = {p for pattern in PATTERNS for p in directory.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p.name not in USERS_FILES)


def mapping_files(directory: Path) -> list[Path]:
    """The mapping files the bridge loads: `*.yaml` / `*.yml` directly in `directory` (never a sub-folder such
    as `examples/`), without the shared users table."""
    return _files(directory) if directory.is_dir() else []


def _name_clash(path: Path, mapping: Mapping, lines: dict, holder: str) -> MappingProblem:
    return MappingProblem(
        str(path),
        lines.get("name") or lines.get(""),
        "name",
        f"name '{mapping.name}' is already used by {holder}; give one of them a different `name:`",
    )


def _route_clash(path: Path, mapping: Mapping, lines: dict, other: Mapping) -> MappingProblem | None:
    """Two files of one source that would both take an event: `match:` must tell them apart."""
    if mapping.source != other.source:
        return None
    mine, theirs = mapping.match_source_projects, other.match_source_projects
    if mine is None and theirs is None:
        return MappingProblem(
            str(path),
            lines.get("source") or lines.get(""),
            "source",
            f"duplicate route: {other.path} also takes every {mapping.source} event; "
            "add a `match: {source_project: [...]}` to one of them",
        )
    if mine is None or theirs is None:
        return None  # the file without `match:` takes what the other one does not
    pair = next(((a, b) for a in mine for b in theirs if _overlap(a, b)), None)
    if pair is None:
        return None
    return MappingProblem(
        str(path),
        _line_of(lines, "match.source_project"),
        "match.source_project",
        f"duplicate route: '{pair[0]}' overlaps '{pair[1]}' in {other.path}, so an event could go to either "
        "file; make the patterns disjoint",
    )


def _clash(path: Path, mapping: Mapping, lines: dict, holders: dict[str, Mapping]) -> MappingProblem | None:
    for file, other in holders.items():
        if file != str(path) and other.name == mapping.name:
            return _name_clash(path, mapping, lines, file)
    for file, other in holders.items():
        if file != str(path) and (problem := _route_clash(path, mapping, lines, other)) is not None:
            return problem
    return None


def check_directory(
    directory: str | Path, known_fields: KnownFields | None = None, zoho_options: ZohoOptions | None = None
) -> list[MappingProblem]:
    """Validate every mapping file in `directory` without keeping anything (`issue-bridge mappings check`).

    `zoho_options` ((portal, project) -> {field: [names]}, see `ZohoOptions`) adds the check of every Zoho
    name against Zoho's own metadata; projects it does not cover are not checked.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [MappingProblem(str(directory), None, "", "mappings directory does not exist")]
    problems: list[MappingProblem] = []
    holders: dict[str, Mapping] = {}
    for path in _files(directory):
        mapping, file_problems, lines = _load(path, known_fields, zoho_options)
        problems += file_problems
        if mapping is not None:
            clash = _clash(path, mapping, lines, holders)
            if clash is not None:
                problems.append(clash)
            else:
                holders[str(path)] = mapping
    return problems


class LastGoodStore(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, text: str) -> None: ...


class MappingRegistry:
    """The mappings in force, re-read when their files change; a broken edit keeps the last good version."""

    def __init__(
        self,
        directory: str | Path,
        *,
        known_fields: KnownFields | None = None,
        last_good: LastGoodStore | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.known_fields = known_fields
        # Shared by every process (the database): a process that starts after a broken edit still
        # runs the last good version, not nothing.
        self.last_good = last_good
        self.problems: dict[str, list[MappingProblem]] = {}
        self._mappings: dict[str, Mapping] = {}  # file -> last good mapping
        self._stamps: dict[str, tuple[int, int]] = {}  # file -> (mtime_ns, size) last read
        self._clashed: set[str] = set()  # files refused only because another file holds their name
        self._lock = threading.Lock()
        self._checked_at = time.monotonic()  # the last look at the files, for reload_if_due
        self.reload_if_changed()

    def all(self) -> list[Mapping]:
        with self._lock:
            return sorted(self._mappings.values(), key=lambda m: m.name)

    def get(self, name: str) -> Mapping | None:
        return next((m for m in self.all() if m.name == name), None)

    def for_source(self, source: str) -> list[Mapping]:
        """The source's mappings in the order `for_event` tries them: with `match:` first, then the rest."""
        return sorted((m for m in self.all() if m.source == source), key=lambda m: m.match_source_projects is None)

    def for_event(self, event: NormalizedEvent) -> Mapping | None:
        """The mapping that applies to `event`: the first of its source whose `match:` accepts its project."""
        return next((m for m in self.for_source(event.source) if m.accepts(event.source_project)), None)

    def reload_if_due(self, min_interval: float) -> None:
        """`reload_if_changed`, at most once per `min_interval` seconds: for callers anyone can trigger
        (an anonymous `/readyz`), so requests cannot make a process re-read its mappings in a loop."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < min_interval:
                return
            self._checked_at = now
        self.reload_if_changed()

    def reload_if_changed(self) -> list[MappingProblem]:
        """Re-read files whose mtime or size changed (one stat each); returns the problems found now."""
        with self._lock:
            found: list[MappingProblem] = []
            current: dict[str, tuple[Path, tuple[int, int]]] = {}
            for path in _files(self.directory) if self.directory.is_dir() else []:
                try:
                    stat = path.stat()
                except OSError:  # removed between listing and stat
                    continue
                current[str(path)] = (path, (stat.st_mtime_ns, stat.st_size))
            removed = set(self._stamps) - set(current)
            for file in removed:
                log.info("mapping file %s removed", file)
                self._stamps.pop(file)
                self._mappings.pop(file, None)
                self.problems.pop(file, None)
                self._clashed.discard(file)
            changed = {f for f, (_, stamp) in current.items() if self._stamps.get(f) != stamp}
            if removed or changed:
                # A file refused for its name may be fine now that the other file changed or went away.
                changed |= self._clashed
            for file in sorted(changed):
                self._stamps[file] = current[file][1]
                found += self._reload(file, current[file][0])
            return found

    def _reload(self, file: str, path: Path) -> list[MappingProblem]:
        mapping, problems, lines = _load(path, self.known_fields)
        if mapping is not None:
            clash = _clash(path, mapping, lines, self._mappings)
            if clash is not None:
                problems = [clash]
        self._clashed.discard(file)
        if mapping is not None and problems:
            self._clashed.add(file)
        if problems or mapping is None:
            self.problems[file] = problems
            # The last version any process loaded, not only this one's: a good edit this process did not look at
            # (another worker loaded it) is newer than what it holds.
            fallback = self._from_last_good(path) if self.last_good is not None else None
            if fallback is not None:
                self._mappings[file] = fallback
            kept = "the last good version stays in force" if file in self._mappings else "it is not in use"
            for problem in problems:
                log.error("mapping refused (%s): %s", kept, problem)
            return problems
        self.problems.pop(file, None)
        self._mappings[file] = mapping
        if self.last_good is not None:
            with contextlib.suppress(OSError):  # the file vanished after loading: nothing to remember
                self.last_good.put(path.name, path.read_text(encoding="utf-8"))
        log.info("mapping %r (%s) loaded from %s", mapping.name, mapping.source, file)
        return []

    def _from_last_good(self, path: Path) -> Mapping | None:
        """The last version of this file that any process loaded successfully, if the store has one."""
        assert self.last_good is not None
        text = self.last_good.get(path.name)
        if not text:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_text(text, encoding="utf-8")
            for shared in USERS_FILES:  # a `users: users.yaml` table is read beside the file
                if (path.parent / shared).is_file():
                    (Path(tmp) / shared).write_bytes((path.parent / shared).read_bytes())
            mapping, problems, _ = _load(copy, self.known_fields)
        if mapping is None or problems:
            return None
        return dataclasses.replace(mapping, path=str(path))


def dialect_problems(path: str | Path, dialect: str) -> list[MappingProblem]:
    """What a valid mapping cannot do in this Zoho dialect: the BugTracker API documents no custom fields
    (seed 000:145-343), so `fields.custom` there is refused rather than silently dropped, and no move of a
    bug to another project, so `on_route_change: move` is refused too."""
    target = Path(path)
    files = [target] if target.is_file() else sorted([*target.glob("*.yaml"), *target.glob("*.yml")])
    problems: list[MappingProblem] = []
    for file in files:
        mapping, _, lines = _load(file, None)
        if dialect == "bugtracker" and mapping is not None and mapping.custom_fields:
            names = ", ".join(name for name, _ in mapping.custom_fields)
            message = f"the bugtracker dialect documents no custom fields: remove fields.custom ({names})"
            problems.append(MappingProblem(str(file), _line_of(lines, "fields.custom"), "fields.custom", message))
        if dialect == "bugtracker" and mapping is not None and mapping.on_route_change == "move":
            message = "the bugtracker dialect documents no move of a bug between projects: use on_route_change: keep"
            problems.append(MappingProblem(str(file), _line_of(lines, "on_route_change"), "on_route_change", message))
    return problems


# portal id -> {project id: project name}, as Zoho lists them for the configured credentials
ZohoRoutes = AbcMapping[str, AbcMapping[str, str]]


def route_problems(path: str | Path, known: ZohoRoutes) -> list[MappingProblem]:
    """A route to a portal or project that Zoho does not know (for these credentials) is an error with its
    line: events routed there could only fail. `known` comes from `GET /api/v3/portals` and each portal's
    project list (seed 001:745-779, 1002-1080)."""
    file = Path(path)
    mapping, _, lines = _load(file, None)
    if mapping is None:
        return []  # its other problems are reported elsewhere
    portal = mapping.routing.portal
    if portal not in known:
        listed = ", ".join(sorted(known)) or "none"
        message = (
            f"portal '{portal}' is not a Zoho portal these credentials can see (yours: {listed}); "
            "`issue-bridge zoho projects` lists them"
        )
        return [MappingProblem(str(file), _line_of(lines, "zoho.portal"), "zoho.portal", message)]
    projects = known[portal]
    listed = ", ".join(f"{pid} ({name})" for pid, name in sorted(projects.items())) or "none"
    targets: list[tuple[str, str]] = []
    if mapping.routing.default_project:
        targets.append(("zoho.project.default", mapping.routing.default_project))
    targets += [(f"zoho.project.by_source_project.{k}", v) for k, v in mapping.routing.by_source_project]
    problems = []
    for key, project in targets:
        if project not in projects:
            message = f"project '{project}' is not a project of Zoho portal {portal} (its projects: {listed})"
            problems.append(MappingProblem(str(file), _line_of(lines, key), key, message))
    return problems
