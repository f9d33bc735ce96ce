"""`issue-bridge mappings init github|bugzilla|bugherd --project ID`: a commented mapping file written from the Zoho
project's real option lists (statuses, severities, classifications, modules, priorities) and the source's
conventions, so a new admin starts from names their portal accepts instead of an example's.

Each source value is matched to a Zoho name by the words such names usually contain ("closed", "done", "shipped"
for a closing status; "blocker", "sev1", "outage" for the worst severity, …), compared on letters and digits only.
A source value with no likely Zoho name is left out, with a comment, rather than guessed: every name written is one
of the project's own, so the file passes `mappings check` as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

SOURCES = ("github", "bugzilla", "bugherd")

# Words that name a role, best first (compared on lowercase letters and digits).
STATUS_WORDS = {
    "open": ("open", "new", "todo", "triage", "backlog", "notstarted", "submitted"),
    "progress": ("inprogress", "progress", "doing", "working", "active", "started", "assigned"),
    "testing": ("tobetested", "testing", "test", "review", "verify", "qa", "resolved"),
    "reopened": ("reopened", "reopen"),
    "closed": ("closed", "close", "done", "fixed", "shipped", "complete", "resolved", "cancel", "wontfix"),
}
SEVERITY_WORDS = {
    "blocker": ("blocker", "showstopper", "block", "outage", "sev1", "s1", "urgent"),
    "critical": ("critical", "crit", "sev2", "s2", "severe", "high"),
    "major": ("major", "sev3", "s3", "medium", "moderate", "normal"),
    "minor": ("minor", "sev4", "s4", "low", "trivial", "cosmetic"),
    "none": ("none", "notset", "untriaged", "unknown"),
}
CLASSIFICATION_WORDS = {
    "bug": ("bug", "defect", "error"),
    "security": ("security", "sec", "vulnerability"),
    "enhancement": ("enhancement", "improvement"),
    "feature": ("feature", "newfeature", "story"),
    "performance": ("performance", "perf", "speed"),
}
PRIORITY_WORDS = {
    "highest": ("highest", "urgent", "critical", "p1", "veryhigh"),
    "high": ("high", "p2", "important"),
    "medium": ("medium", "normal", "p3", "moderate"),
    "low": ("low", "p4", "minor"),
    "lowest": ("lowest", "p5", "verylow", "trivial"),
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.casefold())


def slug(name: str) -> str:
    """A label-friendly form of a Zoho name: `Feature(New)` -> `feature-new`."""
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-") or "x"


def pick(names: Sequence[str], words: Iterable[str], *, taken: Iterable[str] = ()) -> str | None:
    """The Zoho name that best fits a role: an exact word first, then one contained in the name; names already
    taken by a better role are skipped."""
    taken = set(taken)
    keyed = [(name, _key(name)) for name in names if name not in taken]
    words = [_key(w) for w in words]
    for word in words:
        for name, key in keyed:
            if key == word:
                return name
    for word in words:  # a short word ("p1", "qa") only at a name's start or end
        for name, key in keyed:
            if (word in key) if len(word) >= 3 else key.startswith(word) or key.endswith(word):
                return name
    return None


def _roles(names: Sequence[str], table: Mapping[str, Iterable[str]]) -> dict[str, str | None]:
    """Each role's Zoho name, roles matched in the table's order, each name used by one role at most."""
    chosen: dict[str, str | None] = {}
    for role, words in table.items():
        chosen[role] = pick(names, words, taken=[n for n in chosen.values() if n])
    return chosen


def status_roles(statuses: Sequence[str]) -> dict[str, str]:
    """open/progress/testing/reopened/closed -> a status name, never missing: open falls back to the first status,
    closed to the last, the others to open (or, for testing, closed)."""
    if not statuses:
        return {}
    found = {role: pick(statuses, words) for role, words in STATUS_WORDS.items()}
    open_name = found["open"] or statuses[0]
    closed = found["closed"] if found["closed"] and found["closed"] != open_name else statuses[-1]
    return {
        "open": open_name,
        "progress": found["progress"] or open_name,
        "testing": found["testing"] if found["testing"] not in (None, open_name) else closed,
        "reopened": found["reopened"] or open_name,
        "closed": closed,
    }


def q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _flow(entries: Sequence[tuple[str, str]], indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}{q(k)}: {q(v)}" for k, v in entries]


def _valid(names: Sequence[str]) -> str:
    return ", ".join(names) or "(none)"


def render(
    source: str,
    *,
    portal: str,
    project: str,
    project_name: str,
    options: Mapping[str, Sequence[str]],
    external_id_field: str | None,
    command: str,
) -> str:
    """The mapping file's text. `options` is {zoho field: [names]} as the project reports them."""
    statuses = list(options.get("status", ()))
    severities = list(options.get("severity", ()))
    classifications = list(options.get("classification", ()))
    modules = [m for m in options.get("module", ()) if _key(m) != "none"]
    priorities = list(options.get("priority", ()))
    status = status_roles(statuses)
    severity = _roles(severities, SEVERITY_WORDS)
    classification = _roles(classifications, CLASSIFICATION_WORDS)
    priority = _roles(priorities, PRIORITY_WORDS)
    lines = [
        f"# How {source} items become Zoho issues, written by `{command}`",
        f"# from the option lists of Zoho project {project} ({project_name}) in portal {portal}.",
        "# Every Zoho name below is one of that project's own; source values with no likely Zoho name are left",
        "# out (see the comments). Edit freely: the bridge re-reads this file on change, and a broken edit is",
        "# refused (file, line and reason in the log) while the last good version stays in force.",
        "# Check your edits with: issue-bridge mappings check      Every key: docs/mappings.md",
        "#",
        f"# Zoho statuses:        {_valid(statuses)}",
        f"# Zoho severities:      {_valid(severities)}",
        f"# Zoho classifications: {_valid(classifications)}",
        f"# Zoho modules:         {_valid(modules)}",
    ]
    if priorities:
        lines.append(f"# Zoho priorities:      {_valid(priorities)}")
    lines += [
        "",
        f"source: {source}",
        "",
        "zoho:",
        f"  portal: {q(portal)}",
    ]
    if external_id_field:
        lines.append(f"  external_id_field: {external_id_field}  # the issue custom field that carries the external id")
    else:
        lines.append("  # external_id_field: external_id  # an issue custom field for the external id, if you add one")
    if status:
        lines.append(f"  closed_status: {q(status['closed'])}  # used when an item is deleted and on_delete is close")
    lines += [
        "  project:",
        f"    default: {q(project)}  # {project_name}: every {_what(source)} not listed below",
        "    # by_source_project:     # route some elsewhere (`issue-bridge zoho projects` lists the ids)",
        f'    #   {q(_example_project(source))}: "<another Zoho project id>"',
        "",
    ]
    lines += _SOURCE_PARTS[source](status, severity, classification, modules, priority, severities, classifications)
    return "\n".join(lines) + "\n"


