"""The reverse side's rules in process: the mapping keys, `mappings check`, and how echoes are recognized."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.talkback_checks import talkback_problems
from bridge.core.talkback import apply_refs, changed_refs
from bridge.mapping import MappingError, load_mapping
from bridge.mapping.talkback import Backlink
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS
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


def test_changed_refs_are_what_writers_record():
    """What an echo is compared in (tests/test_journal_echo.py runs the echo rules through the core)."""
    before = {"state": "open", "labels": ["bug"], "title": "T", "updated_at": "1"}
    closed = {**before, "state": "closed", "updated_at": "2", "closed_at": "2"}
    assert changed_refs(before, closed) == ["state=closed"]  # the source's own bumps are noise
    labeled = {**before, "labels": ["bug", "needs-testing"]}
    assert changed_refs(before, labeled) == ["labels+=needs-testing"]
    assert apply_refs(before, ["state=closed", "labels+=x", "labels-=bug"]) == {**before, "state": "closed",
                                                                              "labels": ["x"]}  # fmt: skip
