"""Attachments: which files an event names, the fetcher's host and size rules, and the exactly-once copy to
a real FakeZoho over HTTP (both dialects), a crash between upload and association included."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge import store
from bridge.core.attachments import (
    AttachmentRef,
    AttachmentRefused,
    AttachmentTooLarge,
    check_url,
    fetch,
    fetch_for,
    refs_of,
)
from bridge.events import NormalizedEvent
from bridge.outbound.budget import blocked_until
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.bugherd.webhook import BugHerdSource
from bridge.sources.http import SourceBusy
from bridge.store import calllog, journal
from bridge.store.clock import db_now
from bridge.store.schema import ensure_schema, make_engine
from bridge.targets.zoho.attachments import ZohoAttachments
from bridge.targets.zoho.errors import ZohoTransientError
from testkit.factories_trackers import BUGHERD_TOKEN, bugherd_event, encode
from testkit.fakes.bugzilla import API_KEY as BZ_KEY
from testkit.fakes.bugzilla import FakeBugzilla
from testkit.fakes.files import FileServer
from testkit.fakes.zoho import FakeZoho
from testkit.harness import in_process_env

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture
def files():
    with FileServer() as server:
        yield server


def public(host, port):
    return ["93.184.216.34"]


def event(source: str, **fields) -> NormalizedEvent:
    return NormalizedEvent(
        source=source,
        item_kind="task",
        item_key="41000217",
        action="updated",
        event_name="task_update",
        source_ts=datetime(2026, 1, 1, tzinfo=UTC),
        fields=fields,
    )


# -- which files ---------------------------------------------------------------------------------------------


def test_refs_per_source(tmp_path):
    settings = load_settings({"BRIDGE_DATA_DIR": str(tmp_path), "BUGZILLA_URL": "https://bz.example.org/"})
    [bz] = refs_of(settings, event("bugzilla", attachment={"id": 12, "file_name": "log.txt", "size": 30}))
    assert (bz.key, bz.url, bz.file_name, bz.size) == (
        "attachment:12",
        "https://bz.example.org/rest/bug/attachment/12",
        "log.txt",
        30,
    )
    [shot] = refs_of(settings, event("bugherd", screenshot_url="https://bugherd-attachments.s3.amazonaws.com/s/1.png"))
    assert shot.file_name == "1.png" and shot.key.startswith("screenshot:")
    body = (
        "see ![crash](https://user-images.githubusercontent.com/1/a.png) and "
        '<img width="200" src="https://github.com/user-attachments/assets/b.png"> and again '
        "![crash](https://user-images.githubusercontent.com/1/a.png)"
    )
    gh = refs_of(settings, event("github", body=body))
    assert [r.url for r in gh] == [
        "https://user-images.githubusercontent.com/1/a.png",
        "https://github.com/user-attachments/assets/b.png",
    ]
    assert refs_of(settings, event("bugherd", screenshot_url=None)) == []


# -- which hosts -----------------------------------------------------------------------------------------------

HOSTS = frozenset({"images.example.com", "trusted.internal"})
CONFIGURED = frozenset({"trusted.internal"})


def test_foreign_private_and_odd_urls_are_refused_before_any_request():
    asked = []

    def resolver(host, port):
        asked.append(host)
        return {"images.example.com": ["10.1.2.3"]}.get(host, ["93.184.216.34"])

    with pytest.raises(AttachmentRefused, match="not one of the source's own hosts"):
        check_url("https://evil.example.net/x.png", HOSTS, CONFIGURED, resolver)
    with pytest.raises(AttachmentRefused, match=r"private or local address \(10.1.2.3\)"):
        check_url("https://images.example.com/x.png", HOSTS, CONFIGURED, resolver)
    for bad in ("file:///etc/passwd", "ftp://images.example.com/x", "https://u:p@images.example.com/x"):
        with pytest.raises(AttachmentRefused):
            check_url(bad, HOSTS, CONFIGURED, resolver)
    for loopback in (["127.0.0.1"], ["::1"], ["169.254.169.254"], ["::ffff:192.168.0.1"]):
        with pytest.raises(AttachmentRefused):
            check_url("https://images.example.com/x.png", HOSTS, CONFIGURED, lambda h, p, a=loopback: a)
    check_url("https://trusted.internal/x.png", HOSTS, CONFIGURED, resolver)  # configured: may be private
    assert "trusted.internal" not in asked


def test_fetch_within_the_limits(files):
    files.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    hosts = frozenset({"127.0.0.1"})
    got = fetch(AttachmentRef("k", files.base_url + "/a.png", "a.png"), hosts, hosts, max_bytes=len(PNG))
    assert (got.data, got.content_type, got.file_name) == (PNG, "image/png", "a.png")


def test_oversize_is_refused_by_length_by_stream_and_by_the_sources_word(files):
    hosts = frozenset({"127.0.0.1"})
    files.routes["/big.png"] = (200, {}, PNG)
    with pytest.raises(AttachmentTooLarge):
        fetch(AttachmentRef("k", files.base_url + "/big.png", "big.png"), hosts, hosts, max_bytes=100)
    files.routes["/drip.png"] = (200, {"_no_length": "1"}, PNG)  # no Content-Length: counted while reading
    with pytest.raises(AttachmentTooLarge):
        fetch(AttachmentRef("k", files.base_url + "/drip.png", "drip.png"), hosts, hosts, max_bytes=100)
    before = len(files.hits)
    with pytest.raises(AttachmentTooLarge):
        fetch(AttachmentRef("k", files.base_url + "/x", "x", size=101), hosts, hosts, max_bytes=100)
    assert len(files.hits) == before  # the source said how large: not even asked


def test_a_redirect_to_a_foreign_host_is_not_followed(files):
    hosts = frozenset({"127.0.0.1"})
    files.routes["/r"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    with pytest.raises(AttachmentRefused, match=r"169\.254\.169\.254 is not one of the source's own hosts"):
        fetch(AttachmentRef("k", files.base_url + "/r", "r"), hosts, hosts, max_bytes=1000)
    files.routes["/r2"] = (302, {"Location": "/a.png"}, b"")
    files.routes["/a.png"] = (200, {}, b"ok")
    assert fetch(AttachmentRef("k", files.base_url + "/r2", "r"), hosts, hosts, max_bytes=1000).data == b"ok"


@pytest.fixture
def bz():
    with FakeBugzilla() as server:
        yield server


def _bugzilla_settings(tmp_path, bz, **env: str):  # type: ignore[no-untyped-def]
    return load_settings(
        {"BRIDGE_DATA_DIR": str(tmp_path), "BUGZILLA_URL": bz.base_url, "BUGZILLA_API_KEY": BZ_KEY, **env},
        read_dotenv=False,
    )


def _bugzilla_ref(settings, attachment: dict) -> AttachmentRef:  # type: ignore[no-untyped-def]
    fields = {"attachment": attachment}
    (ref,) = refs_of(settings, event("bugzilla", **fields))
    return ref


def test_a_bugzilla_attachment_is_read_through_its_client_base64_in_json(tmp_path, bz):
    settings = _bugzilla_settings(tmp_path, bz, ATTACHMENT_MAX_BYTES=str(len(PNG)))
    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    bz.put_attachment(7, 12, PNG, file_name="s.png", content_type="image/png")
    ref = _bugzilla_ref(settings, {"id": 12, "file_name": "s.png", "size": len(PNG)})
    got = fetch_for(settings, "bugzilla", None, ref, engine=engine)
    assert (got.file_name, got.content_type, got.data) == ("s.png", "image/png", PNG)
    assert [c["path"] for c in bz.calls()] == ["/rest/bug/attachment/12"]
    # the call is Bugzilla's, counted for its budget chart like every other call of its client
    with engine.connect() as conn:
        assert sum(
            calls for lane in calllog.minutes(conn, 0).get("bugzilla", {}).values() for calls, _ in lane.values()
        )
    # over the limit: refused before any call when the webhook stated the size, after the read otherwise
    small = _bugzilla_settings(tmp_path, bz, ATTACHMENT_MAX_BYTES=str(len(PNG) - 1))
    with pytest.raises(AttachmentTooLarge):
        fetch_for(small, "bugzilla", None, ref, engine=engine)
    assert len(bz.calls()) == 1
    with pytest.raises(AttachmentTooLarge):
        fetch_for(small, "bugzilla", None, _bugzilla_ref(small, {"id": 12, "file_name": "s.png"}), engine=engine)
    with pytest.raises(AttachmentRefused, match="13"):  # Bugzilla has no such attachment: for good
        fetch_for(settings, "bugzilla", None, _bugzilla_ref(settings, {"id": 13, "file_name": "t.png"}), engine=engine)


def test_bugzillas_throttle_on_an_attachment_read_makes_every_process_wait(tmp_path, bz):
    """Before, the read went around Bugzilla's client: a 429 was one failed fetch, and the next process asked
    again at once. Now it is Bugzilla's shared block, and the operation waits for it (not a failure)."""
    settings = _bugzilla_settings(tmp_path, bz)
    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    bz.put_attachment(7, 12, PNG, file_name="s.png", content_type="image/png")
    ref = _bugzilla_ref(settings, {"id": 12, "file_name": "s.png", "size": len(PNG)})
    bz.fail_next(1, status=429, retry_after=120)
    with pytest.raises(SourceBusy):
        fetch_for(settings, "bugzilla", None, ref, engine=engine)
    left, _until, reason = blocked_until(engine, "bugzilla")
    assert 100 < left <= 120 and "Retry-After" in (reason or "")
    with pytest.raises(SourceBusy):  # another process: waits without asking Bugzilla
        fetch_for(settings, "bugzilla", None, ref, engine=engine)
    assert len(bz.calls()) == 1


