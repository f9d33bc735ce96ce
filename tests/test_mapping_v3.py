"""Mapping language v3: `when:` filters, transitions, `users:` tables, per-field `sync:` (pure parts)."""

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.events import NormalizedEvent
from bridge.mapping import MappingError, check_directory, load_mapping, translate
from bridge.mapping.filters import SKIP, START, STILL_UNMATCHED, SYNC, UNMATCH, matches, transition
from bridge.mapping.ownership import (
    applied_after,
    draft_values,
    fields_to_send,
    needs_zoho_current,
    restrict_body,
    zoho_values,
)
from bridge.mapping.users import resolve_user, zoho_emails
from bridge.sources import KNOWN_FIELDS

HEAD = """\
source: {source}
zoho:
  portal: "1"
  project: {{default: "2"}}
external_id: "{source}:{{{key}}}"
fields:
  title: "{{{title}}}"
"""


def mapping_of(tmp_path: Path, extra: str, source: str = "bugzilla", name: str = "m.yaml"):
    key, title = {"bugzilla": ("id", "summary"), "github": ("number", "title"), "bugherd": ("task_id", "title")}[source]
    path = tmp_path / name
    path.write_text(HEAD.format(source=source, key=key, title=title) + extra, encoding="utf-8")
    return load_mapping(path, known_fields=KNOWN_FIELDS)


def problems(tmp_path: Path, extra: str, source: str = "bugzilla") -> list[tuple[int | None, str, str]]:
    with pytest.raises(MappingError) as info:
        mapping_of(tmp_path, extra, source)
    return [(p.line, p.key, p.message) for p in info.value.problems]


def event(source: str = "bugzilla", **fields) -> NormalizedEvent:
    return NormalizedEvent(
        source=source,
        item_kind="bug",
        item_key="7",
        action="updated",
        event_name="bug.modify",
        source_ts=datetime(2026, 1, 1, tzinfo=UTC),
        fields={"id": 7, "summary": "s", **fields},
        source_project="Firefox",
    )


# -- filters ------------------------------------------------------------------------------------------


def test_no_when_matches_everything(tmp_path):
    ok, reason = matches(mapping_of(tmp_path, ""), event())
    assert ok and "no `when:`" in reason


def test_label_present_is_case_insensitive_and_uses_the_sources_label_field(tmp_path):
    m = mapping_of(tmp_path, "when:\n  - label: [Regression, sec-high]\n")
    assert matches(m, event(keywords=["perf", "regression"])) == (True, "label 'Regression' present")
    ok, reason = matches(m, event(keywords=["perf"]))
    assert not ok and "no label 'Regression', 'sec-high' in keywords (perf)" in reason
    gh = mapping_of(tmp_path, "when:\n  label: bug\n", source="github", name="g.yaml")
    assert matches(gh, event("github", labels=["Bug"]))[0]
    bh = mapping_of(tmp_path, "when:\n  label: urgent\n", source="bugherd", name="h.yaml")
    assert matches(bh, event("bugherd", tag_names=["urgent"]))[0]
    assert not matches(bh, event("bugherd", tag_names=[]))[0]


def test_equals_in_and_glob(tmp_path):
    eq = mapping_of(tmp_path, "when: {field: component, equals: Login}\n")
    assert matches(eq, event(component="login"))[0]
    assert matches(eq, event(component="Sync")) == (False, "component is 'sync', not 'Login'")
    within = mapping_of(tmp_path, "when: {field: component, in: [Login, API]}\n", name="b.yaml")
    assert matches(within, event(component="API")) == (True, "component is 'API'")
    assert "not one of Login, API" in matches(within, event(component="UI"))[1]
    assert not matches(within, event())[0]  # a missing field matches nothing
    glob = mapping_of(tmp_path, "when: {field: product, matches: 'Cloud*'}\n", name="c.yaml")
    assert matches(glob, event(product="Cloud Services"))[0]
    assert not matches(glob, event(product="Firefox"))[0]


def test_priority_at_least_uses_the_sources_order_or_the_files_own(tmp_path):
    bz = mapping_of(tmp_path, "when: {field: priority, at_least: P2}\n")
    assert matches(bz, event(priority="P1"))[0]
    assert matches(bz, event(priority="P2"))[0]
    assert not matches(bz, event(priority="P3"))[0]
    assert not matches(bz, event(priority=""))[0]
    bh = mapping_of(tmp_path, "when: {field: priority, at_least: important}\n", source="bugherd", name="h.yaml")
    assert matches(bh, event("bugherd", priority="critical"))[0]
    assert not matches(bh, event("bugherd", priority="normal"))[0]
    own = mapping_of(
        tmp_path, "when: {field: severity, at_least: major, order: [blocker, critical, major]}\n", name="o.yaml"
    )
    assert matches(own, event(severity="critical"))[0]
    assert not matches(own, event(severity="minor"))[0]


