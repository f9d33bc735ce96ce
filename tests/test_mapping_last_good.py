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
