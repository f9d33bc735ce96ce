"""The reverse side's rules in process: the mapping keys, `mappings check`, and how echoes are recognized."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.talkback_checks import talkback_problems
from bridge.core import echo
from bridge.events import Comment
from bridge.mapping import MappingError, load_mapping
from bridge.mapping.talkback import Backlink
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS
from bridge.store import reverse as state
from bridge.store import schema as db
from testkit.harness import REPO

BASE = (REPO / "mappings" / "examples" / "github.yaml").read_text()


def _load(tmp_path: Path, extra: str, base: str = BASE, name: str = "github.yaml"):
    path = tmp_path / name
    path.write_text(base + extra)
    return load_mapping(path, known_fields=KNOWN_FIELDS)


def _problems(tmp_path: Path, extra: str) -> str:
    with pytest.raises(MappingError) as info:
        _load(tmp_path, extra)
    return "\n".join(str(p) for p in info.value.problems)


def test_keys_are_off_by_default_and_parsed_when_given(tmp_path):
    plain = _load(tmp_path, "")
    assert (plain.backlink, plain.reverse, plain.conflict) == (None, None, "source_wins")
    mapping = _load(
        tmp_path,
        "backlink: true\nreverse:\n  status:\n    Closed: {close: not_planned}\n    ' re opened ': {reopen: true}\n"
        "conflict: zoho_wins\n",
    )
    assert mapping.backlink == Backlink()
    assert mapping.reverse.actions_for("closed") == {"close": "not_planned"}
    assert mapping.reverse.actions_for("Re Opened") == {"reopen": True}
    assert mapping.reverse.actions_for("Open") is None
    assert mapping.conflict == "zoho_wins"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("conflict: both_win\n", "conflict"),
        ("backlink: {template: 'see {nope}'}\n", "unknown name(s) nope"),
        ("backlink: {via: email}\n", "via"),
        ("backlink: {via: see_also}\n", "see_also is a Bugzilla field"),
        ("reverse: {status: {Closed: {close: maybe}}}\n", "close must be one of completed, not_planned"),
        ("reverse: {status: {Closed: {explode: true}}}\n", "unknown action 'explode' for github"),
        ("reverse: {status: {Closed: {close: completed, reopen: true}}}\n", "close and reopen exclude each other"),
        ("reverse: {statuses: {}}\n", "statuses"),
        ("reverse: {comments: yes please}\n", "comments"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(tmp_path, extra, message):
    assert message in _problems(tmp_path, extra)


def test_comments_copy_back_is_a_key(tmp_path):
    assert _load(tmp_path, "reverse: {comments: true}\n").reverse.comments is True
    assert _load(tmp_path, "reverse: {status: {Closed: {close: completed}}}\n").reverse.comments is False


def test_mappings_check_names_each_trackers_settings(tmp_path):
    env = {"BRIDGE_DATA_DIR": str(tmp_path / "var"), "BROKER_URL": "redis://127.0.0.1:1/0"}
    for name, extra, wanted in [
        ("bugzilla", {}, "BUGZILLA_URL and BUGZILLA_API_KEY are not set"),
        ("bugherd", {"BUGHERD_API_KEY": "k"}, "BUGHERD_BRIDGE_EMAIL is not set"),
    ]:
        path = tmp_path / f"{name}.yaml"
        path.write_text((REPO / "mappings" / "examples" / f"{name}.yaml").read_text() + "backlink: true\n")
        problems = [str(p) for p in talkback_problems([path], load_settings({**env, **extra}), None)]
        assert problems == [f"{path}: backlink: {wanted}: back-links and reverse sync need it"]


def test_actions_are_per_source(tmp_path):
    base = (REPO / "mappings" / "examples" / "bugzilla.yaml").read_text()
    ok = _load(tmp_path, "reverse: {status: {Closed: {status: RESOLVED, resolution: FIXED}}}\n", base, "bugzilla.yaml")
    assert ok.reverse.actions_for("Closed") == {"status": "RESOLVED", "resolution": "FIXED"}
    with pytest.raises(MappingError, match="unknown action 'close' for bugzilla"):
        _load(tmp_path, "reverse: {status: {Closed: {close: completed}}}\n", base, "bugzilla.yaml")


def test_mappings_check_reports_a_missing_token_and_unknown_statuses(tmp_path):
    path = tmp_path / "github.yaml"
    path.write_text(BASE + "backlink: true\nreverse: {status: {Shipped: {close: completed}}}\n")
    env = {"BRIDGE_DATA_DIR": str(tmp_path / "var"), "BROKER_URL": "redis://127.0.0.1:1/0"}
    problems = [str(p) for p in talkback_problems([path], load_settings(env), None)]
    assert problems == [f"{path}: backlink: GITHUB_TOKEN is not set: back-links and reverse sync need it"]
    options = {("739121528", p): {"status": ["Open", "Closed"]} for p in ("1752587000000097024", "1752587000000098001")}
    with_token = load_settings({**env, "GITHUB_TOKEN": "t"})
    problems = [str(p) for p in talkback_problems([path], with_token, options)]
    assert len(problems) == 2 and all("'Shipped' is not a status of Zoho project" in p for p in problems)


def test_echo_rules_use_ids_and_values_not_wording(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    db.ensure_schema(engine)
    ours = Comment(id="5001", body="Any wording the admin likes")
    assert not echo.is_own_comment(engine, "github", ours)
    state.record_write(engine, "github", "github:acme/web#7", "comment", "5001")
    assert echo.is_own_comment(engine, "github", ours)
    assert not echo.is_own_comment(engine, "bugzilla", ours)  # ids are per source
    assert echo.is_own_comment(engine, "github", Comment(id="9", body="x\n<!-- issue-bridge:backlink y -->"))

    before = {"state": "open", "labels": ["bug"], "title": "T", "updated_at": "1"}
    closed = {**before, "state": "closed", "updated_at": "2", "closed_at": "2"}
    assert echo.changed_refs(before, closed) == ["state=closed"]
    assert not echo.absorb_state_echo(engine, "github", "github:acme/web#7", before, closed)  # not written by us
    state.record_write(engine, "github", "github:acme/web#7", "state", "state=closed")
    edited_too = {**closed, "title": "Changed by a person"}
    assert not echo.absorb_state_echo(engine, "github", "github:acme/web#7", before, edited_too)
    assert echo.absorb_state_echo(engine, "github", "github:acme/web#7", before, closed)
    assert not echo.absorb_state_echo(engine, "github", "github:acme/web#7", before, closed)  # consumed once
    labeled = {**before, "labels": ["bug", "needs-testing"]}
    assert echo.changed_refs(before, labeled) == ["labels+=needs-testing"]
    engine.dispose()
