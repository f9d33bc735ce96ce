"""Lean at rest and under load (issue 24): what runs when nothing happens, and intake's write path.

- the beat schedule holds only jobs that can have work, and Celery's lines about them are DEBUG;
- an idle worker's event loop has no timer that wakes it every second, and an idle web worker's body-deadline
  thread sleeps until a body is read;
- the backfill feeder runs as one chain of tasks at a time;
- the wake-up publisher sends a lone delivery at once and one message per interval under a burst;
- intake's group commit stores what many request threads hand over, and a bad delivery fails alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bridge.backfill import feeder
from bridge.process.broker import (
    TASK_POLL_SOURCE,
    TASK_REQUEUE_STALE,
    TASK_SYNC_ITEM,
    beat_schedule,
    make_celery,
    slow_binding_refresh,
)
from bridge.settings import load_settings
from bridge.store import schema as db
from bridge.store.deliveries import Delivery, GroupWriter
from bridge.web.publisher import WakePublisher
from testkit.dbs import engine  # noqa: F401  (the fixture)
from testkit.factories import bug_event
from testkit.harness import RedisServer, wait_for
from workers.tasks import QuietHousekeeping


def _settings(tmp_path, **env: str):  # type: ignore[no-untyped-def]
    return load_settings({"BRIDGE_DATA_DIR": str(tmp_path), **env}, read_dotenv=False)


def test_the_beat_schedule_holds_only_jobs_that_can_have_work(tmp_path):
    idle = beat_schedule(_settings(tmp_path))
    assert set(idle) == {"requeue-stale-events", "prune-history", "reverse-tick"}  # no feeder tick every second
    polling = beat_schedule(_settings(tmp_path, BUGZILLA_POLL_PRODUCTS="Firefox"))
    assert "feed-backfill" not in polling
    assert polling["poll-bugzilla"] == {"task": TASK_POLL_SOURCE, "schedule": 60.0, "args": ("bugzilla",)}


def _celery_record(logger: str, msg: str, args: object) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, None, None)
    record.args = args  # type: ignore[assignment]  (Celery passes a dict, beat a tuple)
    return record


def test_celery_lines_about_periodic_jobs_are_debug_and_other_tasks_keep_theirs():
    quiet = QuietHousekeeping()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        received = _celery_record(
            "celery.worker.strategy", "Task %(name)s[%(id)s] received", {"name": TASK_REQUEUE_STALE, "id": "1"}
        )
        assert not quiet.filter(received) and received.levelno == logging.DEBUG
        sent = _celery_record(
            "celery.beat", "Scheduler: Sending due task %s (%s)", ("requeue-stale-events", TASK_REQUEUE_STALE)
        )
        assert not quiet.filter(sent)
        work = _celery_record(
            "celery.app.trace", "Task %(name)s[%(id)s] succeeded", {"name": TASK_SYNC_ITEM, "id": "2"}
        )
        assert quiet.filter(work) and work.levelno == logging.INFO
        root.setLevel(logging.DEBUG)
        again = _celery_record(
            "celery.app.trace", "Task %(name)s[%(id)s] succeeded", {"name": TASK_REQUEUE_STALE, "id": "3"}
        )
        assert quiet.filter(again) and again.levelname == "DEBUG"  # shown when the bridge logs at DEBUG
    finally:
        root.setLevel(level)


def test_an_idle_worker_loop_has_no_timer_due_every_second(tmp_path):
    """kombu's Redis transport refreshes expiring queues' bindings from a one-second timer in the worker's event
    loop; the bridge has no expiring queue, and the worker's consumer makes that look every 30 s instead."""
    from kombu.asynchronous import Hub

    assert "SlowBindingRefresh" in {step.__name__ for step in make_celery(_settings(tmp_path)).steps["consumer"]}
    redis = RedisServer(tmp_path)
    try:
        with make_celery(_settings(tmp_path, BROKER_URL=redis.url)).connection_for_read() as conn:
            conn.connect()
            hub = Hub()
            conn.transport.register_with_event_loop(conn.connection, hub)  # as the worker's consumer does

            def next_wake() -> float:
                live = [e.eta for e in hub.timer.queue if not e.entry.canceled]
                return min(live) - time.monotonic()

            assert next_wake() < 2  # kombu's own: every second
            assert slow_binding_refresh(conn.transport, hub)
            assert next_wake() > 5  # the transport's other timers: every 10 and 25 s
    finally:
        redis.stop()


def _started_by(action: Callable[[], object]) -> threading.Thread:
    """The body-deadline thread that `action` started (other tests' may still be running in this process)."""
    before = set(threading.enumerate())
    action()
    (thread,) = [t for t in threading.enumerate() if t.name == "body-deadlines" and t not in before]
    return thread


def _runs(thread: threading.Thread) -> int:
    """How many times the scheduler has put this thread on a CPU (it counts every wake-up)."""
    return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[2])


def test_the_body_deadline_thread_sleeps_while_no_body_is_read():
    from bridge.web.intake import _ReadDeadlines

    deadlines = _ReadDeadlines(0.3)
    slow, slow_peer = socket.socketpair()
    quick, quick_peer = socket.socketpair()
    try:
        thread = _started_by(lambda: deadlines.release(deadlines.watch(quick)))  # read in time: left alone
        deadlines.watch(slow)  # never sends its body: its reading side is shut at the deadline
        slow.settimeout(10)
        assert slow.recv(1) == b""
        quick.setblocking(False)
        with pytest.raises(BlockingIOError):
            quick.recv(1)  # still open, nothing to read
        before = _runs(thread)
        time.sleep(2.0)  # nothing watched: the thread is not woken at all (it was four times a second)
        assert _runs(thread) - before <= 2  # at most the end of its last pass, preempted on a loaded machine
        deadlines.watch(quick)  # and it wakes for the next body
        quick.settimeout(10)
        assert quick.recv(1) == b""
    finally:
        for s in (slow, slow_peer, quick, quick_peer):
            s.close()


