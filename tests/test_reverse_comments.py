"""`reverse.comments: true` in process, on the real sync service, a real FakeZoho and a real FakeBugHerd: each
person's Zoho comment reaches the task once (by its Zoho id), the bridge's own forward copies never do, and a
write whose answer is lost (the line cut after BugHerd stored it) is found by its marker, not posted twice.
"""

from __future__ import annotations

import time

import pytest

from bridge import store
from bridge.core import zoho_poll as poll
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.bugherd.webhook import BugHerdSource
from bridge.store import journal
from testkit.factories_trackers import BUGHERD_TOKEN, bugherd_event, bugherd_task, encode
from testkit.fakes.bugherd import FakeBugHerd
from testkit.fakes.zoho import FakeZoho
from testkit.harness import in_process_env

TASK = 41000217
KEYS = "\nreverse:\n  status:\n    Closed: {status: closed}\n  comments: true\n"


@pytest.fixture(params=["wrapped", "bare"])
def world(tmp_path, request):
    # BugHerd's answers with the seed's wrappers, and bare (002 shows none for a task or the comment list)
    zoho, bugherd = FakeZoho().start(), FakeBugHerd(shapes=request.param).start()
    bugherd.put_task(bugherd_task(status="doing", updated=10))
    env = in_process_env(
        tmp_path,
        zoho,
        "bugherd",
        BUGHERD_WEBHOOK_TOKEN=BUGHERD_TOKEN,
        BUGHERD_API_KEY=bugherd.api_key,
        BUGHERD_API_URL=bugherd.base_url,
        BUGHERD_BRIDGE_EMAIL="bridge@example.org",
    )
    mapping = tmp_path / "mappings" / "bugherd.yaml"
    mapping.write_text(mapping.read_text() + KEYS)
    runtime = Runtime(load_settings(env))
    yield runtime, zoho, bugherd
    runtime.engine.dispose()
    bugherd.stop()
    zoho.stop()


def _deliver(runtime: Runtime, event: str, payload: dict) -> None:
    source, body = BugHerdSource(BUGHERD_TOKEN), encode(payload)
    normalized = source.parse(body, {}, event)
    store.record_delivery(
        runtime.engine, normalized, dedup_key=source.dedup_key(body, {}, event), headers={}, payload=body
    )
    runtime.sync.process_item("bugherd", str(TASK))


def _poll(runtime: Runtime) -> dict[str, int]:
    """One poll; the nudges it stored handled by the item's worker (and its side work carried out)."""
    counts, wake = poll.poll_zoho(runtime.engine, runtime.registry, runtime.zoho)
    for source, item_key in wake:
        runtime.sync.process_item(source, item_key)
    return counts


def _copy(runtime: Runtime, zoho_id: str):
    return journal.get(runtime.engine, "bugherd", str(TASK), "source.comment", zoho_id)


def _posts(bugherd: FakeBugHerd) -> list[dict]:
    return [w for w in bugherd.writes() if w["method"] == "POST"]


def test_each_zoho_comment_copied_once_never_our_own(world):
    runtime, zoho, bugherd = world
    _deliver(runtime, "task_create", bugherd_event("task_create", status="doing", updated=10))
    issue = zoho.issues()[0]
    # A comment made in BugHerd is copied forward to Zoho (with the bridge's marker) ...
    _deliver(runtime, "comment", bugherd_event("comment", text="Seen on iOS too.", commented=20, status="doing"))
    assert len(zoho.comments(issue["id"])) == 1 and "(issue-bridge bugherd comment" in str(zoho.comments(issue["id"]))
    # ... and two people comment in Zoho.
    zoho.person_comments(issue["id"], "Root cause found.")
    zoho.person_comments(issue["id"], "Fix deployed to staging.")

    assert _poll(runtime)["nudged"] == 1
    texts = [c["text"] for c in bugherd.comments(TASK)]
    assert [t.split("\n\n")[1] for t in texts] == ["Root cause found.", "Fix deployed to staging."]
    assert all("(issue-bridge:zoho-comment" in t for t in texts)  # its webhook echo is recognized by this
    reads = len(zoho.api_calls("GET", path_contains="/comments"))
    assert _poll(runtime)["nudged"] == 0  # unchanged issue: its comments are not even read again
    assert len(zoho.api_calls("GET", path_contains="/comments")) == reads

    zoho.person_sets_status(issue["id"], "Closed")  # the issue changes: comments read again, nothing copied
    assert _poll(runtime)["nudged"] == 1
    assert len(zoho.api_calls("GET", path_contains="/comments")) == reads + 1
    assert len(_posts(bugherd)) == 2
    assert bugherd.task(TASK)["status"] == "closed"


def test_a_lost_answer_is_found_by_its_marker_not_posted_twice(world):
    runtime, zoho, bugherd = world
    _deliver(runtime, "task_create", bugherd_event("task_create", status="doing", updated=10))
    issue = zoho.issues()[0]
    zoho.person_comments(issue["id"], "Please retest.")
    bugherd.drop_next_write_answers(1)  # BugHerd stores the comment; the bridge never hears back

    _poll(runtime)
    zoho_id = str(zoho.comments(issue["id"])[0]["id"])
    assert len(bugherd.comments(TASK)) == 1  # it is there, but the bridge never heard back: in doubt
    op = _copy(runtime, zoho_id)
    assert op is not None and op.state == "sent" and op.next_at is not None

    time.sleep(max(0.0, op.next_at - time.time()) + 0.1)
    runtime.sync.process_item("bugherd", str(TASK))  # its retry looks for the marker before posting
    assert len(bugherd.comments(TASK)) == 1 and len(_posts(bugherd)) == 1
    op = _copy(runtime, zoho_id)
    assert op is not None and op.state == "confirmed"
    assert _poll(runtime)["nudged"] == 0 and len(_posts(bugherd)) == 1
