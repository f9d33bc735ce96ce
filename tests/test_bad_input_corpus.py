"""The bad-input corpus: hostile and malformed deliveries against a real server (gunicorn + worker + FakeZoho).

Every case carries valid credentials unless it tests them, so it reaches the parser: that is where the
HTML 500s and the poison events came from. Each case asserts its status, a JSON body naming the field,
that nothing was stored and that nothing reached Zoho. Runs on SQLite, or on PostgreSQL when
BRIDGE_TEST_DATABASE_URL is set (CI runs both passes).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from bridge.store import schema as db
from testkit.factories import comment_event, github_request, issues_event
from testkit.factories_trackers import (
    BUGHERD_TOKEN,
    BUGZILLA_SECRET,
    bugherd_event,
    bugherd_path,
    bugzilla_comment,
    bugzilla_event,
    bugzilla_headers,
)
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, BridgeStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]  # also on PostgreSQL + Redis in CI

DEEP = 100_000


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    headers: dict[str, str]
    status: int
    error: str | None = None  # a fragment the JSON error must contain (the field or the rule)


def _set(payload: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `payload` with `a.b.c` set to `value` (or removed when value is DELETE)."""
    out = copy.deepcopy(payload)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


DELETE = object()


def _nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()  # ensure_ascii: a lone surrogate travels as its \ud800 escape


def gh(name: str, payload: Any, status: int, error: str | None, *, event: str = "issues", **headers: str) -> Case:
    body = payload if isinstance(payload, bytes) else _json(payload)
    _, signed = github_request(GITHUB_SECRET, event, body)
    signed.update(headers)
    return Case(f"github-{name}", "/webhooks/github", body, signed, status, error)


def bz(name: str, payload: Any, status: int, error: str | None, **headers: str) -> Case:
    body = payload if isinstance(payload, bytes) else _json(payload)
    return Case(
        f"bugzilla-{name}", "/webhooks/bugzilla", body, {**bugzilla_headers(BUGZILLA_SECRET), **headers}, status, error
    )


def bh(name: str, payload: Any, status: int, error: str | None, *, event: str = "task_create", path: str = "") -> Case:
    body = payload if isinstance(payload, bytes) else _json(payload)
    return Case(
        f"bugherd-{name}", path or bugherd_path(event), body, {"Content-Type": "application/json"}, status, error
    )


# Timestamps no parser should take; each is a 400 naming the field.
BAD_TIMES = {
    "year-1-east-of-utc": "0001-01-01T00:00:00+01:00",  # leaves the calendar in UTC (was OverflowError)
    "year-9999-west-of-utc": "9999-12-31T23:59:59-01:00",
    "unicode-digits": "\uff12\uff10\uff12\uff10-01-01T00:00:00Z",  # fullwidth digits
    "lone-surrogate": "2020-01-01T00:00:00\ud800",
    "words": "yesterday",
    "empty": "",
    "number": 1589555233,
    "object": {"t": 1},
    "before-1995": "1990-01-01T00:00:00Z",
    "month-13": "2020-13-01T00:00:00Z",
    "too-long": "2020-01-01T00:00:00" + "0" * 80,
}
BAD_IDS = {
    "true": True,
    "false": False,
    "unicode-digit": "²",
    "arabic-digits": "١٢٣",
    "letters": "abc",
    "negative": -1,
    "zero": 0,
    "float": 1.5,
    "huge": 2**64,
    "list": [1],
    "object": {"id": 1},
    "null": None,
}
BAD_TEXT = {
    "nul": "a\x00b",
    "lone-surrogate": "repo\ud800",
}


IC = "issue_comment"
INFINITY = b'"state_reason": Infinity, "author_association"'
FORM = "application/x-www-form-urlencoded"


