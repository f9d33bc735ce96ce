"""Mapping v3 end to end on real parts (gunicorn + celery worker + beat + broker + strict FakeZoho over HTTP):
filters with on_unmatch, field ownership surviving a person's edit in Zoho, attachments once each."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bridge.store import schema as db
from testkit.factories_trackers import (
    BUGHERD_TOKEN,
    BUGZILLA_SECRET,
    bugherd_event,
    bugherd_path,
    bugzilla_attachment,
    bugzilla_event,
    bugzilla_headers,
    encode,
)
from testkit.fakes.files import FileServer
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # 1032 bytes


def mapping(tmp: Path, name: str, replace: dict[str, str] | None = None, extra: str = "") -> Path:
    text = (REPO / "mappings" / "examples" / f"{name}.yaml").read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "src" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


def start(tmp: Path, fake: FakeZoho, files: list[Path], **env: str) -> BridgeStack:
    extra = {"BUGHERD_WEBHOOK_TOKEN": BUGHERD_TOKEN, "BUGZILLA_WEBHOOK_SECRET": BUGZILLA_SECRET, **env}
    return BridgeStack(tmp, fake, mappings=files, extra_env=extra).start()


def bugherd(stack: BridgeStack, event: str, payload: dict[str, Any]) -> None:
    r = stack.post(bugherd_path(event), encode(payload), {"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["status"] in ("accepted", "duplicate"), r.text


def bugzilla(stack: BridgeStack, payload: dict[str, Any]) -> requests.Response:
    return stack.post("/webhooks/bugzilla", encode(payload), bugzilla_headers(f"Token {BUGZILLA_SECRET}"))


def idle(stack: BridgeStack) -> dict[str, int]:
    counts = stack.wait_idle()
    assert counts.get("failed", 0) == 0, stack.log_text()[-4000:]
    return counts


def notes(stack: BridgeStack) -> str:
    with stack.engine.connect() as conn:
        return "\n".join(n or "" for n in conn.execute(select(db.events.c.notes)).scalars())


@pytest.fixture
def fake():
    server = FakeZoho().start()
    yield server
    server.stop()


def test_filters_keep_out_start_and_stop_items(tmp_path, fake):
    files = [mapping(tmp_path, "bugherd", extra="when:\n  - label: urgent\non_unmatch: comment\n")]
    stack = start(tmp_path, fake, files)
    try:
        bugherd(stack, "task_create", bugherd_event("task_create", task_id=1, title="Quiet one", tags=("ui",)))
        bugherd(stack, "comment", bugherd_event("comment", task_id=1, comment_id=11, text="seen it", commented=5))
        idle(stack)
        assert fake.issues() == [], "an item that does not match is never sent to Zoho"
        assert "does not match the mapping's `when:`" in notes(stack)

        later = {"task_id": 1, "title": "Now urgent", "tags": ("ui", "urgent"), "status": "doing", "updated": 10}
        bugherd(stack, "task_update", bugherd_event("task_update", **later))
        [issue] = wait_for(lambda: fake.issues(), 30, what="the issue once the task matches")
        idle(stack)
        issue = fake.issue(issue["id"])
        assert issue["name"] == "Now urgent" and issue["status"]["name"] == "In Progress"  # its current state
        [past] = fake.comments(issue["id"])
        assert "seen it" in past["comment"]  # and its past comment

        calm = {**later, "tags": ("ui",), "updated": 20}
        bugherd(stack, "task_update", bugherd_event("task_update", **calm))
        idle(stack)
        bugherd(stack, "task_update", bugherd_event("task_update", **{**calm, "title": "Renamed", "updated": 30}))
        idle(stack)
        comments = fake.comments(issue["id"])
        assert len(comments) == 2 and "no longer matches" in comments[1]["comment"]  # on_unmatch: comment, once
        assert fake.issue(issue["id"])["name"] == "Now urgent"  # no longer synced
    finally:
        stack.stop()


def person_edits(fake: FakeZoho, issue_id: str, dialect: str, **changes: str) -> None:
    """A team member changes the issue in Zoho, through Zoho's own API."""
    token = fake.mint_token()
    base = f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/1752587000000097024"
    if dialect == "bugtracker":
        body = {("title" if k == "name" else k): v for k, v in changes.items()}
        r = requests.put(
            f"{base}/bugs/{issue_id}", json=body, headers={"Authorization": f"Zoho-oauthtoken {token}"}, timeout=10
        )
    else:
        body = {k: ({"id": fake.option_id(k, v)} if k != "name" else v) for k, v in changes.items()}
        r = requests.patch(
            f"{base}/issues/{issue_id}", json=body, headers={"Authorization": f"Zoho-oauthtoken {token}"}, timeout=10
        )
    assert r.ok, r.text


