"""Slow clients cannot starve intake: measured on real processes (gunicorn with bridge/gunicorn_conf.py).

50 connections trickle a body one byte at a time while valid deliveries are posted. Each valid delivery
must be answered within 1 s (p99), no gunicorn worker may be killed, and the tricklers are let go at
the body deadline with a JSON 408. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time

import pytest

from bridge.web.intake import BODY_READ_SECONDS
from tests.factories import github_request, issues_event
from tests.fakes.zoho import FakeZoho
from tests.harness import GITHUB_SECRET, BridgeStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRICKLERS = 50
VALID = 60


def _trickle(port: int, stop: threading.Event, answers: list[bytes]) -> None:
    body = json.dumps(issues_event("opened")).encode()
    _, headers = github_request(GITHUB_SECRET, "issues", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=BODY_READ_SECONDS + 20) as sock:
            sock.sendall(
                f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for byte in body:
                if stop.is_set() or select.select([sock], [], [], 0)[0]:
                    break  # the server answered (at its body deadline)
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.25)
            sock.settimeout(5)
            answers.append(sock.recv(65536))  # the small JSON answer arrives in one segment
    except OSError as exc:
        answers.append(repr(exc).encode())


def test_fifty_trickling_connections_do_not_delay_valid_deliveries(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, database_url=f"sqlite:///{tmp_path}/bridge.db")
    stack.start_web()
    stop, answers = threading.Event(), []
    threads = [
        threading.Thread(target=_trickle, args=(stack.port, stop, answers), daemon=True) for _ in range(TRICKLERS)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)  # every trickler is connected and mid-body
        latencies = []
        for i in range(VALID):
            started = time.perf_counter()
            r = stack.github("issues", issues_event("opened", repo=f"acme/slow-{i}"))
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            time.sleep(0.1)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        for t in threads:
            t.join(BODY_READ_SECONDS + 25)
        log = stack.log_text()
        killed = len(re.findall(r"WORKER TIMEOUT|SIGKILL|was sent SIGKILL", log))
        timed_out = sum(1 for a in answers if a.startswith(b"HTTP/1.1 408"))
        p50 = latencies[len(latencies) // 2]
        print(
            f"\nslow clients: {TRICKLERS} trickling, {VALID} valid deliveries: p50 {p50:.3f} s, "
            f"p99 {p99:.3f} s, max {latencies[-1]:.3f} s; workers killed: {killed}; tricklers answered 408: {timed_out}"
        )
        assert p99 < 1.0
        assert killed == 0, log[-2000:]
        assert timed_out == TRICKLERS, answers[:3]
        assert all(b"application/json" in a for a in answers)
        stack.assert_alive()
    finally:
        stop.set()
        stack.stop()
        fake.stop()
