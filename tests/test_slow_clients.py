"""Slow clients cannot starve intake: measured on real processes (gunicorn with bridge/gunicorn_conf.py).

50 connections trickle one byte at a time (25 their headers, 25 their body) while valid deliveries are
posted. Each valid delivery must be answered within 1 s (p99), no gunicorn worker may be killed, and the
body tricklers are let go at the body deadline with a JSON 408 (header tricklers each hold one thread of
the 2 x WEB_THREADS until they give up: gunicorn has no header deadline).
The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time

import pytest

from bridge.web.intake import BODY_READ_SECONDS
from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, BridgeStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRICKLERS = 50  # half trickle their headers, half their body
VALID = 60


def _trickle_headers(port: int, stop: threading.Event) -> None:
    """Sends its request line and headers a byte every 0.25 s and never finishes: holds one thread."""
    request_head = b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"p" * 10_000
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for byte in request_head:
            if stop.is_set():
                return
            sock.sendall(bytes([byte]))
            time.sleep(0.25)


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
    body_tricklers = [
        threading.Thread(target=_trickle, args=(stack.port, stop, answers), daemon=True) for _ in range(TRICKLERS // 2)
    ]
    header_tricklers = [
        threading.Thread(target=_trickle_headers, args=(stack.port, stop), daemon=True)
        for _ in range(TRICKLERS - len(body_tricklers))
    ]
    try:
        for t in body_tricklers + header_tricklers:
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
        for t in body_tricklers:
            t.join(BODY_READ_SECONDS + 25)
        log = stack.log_text()
        killed = len(re.findall(r"WORKER TIMEOUT|SIGKILL|was sent SIGKILL", log))
        timed_out = sum(1 for a in answers if a.startswith(b"HTTP/1.1 408"))
        p50 = latencies[len(latencies) // 2]
        print(
            f"\nslow clients: {TRICKLERS} trickling, {VALID} valid deliveries: p50 {p50:.3f} s, "
            f"p99 {p99:.3f} s, max {latencies[-1]:.3f} s; workers killed: {killed}; "
            f"body tricklers answered 408: {timed_out}/{len(body_tricklers)}"
        )
        assert p99 < 1.0
        assert killed == 0, log[-2000:]
        assert timed_out == len(body_tricklers), answers[:3]
        assert all(b"application/json" in a for a in answers)
        stack.assert_alive()
    finally:
        stop.set()
        stack.stop()
        fake.stop()
