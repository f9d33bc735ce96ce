"""Every shared Bugzilla and BugHerd body, read in place, parses with the outcome a user expects.

The corpus lives beside the project (`../shared/fixtures`); it is not copied into the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.sources.bugherd import webhook as bugherd
from bridge.sources.bugherd.webhook import BugHerdSource
from bridge.sources.bugzilla import webhook as bugzilla
from bridge.sources.bugzilla.webhook import BugzillaSource

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
BUGZILLA = BugzillaSource("secret", bugzilla_url="https://bugzilla.mozilla.org")
BUGHERD = BugHerdSource("token")

# file → what a user expects: the action (or the ignored reason), whether the item's state is there,
# and a few fields worth checking by eye.
BUGZILLA_EXPECTED: dict[str, dict[str, Any]] = {
    "bmo.attachment-create.json": {
        "action": "updated",
        "item_key": "1629704",
        "has_state": True,
        "fields": {
            "attachment": {
                "id": 9180115,
                "file_name": "file_1629704.txt",
                "content_type": "text/plain",
                "description": "test attachment",
                "is_patch": False,
                "is_obsolete": False,
                "creation_time": "2020-10-16T07:08:12",
            }
        },
    },
    "bmo.bug-modify.private-bug.json": {
        "action": "updated",
        "item_key": "2",
        "has_state": False,
        "fields": {"id": 2, "is_private": True},
    },
    "bmo.bug-modify.public.priority.json": {
        "action": "updated",
        "item_key": "1629704",
        "has_state": True,
        "project": "Firefox",
        "fields": {"priority": "P1", "status_resolution": "NEW", "severity": "--", "component": "Sync"},
    },
    "bmo.comment-create.json": {
        "action": "comment_created",
        "item_key": "1629704",
        "has_state": True,
        "project": "Firefox",
        "comment": {"id": "14748073", "body": "another test comment", "author": "nobody@mozilla.org"},
    },
    "jbi-test.bug-create.json": {
        "action": "created",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"summary": "[JBI Test]", "whiteboard": "[devtest-]", "status_resolution": "NEW"},
    },
    "jbi-test.bug-modify.status-resolved.json": {
        "action": "updated",
        "item_key": "1",
        "has_state": True,
        "project": "Test",
        "fields": {"status_resolution": "RESOLVED/FIXED", "type": "enhancement"},
    },
    # Second round: JBI's hand-written test data in BMO's shape (see SOURCES.md).
    "jbi.bug-create.public.json": {
        "action": "created",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"summary": "JBI Test", "whiteboard": "[foo]", "is_private": False},
    },
    "jbi.bug-create.conftest.json": {
        "action": "created",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"summary": "JBI Test", "whiteboard": "devtest", "status_resolution": "NEW"},
    },
    "jbi.bug-create.private.json": {
        "action": "created",
        "item_key": "654321",
        "has_state": False,
        "fields": {"id": 654321, "is_private": True},
    },
    "jbi.bug-create.private.conftest.json": {
        "action": "created",
        "item_key": "654321",
        "has_state": False,
        "fields": {"id": 654321, "is_private": True},
    },
    "jbi.bug-modify.public.status.json": {
        "action": "updated",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"whiteboard": "[foo]", "status_resolution": "NEW"},
    },
    "jbi.bug-modify.routing-key-only.json": {
        "action": "updated",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"whiteboard": "devtest"},
    },
    # The bug's own fields win over `changes` (here they disagree: status NEW, changes OPEN -> FIXED).
    "jbi.bug-modify.changes-status-assignee.json": {
        "action": "updated",
        "item_key": "654321",
        "has_state": True,
        "project": "JBI",
        "fields": {"status_resolution": "NEW"},
    },
    "jbi.bug-modify.private.status.json": {
        "action": "updated",
        "item_key": "654321",
        "has_state": False,
        "fields": {"id": 654321, "is_private": True},
    },
    "jbi.bug-modify.private.conftest.json": {
        "action": "updated",
        "item_key": "654321",
        "has_state": False,
        "fields": {"id": 654321, "is_private": True},
    },
    "jbi.comment-create.private-comment.json": {"ignored": "private comment"},
    # A comment without an id cannot be synced exactly once (BMO always sends one): answered 400.
    "jbi.comment-create.no-comment-id.json": {"rejected": "bug.comment"},
}
BUGHERD_EXPECTED: dict[str, dict[str, Any]] = {
    "task_create.synthetic.json": {
        "action": "created",
        "fields": {"status": "feedback", "priority": "normal", "tag_names": []},
    },
    "task_update.synthetic.json": {
        "action": "updated",
        "fields": {"status": "doing", "priority": "critical", "tag_names": ["checkout", "mobile"]},
    },
    "comment.synthetic.json": {
        "action": "comment_created",
        "comment": {"id": "18800452", "author": "Tom Okafor"},
        "fields": {"assignee": "tom.okafor@example.org"},
    },
    "task_destroy.synthetic.json": {"action": "deleted", "fields": {"status": "closed"}},
    # The one real body found (2018, anonymised by its author): task and project ids happen to match.
    "task_create.jacksonwebdev-2018.json": {
        "action": "created",
        "item_key": "8675309",
        "project": "8675309",
        "title": "LOL I'M A DESCRIPTION",
        "page_url": "https://lol.website.biz/",
        "fields": {"status": "backlog", "priority": "not set", "requester": "email@cbdubs.com", "tag_names": []},
    },
}
# What every synthetic sample shares (they all describe one task).
SYNTHETIC_TASK = {
    "item_key": "41000217",
    "project": "77120",
    "title": "The 'Add to cart' button overlaps the price on narrow screens.",
    "page_url": "https://shop.example.org/products/blue-kettle",
}


def _files(folder: str) -> list[Path]:
    path = FIXTURES / folder
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path}")
    return sorted(path.glob("*.json"))


def _check(ev: NormalizedEvent, expected: dict[str, Any]) -> None:
    assert ev.action == expected["action"]
    assert ev.has_state == expected.get("has_state", True)
    if "item_key" in expected:
        assert ev.item_key == expected["item_key"]
    if "project" in expected:
        assert ev.source_project == expected["project"]
    for name, value in expected.get("fields", {}).items():
        assert ev.fields[name] == value, name
    if "comment" in expected:
        assert ev.comment is not None
        for name, value in expected["comment"].items():
            assert getattr(ev.comment, name) == value, name
    else:
        assert ev.comment is None
    assert ev.source_ts.tzinfo is not None
    assert NormalizedEvent.from_json(ev.to_json()) == ev


def test_every_bugzilla_fixture_has_an_expectation():
    names = {p.name for p in _files("bugzilla")}
    assert names == set(BUGZILLA_EXPECTED), "a new fixture needs an entry in BUGZILLA_EXPECTED"


def test_every_bugherd_fixture_has_an_expectation():
    names = {p.name for p in _files("bugherd")}
    assert names == set(BUGHERD_EXPECTED), "a new fixture needs an entry in BUGHERD_EXPECTED"


@pytest.mark.parametrize("name", sorted(BUGZILLA_EXPECTED))
def test_bugzilla_fixture(name):
    path = FIXTURES / "bugzilla" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    body, expected = path.read_bytes(), BUGZILLA_EXPECTED[name]
    BUGZILLA.verify(body, {"Authorization": "Token secret"})
    key = BUGZILLA.dedup_key(body, {})
    assert key and len(key) <= 255
    if "ignored" in expected:
        with pytest.raises(IgnoredEvent, match=expected["ignored"]):
            BUGZILLA.parse(body, {})
        return
    if "rejected" in expected:
        with pytest.raises(BadDelivery) as bad:
            BUGZILLA.parse(body, {})
        assert bad.value.reason.startswith(expected["rejected"] + ":")
        return
    ev = BUGZILLA.parse(body, {})
    assert ev.source == bugzilla.NAME and ev.item_kind == "bug"
    _check(ev, expected)
    if ev.has_state:
        # Every field but the description, which arrives only with comment 0 (and is kept from then on).
        # An attachment event also carries the new attachment (for mappings with `attachments: true`).
        assert (set(ev.fields) - {"attachment"}) | {"description"} == bugzilla.FIELDS
        assert ev.fields["summary"] is not None
    else:
        assert ev.notes and "BUGZILLA_API_KEY" in ev.notes[0]


@pytest.mark.parametrize("name", sorted(BUGHERD_EXPECTED))
def test_bugherd_fixture(name):
    path = FIXTURES / "bugherd" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    body, expected = path.read_bytes(), {**SYNTHETIC_TASK, **BUGHERD_EXPECTED[name]}
    event = name.split(".")[0]  # the file is named after the event (its URL's last segment)
    ev = BUGHERD.parse(body, {}, event)
    assert ev.source == bugherd.NAME and ev.item_kind == "task"
    assert ev.item_key == expected["item_key"] and ev.source_project == expected["project"]
    assert set(ev.fields) == bugherd.FIELDS
    # Every sample has a null title: the Zoho issue still gets a name, from the description.
    assert ev.fields["title"] == expected["title"]
    assert ev.fields["page_url"] == expected["page_url"]
    _check(ev, expected)
    assert BUGHERD.dedup_key(body, {}, event).startswith(f"{event}:")


def test_the_bugherd_samples_order_as_they_happened():
    files = {p.name.split(".")[0]: p.read_bytes() for p in _files("bugherd") if p.name.endswith(".synthetic.json")}
    order = ["task_create", "task_update", "comment", "task_destroy"]
    stamps = [BUGHERD.parse(files[e], {}, e).source_ts for e in order]
    assert stamps == sorted(stamps)