def test_any_and_all_nest(tmp_path):
    m = mapping_of(
        tmp_path,
        textwrap.dedent(
            """\
        when:
          all:
            - field: product
              equals: Firefox
            - any:
                - label: regression
                - field: priority
                  at_least: P1
        """
        ),
    )
    assert matches(m, event(product="Firefox", keywords=["regression"], priority="P3"))[0]
    assert matches(m, event(product="Firefox", keywords=[], priority="P1"))[0]
    ok, reason = matches(m, event(product="Firefox", keywords=[], priority="P3"))
    assert not ok and reason.startswith("none of:")
    assert matches(m, event(product="Thunderbird", keywords=["regression"])) == (
        False,
        "product is 'thunderbird', not 'Firefox'",
    )


def test_known_fields_from_the_link_count(tmp_path):
    """A Bugzilla comment event lacks keywords; the item's last applied fields stand in."""
    m = mapping_of(tmp_path, "when: [{label: regression}]\n")
    assert matches(m, event(), known={"keywords": ["regression"]})[0]


# -- transitions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matched", "synced", "last", "kind"),
    [
        (True, False, None, START),  # first time seen, matches
        (True, False, False, START),  # never matched before, matches now
        (True, True, True, SYNC),
        (True, True, None, SYNC),  # a link made before filters existed
        (True, True, False, START),  # matches again after an unmatch
        (False, False, None, SKIP),
        (False, False, False, SKIP),
        (False, True, True, UNMATCH),
        (False, True, None, UNMATCH),
        (False, True, False, STILL_UNMATCHED),
    ],
)
def test_transition(tmp_path, matched, synced, last, kind):
    m = mapping_of(tmp_path, "on_unmatch: comment\nwhen: {label: x}\n")
    result = transition(m, matched, synced=synced, last_matched=last)
    assert result.kind == kind
    assert (result.action == "comment") == (kind == UNMATCH)


# -- users -----------------------------------------------------------------------------------------------


def test_users_table_maps_logins_and_emails_for_the_assignee(tmp_path):
    m = mapping_of(
        tmp_path,
        textwrap.dedent(
            """\
          assignee: {email: "{assigned_to}", fallback: triage@example.com}
        users:
          jdoe: jane@corp.example
          John@Home.example: john@corp.example
        """
        ),
    )
    assert resolve_user(m, "JDOE") == "jane@corp.example"
    assert resolve_user(m, "john@home.example") == "john@corp.example"
    assert resolve_user(m, "same@corp.example") == "same@corp.example"  # not in the table: as is
    assert resolve_user(m, " ") is None
    assert translate(m, event(assigned_to="jdoe")).assignee_email == "jane@corp.example"
    # A login that is in no table is not an email: left to the fallback, with a note.
    draft = translate(m, event(assigned_to="stranger"))
    assert draft.assignee_email is None and draft.assignee_fallback == "triage@example.com"
    assert zoho_emails(m) == ["jane@corp.example", "john@corp.example"]


def test_shared_users_file_beside_the_mappings_is_not_a_mapping(tmp_path):
    (tmp_path / "users.yaml").write_text("users:\n  octocat: cat@corp.example\n", encoding="utf-8")
    m = mapping_of(tmp_path, "  assignee: '{assignee}'\nusers: users.yaml\n", source="github")
    assert resolve_user(m, "octocat") == "cat@corp.example"
    assert translate(m, event("github", number=1, title="t", assignee="octocat")).assignee_email == "cat@corp.example"
    assert check_directory(tmp_path, known_fields=KNOWN_FIELDS) == []  # users.yaml is not read as a mapping


# -- field ownership --------------------------------------------------------------------------------------

OWNED = """\
  description: {template: "{description}", sync: create_only}
  severity: {from: severity, map: {major: Major, minor: Minor}, sync: if_unchanged_in_zoho}
  status: {from: status, map: {NEW: Open, RESOLVED: Closed}}
"""


def test_create_sends_everything_then_create_only_is_never_sent_again(tmp_path):
    m = mapping_of(tmp_path, OWNED)
    first = translate(m, event(description="d1", severity="major", status="NEW"))
    assert fields_to_send(m, first, None, None, creating=True).send == {"title", "description", "severity", "status"}
    last = draft_values(first)
    later = translate(m, event(description="d2", severity="major", status="RESOLVED"))
    decision = fields_to_send(m, later, last, None)
    assert "description" not in decision.send and {"title", "status"} <= decision.send
    assert dict(decision.held)["description"].startswith("create_only")


