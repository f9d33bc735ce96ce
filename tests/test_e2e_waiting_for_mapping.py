"""A delivery whose source has no mapping yet waits for one, as /readyz says ("deliveries are stored but wait for
one"), on real processes; the mapping file appearing sends it without a replay. Before, it failed at once and
stayed failed after the mapping came (only `events replay --failed` sent it)."""

from __future__ import annotations

import shutil

import pytest

from bridge.store import schema as db
from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

pytestmark = pytest.mark.e2e


def test_a_delivery_without_a_mapping_for_its_source_waits_and_syncs_when_one_appears(tmp_path):
    fake = FakeZoho().start()
    only_bugzilla = [REPO / "mappings" / "examples" / "bugzilla.yaml"]
    stack = BridgeStack(tmp_path, fake, mappings=only_bugzilla, extra_env={"COALESCE_MS": "0"})
    try:
        stack.start(workers=1)
        assert stack.github("issues", issues_event("opened", number=1, title="Before the mapping")).status_code == 200

        def waiting() -> str:
            with stack.engine.connect() as conn:
                row = conn.execute(db.events.select()).first()
            return str(row.last_error or "") if row is not None and row.status == "pending" else ""

        reason = wait_for(waiting, 30, what="the event waiting, with its reason")
        assert "no valid mapping for source 'github'" in reason and "waiting for one" in reason
        assert fake.issues() == []

        shutil.copy(REPO / "mappings" / "examples" / "github.yaml", stack.mappings_dir / "github.yaml")
        wait_for(lambda: [i["name"] for i in fake.issues()] == ["Before the mapping"], 60, what="the issue in Zoho")
        assert stack.wait_idle(timeout=60) == {"done": 1}
    finally:
        stack.stop()
        fake.stop()