# -- exactly once into Zoho, as side work of the delivery core ------------------------------------------------
# Each attachment is a `zoho.attachment` operation of the journal, carried out under the item's claim after its
# state is synced; a crash between its steps resumes from what the journal recorded.

TASK = "41000217"


@pytest.fixture(params=["projects", "bugtracker"])
def zoho(request, tmp_path: Path, files):
    fake = FakeZoho().start()
    env = in_process_env(tmp_path, fake, "bugherd", ZOHO_DIALECT=request.param, ATTACHMENT_HOSTS="127.0.0.1",
                         ATTACHMENT_MAX_BYTES="4096", BUGHERD_WEBHOOK_TOKEN=BUGHERD_TOKEN)  # fmt: skip
    mapping = Path(env["MAPPINGS_DIR"]) / "bugherd.yaml"
    mapping.write_text(mapping.read_text() + "attachments: true\n")
    runtime = Runtime(load_settings(env, read_dotenv=False))
    yield fake, runtime
    runtime.engine.dispose()
    fake.stop()


def deliver_task(runtime: Runtime, screenshot_url: str, *, updated: int, kind: str = "task_update") -> None:
    source = BugHerdSource(BUGHERD_TOKEN)
    payload = bugherd_event(kind, status="doing", updated=updated)
    payload["task"]["screenshot_url"] = screenshot_url
    body = encode(payload)
    normalized = source.parse(body, {}, kind)
    store.record_delivery(runtime.engine, normalized, dedup_key=source.dedup_key(body, {}, kind), headers={},
                          payload=body)  # fmt: skip


