"""JSON everywhere on the real processes: every answer (gunicorn's own refusals included) and every log line.

- gunicorn answers an over-long request line (414), an over-long header or too many headers (431) and a request
  it cannot parse (400) itself, before the app sees it: those answers are JSON too (bridge/process/gunicorn_conf.py).
- Every line the web, worker and beat processes write to stdout/stderr parses as JSON, from gunicorn's start-up
  banner and Celery's banners to the shutdown notes (bridge/process/logs.py).
- A bad setting stops web and worker with one JSON line naming it, not a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack

pytestmark = pytest.mark.e2e


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (requests would refuse to), read the whole answer (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
def web(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake)
    stack.start_web()
    yield stack
    stack.stop()
    fake.stop()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),  # request line over 8190
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),  # one header over 8190
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
    ],
    ids=["long-request-line", "long-header", "too-many-headers", "garbage", "bad-header-name"],
)
def test_gunicorns_own_refusals_are_json(web, request_bytes, status):
    code, headers, body = _raw(web.port, request_bytes)
    assert code == status, body[:300]
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["status"] == "error" and answer["error"], answer
    assert len(body) < 400  # the offending request is not echoed back at length
    web.assert_alive()
    assert requests.get(web.base_url + "/healthz", timeout=5).status_code == 200  # and the server goes on


def test_a_local_peers_forwarded_proto_is_not_believed_without_trusted_proxies(web):
    """gunicorn believes X-Forwarded-Proto from 127.0.0.1 by default; TRUSTED_PROXIES alone decides here."""
    page = requests.get(web.base_url + "/", headers={"X-Forwarded-Proto": "https"}, timeout=5)
    assert f"http://127.0.0.1:{web.port}/webhooks/github" in page.text, page.text[:2000]


def not_json(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(record, dict) or not {"ts", "level", "logger", "msg"} <= set(record):
            bad.append(line)
    return bad


def test_every_line_of_web_worker_and_beat_is_json(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake)
    try:
        stack.start()
        assert stack.github("issues", issues_event("opened", number=7)).status_code == 200
        stack.wait_idle()
        assert len(fake.issues()) == 1
        _raw(stack.port, b"NOT AN HTTP REQUEST\r\n\r\n")  # gunicorn logs the refusal itself
        assert stack.post("/webhooks/github", b"{}", {"X-GitHub-Event": "issues"}).status_code == 401
    finally:
        stack.stop()  # SIGTERM: the shutdown notes are part of the output too
        fake.stop()
    logs = {path.stem: path.read_text(errors="replace") for path in stack.logs.glob("*.log")}
    assert set(logs) >= {"web", "beat"} and any(name.startswith("worker") for name in logs)
    for name, text in logs.items():
        assert text.strip(), f"{name} wrote nothing"
        assert not_json(text) == [], f"{name}: lines that are not JSON records"
    records = [json.loads(line) for text in logs.values() for line in text.splitlines()]
    messages = [(r["logger"], r["msg"]) for r in records]
    assert any(lg == "gunicorn.error" and m.startswith("Starting gunicorn") for lg, m in messages)
    assert any(lg == "gunicorn.error" and "Invalid request" in m for lg, m in messages)
    assert any(lg == "celery.stdout" and "[queues]" in m for lg, m in messages)  # the worker's banner
    assert any(lg == "celery.stdout" and "celery beat" in m for lg, m in messages)  # beat's banner
    assert any("Warm shutdown" in m for _, m in messages)


def _start_with(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "mappings").mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "GITHUB_", "BUGZILLA_", "BUGHERD_"))}
    clean.update({"BRIDGE_HOME": str(tmp_path), "PYTHONPATH": str(REPO), **env})
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["gunicorn", "-c", "python:bridge.process.gunicorn_conf", "-b", "127.0.0.1:0", "bridge.web.wsgi:app"],
        ["celery", "-A", "workers", "worker", "--loglevel", "INFO"],
        ["celery", "-A", "workers", "beat", "--loglevel", "INFO"],
    ],
    ids=["web", "worker", "beat"],
)
def test_a_bad_setting_stops_each_process_with_one_json_line_naming_it(tmp_path, args):
    result = _start_with(tmp_path, args, TRUSTED_PROXIES="10.0.0.0/33")
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "critical" and record["msg"].startswith("TRUSTED_PROXIES: "), record


def test_importing_the_tasks_outside_a_celery_process_leaves_stdout_alone(tmp_path: Path) -> None:
    """Only `celery … worker` and `celery … beat` turn what they print into log records: a test, a bench or a
    script that imports the tasks keeps its own stdout (pytest's terminal writer asks its descriptor)."""
    env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path), "BROKER_URL": "redis://127.0.0.1:1/0"}
    code = "import sys, workers.tasks; print(sys.__stdout__.fileno(), sys.stdout is sys.__stdout__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]