def option(issue: dict, key: str) -> str:
    value = issue.get(key)
    return value.get("name") or value.get("value") if isinstance(value, dict) else value


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_owned_fields_survive_a_persons_edit_while_others_keep_syncing(tmp_path, fake, dialect):
    owned = mapping(
        tmp_path,
        "bugherd",
        {
            'title: "{title}"': 'title: {template: "{title}", sync: create_only}',
            "    default: \"None\"              # \"not set\": left for triage in Zoho":
                "    default: \"None\"\n    sync: if_unchanged_in_zoho",
            "    default: Bug\n": "    default: Bug\n    sync: if_unchanged_in_zoho\n",
        },
    )  # fmt: skip
    stack = start(tmp_path, fake, [owned], ZOHO_DIALECT=dialect)
    try:
        first = {"task_id": 2, "title": "Cart overlaps", "priority": "normal", "tags": ("bug",)}
        bugherd(stack, "task_create", bugherd_event("task_create", **first))
        [issue] = wait_for(lambda: fake.issues(), 30, what="the issue")
        idle(stack)
        person_edits(fake, issue["id"], dialect, name="Cart overlaps price (triaged)", severity="Critical")

        second = {**first, "title": "Cart overlaps on mobile", "priority": "important", "tags": ("security",),
                  "status": "doing", "updated": 10}  # fmt: skip
        bugherd(stack, "task_update", bugherd_event("task_update", **second))
        idle(stack)
        now = fake.issue(issue["id"])
        title = now.get("name") or now.get("title")
        assert title == "Cart overlaps price (triaged)"  # create_only: Zoho's now
        assert option(now, "severity") == "Critical"  # if_unchanged_in_zoho, edited there: kept
        assert option(now, "classification") == "Security"  # if_unchanged_in_zoho, not edited: synced
        assert option(now, "status") == "In Progress"  # always
        assert "edited in Zoho since the bridge wrote it" in notes(stack)
    finally:
        stack.stop()


