"""The suite's own footing: pytest's log capture and the threads our in-process tests leave running.

Entering a test phase, pytest walks `logging`'s table of loggers; a thread creating a logger meanwhile made the
phase fail with "dictionary changed size during iteration" (tests/conftest.py enters it under `logging`'s lock)."""

from __future__ import annotations

import logging
import sys
import threading

from _pytest.logging import LogCaptureHandler, catching_logs


def test_entering_log_capture_while_another_thread_makes_loggers_never_fails():
    for k in range(5000):  # a table as long as a big suite's, so that a walk takes a while
        logging.getLogger(f"capture-check.static.{k}")
    stop = threading.Event()

    def make_loggers() -> None:
        i = 0
        while not stop.is_set():
            name = f"capture-check.made.{i % 50}"
            logging.getLogger(name)
            with logging._lock:  # type: ignore[attr-defined]  # keep the table from growing without end
                logging.Logger.manager.loggerDict.pop(name, None)
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: without the lock, about one entry in twenty failed
    maker = threading.Thread(target=make_loggers, daemon=True)
    maker.start()
    failures = 0
    try:
        for _ in range(1000):
            try:
                with catching_logs(LogCaptureHandler(), level=logging.DEBUG):
                    pass
            except RuntimeError:
                failures += 1
    finally:
        stop.set()
        maker.join()
        sys.setswitchinterval(interval)
        for name in [n for n in logging.Logger.manager.loggerDict if n.startswith("capture-check.")]:
            logging.Logger.manager.loggerDict.pop(name, None)
    assert failures == 0