def run(runtime: Runtime) -> None:
    """Process the item until its events are done and no side work is due now."""
    for _ in range(20):
        runtime.sync.process_item("bugherd", TASK)
        with runtime.engine.connect() as conn:
            now = db_now(conn)
            due = [o for o in journal.open_for_item(conn, "bugherd", TASK) if o.next_at is not None and o.next_at <= now
                   and o.kind == "zoho.attachment"]  # fmt: skip
        if not store.pending_for_item(runtime.engine, "bugherd", TASK, float("inf")) and not due:
            return
        time.sleep(0.05)
    raise AssertionError("the item still has work")


def attachment_op(runtime: Runtime):
    with runtime.engine.connect() as conn:
        ops = [o for o in journal.for_item(conn, "bugherd", TASK) if o.kind == "zoho.attachment"]
    assert len(ops) == 1, ops
    return ops[0]


def issue_of(fake: FakeZoho) -> str:
    issues = fake.issues(dialect="bugtracker") or fake.issues()
    return str(issues[0]["id"])


def notes(runtime: Runtime) -> str:
    return "\n".join(e.notes or "" for e in store.list_events(runtime.engine))


def test_screenshot_is_copied_once_across_redeliveries(zoho, files):
    fake, runtime = zoho
    files.routes["/s/1.png"] = (200, {"Content-Type": "image/png"}, PNG[:1000])
    deliver_task(runtime, files.base_url + "/s/1.png", updated=10, kind="task_create")
    run(runtime)
    deliver_task(runtime, files.base_url + "/s/1.png", updated=20)  # names the same screenshot again
    run(runtime)
    assert files.hits == ["/s/1.png"]  # fetched once, sent once
    [att] = fake.attachments(issue_of(fake))
    assert (att["name"], att["size"]) == ("1.png", "1000")
    assert attachment_op(runtime).state == "confirmed"
    assert "attachment 1.png copied to Zoho" in notes(runtime)


def test_oversize_and_foreign_are_refused_with_a_note_and_never_sent(zoho, files):
    fake, runtime = zoho
    files.routes["/big.png"] = (200, {}, PNG * 3)
    deliver_task(runtime, files.base_url + "/big.png", updated=10, kind="task_create")
    run(runtime)
    op = attachment_op(runtime)
    assert op.state == "failed" and "over ATTACHMENT_MAX_BYTES (4096)" in (op.last_error or "")
    assert "over ATTACHMENT_MAX_BYTES (4096)" in notes(runtime)
    assert fake.attachments(issue_of(fake)) == [] and fake.portal_uploads() == []
    assert store.count_by_status(runtime.engine) == {"done": 1}  # the item's state synced all the same


