"""Attachments: which files an event names, the fetcher's host and size rules, and the exactly-once copy to
a real FakeZoho over HTTP (both dialects), a crash between upload and association included."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.core.attachments import (
    ASSOCIATED,
    UPLOADED,
    AttachmentRef,
    AttachmentRefused,
    AttachmentTooLarge,
    check_url,
    fetch,
    get_link,
    refs_of,
    sync_attachments,
)
from bridge.events import NormalizedEvent
from bridge.settings import load_settings
from bridge.store import schema as db
from bridge.targets.zoho.attachments import ZohoAttachments
from bridge.targets.zoho.client import ZohoClient
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


def test_bugzilla_attachment_comes_base64_in_json(files):
    hosts = frozenset({"127.0.0.1"})
    body = {"attachments": {"12": {"data": base64.b64encode(PNG).decode(), "file_name": "s.png",
                                   "content_type": "image/png", "size": len(PNG)}}}  # fmt: skip
    files.routes["/rest/bug/attachment/12"] = (200, {"Content-Type": "application/json"}, json.dumps(body).encode())
    ref = AttachmentRef("attachment:12", files.base_url + "/rest/bug/attachment/12", "s.png", bugzilla_json=True)
    got = fetch(ref, hosts, hosts, max_bytes=len(PNG))
    assert (got.data, got.content_type) == (PNG, "image/png")
    with pytest.raises(AttachmentTooLarge):
        fetch(ref, hosts, hosts, max_bytes=len(PNG) - 1)


# -- exactly once into Zoho --------------------------------------------------------------------------------------


@pytest.fixture(params=["projects", "bugtracker"])
def zoho(request, tmp_path: Path, files):
    fake = FakeZoho().start()
    env = in_process_env(tmp_path, fake, DATABASE_URL=f"sqlite:///{tmp_path}/b.db", ZOHO_DIALECT=request.param,
                         ATTACHMENT_HOSTS="127.0.0.1", ATTACHMENT_MAX_BYTES="4096")  # fmt: skip
    settings = load_settings(env, read_dotenv=False)
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    client = ZohoClient(settings, engine)
    kind = "bugs" if request.param == "bugtracker" else "issues"
    body = {"title": "t"} if request.param == "bugtracker" else {"name": "t"}
    resp = client.call(
        "POST", f"/api/v3/portal/{fake.portal_id}/projects/{next(iter(fake.projects))}/{kind}", body=body
    )
    data = resp.data["bugs"][0] if request.param == "bugtracker" else resp.data
    yield fake, settings, engine, client, str(data["id"])
    engine.dispose()
    fake.stop()


def copy_once(zoho, ev, **kw):
    fake, settings, engine, client, issue_id = zoho
    return sync_attachments(
        engine, settings, ZohoAttachments(client), ev, external_id="bugherd:1", portal=fake.portal_id,
        project=next(iter(fake.projects)), issue_id=issue_id, **kw,
    )  # fmt: skip


def test_screenshot_is_copied_once_across_redeliveries(zoho, files):
    fake, _, engine, _, issue_id = zoho
    files.routes["/s/1.png"] = (200, {"Content-Type": "image/png"}, PNG[:1000])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/1.png")
    assert copy_once(zoho, ev) == ["attachment 1.png copied to Zoho"]
    assert copy_once(zoho, ev) == []  # a redelivery: nothing fetched, nothing sent
    assert files.hits == ["/s/1.png"]
    [att] = fake.attachments(issue_id)
    assert (att["name"], att["size"]) == ("1.png", "1000")
    assert get_link(engine, "bugherd", "bugherd:1", refs_of(zoho[1], ev)[0].key).state == ASSOCIATED


def test_oversize_and_foreign_are_skipped_with_a_note_and_never_sent(zoho, files):
    fake, _, _engine, _, issue_id = zoho
    files.routes["/big.png"] = (200, {}, PNG * 3)
    notes = copy_once(zoho, event("bugherd", screenshot_url=files.base_url + "/big.png"))
    assert len(notes) == 1 and "over ATTACHMENT_MAX_BYTES (4096)" in notes[0]
    notes = copy_once(zoho, event("bugherd", screenshot_url="http://10.0.0.7/s.png"))
    assert "not one of the source's own hosts" in notes[0]
    assert fake.attachments(issue_id) == [] and fake.portal_uploads() == []
    assert copy_once(zoho, event("bugherd", screenshot_url=files.base_url + "/big.png")) == []  # decided once


def test_a_crash_between_upload_and_association_resumes_without_a_second_upload(zoho, files):
    fake, settings, engine, client, issue_id = zoho
    if client.dialect == "bugtracker":
        pytest.skip("BugTracker uploads onto the bug in one call: nothing to associate")
    files.routes["/s/2.png"] = (200, {}, PNG[:500])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/2.png")
    uploader = ZohoAttachments(client)
    real_associate = uploader.associate

    def dies(*args):
        raise SystemExit("worker killed")

    uploader.associate = dies
    with pytest.raises(SystemExit):
        sync_attachments(engine, settings, uploader, ev, external_id="bugherd:1", portal=fake.portal_id,
                         project=next(iter(fake.projects)), issue_id=issue_id)  # fmt: skip
    key = refs_of(settings, ev)[0].key
    assert get_link(engine, "bugherd", "bugherd:1", key).state == UPLOADED
    assert len(fake.portal_uploads()) == 1 and fake.attachments(issue_id) == []
    uploader.associate = real_associate
    assert copy_once(zoho, ev) == ["attachment 2.png copied to Zoho"]
    assert len(fake.portal_uploads()) == 1 and len(fake.attachments(issue_id)) == 1
    assert files.hits == ["/s/2.png"]  # fetched once


def test_a_lost_association_answer_is_looked_up_not_repeated(zoho, files):
    fake, _settings, _engine, client, issue_id = zoho
    if client.dialect == "bugtracker":
        pytest.skip("no association step in BugTracker")
    files.routes["/s/3.png"] = (200, {}, PNG[:300])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/3.png")
    fake.set_faults(error_500_after_commit_rate=1.0)  # every write is stored, then answered 500
    try:
        with pytest.raises(Exception, match="500"):
            copy_once(zoho, ev)
    finally:
        fake.set_faults(error_500_after_commit_rate=0.0)
    # The upload's answer was lost: uploaded again (an unassociated orphan stays in the portal), then associated.
    copy_once(zoho, ev)
    assert len(fake.attachments(issue_id)) == 1 and len(fake.portal_uploads()) == 2


def test_an_association_whose_answer_was_lost_is_not_repeated(zoho, files):
    fake, settings, engine, client, issue_id = zoho
    if client.dialect == "bugtracker":
        pytest.skip("no association step in BugTracker")
    files.routes["/s/5.png"] = (200, {}, PNG[:300])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/5.png")
    uploader = ZohoAttachments(client)
    real_associate = uploader.associate

    def associates_then_dies(*args):
        real_associate(*args)
        raise SystemExit("worker killed before recording the association")

    uploader.associate = associates_then_dies
    with pytest.raises(SystemExit):
        sync_attachments(engine, settings, uploader, ev, external_id="bugherd:1", portal=fake.portal_id,
                         project=next(iter(fake.projects)), issue_id=issue_id)  # fmt: skip
    posts = len(fake.api_calls(method="POST", path_contains="/attachments"))
    assert copy_once(zoho, ev) == []
    assert len(fake.api_calls(method="POST", path_contains="/attachments")) == posts  # looked up, not re-sent
    assert len(fake.attachments(issue_id)) == 1
    assert get_link(engine, "bugherd", "bugherd:1", refs_of(settings, ev)[0].key).state == ASSOCIATED


def test_bugtracker_retry_after_a_lost_upload_answer_adopts_the_file(zoho, files):
    fake, _settings, _engine, client, issue_id = zoho
    if client.dialect != "bugtracker":
        pytest.skip("BugTracker only")
    files.routes["/s/4.png"] = (200, {}, PNG[:200])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/4.png")
    fake.set_faults(error_500_after_commit_rate=1.0)
    try:
        with pytest.raises(Exception, match="500"):
            copy_once(zoho, ev)
    finally:
        fake.set_faults(error_500_after_commit_rate=0.0)
    assert copy_once(zoho, ev) == ["attachment 4.png found on the Zoho bug already"]
    assert len(fake.attachments(issue_id)) == 1


def test_a_worker_that_lost_the_item_mid_copy_records_nothing_and_the_next_holder_copies_once(zoho, files):
    """Row writes go through the delivery core's fenced step: once the claim is gone (a pause past the
    lease), the stalled worker's upload answer is not recorded, and the worker that holds the item now
    finishes the copy with one attachment on the issue."""
    from bridge.store import claims

    fake, settings, engine, client, issue_id = zoho
    files.routes["/s/3.png"] = (200, {}, PNG[:700])
    ev = event("bugherd", screenshot_url=files.base_url + "/s/3.png")
    claimed = claims.claim_item(engine, "bugherd", ev.item_key, "stalled", 60.0)
    assert not isinstance(claimed, claims.Refused)
    stalled = claimed[0]

    def fenced_write(fn):
        with claims.fenced(engine, stalled) as (conn, now):
            return fn(conn, now)

    uploader = ZohoAttachments(client)
    real_upload = uploader.upload

    def upload_then_lose_the_claim(*args):
        answer = real_upload(*args)
        with engine.begin() as conn:  # paused past the lease while Zoho answered: another worker took it
            conn.exec_driver_sql("UPDATE leases SET expires_at = 0")
        return answer

    uploader.upload = upload_then_lose_the_claim
    with pytest.raises(claims.ClaimLost):
        sync_attachments(engine, settings, uploader, ev, external_id="bugherd:1", portal=fake.portal_id,
                         project=next(iter(fake.projects)), issue_id=issue_id, write=fenced_write)  # fmt: skip
    key = refs_of(settings, ev)[0].key
    row = get_link(engine, "bugherd", "bugherd:1", key)
    assert row is not None and row.zoho_attachment_id is None  # the lost worker's answer was not written
    # Projects: the upload was never associated, so it goes again; BugTracker stored it on the bug already
    done = "found on the Zoho bug already" if client.dialect == "bugtracker" else "copied to Zoho"
    assert copy_once(zoho, ev) == [f"attachment 3.png {done}"]
    assert len(fake.attachments(issue_id)) == 1
    assert get_link(engine, "bugherd", "bugherd:1", key).state == ASSOCIATED
