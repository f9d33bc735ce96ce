"""Broken mapping files: each one reported with its exact line and a message an administrator understands."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.mapping import MappingError, check_directory, load_mapping
from bridge.sources import KNOWN_FIELDS

BASE = """\
source: bugzilla
zoho:
  portal: "739121528"
  project:
    default: "100"
external_id: "bugzilla:{id}"
fields:
  title: "{summary}"
  status:
    from: [status, resolution]
    map:
      RESOLVED/FIXED: To be Tested
      RESOLVED/*: Closed
      "*/*": Open
"""
FLAGS = "must be one of: Internal, External (Zoho Projects) or Bug, Feature, Enhancement, Task (Zoho BugTracker)"
BUGZILLA_KNOWN = ", ".join(sorted(KNOWN_FIELDS["bugzilla"]))
UNREACHABLE = "comes first and matches everything this entry matches; move this entry above it or remove it"

# (case, file text, line, key, message)
CASES = [
    (
        "specific entry after its wildcard",
        BASE.replace(
            "      RESOLVED/FIXED: To be Tested\n      RESOLVED/*: Closed\n",
            "      RESOLVED/*: Closed\n      RESOLVED/FIXED: To be Tested\n",
        ),
        13,
        "fields.status.map.RESOLVED/FIXED",
        f"unreachable: 'RESOLVED/*' (line 12) {UNREACHABLE}",
    ),
    (
        "entry after a catch-all",
        BASE + "      VERIFIED/FIXED: Closed\n",
        15,
        "fields.status.map.VERIFIED/FIXED",
        f"unreachable: '*/*' (line 14) {UNREACHABLE}",
    ),
    (
        "combination key with too few parts",
        BASE.replace("RESOLVED/*: Closed", "RESOLVED: Closed"),
        13,
        "fields.status.map.RESOLVED",
        "'RESOLVED' has 1 part(s) but `from` lists 2 fields (status, resolution); "
        "write one value or * per field, separated by '/', e.g. 'RESOLVED/*'",
    ),
    (
        "misspelt field in a combination",
        BASE.replace("[status, resolution]", "[status, resolutoin]"),
        10,
        "fields.status.from",
        f"unknown field 'resolutoin' for source bugzilla, did you mean 'resolution'? (known: {BUGZILLA_KNOWN})",
    ),
    (
        "field listed twice",
        BASE.replace("[status, resolution]", "[status, status]"),
        10,
        "fields.status.from",
        "lists 'status' more than once",
    ),
    (
        "from is a number",
        BASE.replace("[status, resolution]", "42"),
        10,
        "fields.status.from",
        "must be a field name or a list of field names, got a number",
    ),
    (
        "wildcard in a one-field map",
        BASE + '  severity:\n    from: severity\n    map: {"*": Major}\n',
        17,
        "fields.severity.map.*",
        "'*' is a wildcard only in combinations (`from: [field, field]`); use `default:` for every other value",
    ),
    ("unknown flag", BASE + "  flag: Public\n", 15, "fields.flag", f"{FLAGS}, got 'Public'"),
    (
        "unknown flag in a flag map",
        BASE + '  flag:\n    from: is_private\n    map: {"true": Internal, "false": Outside}\n',
        17,
        "fields.flag.map.false",
        f"{FLAGS}, got 'Outside'",
    ),
    (
        "tag by name instead of id",
        BASE + "  tags:\n    from: keywords\n    map: {regression: red bug}\n",
        17,
        "fields.tags.map.regression",
        "must be a Zoho tag id (digits only; tags are set by id), got 'red bug'",
    ),
    (
        "tags from a list of fields",
        BASE + '  tags:\n    from: [keywords, type]\n    map: {regression: "123"}\n',
        16,
        "fields.tags.from",
        "takes one source field (such as labels, tag_names or keywords), not a list",
    ),
    (
        "assignee fallback is not an email",
        BASE + '  assignee:\n    email: "{assigned_to}"\n    fallback: triage team\n',
        17,
        "fields.assignee.fallback",
        "must be an email address, got 'triage team'",
    ),
    (
        "assignee with an unknown key",
        BASE + '  assignee:\n    email: "{assigned_to}"\n    default: a@b.c\n',
        17,
        "fields.assignee.default",
        "unknown key 'default' (expected one of: email, fallback)",
    ),
    (
        "assignee is a list",
        BASE + "  assignee: [a, b]\n",
        15,
        "fields.assignee",
        "must be an email template or a mapping with email and fallback, got a list",
    ),
    (
        "due date from an unknown field",
        BASE + '  due_date: "{deadline|date}"\n',
        15,
        "fields.due_date",
        f"unknown field 'deadline' for source bugzilla (known: {BUGZILLA_KNOWN})",
    ),
    ("empty due date", BASE + '  due_date: ""\n', 15, "fields.due_date", "must not be empty"),
    (
        "date filter with an argument",
        BASE + '  due_date: "{creation_time|date:3}"\n',
        15,
        "fields.due_date",
        "invalid template: filter 'date' takes no argument (at character 15)",
    ),
    (
        "empty match list",
        BASE + "match:\n  source_project: []\n",
        16,
        "match.source_project",
        "must list at least one source project or glob",
    ),
    (
        "route that match never lets through",
        BASE.replace('    default: "100"\n', '    default: "100"\n    by_source_project:\n      Thunderbird: "200"\n')
        + 'match:\n  source_project: [Firefox, "Firefox *"]\n',
        7,
        "zoho.project.by_source_project.Thunderbird",
        "unreachable route: match.source_project (Firefox, Firefox *) never accepts 'Thunderbird', so its events "
        "never reach this file; add it to match.source_project or remove this route",
    ),
    (
        "unknown filter in a custom field",
        BASE + '  custom:\n    bz_whiteboard: "{whiteboard|shout}"\n',
        16,
        "fields.custom.bz_whiteboard",
        "invalid template: unknown filter 'shout' (known: date, default, join, lower, truncate, upper) "
        "(at character 12)",
    ),
    (
        "misspelt top-level key",
        BASE + "comment: true\n",
        15,
        "comment",
        "unknown key 'comment', did you mean 'comments'? (expected one of: source, name, match, zoho, external_id, "
        "fields, comments, comment_template, on_delete, on_route_change, backlink, reverse, conflict, when, "
        "on_unmatch, users, "
        "attachments)",
    ),
    (
        "comments is not a boolean",
        BASE + "comments: sometimes\n",
        15,
        "comments",
        "must be true or false, got a string",
    ),
    (
        "a tab in the indentation",
        BASE.replace("  title:", "\ttitle:"),
        8,
        "",
        "invalid YAML: a tab character: YAML indents with spaces only, replace the tab with spaces "
        "(YAML parser: while scanning for the next token found character '\\t' that cannot start any token)",
    ),
    (
        "on_delete outside its choices",
        BASE + "on_delete: archive\n",
        15,
        "on_delete",
        "must be one of: close, comment, ignore (got 'archive')",
    ),
]


def _problems(tmp_path: Path, text: str, name: str = "bugzilla.yaml") -> list[tuple[int | None, str, str]]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as info:
        load_mapping(path, known_fields=KNOWN_FIELDS)
    return [(p.line, p.key, p.message) for p in info.value.problems]


def test_base_file_is_valid(tmp_path):
    path = tmp_path / "bugzilla.yaml"
    path.write_text(BASE, encoding="utf-8")
    assert load_mapping(path, known_fields=KNOWN_FIELDS).value_map("status").source_fields == ("status", "resolution")


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize(("text", "line", "key", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_file(tmp_path, text, line, key, message):
    assert _problems(tmp_path, text) == [(line, key, message)]


def test_several_problems_are_reported_at_once(tmp_path):
    text = (
        BASE.replace(
            "      RESOLVED/FIXED: To be Tested\n      RESOLVED/*: Closed\n",
            "      RESOLVED/*: Closed\n      RESOLVED/FIXED: To be Tested\n",
        )
        + "  flag: Public\n  tags:\n    from: keywords\n    map: {regression: red bug}\ncomments: sometimes\n"
    )
    path = tmp_path / "bugzilla.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as info:
        load_mapping(path, known_fields=KNOWN_FIELDS)
    assert [(p.line, p.key) for p in info.value.problems] == [
        (13, "fields.status.map.RESOLVED/FIXED"),
        (15, "fields.flag"),
        (18, "fields.tags.map.regression"),
        (19, "comments"),
    ]
    assert str(info.value).splitlines()[1] == f"{path}:15: fields.flag: {FLAGS}, got 'Public'"


def _github(match: str | None, name: str) -> str:
    head = f"source: github\nname: {name}\n" + (f"match:\n  source_project: {match}\n" if match else "")
    return head + (
        'zoho:\n  portal: "1"\n  project:\n    default: "100"\nexternal_id: "github:{repository}#{number}"\n'
        'fields:\n  title: "{title}"\n'
    )


def test_duplicate_route_between_two_files_of_one_source(tmp_path):
    (tmp_path / "a.yaml").write_text(_github('["acme/*"]', "a"))
    (tmp_path / "b.yaml").write_text(_github("[acme/web, other/x]", "b"))
    (tmp_path / "c.yaml").write_text(_github('["acme-labs/*"]', "c"))  # disjoint: fine
    (tmp_path / "d.yaml").write_text(_github(None, "d"))  # the catch-all: fine, tried last
    problems = check_directory(tmp_path, KNOWN_FIELDS)
    assert [(Path(p.file).name, p.line, p.key, p.message) for p in problems] == [
        (
            "b.yaml",
            4,
            "match.source_project",
            f"duplicate route: 'acme/web' overlaps 'acme/*' in {tmp_path / 'a.yaml'}, so an event could go to "
            "either file; make the patterns disjoint",
        )
    ]


def test_two_catch_all_files_of_one_source(tmp_path):
    (tmp_path / "a.yaml").write_text(_github(None, "a"))
    (tmp_path / "b.yaml").write_text(_github(None, "b"))
    [problem] = check_directory(tmp_path, KNOWN_FIELDS)
    assert (Path(problem.file).name, problem.line, problem.key) == ("b.yaml", 1, "source")
    assert problem.message == (
        f"duplicate route: {tmp_path / 'a.yaml'} also takes every github event; "
        "add a `match: {source_project: [...]}` to one of them"
    )


ZOHO = {
    ("739121528", "100"): {
        "status": ["Open", "In Progress", "To be Tested", "Closed"],
        "severity": ["Blocker", "Critical", "Major", "Minor", "None"],
        "custom": ["external_id", "bz_whiteboard"],
    }
}


def test_names_checked_against_zoho_metadata(tmp_path):
    text = (
        BASE.replace("To be Tested", " to be  tested")  # case and spaces are tolerated
        .replace("RESOLVED/*: Closed", "RESOLVED/*: Closd")
        .replace('  portal: "739121528"\n', '  portal: "739121528"\n  external_id_field: external_id\n')
        + "  severity:\n    from: severity\n    map: {S1: Blocker, S2: major, S3: Urgent}\n    default: Nope\n"
        + '  custom:\n    bz_wb: "{whiteboard}"\n'
    )
    (tmp_path / "bugzilla.yaml").write_text(text)
    problems = check_directory(tmp_path, KNOWN_FIELDS, zoho_options=ZOHO)
    assert [(p.line, p.key, p.message) for p in problems] == [
        (
            14,
            "fields.status.map.RESOLVED/*",
            "'Closd' is not a Zoho status (project 100), did you mean 'Closed'? "
            "(valid: Closed, In Progress, Open, To be Tested)",
        ),
        (
            18,
            "fields.severity.map.S3",
            "'Urgent' is not a Zoho severity (project 100) (valid: Blocker, Critical, Major, Minor, None)",
        ),
        (
            19,
            "fields.severity.default",
            "'Nope' is not a Zoho severity (project 100), did you mean 'None'? "
            "(valid: Blocker, Critical, Major, Minor, None)",
        ),
        (
            21,
            "fields.custom.bz_wb",
            "'bz_wb' is not a Zoho custom field API name (project 100) (valid: bz_whiteboard, external_id)",
        ),
    ]
    # Unreachable Zoho (no metadata): nothing to check against, the file is fine.
    assert check_directory(tmp_path, KNOWN_FIELDS) == []


def test_ambiguous_name_must_be_written_exactly(tmp_path):
    zoho = {("739121528", "100"): {"status": ["Open", "open ", "Closed", "To be Tested"]}}
    (tmp_path / "bugzilla.yaml").write_text(BASE.replace('*/*": Open', '*/*": OPEN'))
    [problem] = check_directory(tmp_path, KNOWN_FIELDS, zoho_options=zoho)
    assert (problem.line, problem.key) == (14, "fields.status.map.*/*")
    assert problem.message == (
        "'OPEN' is ambiguous among Zoho status (project 100) names: Open, open ; write one of them exactly"
    )