def _what(source: str) -> str:
    return {"github": "repository", "bugzilla": "product", "bugherd": "BugHerd project id"}[source]


def _example_project(source: str) -> str:
    return {"github": "acme/web", "bugzilla": "Firefox", "bugherd": "77120"}[source]


def _entries(pairs: Iterable[tuple[str, str | None]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if v]


def _left_out(pairs: Iterable[tuple[str, str | None]]) -> list[str]:
    return [k for k, v in pairs if not v]


def _map_block(
    field: str,
    source_field: str,
    entries: list[tuple[str, str]],
    *,
    default: str | None,
    note: str,
    missing: Sequence[str] = (),
) -> list[str]:
    if not entries and not default:
        return [f"  # {field}: no {source_field} value has a likely Zoho {field} name here: map them by hand"]
    lines = [f"  {field}:  # {note}", f"    from: {source_field}", "    map:"]
    lines += _flow(entries, 6) if entries else ["      {}"]
    if missing:
        lines.append(f"      # not mapped (no likely Zoho {field}): {', '.join(missing)}")
    if default:
        lines.append(f"    default: {q(default)}")
    return lines


def _label_entries(prefix: str, names: Sequence[str]) -> list[tuple[str, str]]:
    return [(f"{prefix}:{slug(n)}", n) for n in names if _key(n) != "none"]


def _github(status, severity, classification, modules, priority, severities, classifications) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [
        'external_id: "github:{repository}#{number}"  # the issue\'s identity in Zoho; never change it once in use',
        "",
        "fields:",
        '  title: "{title}"',
        '  description: "{body}\\n\\nReported in GitHub: {html_url}"',
    ]
    if status:
        lines += _map_block(
            "status",
            "state",
            [("open", status["open"]), ("closed", status["closed"])],
            default=None,
            note="by GitHub state",
        )
    sev = _entries(
        [
            ("severity:blocker", severity["blocker"]),
            ("severity:critical", severity["critical"]),
            ("bug", severity["major"]),
        ]
    )
    sev += [e for e in _label_entries("severity", severities) if e[0] not in dict(sev)]
    lines += _map_block(
        "severity",
        "labels",
        sev,
        default=severity["minor"] or severity["none"],
        note="labels: the first entry found among the issue's labels wins",
    )
    cls = _entries([(label, classification[role]) for label, role in _GITHUB_CLASSES])
    cls += [e for e in _label_entries("type", classifications) if e[0] not in dict(cls)]
    lines += _map_block(
        "classification", "labels", cls, default=classification["bug"], note="labels: security, bug, enhancement…"
    )
    if modules:
        lines += _map_block(
            "module", "labels", _label_entries("area", modules), default=None, note="no default: left unset"
        )
    if any(priority.values()):
        pri = _entries([(f"priority:{role}", name) for role, name in priority.items()])
        lines += _map_block("priority", "labels", pri, default=None, note="labels priority:high…")
    return [*lines, "", *_TAIL("GitHub issue")]


_GITHUB_CLASSES = (
    ("security", "security"),
    ("bug", "bug"),
    ("enhancement", "enhancement"),
    ("feature", "feature"),
    ("performance", "performance"),
)

BUGZILLA_STATUSES = (
    ("UNCONFIRMED/*", "open"),
    ("NEW/*", "open"),
    ("ASSIGNED/*", "progress"),
    ("IN_PROGRESS/*", "progress"),
    ("REOPENED/*", "reopened"),
    ("RESOLVED/FIXED", "testing"),
    ("RESOLVED/*", "closed"),
    ("VERIFIED/*", "closed"),
    ("CLOSED/*", "closed"),
)
BUGZILLA_SEVERITIES = (
    ("blocker", "blocker"),
    ("critical", "critical"),
    ("S1", "critical"),
    ("major", "major"),
    ("S2", "major"),
    ("normal", "minor"),
    ("S3", "minor"),
    ("minor", "minor"),
    ("trivial", "minor"),
    ("S4", "minor"),
)
BUGZILLA_CLASSES = (
    ("sec-critical", "security"),
    ("sec-high", "security"),
    ("sec-moderate", "security"),
    ("sec-low", "security"),
    ("security", "security"),
    ("perf", "performance"),
    ("enhancement", "enhancement"),
    ("feature", "feature"),
    ("defect", "bug"),
)
BUGZILLA_PRIORITIES = (("P1", "highest"), ("P2", "high"), ("P3", "medium"), ("P4", "low"), ("P5", "lowest"))


def _bugzilla(status, severity, classification, modules, priority, severities, classifications) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [
        'external_id: "bugzilla:{id}"  # the bug\'s identity in Zoho; never change it once in use',
        "",
        "fields:",
        "  title: '{summary|default:\"(no summary)\"}'",
        '  description: "{description}\\n\\nBugzilla bug {id} in {product} / {component} (reported by {creator}).'
        '\\n{bug_url}"',
    ]
    if status:
        entries = [(value, status[role]) for value, role in BUGZILLA_STATUSES]
        lines += _map_block(
            "status",
            "[status, resolution]",
            entries,
            default=status["open"],
            note="by status/resolution: the first matching entry wins, * matches any",
        )
    pairs = [(value, severity[role]) for value, role in BUGZILLA_SEVERITIES]
    lines += _map_block(
        "severity",
        "severity",
        _entries(pairs),
        default=severity["none"] or severity["minor"],
        note="classic names and BMO's S1-S4",
        missing=_left_out(pairs),
    )
    pairs = [(value, classification[role]) for value, role in BUGZILLA_CLASSES]
    lines += _map_block(
        "classification",
        "keywords_and_type",
        _entries(pairs),
        default=classification["bug"],
        note="keywords and the bug type: the first found wins",
        missing=_left_out(pairs),
    )
    if modules:
        lines += _map_block(
            "module",
            "component",
            [(m, m) for m in modules],
            default=None,
            note="components named like a Zoho module; add yours",
        )
    if any(priority.values()):
        pairs = [(value, priority[role]) for value, role in BUGZILLA_PRIORITIES]
        lines += _map_block("priority", "priority", _entries(pairs), default=None, note="P1-P5")
    return [*lines, "", *_TAIL("Bugzilla bug", deletes=False)]


BUGHERD_STATUSES = (
    ("feedback", "open"),
    ("backlog", "open"),
    ("todo", "open"),
    ("doing", "progress"),
    ("done", "testing"),
    ("closed", "closed"),
)
BUGHERD_SEVERITIES = (("critical", "critical"), ("important", "major"), ("normal", "minor"), ("minor", "minor"))


def _bugherd(status, severity, classification, modules, priority, severities, classifications) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [
        'external_id: "bugherd:{task_id}"  # the task\'s identity in Zoho; never change it once in use',
        "",
        "fields:",
        '  title: "{title}"',
        '  description: "{description}\\n\\nPage: {page_url}\\nScreenshot: {screenshot_url|default:\\"none\\"}'
        '\\nReported by {requester|default:\\"an anonymous visitor\\"} in BugHerd: {admin_link}"',
    ]
    if status:
        lines += _map_block(
            "status",
            "status",
            [(value, status[role]) for value, role in BUGHERD_STATUSES],
            default=status["open"],
            note="by BugHerd column (custom columns: the default)",
        )
    pairs = [(value, severity[role]) for value, role in BUGHERD_SEVERITIES]
    lines += _map_block(
        "severity",
        "priority",
        _entries(pairs),
        default=severity["none"],
        note='BugHerd priority ("not set": the default)',
        missing=_left_out(pairs),
    )
    cls = _entries([(tag, classification[role]) for tag, role in _GITHUB_CLASSES])
    lines += _map_block(
        "classification", "tag_names", cls, default=classification["bug"], note="tags: the first found wins"
    )
    if modules:
        lines += _map_block(
            "module", "tag_names", [(slug(m), m) for m in modules], default=None, note="tags named like a module"
        )
    return [*lines, "", *_TAIL("BugHerd task")]


def _TAIL(what: str, *, deletes: bool = True) -> list[str]:
    lines = [f"comments: true                   # copy the {what}'s comments to the Zoho issue"]
    if deletes:
        lines.append(f"on_delete: close                 # when the {what} is deleted: close | comment | ignore")
    else:
        lines.append("on_delete: close                 # Bugzilla has no delete event: close | comment | ignore")
    lines.append("on_route_change: keep            # a linked issue whose route changes: keep it | move it")
    return lines


_SOURCE_PARTS = {"github": _github, "bugzilla": _bugzilla, "bugherd": _bugherd}