def test_the_body_deadline_thread_is_not_woken_per_request():
    from bridge.web.intake import _ReadDeadlines

    deadlines = _ReadDeadlines(30)
    first, peer = socket.socketpair()
    try:
        thread = _started_by(lambda: deadlines.release(deadlines.watch(first)))
        time.sleep(0.2)  # the thread settles in its wait
        before = _runs(thread)
        for _ in range(500):  # bodies read in time, one after the other (the list empties between them)
            deadlines.release(deadlines.watch(first))
            time.sleep(0.001)
        assert _runs(thread) - before <= 10  # one wake-up for the period (and a few for the lock), not one per request
    finally:
        first.close()
        peer.close()


def test_the_body_deadlines_of_a_forked_child_are_kept():
    """gunicorn forks its workers from a master that may have watched bodies: each child gets its own thread and
    lock, and its deadlines are kept (a condition copied while the parent's thread waited on it would hand the
    child's first wake-up to that thread's dead waiter)."""
    from bridge.web.intake import _ReadDeadlines

    deadlines = _ReadDeadlines(0.2)
    a, b = socket.socketpair()
    deadlines.release(deadlines.watch(a))
    time.sleep(0.1)  # the parent's thread waits without a timeout now
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when every deadline was kept
        ok = True
        for _ in range(3):
            x, _peer = socket.socketpair()
            x.settimeout(5)
            try:
                token = deadlines.watch(x)
                ok = ok and x.recv(1) == b""
                deadlines.release(token)
            except OSError:
                ok = False
            time.sleep(0.3)  # the child's thread waits without a timeout again
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    a.close()
    b.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_one_feeder_chain_at_a_time(engine):  # noqa: F811
    assert not feeder.chain_alive(engine)
    assert feeder.hold_chain(engine, "a") and feeder.chain_alive(engine)
    assert not feeder.hold_chain(engine, "b")  # a second start while the first runs: a no-op
    assert feeder.hold_chain(engine, "a")  # the chain renews its own lease at each link
    feeder.end_chain(engine, "a")
    assert not feeder.chain_alive(engine) and feeder.hold_chain(engine, "b")


class RecordingCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def send_task(self, name: str, args: object, **options: object) -> None:
        self.sent.append((name, args))
        self.options = options


def test_the_publisher_sends_a_lone_wake_up_at_once_and_one_message_per_interval_in_a_burst():
    lone = RecordingCelery()
    held = WakePublisher(lone, min_interval=60)  # type: ignore[arg-type]
    held.wake("github", "acme/web#1")  # not held back a minute: nothing was sent just before
    wait_for(lambda: lone.sent, 10, interval=0.005, what="the lone wake-up, at once")
    celery = RecordingCelery()
    publisher = WakePublisher(celery, min_interval=0.5)  # type: ignore[arg-type]
    publisher.wake("github", "acme/web#1")
    wait_for(lambda: celery.sent, 5, interval=0.005, what="the first wake-up")
    for n in range(2, 202):
        publisher.wake("github", f"acme/web#{n}")
    wait_for(lambda: sum(len(a[0]) if name != TASK_SYNC_ITEM else 1 for name, a in celery.sent) >= 201, 10)  # type: ignore[arg-type]
    assert len(celery.sent) <= 3  # 200 deliveries in a burst: one message after the interval (two at worst)


def _delivery(n: int, payload: object = b"{}") -> Delivery:
    return Delivery(bug_event(n), f"d{n}", {}, payload)  # type: ignore[arg-type]


def test_the_group_commit_stores_every_delivery_and_a_bad_one_fails_alone(engine):  # noqa: F811
    writer = GroupWriter(engine)
    results: dict[int, object] = {}

    def send(n: int) -> None:
        try:
            results[n] = writer.record(_delivery(n, object() if n == 7 else json.dumps({"n": n}).encode()))
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(results[7], Exception)
    stored = {n: r for n, r in results.items() if n != 7}
    assert all(r[1] for r in stored.values())  # type: ignore[index]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.events)).scalar() == 19
    again = writer.record(_delivery(3, b"{}"))
    assert again[0] == stored[3][0] and not again[1]  # type: ignore[index]  (a duplicate: its first copy)


@pytest.mark.parametrize("n", [1])
def test_a_duplicate_through_the_group_commit_counts_nothing(engine, n):  # noqa: F811
    from bridge.store import counters

    writer = GroupWriter(engine)
    writer.record(_delivery(n))
    writer.record(_delivery(n))
    with engine.connect() as conn:
        series = counters.read_all(conn)
    assert [v for _labels, v in series[counters.DELIVERIES]] == [1.0]
    assert [v for _labels, v in series[counters.EVENTS_STORED]] == [1.0]


def test_importing_the_tasks_starts_no_broker(tmp_path):
    """A test or a script that imports `workers` (the tasks, their log filters) leaves nothing running: only a
    worker or beat process starts the embedded Redis (before, `make test` left one behind, parented to init)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DATABASE_URL", "BRIDGE_DATA_DIR")}
    env["BRIDGE_HOME"] = str(tmp_path)
    subprocess.run([sys.executable, "-c", "import workers.tasks"], env=env, check=True, timeout=60)
    assert not (tmp_path / "var" / "redis.sock").exists()
    assert not (tmp_path / "var" / "redis.pid").exists()
