"""The last good mapping is shared through the database: a process started after a broken edit still runs it."""

from __future__ import annotations

import shutil

from bridge.mapping import MappingRegistry
from bridge.process.runtime import DatabaseLastGood
from bridge.sources import KNOWN_FIELDS
from bridge.store import schema as db
from testkit.harness import REPO


def test_a_process_started_after_a_broken_edit_runs_the_last_good_version(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    first = MappingRegistry(mappings, known_fields=KNOWN_FIELDS, last_good=DatabaseLastGood(engine))
    assert first.get("github") is not None
    path = mappings / "github.yaml"
    path.write_text(path.read_text().replace("on_delete: close", "on_delete: shred"))

    later = MappingRegistry(mappings, known_fields=KNOWN_FIELDS, last_good=DatabaseLastGood(engine))
    mapping = later.get("github")
    assert mapping is not None and mapping.on_delete == "close"  # the last good version, not nothing
    assert mapping.path == str(path)
    assert any("on_delete" in str(p) for p in later.problems[str(path)])  # and the edit is still refused

    without_store = MappingRegistry(mappings, known_fields=KNOWN_FIELDS)
    assert without_store.get("github") is None


def test_a_process_that_missed_a_good_edit_runs_it_when_the_next_edit_is_refused(tmp_path):
    """Two processes load the mapping; one of them (a busy worker) loads a good edit, the other does not look
    until a broken edit follows: the refused edit leaves the other process on the last good version, the edit
    it missed, not on the older version it still held (an item synced there got the older severity)."""
    import os

    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    path = mappings / "github.yaml"
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", path)
    busy = MappingRegistry(mappings, known_fields=KNOWN_FIELDS, last_good=DatabaseLastGood(engine))
    idle = MappingRegistry(mappings, known_fields=KNOWN_FIELDS, last_good=DatabaseLastGood(engine))
    assert busy.get("github").on_delete == idle.get("github").on_delete == "close"

    def edit(old: str, new: str, tick: int) -> None:
        path.write_text(path.read_text().replace(old, new))
        stamp = path.stat().st_mtime_ns + tick * 1_000_000_000  # a stamp of its own, however fast the edits
        os.utime(path, ns=(stamp, stamp))

    edit("on_delete: close", "on_delete: comment", 1)
    busy.reload_if_changed()
    assert busy.get("github").on_delete == "comment"
    edit("on_delete: comment", "on_delete: shred", 2)  # refused: not a choice
    assert idle.reload_if_changed()
    assert idle.get("github").on_delete == "comment"  # the last good version, not the one it held
