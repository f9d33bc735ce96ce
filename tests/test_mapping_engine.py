from datetime import UTC, datetime

import pytest

from bridge.events import Comment, NormalizedEvent
from bridge.mapping import RoutingError, render_comment, translate
from bridge.mapping.model import Mapping, Routing, ValueMap

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

SEVERITY = ValueMap(
    "labels", (("severity:blocker", "Blocker"), ("severity:critical", "Critical"), ("bug", "Major")), "Minor"
)


def make_mapping(**overrides) -> Mapping:
    values = {
        "name": "github",
        "source": "github",
        "path": "mappings/github.yaml",
        "routing": Routing("739121528", "100", (("acme/api", "200"),)),
        "external_id_template": "github:{repository}#{number}",
        "external_id_field": "external_id",
        "title_template": "{title}",
        "description_template": "{body}\n\nReported in GitHub: {html_url}",
        "value_maps": (
            ("status", ValueMap("state", (("open", "Open"), ("closed", "Closed")))),
            ("severity", SEVERITY),
            ("module", ValueMap("labels", (("area:auth", "Authentication"), ("area:ui", "UI")))),
        ),
    }
    return Mapping(**{**values, **overrides})


def make_event(source_project="acme/web", comment=None, **fields) -> NormalizedEvent:
    item = {
        "title": "Login fails",
        "body": "Steps: ...",
        "state": "open",
        "labels": [],
        "repository": source_project,
        "number": 12,
        "html_url": f"https://github.com/{source_project}/issues/12",
        **fields,
    }
    return NormalizedEvent(
        source="github",
        item_kind="issue",
        item_key=f"{source_project}#12",
        action="comment_created" if comment else "created",
        event_name="issues.opened",
        source_ts=TS,
        fields=item,
        comment=comment,
        source_project=source_project,
    )


def test_translate_builds_the_draft():
    draft = translate(make_mapping(), make_event(labels=["area:ui", "bug"]))
    assert draft.portal == "739121528"
    assert draft.project == "100"
    assert draft.external_id == "github:acme/web#12"
    assert draft.external_id_field == "external_id"
    assert draft.title == "Login fails"
    assert draft.description == "Steps: ...\n\nReported in GitHub: https://github.com/acme/web/issues/12"
    assert draft.options == {"status": "Open", "severity": "Major", "module": "UI"}


def test_map_order_wins_over_label_order():
    # The admin lists severities from worst to mildest; the labels' order on GitHub does not matter.
    draft = translate(make_mapping(), make_event(labels=["bug", "severity:critical", "severity:blocker"]))
    assert draft.options["severity"] == "Blocker"


def test_matching_falls_back_to_case_insensitive_and_trimmed():
    draft = translate(make_mapping(), make_event(state=" CLOSED ", labels=["Severity:Critical"]))
    assert draft.options["status"] == "Closed"
    assert draft.options["severity"] == "Critical"


def test_exact_match_beats_case_insensitive_match():
    value_map = ValueMap("labels", (("Bug", "Minor"), ("bug", "Major")))
    mapping = make_mapping(value_maps=(("severity", value_map),))
    assert translate(mapping, make_event(labels=["bug"])).options == {"severity": "Major"}


def test_default_when_nothing_matches_and_absent_without_default():
    draft = translate(make_mapping(), make_event(state="draft", labels=["question"]))
    assert draft.options == {"severity": "Minor"}  # status and module have no default: left out


def test_missing_source_field_uses_default():
    event = make_event()
    del event.fields["labels"]
    assert translate(make_mapping(), event).options["severity"] == "Minor"


def test_routing_by_source_project_then_default():
    assert translate(make_mapping(), make_event("acme/api")).project == "200"
    assert translate(make_mapping(), make_event("Acme/API")).project == "200"
    assert translate(make_mapping(), make_event("acme/other")).project == "100"


def test_routing_error_tells_the_admin_what_to_add():
    mapping = make_mapping(routing=Routing("739121528", None, (("acme/api", "200"),)))
    with pytest.raises(RoutingError) as info:
        translate(mapping, make_event("acme/web"))
    assert str(info.value) == (
        "no Zoho project for source project 'acme/web' in mappings/github.yaml "
        "(add it under zoho.project.by_source_project or set zoho.project.default)"
    )


def test_missing_values_render_empty():
    draft = translate(make_mapping(), make_event(body=None, html_url=None))
    assert draft.description == "\n\nReported in GitHub: "
    mapping = make_mapping(description_template='{body|default:"(no description)"}')
    assert translate(mapping, make_event(body=None)).description == "(no description)"


def test_custom_fields_are_rendered_without_the_external_id_field():
    mapping = make_mapping(
        custom_fields=(("reporter", "{user.login}"), ("gh_labels", "{labels}"), ("external_id", "{number}"))
    )
    draft = translate(mapping, make_event(user={"login": "octocat"}, labels=["bug", "ui"]))
    assert draft.custom_fields == {"reporter": "octocat", "gh_labels": "bug, ui"}


def test_render_comment_uses_the_comment_and_the_item():
    comment = Comment(id="99", body="Still broken", author="octocat", url="https://github.com/c/99")
    event = make_event(comment=comment)
    assert render_comment(make_mapping(), event) == "octocat commented:\n\nStill broken\n\nhttps://github.com/c/99"
    mapping = make_mapping(comment_template="#{number} {item.title} ({comment_id}): {body}")
    assert render_comment(mapping, event) == "#12 Login fails (99): Still broken"
