"""Wakes workers after a delivery is stored, off the request path.

The row is committed before the sender gets its 200; the wake-up message is best effort: a
background thread publishes it (deduplicated per item, one message per burst), and if the broker is
down or the process dies first, the beat job re-enqueues the stored event after its grace period.
Nothing is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from celery import Celery

from bridge.process.broker import TASK_SYNC_ITEM, TASK_WAKE_ITEMS

log = logging.getLogger("bridge.intake")


class WakePublisher:
    """One message per burst: a delivery after a quiet moment is published at once, and while messages keep
    going out, at most one every `min_interval` seconds carries every item woken since the last one.

    The wait costs no latency: a worker waits anyway until an item's newest event is `COALESCE_MS` old (300 ms
    by default, by the database's clock) before it acts. It saves the web tier most of its CPU under load: a
    publish costs ~0.6 ms (Celery builds and sends a message), several times the rest of a delivery.
    """

    def __init__(self, celery: Celery, *, min_interval: float = 0.05) -> None:
        self._celery = celery
        self.min_interval = min_interval
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_sent = 0.0  # monotonic time of the last publish
        self.failures = 0
        self.messages = 0

    def wake(self, source: str, item_key: str) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((source, item_key))
        except queue.Full:
            log.warning("wake-up queue full; the beat job will pick the event up", extra={"item": item_key})

    def _ensure_thread(self) -> None:
        # Started lazily so that it lives in the gunicorn worker, not in the master before fork.
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wake-publisher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            # Right after a publish, gather what arrives until `min_interval` has passed since it.
            if (pause := self._last_sent + self.min_interval - time.monotonic()) > 0:
                time.sleep(pause)
            batch = {first}
            while len(batch) < 500:
                try:
                    batch.add(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._publish(sorted(batch))
            self._last_sent = time.monotonic()

    def _publish(self, items: list[tuple[str, str]]) -> None:
        # One message per batch: a worker fans a batch out (workers.tasks.wake_items).
        try:
            if len(items) == 1:
                self._celery.send_task(TASK_SYNC_ITEM, args=items[0])
            else:
                # argsrepr: what Celery shows for the arguments; by default a `saferepr` of the whole batch, built
                # on every message (a fifth of a publish with a few dozen items)
                self._celery.send_task(
                    TASK_WAKE_ITEMS, args=([list(i) for i in items],), argsrepr=f"({len(items)} items)"
                )
            self.messages += 1
        except Exception as exc:  # broker down: the stored rows are the source of truth
            self.failures += 1
            log.warning(
                "could not wake a worker; the beat job will re-enqueue",
                extra={"items": len(items), "error": type(exc).__name__},
            )

    def flush(self, timeout: float = 5.0) -> None:
        """For tests and shutdown: wait until queued wake-ups were handed to the broker."""
        deadline = time.time() + timeout
        while not self._queue.empty() and time.time() < deadline:
            time.sleep(0.01)