def test_an_unreachable_image_never_holds_the_items_state_back(zoho, files):
    """Issue #21: one image that cannot be downloaded failed the item. Now the state is synced and the event
    done; the attachment retries on its own, visibly, and is copied once when the host answers."""
    fake, runtime = zoho
    files.routes["/s/9.png"] = (503, {}, b"down")
    deliver_task(runtime, files.base_url + "/s/9.png", updated=10, kind="task_create")
    runtime.sync.process_item("bugherd", TASK)
    assert store.count_by_status(runtime.engine) == {"done": 1}
    op = attachment_op(runtime)
    assert op.state == "planned" and op.attempts == 1 and "HTTP 503" in (op.last_error or "")
    files.routes["/s/9.png"] = (200, {}, PNG[:400])
    time.sleep(max(0.0, (op.next_at or 0) - time.time()) + 0.05)
    run(runtime)
    assert attachment_op(runtime).state == "confirmed" and len(fake.attachments(issue_of(fake))) == 1


def test_a_crash_between_upload_and_association_resumes_without_a_second_upload(zoho, files, monkeypatch):
    fake, runtime = zoho
    if runtime.settings.zoho_dialect == "bugtracker":
        pytest.skip("BugTracker uploads onto the bug in one call: nothing to associate")
    files.routes["/s/2.png"] = (200, {}, PNG[:500])
    real_associate = ZohoAttachments.associate

    def dies(self, *args):
        raise SystemExit("worker killed")

    monkeypatch.setattr(ZohoAttachments, "associate", dies)
    deliver_task(runtime, files.base_url + "/s/2.png", updated=10, kind="task_create")
    with pytest.raises(SystemExit):
        runtime.sync.process_item("bugherd", TASK)
    op = attachment_op(runtime)
    assert op.state == "sent" and op.payload.get("uploaded")  # the upload's id was recorded before associating
    assert len(fake.portal_uploads()) == 1 and fake.attachments(issue_of(fake)) == []
    monkeypatch.setattr(ZohoAttachments, "associate", real_associate)
    with runtime.engine.begin() as conn:  # the killed worker's claim expired
        conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
        conn.exec_driver_sql("UPDATE operations SET next_at = 0 WHERE kind = 'zoho.attachment'")
    run(runtime)
    assert len(fake.portal_uploads()) == 1 and len(fake.attachments(issue_of(fake))) == 1
    assert files.hits == ["/s/2.png"]  # fetched once


def test_an_association_whose_answer_was_lost_is_not_repeated(zoho, files, monkeypatch):
    fake, runtime = zoho
    if runtime.settings.zoho_dialect == "bugtracker":
        pytest.skip("no association step in BugTracker")
    files.routes["/s/5.png"] = (200, {}, PNG[:300])
    real_associate = ZohoAttachments.associate

    def associates_then_dies(self, *args):
        real_associate(self, *args)
        raise SystemExit("worker killed before recording the association")

    monkeypatch.setattr(ZohoAttachments, "associate", associates_then_dies)
    deliver_task(runtime, files.base_url + "/s/5.png", updated=10, kind="task_create")
    with pytest.raises(SystemExit):
        runtime.sync.process_item("bugherd", TASK)
    monkeypatch.setattr(ZohoAttachments, "associate", real_associate)
    posts = len(fake.api_calls(method="POST", path_contains="/attachments"))
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
        conn.exec_driver_sql("UPDATE operations SET next_at = 0 WHERE kind = 'zoho.attachment'")
    run(runtime)
    assert len(fake.api_calls(method="POST", path_contains="/attachments")) == posts  # looked up, not re-sent
    assert len(fake.attachments(issue_of(fake))) == 1
    assert attachment_op(runtime).state == "confirmed"


def test_bugtracker_retry_after_a_lost_upload_answer_adopts_the_file(zoho, files, monkeypatch):
    fake, runtime = zoho
    if runtime.settings.zoho_dialect != "bugtracker":
        pytest.skip("BugTracker only")
    files.routes["/s/4.png"] = (200, {}, PNG[:200])
    real_upload = ZohoAttachments.upload

    def stored_but_answer_lost(self, *args):
        real_upload(self, *args)
        raise ZohoTransientError("POST …/attachments: network error ReadTimeout")

    monkeypatch.setattr(ZohoAttachments, "upload", stored_but_answer_lost)
    deliver_task(runtime, files.base_url + "/s/4.png", updated=10, kind="task_create")
    runtime.sync.process_item("bugherd", TASK)
    monkeypatch.setattr(ZohoAttachments, "upload", real_upload)
    assert store.count_by_status(runtime.engine) == {"done": 1}
    op = attachment_op(runtime)
    assert op.state == "sent"
    time.sleep(max(0.0, (op.next_at or 0) - time.time()) + 0.05)
    run(runtime)
    assert "attachment 4.png found on the Zoho bug already" in notes(runtime)
    assert len(fake.attachments(issue_of(fake))) == 1
