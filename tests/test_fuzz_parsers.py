"""A bounded fuzz pass (hypothesis) over the three parsers and the validation boundary.

Nothing may raise past the boundary but BadDelivery / IgnoredEvent / Unauthorized; whatever is accepted
must survive what the worker does with it: the JSON round trip, UTF-8 storage, and the shipped mapping's
translation and comment rendering (RoutingError aside: an unrouted project is a worker outcome, not a crash).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.mapping import RoutingError, render_comment, translate
from bridge.mapping.loader import load_mapping
from bridge.sources.bugherd.webhook import BugHerdSource
from bridge.sources.bugzilla.webhook import BugzillaSource
from bridge.sources.github.webhook import GitHubSource
from bridge.sources.validate import FUTURE_SKEW, check_event, check_text
from testkit.factories import comment_event, issues_event
from testkit.factories_trackers import bugherd_event, bugzilla_comment, bugzilla_event
from testkit.harness import REPO

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)

SOURCES = {
    "github": GitHubSource("secret"),
    "bugzilla": BugzillaSource("secret", bugzilla_url="https://bugzilla.example.org"),
    "bugherd": BugHerdSource("token"),
}
MAPPINGS = {name: load_mapping(REPO / "mappings" / "examples" / f"{name}.yaml") for name in SOURCES}
SEEDS = {
    "github": [
        ("issues", issues_event("opened", labels=("bug",))),
        ("issue_comment", comment_event("created", comment_id=7, text="hi", commented=5)),
    ],
    "bugzilla": [
        (None, bugzilla_event("bug", "create")),
        (None, bugzilla_event("comment", "create", comment=bugzilla_comment())),
    ],
    "bugherd": [("task_create", bugherd_event("task_create")), ("comment", bugherd_event("comment"))],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["²", "\ud800", "a\x00b", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2999-01-01T00:00:00Z"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


def _mutate(payload: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _exercise(name: str, body: bytes, event_hint: str | None) -> None:
    source = SOURCES[name]
    headers = {"X-GitHub-Event": event_hint or "issues", "Content-Type": "application/json"}
    try:
        event = source.parse(body, headers, event_hint)
        event = check_event(event, RECEIVED)
        check_text("delivery id", source.dedup_key(body, headers, event_hint), 255)
    except (BadDelivery, IgnoredEvent):
        return
    # Accepted: it must be storable and processable.
    stored = json.dumps(event.to_json(), ensure_ascii=False).encode("utf-8")
    assert NormalizedEvent.from_json(json.loads(stored)) == event
    assert event.source_ts <= RECEIVED + FUTURE_SKEW  # a future time was clamped to the receipt time
    try:
        translate(MAPPINGS[name], event)
        if event.comment is not None:
            render_comment(MAPPINGS[name], event)
    except RoutingError:
        pass


@pytest.mark.parametrize("name", sorted(SOURCES))
@FUZZ
@given(data=st.data())
def test_mutated_payloads_never_crash_the_parser(name: str, data):
    hint, seed = data.draw(st.sampled_from(SEEDS[name]))
    path = data.draw(st.sampled_from(_paths(seed)))
    value = data.draw(json_values)
    body = json.dumps(_mutate(seed, path, value)).encode()
    _exercise(name, body, hint)


@pytest.mark.parametrize("name", sorted(SOURCES))
@FUZZ
@given(body=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_never_crash_the_parser(name: str, body: bytes):
    _exercise(name, body, SEEDS[name][0][0])