def github_cases() -> list[Case]:
    opened = issues_event("opened", updated=10)
    commented = comment_event("created", comment_id=492700400, text="Yes", commented=20)
    cases = []
    for key, value in BAD_IDS.items():
        cases.append(gh(f"number-{key}", _set(opened, "issue.number", value), 400, "issue.number"))
    for key in ("true", "unicode-digit", "letters", "negative", "huge", "object"):
        cases.append(gh(f"issue-id-{key}", _set(opened, "issue.id", BAD_IDS[key]), 400, "issue.id"))
    for key, value in BAD_TIMES.items():
        cases.append(gh(f"updated_at-{key}", _set(opened, "issue.updated_at", value), 400, "issue.updated_at"))
        if key == "empty":  # an empty created_at means "not given": updated_at stands in
            continue
        cases.append(
            gh(
                f"comment-created_at-{key}",
                _set(commented, "comment.created_at", value),
                400,
                "comment",
                event=IC,
            )
        )
    for key, value in BAD_TEXT.items():
        cases.append(gh(f"repository-{key}", _set(opened, "repository.full_name", "acme/" + value), 400, "repository"))
        cases.append(gh(f"title-{key}", _set(opened, "issue.title", value), 400, "title"))
        cases.append(gh(f"body-{key}", _set(opened, "issue.body", value), 400, "body"))
        cases.append(gh(f"label-{key}", _set(opened, "issue.labels", [{"name": value}]), 400, "labels"))
        cases.append(
            gh(
                f"comment-body-{key}",
                _set(commented, "comment.body", value),
                400,
                "comment body",
                event=IC,
            )
        )
    for key in ("true", "unicode-digit", "letters", "list", "object", "null"):
        cases.append(gh(f"comment-id-{key}", _set(commented, "comment.id", BAD_IDS[key]), 400, "comment", event=IC))
    cases += [
        gh("comment-id-300-chars", _set(commented, "comment.id", "1" * 300), 400, "comment.id", event=IC),
        gh("comment-missing", _set(commented, "comment", DELETE), 400, "comment", event=IC),
        gh("repository-300-chars", _set(opened, "repository.full_name", "acme/" + "r" * 300), 400, "item key"),
        gh("repository-missing", _set(opened, "repository", DELETE), 400, "repository.full_name"),
        gh("repository-number", _set(opened, "repository.full_name", 7), 400, "repository.full_name"),
        gh("issue-null", _set(opened, "issue", None), 400, "issue"),
        gh("issue-list", _set(opened, "issue", []), 400, "issue"),
        gh("action-number", _set(opened, "action", 5), 400, "action"),
        gh("action-missing", _set(opened, "action", DELETE), 400, "action"),
        gh("labels-string", _set(opened, "issue.labels", "bug"), 400, "issue.labels"),
        gh("labels-2000", _set(opened, "issue.labels", [{"name": f"l{i}"} for i in range(2000)]), 400, "labels"),
        gh("label-name-object", _set(opened, "issue.labels", [{"name": {"x": 1}}]), 400, "labels"),
        gh("state_reason-object", _set(opened, "issue.state_reason", {"x": 1}), 400, "state_reason"),
        gh("created_at-list", _set(opened, "issue.created_at", [[1]]), 400, "created_at"),
        gh("closed_at-object", _set(opened, "issue.closed_at", {"x": 1}), 400, "closed_at"),
        gh("assignee-login-object", _set(opened, "issue.assignees", [{"login": {"x": 1}}]), 400, "assignees"),
        gh(
            "state_reason-infinity",
            _json(opened).replace(b'"author_association"', INFINITY),
            400,
            "issue.state_reason: expected text",
        ),
        gh("number-nan", _json(opened).replace(b'"number": 1,', b'"number": NaN,'), 400, "issue.number"),
        gh("nested-100k", b"[" * DEEP + b"]" * DEEP, 400, "nested"),
        gh("nested-100k-objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, 400, "nested"),
        gh("title-nested-500", _set(opened, "issue.title", _nested(500)), 400, "nested"),
        gh("title-nested-450", _set(opened, "issue.title", _nested(450)), 400, "nested"),
        gh("milestone-nested-40", _set(opened, "issue.milestone", _nested(40)), 400, "nested"),
        gh("not-json", b"this is not json", 400, "not valid JSON"),
        gh("empty-body", b"", 400, "not valid JSON"),
        gh("json-array", b"[1, 2]", 400, "JSON object"),
        gh("json-string", b'"hello"', 400, "JSON object"),
        gh("invalid-utf8", b'{"action": "\xff\xfe"}', 400, "not valid JSON"),
        gh("unterminated-string", b'{"action": "opened', 400, "not valid JSON"),
        gh("escaped-quotes-unterminated", b'{"a": "' + b'\\"' * 50_000, 400, "not valid JSON"),
        gh("huge-int", b'{"action": "opened", "issue": {"number": 1' + b"0" * 5000 + b"}}", 400, "not valid JSON"),
        gh("trailing-garbage", _json(opened) + b"}", 400, "not valid JSON"),
        gh("delivery-id-300-chars", opened, 400, "X-GitHub-Delivery", **{"X-GitHub-Delivery": "d" * 300}),
        gh("missing-event-header", opened, 400, "X-GitHub-Event", **{"X-GitHub-Event": ""}),
        gh("form-without-payload", b"foo=bar", 400, "payload", **{"Content-Type": FORM}),
        gh(
            "form-payload-nested",
            b"payload=" + b"%5B" * 5000,
            400,
            "nested",
            **{"Content-Type": FORM.upper()},
        ),
        gh("bad-signature", opened, 401, "X-Hub-Signature-256", **{"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        gh("missing-signature", opened, 401, "X-Hub-Signature-256", **{"X-Hub-Signature-256": ""}),
        gh("ping", {"zen": "Keep it logically awesome.", "hook_id": 1}, 200, None, event="ping"),
        gh("push-event", opened, 200, None, event="push"),
        gh("unknown-action", _set(opened, "action", "pinned"), 200, None),
        gh("pull-request", issues_event("opened", pull_request=True), 200, None),
        gh("action-lone-surrogate", _set(opened, "action", "\ud800"), 200, None),  # ignored, counted, logged
        gh("event-header-1000-chars", opened, 200, None, event="x" * 1000),
    ]
    return cases


def bugzilla_cases() -> list[Case]:
    created = bugzilla_event("bug", "create", changed=10)
    comment = bugzilla_event("comment", "create", changed=20, comment=bugzilla_comment(commented=20))
    cases = []
    for key, value in BAD_IDS.items():
        cases.append(bz(f"bug-id-{key}", _set(created, "bug.id", value), 400, "bug.id"))
    cases.append(bz("bug-id-30-digits", _set(created, "bug.id", "1" * 30), 400, "bug.id"))
    for key in ("true", "unicode-digit", "letters", "negative", "object"):
        cases.append(bz(f"comment-id-{key}", _set(comment, "bug.comment.id", BAD_IDS[key]), 400, "bug.comment.id"))
    cases.append(bz("comment-id-300-chars", _set(comment, "bug.comment.id", "1" * 300), 400, "bug.comment.id"))
    for key, value in BAD_TIMES.items():
        cases.append(bz(f"event-time-{key}", _set(created, "event.time", value), 400, "event.time"))
        if key == "empty":  # an empty last_change_time means "not given": event.time stands in
            continue
        cases.append(
            bz(f"last_change_time-{key}", _set(created, "bug.last_change_time", value), 400, "last_change_time")
        )
    for key, value in BAD_TEXT.items():
        cases.append(bz(f"summary-{key}", _set(created, "bug.summary", value), 400, "summary"))
        cases.append(bz(f"product-{key}", _set(created, "bug.product", value), 400, "product"))
        cases.append(bz(f"comment-body-{key}", _set(comment, "bug.comment.body", value), 400, "comment body"))
        cases.append(bz(f"webhook-id-{key}", _set(created, "webhook_id", value), 400, "delivery id"))
    cases += [
        bz("product-300-chars", _set(created, "bug.product", "p" * 300), 400, "project"),
        bz("creation_time-object", _set(created, "bug.creation_time", {"x": 1}), 400, "creation_time"),
        bz("keywords-string", _set(created, "bug.keywords", "crash"), 400, "bug.keywords"),
        bz("keywords-2000", _set(created, "bug.keywords", [f"k{i}" for i in range(2000)]), 400, "keywords"),
        bz("event-missing", _set(created, "event", DELETE), 400, "event"),
        bz("event-list", _set(created, "event", []), 400, "event"),
        bz("event-action-number", _set(created, "event.action", 3), 400, "event.action"),
        bz("event-action-empty", _set(created, "event.action", ""), 400, "event.action"),
        bz("bug-missing", _set(created, "bug", DELETE), 400, "bug"),
        bz("bug-string", _set(created, "bug", "1629704"), 400, "bug"),
        bz("comment-without-id", _set(comment, "bug.comment.id", DELETE), 400, "bug.comment"),
        bz("nested-100k", b"[" * DEEP + b"]" * DEEP, 400, "nested"),
        bz("summary-nested-500", _set(created, "bug.summary", _nested(500)), 400, "nested"),
        bz("not-json", b"<xml/>", 400, "not valid JSON"),
        bz("json-array", b"[]", 400, "JSON object"),
        bz("invalid-utf8", b"\xc3\x28", 400, "not valid JSON"),
        bz("missing-auth", created, 401, "Authorization", Authorization=""),
        bz("wrong-auth", created, 401, "Authorization", Authorization="Token wrong"),
        bz("attachment-modify", bugzilla_event("attachment", "modify", attachment={"id": 1}), 200, None),
        bz("unknown-target-action", _set(created, "event.action", "frobnicate"), 200, None),
        bz("action-lone-surrogate", _set(created, "event.action", "\ud800"), 200, None),
        bz("target-lone-surrogate", _set(created, "event.target", "\ud800"), 200, None),
    ]
    return cases


def bugherd_cases() -> list[Case]:
    created = bugherd_event("task_create", updated=10, title="Button overlaps the price")
    comment = bugherd_event("comment", commented=20)
    cases = []
    for key, value in BAD_IDS.items():
        cases.append(bh(f"task-id-{key}", _set(created, "task.id", value), 400, "task.id"))
    for key in ("true", "unicode-digit", "letters", "negative", "null"):
        cases.append(bh(f"project-id-{key}", _set(created, "task.project_id", BAD_IDS[key]), 400, "task.project_id"))
        cases.append(
            bh(f"comment-id-{key}", _set(comment, "comment.id", BAD_IDS[key]), 400, "comment.id", event="comment")
        )
    for key, value in BAD_TIMES.items():
        if key == "empty":  # an empty updated_at falls back to created_at, which is valid
            continue
        cases.append(bh(f"updated_at-{key}", _set(created, "task.updated_at", value), 400, "task.updated_at"))
    for key, value in BAD_TEXT.items():
        cases.append(bh(f"description-{key}", _set(created, "task.description", value), 400, "description"))
        cases.append(
            bh(f"comment-text-{key}", _set(comment, "comment.text", value), 400, "comment body", event="comment")
        )
        cases.append(bh(f"tag-{key}", _set(created, "task.tag_names", [value]), 400, "tag_names"))
    cases += [
        bh("tag_names-string", _set(created, "task.tag_names", "mobile"), 400, "task.tag_names"),
        bh("status_id-object", _set(created, "task.status_id", {"x": 1}), 400, "status_id"),
        bh("due_at-list", _set(created, "task.due_at", [[1]]), 400, "due_at"),
        bh("task-missing", {"nope": {}}, 400, "task"),
        bh("task-list", {"task": []}, 400, "task"),
        bh("comment-without-task", _set(comment, "comment.task", DELETE), 400, "comment.task", event="comment"),
        bh("comment-not-object", {"comment": "hi"}, 400, "comment", event="comment"),
        bh("nested-100k", b"{" * 1 + b'"task":' + b"[" * DEEP + b"]" * DEEP + b"}", 400, "nested"),
        bh("description-nested-500", _set(created, "task.description", _nested(500)), 400, "nested"),
        bh("not-json", b"task=1", 400, "not valid JSON"),
        bh("json-number", b"42", 400, "JSON object"),
        bh("wrong-token", created, 401, "token", path=bugherd_path("task_create", "wrong-token")),
        bh("unknown-event", created, 404, "unknown BugHerd event", path=bugherd_path("task_explode")),
        bh("no-event", created, 404, "must end with", path=f"/webhooks/bugherd/{BUGHERD_TOKEN}"),
    ]
    return cases


CASES = github_cases() + bugzilla_cases() + bugherd_cases()
assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"

# CI's first pass (no BRIDGE_TEST_DATABASE_URL) covers SQLite, its scale-out pass PostgreSQL.
DATABASES = ["postgresql"] if os.environ.get("BRIDGE_TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(scope="module", params=DATABASES)
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"corpus-{request.param}")
    fake = FakeZoho().start()
    bridge = BridgeStack(
        tmp,
        fake,
        database_url=f"sqlite:///{tmp}/bridge.db" if request.param == "sqlite" else "",
        mappings=[REPO / "mappings" / "examples" / n for n in ("github.yaml", "bugherd.yaml", "bugzilla.yaml")],
        extra_env={
            "BUGHERD_WEBHOOK_TOKEN": BUGHERD_TOKEN,
            "BUGZILLA_WEBHOOK_SECRET": BUGZILLA_SECRET,
            "BUGZILLA_URL": "https://bugzilla.mozilla.org",
        },
    ).start(beat=False)
    yield bridge
    bridge.stop()
    fake.stop()


def _stored(stack: BridgeStack) -> int:
    with stack.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(db.events)).scalar_one())


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 150
    assert {c.path.split("/")[2] for c in CASES} == {"github", "bugzilla", "bugherd"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_delivery(stack: BridgeStack, case: Case):
    stored, sent = _stored(stack), len(stack.fake.api_calls())
    r = requests.post(stack.base_url + case.path, data=case.body, headers=case.headers, timeout=30)
    assert r.headers["Content-Type"].startswith("application/json"), r.text[:300]
    answer = r.json()
    assert r.status_code == case.status, answer
    if case.status == 200:
        assert answer["status"] == "ignored" and answer["event_id"] is None
    else:
        assert answer["status"] == "error"
        assert case.error and case.error in answer["error"], answer
    assert _stored(stack) == stored
    assert len(stack.fake.api_calls()) == sent


def test_the_corpus_left_no_traceback_in_the_logs(stack: BridgeStack):
    """Runs after the cases: no handler crashed, no metric failed to count, nothing was logged unescaped."""
    log = stack.log_text()
    assert "Traceback" not in log and "could not count" not in log, log[-3000:]


# -- raw HTTP: what a client library would never send -----------------------------------------------------


def _raw(stack: BridgeStack, request_bytes: bytes, *, wait: float = 15) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=wait) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def _chunked(body: bytes) -> bytes:
    _, headers = github_request(GITHUB_SECRET, "issues", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode()


MALFORMED_CHUNKED = {
    "bad-size": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-too-big-then-eof": b"ffff\r\nshort",
    "missing-crlf": b"5\r\nhelloXX0\r\n\r\n",
    "no-last-chunk": b"5\r\nhello\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_CHUNKED))
def test_malformed_chunked_body(stack: BridgeStack, name: str):
    stored = _stored(stack)
    status, headers, body = _raw(stack, _chunked(b"{}") + MALFORMED_CHUNKED[name])
    assert status == 400, body[:300]
    assert headers.get("Content-Type", "").startswith("application/json"), body[:300]
    assert json.loads(body)["status"] == "error"
    assert _stored(stack) == stored


def test_content_length_longer_than_the_body(stack: BridgeStack):
    stored = _stored(stack)
    body = _json(issues_event("opened"))
    _, headers = github_request(GITHUB_SECRET, "issues", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request_bytes = f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body) + 50}\r\n\r\n"
    status, headers_out, answer = _raw(stack, request_bytes.encode() + body)
    assert status == 400 and headers_out["Content-Type"].startswith("application/json"), answer[:300]
    assert _stored(stack) == stored


# -- what is accepted processes to an end state -----------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_future_dated_delivery_is_clamped_and_does_not_freeze_its_item(stack: BridgeStack):
    """Dated 2999: stored at the receipt time with a note; a later real edit still reaches Zoho."""
    repo, now = f"acme/clock-{uuid.uuid4().hex[:6]}", datetime.now(UTC)
    future = issues_event("opened", repo=repo, title="From a broken clock")
    future["issue"]["updated_at"] = "2999-01-01T00:00:00Z"
    r = stack.github("issues", future)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    ev = stack_event(stack, r.json()["event_id"])
    assert abs(ev["source_ts"] - time.time()) < 120
    assert "in the future" in (ev["notes"] or "")
    stack.wait_idle(60)
    later = issues_event("edited", repo=repo, title="Fixed title")
    later["issue"]["updated_at"] = _iso(now + timedelta(minutes=2))  # inside the allowed skew
    r2 = stack.github("issues", later)
    assert r2.status_code == 200 and r2.json()["status"] == "accepted", r2.text
    stack.wait_idle(60)

    def title_in_zoho() -> bool:
        return any((i.get("name") or i.get("title")) == "Fixed title" for i in stack.fake.issues())

    wait_for(title_in_zoho, 30, what="the later edit in Zoho")
    assert stack_event(stack, r2.json()["event_id"])["status"] == "done"


def stack_event(stack: BridgeStack, event_id: int) -> dict[str, Any]:
    with stack.engine.connect() as conn:
        row = conn.execute(select(db.events).where(db.events.c.id == event_id)).mappings().one()
    return dict(row)


def test_form_encoded_with_an_upper_case_content_type_is_accepted(stack: BridgeStack):
    payload = issues_event("opened", repo=f"acme/form-{uuid.uuid4().hex[:6]}")
    from urllib.parse import quote

    body = b"payload=" + quote(json.dumps(payload)).encode()
    _, headers = github_request(GITHUB_SECRET, "issues", body)
    headers["Content-Type"] = "Application/X-WWW-Form-Urlencoded"
    r = stack.post("/webhooks/github", body, headers)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    stack.wait_idle(60)
    assert stack_event(stack, r.json()["event_id"])["status"] == "done"