def test_ownership_added_later_protects_an_issue_synced_before_it(tmp_path, fake):
    """Issue #21: `sync: if_unchanged_in_zoho` added to a live mapping protects issues synced before it was
    there: what the bridge last wrote is recorded per field for every item, so a person's edit is seen."""
    plain = mapping(tmp_path, "bugherd")
    stack = start(tmp_path, fake, [plain])
    try:
        first = {"task_id": 3, "title": "Footer links dead", "priority": "normal", "tags": ("bug",)}
        bugherd(stack, "task_create", bugherd_event("task_create", **first))
        [issue] = wait_for(lambda: fake.issues(), 30, what="the issue")
        idle(stack)
        assert option(fake.issue(issue["id"]), "severity") == "Minor"
        person_edits(fake, issue["id"], "projects", severity="Blocker")  # a person triages it in Zoho

        live = stack.mappings_dir / "bugherd.yaml"
        old = '    default: "None"              # "not set": left for triage in Zoho'
        text = live.read_text(encoding="utf-8")
        assert old in text
        text = text.replace(old, '    default: "None"\n    sync: if_unchanged_in_zoho')
        text = text.replace("    default: Bug\n", "    default: Bug\n    sync: if_unchanged_in_zoho\n")
        live.write_text(text, encoding="utf-8")

        second = {**first, "priority": "important", "tags": ("security",), "status": "doing", "updated": 10}
        bugherd(stack, "task_update", bugherd_event("task_update", **second))
        idle(stack)
        now = fake.issue(issue["id"])
        assert option(now, "severity") == "Blocker"  # the person's edit kept
        assert option(now, "classification") == "Security"  # untouched in Zoho: what the bridge wrote is known
        assert option(now, "status") == "In Progress"  # the rest still syncs
        assert "edited in Zoho since the bridge wrote it" in notes(stack)
    finally:
        stack.stop()


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_attachments_become_zoho_attachments_once_each(tmp_path, fake, dialect):
    with FileServer() as source:
        shots = mapping(tmp_path, "bugherd", extra="attachments: true\n")
        bz = mapping(tmp_path, "bugzilla", extra="attachments: true\n")
        stack = start(
            tmp_path, fake, [shots, bz], ZOHO_DIALECT=dialect, BUGZILLA_URL=source.base_url,
            ATTACHMENT_HOSTS="127.0.0.1", ATTACHMENT_MAX_BYTES="2048",
        )  # fmt: skip
        try:
            source.routes["/screens/3.png"] = (200, {"Content-Type": "image/png"}, PNG)
            source.routes["/screens/huge.png"] = (200, {"Content-Type": "image/png"}, PNG * 4)
            task = bugherd_event("task_create", task_id=3, title="With a screenshot")
            task["task"]["screenshot_url"] = source.base_url + "/screens/3.png"
            bugherd(stack, "task_create", task)
            fake.fail_next(1)  # the next Zoho call fails once: a retry
            update = bugherd_event("task_update", task_id=3, title="With a screenshot", status="doing", updated=5)
            update["task"]["screenshot_url"] = source.base_url + "/screens/3.png"
            bugherd(stack, "task_update", update)
            bugherd(stack, "task_update", update)  # a redelivery
            idle(stack)

            big = bugherd_event("task_create", task_id=4, title="Huge screenshot")
            big["task"]["screenshot_url"] = source.base_url + "/screens/huge.png"
            bugherd(stack, "task_create", big)
            private = bugherd_event("task_create", task_id=5, title="Internal link")
            private["task"]["screenshot_url"] = "http://169.254.169.254/latest/meta-data/x.png"
            bugherd(stack, "task_create", private)

            body = {"attachments": {"91": {"data": base64.b64encode(PNG).decode(), "file_name": "trace.png",
                                           "content_type": "image/png", "size": len(PNG)}}}  # fmt: skip
            source.routes["/rest/bug/attachment/91"] = (200, {"Content-Type": "application/json"},
                                                       json.dumps(body).encode())  # fmt: skip
            assert bugzilla(stack, bugzilla_event("bug", "create", bug_id=7, changed=0)).status_code == 200
            idle(stack)
            attached = bugzilla_event(
                "attachment", "create", bug_id=7, attachment=bugzilla_attachment(attachment_id=91)
            )
            assert bugzilla(stack, attached).json()["status"] == "accepted"
            assert bugzilla(stack, attached).json()["status"] == "duplicate"
            idle(stack)

            by_title = {(i.get("name") or i.get("title")): i["id"] for i in fake.issues()}
            [shot] = fake.attachments(by_title["With a screenshot"])
            assert (shot["name"], shot["size"]) == ("3.png", str(len(PNG)))
            [trace] = fake.attachments(next(i for t, i in by_title.items() if "Checkout" in t or "7" in t))
            assert trace["name"] == "trace.png" and trace["data"] == PNG.decode("latin-1")
            assert fake.attachments(by_title["Huge screenshot"]) == []
            assert fake.attachments(by_title["Internal link"]) == []
            text = notes(stack)
            assert "over ATTACHMENT_MAX_BYTES (2048)" in text
            assert "169.254.169.254 is not one of the source's own hosts" in text
            assert source.hits.count("/screens/3.png") == 1 and "/screens/huge.png" in source.hits
            assert source.hits.count("/rest/bug/attachment/91") == 1
        finally:
            stack.stop()


def test_a_worker_killed_between_upload_and_association_leaves_one_attachment(tmp_path, fake):
    with FileServer() as source:
        shots = mapping(tmp_path, "bugherd", extra="attachments: true\n")
        stack = start(tmp_path, fake, [shots], ATTACHMENT_HOSTS="127.0.0.1", ITEM_LEASE_SECONDS="3")
        try:
            source.routes["/screens/6.png"] = (200, {"Content-Type": "image/png"}, PNG)
            task = bugherd_event("task_create", task_id=6, title="Crash test")
            task["task"]["screenshot_url"] = source.base_url + "/screens/6.png"
            release = fake.hold_associations()
            bugherd(stack, "task_create", task)
            assert fake.associations_held.wait(60), stack.log_text()[-3000:]
            for name in [n for n in stack.procs if n.startswith("worker")]:
                stack.kill(name)  # uploaded, the association in flight: the workers die
            fake._att_hold = None
            release.set()  # Zoho completes the association; nobody hears the answer
            stack.start_worker("worker1")
            idle(stack)
            [issue] = fake.issues()
            assert len(fake.attachments(issue["id"])) == 1
            assert len(fake.portal_uploads()) == 1  # not uploaded again
            assert len(fake.api_calls(method="POST", path_contains=f"/issues/{issue['id']}/attachments")) == 1
            assert source.hits.count("/screens/6.png") == 1
        finally:
            stack.stop()
