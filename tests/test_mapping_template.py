import re

import pytest

from bridge.mapping import TemplateError, compile_template


def render(text, **context):
    return compile_template(text).render(context)


def test_placeholders_and_dotted_paths():
    assert render("{title} by {user.login}", title="Crash", user={"login": "octocat"}) == "Crash by octocat"


def test_missing_values_and_none_render_empty():
    assert render("[{body}] [{user.login}] [{nope.deeper}]", body=None, user="not a dict") == "[] [] []"


def test_scalars_booleans_and_lists():
    assert render("#{number} locked={locked} {labels}", number=12, locked=False, labels=["bug", "ui"]) == (
        "#12 locked=false bug, ui"
    )


def test_default_filter_and_chaining():
    assert render('{body|default:"(no description)"}', body=None) == "(no description)"
    assert render('{body|default:"(none)"}', body="") == "(none)"
    assert render("{milestone|default:'none'|upper}") == "NONE"
    assert render('{state|default:"x"|lower}', state="OPEN") == "open"


def test_join_and_truncate():
    assert render('{labels|join:" / "}', labels=["bug", "area:ui"]) == "bug / area:ui"
    assert render("{title|truncate:8}", title="A very long title") == "A very …"
    assert render("{title|truncate:80}", title="short") == "short"


def test_escaped_braces_are_literal():
    assert render("{{not a placeholder}} {{{n}}}", n=3) == "{not a placeholder} {3}"


def test_filter_argument_may_contain_braces_and_pipes():
    assert render('{labels|join:"}|{"}', labels=["a", "b"]) == "a}|{b"


def test_unicode():
    assert render("Ärger: {title} — {user.name}", title="日本語のバグ", user={"name": "Zoë"}) == (
        "Ärger: 日本語のバグ — Zoë"
    )


def test_fields_lists_top_level_names():
    template = compile_template('{title} {user.login|upper} {labels|join:","} {{literal}}')
    assert template.fields == frozenset({"title", "user", "labels"})


def test_only_dicts_are_walked():
    # No attribute access: a str's methods or a list's items are not reachable from a template.
    assert render("{title.upper} {labels.0}", title="x", labels=["a"]) == " "


@pytest.mark.parametrize("text", ["{_private}", "{user._secret}", "{user.__class__}"])
def test_private_segments_are_refused(text):
    with pytest.raises(TemplateError, match="private"):
        compile_template(text)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("Title {title", 6, "unclosed '{'"),
        ("Title } x", 6, "unbalanced '}'"),
        ("a {b {c}}", 5, "unexpected '{'"),
        ("{}", 1, "empty placeholder"),
    ],
)
def test_unbalanced_braces_report_position(text, position, fragment):
    with pytest.raises(TemplateError, match=fragment) as info:
        compile_template(text)
    assert info.value.position == position


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{title|shout}", "unknown filter 'shout' (known: date, default, join, lower, truncate, upper)"),
        ("{title|truncate}", "needs a whole number"),
        ("{title|truncate:0}", "needs a whole number"),
        ("{title|default}", "needs a quoted text argument"),
        ('{title|upper:"x"}', "takes no argument"),
        ("{title()}", "expected '|filter'"),
    ],
)
def test_bad_filters_are_refused(text, fragment):
    with pytest.raises(TemplateError, match=re.escape(fragment)):
        compile_template(text)
