import os
import textwrap
from pathlib import Path

import pytest

from bridge.mapping import MappingError, MappingRegistry, check_directory, load_mapping

GITHUB_FIELDS = frozenset(
    {
        "title", "body", "state", "state_reason", "labels", "repository", "number", "html_url",
        "user", "assignees", "milestone", "created_at", "updated_at", "closed_at", "issue_id",
    }
)  # fmt: skip
KNOWN = {"github": GITHUB_FIELDS}
SHIPPED = Path(__file__).resolve().parent.parent / "mappings" / "examples" / "github.yaml"

VALID = """\
source: github
zoho:
  portal: "739121528"
  project:
    default: "100"
external_id: "github:{repository}#{number}"
fields:
  title: "{title}"
  severity:
    from: labels
    map: {bug: Major}
"""


def write(directory: Path, text: str, name: str = "github.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(MappingError) as info:
        load_mapping(write(tmp_path, text), known_fields=KNOWN)
    return [(p.line, p.key, p.message) for p in info.value.problems]


def only_problem(tmp_path: Path, text: str) -> tuple[int | None, str, str]:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


def test_shipped_github_mapping_loads_cleanly():
    mapping = load_mapping(SHIPPED, known_fields=KNOWN)
    assert mapping.name == "github"
    assert mapping.routing.portal == "739121528"
    assert dict(mapping.routing.by_source_project)["acme/api"] == "1752587000000098001"
    assert mapping.external_id_field == "external_id"
    assert [field for field, _ in mapping.value_maps] == ["status", "severity", "classification", "module"]
    assert mapping.value_map("severity").entries[0] == ("severity:blocker", "Blocker")
    assert (mapping.comments, mapping.on_delete) == (True, "close")


def test_valid_file_gets_defaults(tmp_path):
    mapping = load_mapping(write(tmp_path, VALID, "acme.yml"), known_fields=KNOWN)
    assert mapping.name == "acme"
    assert mapping.description_template == ""
    assert mapping.closed_status == "Closed"
    assert mapping.comment_template == "{author} commented:\n\n{body}\n\n{url}"


def test_unknown_key_names_the_expected_ones(tmp_path):
    text = VALID.replace("map: {bug: Major}", "map: {bug: Major}\n    colour: red")
    assert only_problem(tmp_path, text) == (
        12,
        "fields.severity.colour",
        "unknown key 'colour' (expected one of: from, map, default)",
    )


def test_wrong_type(tmp_path):
    text = VALID.replace('title: "{title}"', "title: [a, b]")
    assert only_problem(tmp_path, text) == (8, "fields.title", "must be a template string, got a list")


def test_bad_on_delete(tmp_path):
    line, key, message = only_problem(tmp_path, VALID + "on_delete: destroy\n")
    assert (line, key) == (12, "on_delete")
    assert "must be one of: close, comment, ignore (got 'destroy')" in message


def test_bad_source(tmp_path):
    line, key, message = only_problem(tmp_path, VALID.replace("source: github", "source: gitlab"))
    assert (line, key) == (1, "source")
    assert "must be one of: github, bugzilla, bugherd" in message


def test_missing_title_points_at_fields(tmp_path):
    text = VALID.replace('  title: "{title}"\n', "")
    assert only_problem(tmp_path, text) == (7, "fields.title", "required key is missing")


def test_missing_portal_points_at_zoho(tmp_path):
    text = VALID.replace('  portal: "739121528"\n', "")
    assert only_problem(tmp_path, text) == (2, "zoho.portal", "required key is missing")


def test_portal_as_number_is_accepted(tmp_path):
    mapping = load_mapping(write(tmp_path, VALID.replace('"739121528"', "739121528")))
    assert mapping.routing.portal == "739121528"


def test_unknown_from_field_lists_known_fields(tmp_path):
    line, key, message = only_problem(tmp_path, VALID.replace("from: labels", "from: lables"))
    assert (line, key) == (10, "fields.severity.from")
    assert message.startswith("unknown field 'lables' for source github, did you mean 'labels'?")
    assert "(known: assignees, body, closed_at" in message


def test_template_with_unknown_field(tmp_path):
    text = VALID.replace('title: "{title}"', 'title: "{titel}"')
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (8, "fields.title")
    assert "unknown field 'titel' for source github" in message


def test_comment_template_may_use_comment_names(tmp_path):
    text = VALID + 'comment_template: "{author} on {item.title}: {body} ({comment_id})"\n'
    assert load_mapping(write(tmp_path, text), known_fields=KNOWN).comments is True


def test_bad_template(tmp_path):
    text = VALID.replace('"github:{repository}#{number}"', '"github:{repository#{number}"')
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (6, "external_id")
    assert message.startswith("invalid template: unexpected '{' inside a placeholder")


def test_duplicate_map_key(tmp_path):
    text = VALID.replace("map: {bug: Major}", "map:\n      bug: Major\n      ui: Minor\n      bug: Critical")
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (14, "fields.severity.map.bug")
    assert "duplicate key 'bug' (first at line 12)" in message


def test_empty_map(tmp_path):
    text = VALID.replace("map: {bug: Major}", "map: {}")
    assert only_problem(tmp_path, text) == (11, "fields.severity.map", "must have at least one entry")


def test_empty_map_value(tmp_path):
    text = VALID.replace("map: {bug: Major}", 'map: {bug: ""}')
    assert only_problem(tmp_path, text) == (11, "fields.severity.map.bug", "must not be empty")


def test_yaml_keys_like_yes_and_numbers_stay_text(tmp_path):
    text = VALID.replace("map: {bug: Major}", "map: {yes: Major, 1: Minor, P2: 2}")
    mapping = load_mapping(write(tmp_path, text), known_fields=KNOWN)
    assert mapping.value_map("severity").entries == (("yes", "Major"), ("1", "Minor"), ("P2", "2"))


def test_project_without_default_or_routes(tmp_path):
    text = VALID.replace('    default: "100"\n', "    by_source_project: {}\n")
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (4, "zoho.project")
    assert "needs a default project or at least one by_source_project entry" in message


def test_yaml_syntax_error(tmp_path):
    text = VALID.replace('title: "{title}"', 'title: "{title}')
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (8, "")  # where the quote opened, not where the file ended
    assert message.startswith("invalid YAML:")


def test_not_a_mapping(tmp_path):
    assert only_problem(tmp_path, "- a\n- b\n") == (1, "", "must be a mapping of keys to values, got a list")


def test_all_problems_are_reported_at_once(tmp_path):
    text = VALID.replace("source: github", "source: gitlab").replace('default: "100"', "default: [1]")
    text += "comments: sometimes\n"
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert [(p.line, p.key) for p in info.value.problems] == [
        (1, "source"),
        (5, "zoho.project.default"),
        (12, "comments"),
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert lines[1] == f"{path}:5: zoho.project.default: must be a string, got a list"


def test_registry_live_reload(tmp_path, caplog):
    path = write(tmp_path, VALID)
    registry = MappingRegistry(tmp_path, known_fields=KNOWN)
    assert registry.get("github").value_map("severity").entries == (("bug", "Major"),)
    assert registry.reload_if_changed() == []

    def edit(text: str, bump: int) -> None:
        write(tmp_path, text)
        stamp = path.stat().st_mtime + bump
        os.utime(path, (stamp, stamp))

    edit(VALID.replace("bug: Major", "bug: Critical"), 10)
    assert registry.reload_if_changed() == []
    assert registry.for_source("github")[0].value_map("severity").entries == (("bug", "Critical"),)

    edit(VALID.replace("from: labels", "from: lables"), 20)
    problems = registry.reload_if_changed()
    assert [(p.line, p.key) for p in problems] == [(10, "fields.severity.from")]
    assert registry.problems[str(path)] == problems
    assert registry.get("github").value_map("severity").entries == (("bug", "Critical"),)  # last good stays
    assert "fields.severity.from: unknown field 'lables'" in caplog.text
    assert registry.reload_if_changed() == []  # unchanged file: not re-read, not re-logged

    edit(VALID, 30)
    assert registry.reload_if_changed() == []
    assert registry.problems == {}
    assert registry.get("github").value_map("severity").entries == (("bug", "Major"),)


def test_registry_refuses_a_second_file_with_the_same_name(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, "name: a\n" + VALID, "b.yaml")
    registry = MappingRegistry(tmp_path)
    assert registry.get("a").path == str(tmp_path / "a.yaml")
    [problem] = registry.problems[str(tmp_path / "b.yaml")]
    assert (problem.line, problem.key) == (1, "name")
    assert "already used by" in problem.message
    assert [p.key for p in check_directory(tmp_path)] == ["name"]

    (tmp_path / "a.yaml").unlink()
    assert registry.reload_if_changed() == []
    assert registry.problems == {}
    assert registry.get("a").path == str(tmp_path / "b.yaml")


def test_python_tags_are_refused(tmp_path):
    text = VALID.replace('title: "{title}"', 'title: !!python/object/apply:os.system ["echo hi"]')
    line, key, message = only_problem(tmp_path, text)
    assert (line, key) == (8, "fields.title")
    assert message == "unsupported YAML tag !!python/object/apply:os.system"


def test_check_directory_reports_every_file(tmp_path):
    write(tmp_path, VALID, "good.yaml")
    write(tmp_path, VALID.replace("source: github", "source: jira"), "bad.yml")
    assert [(Path(p.file).name, p.key) for p in check_directory(tmp_path, KNOWN)] == [("bad.yml", "source")]


@pytest.mark.parametrize(
    ("edit", "line", "sentence"),
    [
        (
            ("    map: {bug: Major}", "   map: {bug: Major}"),
            11,
            "this line's indentation does not match the lines above",
        ),
        (
            ("    map: {bug: Major}", "    map: {bug: Major"),
            11,
            "a {…} opened at line 11 is missing a ',' or its closing '}'",
        ),
        (("  severity:", "\tseverity:"), 9, "a tab character: YAML indents with spaces only"),
        (('title: "{title}"', 'title: "{title}'), 8, "a quote opened at line 8 is never closed"),
    ],
    ids=["indentation", "unclosed-brace", "tab", "unclosed-quote"],
)
def test_yaml_errors_read_as_a_plain_sentence_with_file_and_line(tmp_path, edit, line, sentence):
    old, new = edit
    assert old in VALID
    found_line, _key, message = only_problem(tmp_path, VALID.replace(old, new))
    assert message.startswith("invalid YAML: ") and sentence in message, message
    assert "(YAML parser: " in message  # the parser's own words stay, after the sentence
    assert found_line is not None and abs(found_line - line) <= 1, (found_line, message)


@pytest.mark.parametrize(
    ("addition", "key", "suggestion"),
    [
        ("coments: true\n", "coments", "did you mean 'comments'?"),
        ("on_delet: close\n", "on_delet", "did you mean 'on_delete'?"),
        ("external_ids: x\n", "external_ids", "did you mean 'external_id'?"),
    ],
)
def test_misspelt_keys_get_a_did_you_mean(tmp_path, addition, key, suggestion):
    _, found_key, message = only_problem(tmp_path, VALID + addition)
    assert found_key == key and f"unknown key '{key}', {suggestion}" in message, message


def test_an_unrelated_unknown_key_gets_no_guess(tmp_path):
    _, _, message = only_problem(tmp_path, VALID + "zzz: 1\n")
    assert message.startswith("unknown key 'zzz' (expected one of:"), message