def test_if_unchanged_in_zoho_updates_only_while_nobody_edited_it(tmp_path):
    m = mapping_of(tmp_path, OWNED)
    last = draft_values(translate(m, event(severity="major", status="NEW")))
    same_sev = translate(m, event(severity="major", status="RESOLVED"))
    assert not needs_zoho_current(m, same_sev, last)  # severity unchanged in the source: no read needed
    assert "severity" not in fields_to_send(m, same_sev, last, None).send
    changed = translate(m, event(severity="minor", status="NEW"))
    assert needs_zoho_current(m, changed, last)
    untouched = fields_to_send(m, changed, last, {"severity": "MAJOR"})  # Zoho still has what we wrote
    assert "severity" in untouched.send
    edited = fields_to_send(m, changed, last, {"severity": "Critical"})  # a person changed it in Zoho
    assert "severity" not in edited.send and "edited in Zoho" in dict(edited.held)["severity"]
    assert "severity" not in fields_to_send(m, changed, last, None).send  # unknown: never overwrite
    # The bridge's memory keeps what it really wrote, so the held field stays held later.
    assert applied_after(last, changed, edited)["severity"] == "Major"
    assert applied_after(last, changed, untouched)["severity"] == "Minor"


def test_body_restriction_and_zoho_readback_per_dialect():
    body = {"name": "t", "description": "d", "severity": {"id": "9"}, "cf_team": "x", "status": {"id": "1"}}
    assert restrict_body(body, "projects", {"title", "custom.cf_team", "severity"}) == {
        "description": "d",
        "status": {"id": "1"},
    }
    assert restrict_body({"title": "t", "severity": "Major"}, "bugtracker", {"title"}) == {"severity": "Major"}
    issue = {"id": "5", "name": "t", "severity": {"id": "9", "name": "Major"}, "cf_team": "x"}
    assert zoho_values(issue, "projects") == {"title": "t", "severity": "Major", "custom.cf_team": "x"}


# -- validation: file:line and "did you mean" ----------------------------------------------------------------


def test_misspelt_operator_is_reported_with_its_line_and_a_suggestion(tmp_path):
    found = problems(tmp_path, "when:\n  - field: component\n    equal: Login\n")
    assert found == [
        (
            10,
            "when.0.equal",
            "unknown key 'equal' in a condition, did you mean 'equals'? (expected one of: label, field, equals, "
            "in, matches, at_least, order, any, all)",
        )
    ]


def test_unknown_field_in_a_condition_suggests_the_known_one(tmp_path):
    [(line, key, message)] = problems(tmp_path, "when:\n  any:\n    - field: componnet\n      in: [A]\n")
    assert (line, key) == (10, "when.any.0.field")
    assert "unknown field 'componnet' for source bugzilla, did you mean 'component'?" in message


def test_bad_conditions(tmp_path):
    [(_, key, message)] = problems(tmp_path, "when: {field: priority, at_least: P9}\n")
    assert key == "when.at_least" and "'P9' is not in the order" in message
    [(_, _, message)] = problems(tmp_path, "when: {field: component}\n")
    assert "needs exactly one of: equals, in, matches, at_least" in message
    [(_, _, message)] = problems(tmp_path, "when: {field: component, at_least: A}\n")
    assert "needs `order:`" in message
    [(_, key, message)] = problems(tmp_path, "when: {field: component, equals: [A, B]}\n")
    assert key == "when.equals" and "use `in:`" in message
    [(_, _, message)] = problems(tmp_path, "when: []\n")
    assert "at least one condition" in message
    [(_, _, message)] = problems(tmp_path, "when: bug\n")
    assert "a condition must be a mapping" in message


def test_misspelt_policies_and_choices(tmp_path):
    [(line, key, message)] = problems(tmp_path, "  status: {from: status, map: {NEW: Open}, sync: create_once}\n")
    assert (line, key) == (8, "fields.status.sync") and "did you mean 'create_only'?" in message
    [(_, key, message)] = problems(tmp_path, "on_unmatch: closed\n")
    assert key == "on_unmatch" and "did you mean 'close'?" in message
    [(_, key, message)] = problems(tmp_path, "users: {jdoe: not-an-email}\n")
    assert key == "users.jdoe" and "must be an email address" in message
    [(_, key, message)] = problems(tmp_path, "attachments: yes please\n")
    assert key == "attachments"
    [(_, key, _)] = problems(tmp_path, "users: missing.yaml\n")
    assert key == "users"
