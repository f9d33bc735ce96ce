"""Wakes workers after a delivery is stored, off the request path.

The row is committed before the sender gets its 200; the wake-up message is best effort: a
background thread publishes it (deduplicated per item), and if the broker is down or the process
dies first, the beat job re-enqueues the stored event after its grace period. Nothing is lost.
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
    def __init__(self, celery: Celery) -> None:
        self._celery = celery
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

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
            time.sleep(0.005)  # let a burst gather: one message for many deliveries
            batch = {first}
            while len(batch) < 500:
                try:
                    batch.add(self._queue.get_nowait())
                except queue.Empty:
                    break
            # One message per batch: under load the web process publishes once per burst, and a
            # worker fans the batch out (publishing per delivery was a third of intake's CPU).
            items = sorted(batch)
            try:
                if len(items) == 1:
                    self._celery.send_task(TASK_SYNC_ITEM, args=items[0])
                else:
                    self._celery.send_task(TASK_WAKE_ITEMS, args=([list(i) for i in items],))
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
