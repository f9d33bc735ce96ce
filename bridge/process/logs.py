"""Structured logs: JSON lines when not a terminal, one line per delivery and per Zoho call.

Every record passes a filter that masks the configured secrets, so no token, secret or signature
reaches a log line whatever a message happens to contain.

Every line a process writes goes through the same formatter, not only the bridge's own records:
- Python warnings (`logging.captureWarnings`);
- gunicorn's error log and start-up banner (`JsonLogger` in bridge/process/gunicorn_conf.py);
- Celery's own loggers: Celery is told its logging is configured (the `setup_logging` signal), so it adds
  no handler of its own and only applies its `--loglevel`, as before;
- what Celery prints instead of logging (the worker and beat banners, "Warm shutdown"): in the worker and beat
  processes `capture_output()` turns each print into one record of the `celery.stdout` logger (INFO).
In a terminal all of it stays human-readable text (and Celery's banners stay as they are).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import IO, Any, NoReturn, TextIO, cast

from bridge.settings import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        base = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{base} {extras}".rstrip()


redactor = RedactSecrets([])


def _real_stderr() -> IO[str]:
    """The process's stderr, even after `capture_output()` put a logging stream in its place."""
    return getattr(sys.stderr, "original", sys.stderr)


def _terminal() -> bool:
    try:
        return _real_stderr().isatty()
    except (AttributeError, ValueError):
        return False


def make_formatter() -> logging.Formatter:
    """JSON lines, or text in a terminal: the one choice every handler of every process makes."""
    return TextFormatter() if _terminal() else JsonFormatter()


class _LineHandler(logging.StreamHandler):
    """A StreamHandler that builds the line before taking its lock: only the write is serialized, so threads
    logging at once (intake's request threads, one line per delivery) do not queue behind one another's
    formatting. The filters and the formatter hold no state of their own between records."""

    def handle(self, record: logging.LogRecord) -> bool:
        rv = bool(self.filter(record))
        if not rv:
            return rv
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return rv
        self.acquire()
        try:
            self.stream.write(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
        finally:
            self.release()
        return rv


def configure_logging(settings: Settings) -> None:
    for secret in settings.secrets():
        redactor.add(secret)
    handler = _LineHandler(_real_stderr())
    handler.setFormatter(make_formatter())
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_bridge", False):
            root.removeHandler(old)
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # No line names a thread, a process or its caller's file and line: do not gather them for every record (the
    # logging HOWTO's "Optimization"; finding the caller walks the stack, and intake logs once per delivery).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for noisy in ("urllib3", "celery.redirected", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warning is a record too, not a bare line on stderr
    _keep_celery_off_the_handlers()


def _keep_celery_off_the_handlers() -> None:
    """Celery configures logging in the worker, its pool processes and beat unless a `setup_logging` receiver
    says it is done: then it adds no handler (its own would print text) and redirects no stream."""
    from celery import signals

    signals.setup_logging.connect(_celery_setup_logging, weak=False, dispatch_uid="bridge.process.logs")


def _celery_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """What Celery itself would set, minus its text handlers: the root level from `--loglevel`, and the pool's
    (billiard's) logger at ERROR, here passed on to the root handler instead of one of its own."""
    from celery.utils.log import get_multiprocessing_logger

    if loglevel:
        logging.getLogger().setLevel(loglevel)
    pool_logger = get_multiprocessing_logger()
    if pool_logger is not None:
        pool_logger.propagate = True
        pool_logger.setLevel((loglevel or logging.INFO) if os.environ.get("MP_LOG") else logging.ERROR)


class LogStream:
    """A text stream whose every write (a `print`) becomes one log record; stands in for stdout or stderr."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, logger: logging.Logger, level: int, original: IO[str]) -> None:
        self.logger = logger
        self.level = level
        self.original = original
        self._local = threading.local()

    def write(self, text: str) -> int:
        message = text.rstrip()
        if message and not getattr(self._local, "busy", False):
            self._local.busy = True  # a handler that prints would otherwise loop
            try:
                self.logger.log(self.level, message)
            finally:
                self._local.busy = False
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> None:
        """None, like Celery's own LoggingProxy: code that would write to the descriptor directly (Celery's
        `safe_say`) then writes nothing, and `capture_output` logs that note itself."""
        return None

    @property
    def closed(self) -> bool:
        return False


def is_celery_process() -> bool:
    """This process is `celery … worker` or `celery … beat` (`celery` or `python -m celery`)."""
    argv = sys.argv or [""]
    program = os.path.basename(argv[0])
    celery = program == "celery" or (
        program == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "celery"
    )
    return celery and any(arg in ("worker", "beat") for arg in argv[1:])


def capture_output() -> None:
    """In a Celery worker or beat process: what Celery prints (banners, shutdown notes) becomes log records.

    Not in a terminal, where the banners are for a person. Called after `configure_logging`.
    """
    if _terminal() or isinstance(sys.stdout, LogStream):
        return
    stdout = cast(TextIO, LogStream(logging.getLogger("celery.stdout"), logging.INFO, sys.stdout))
    sys.stdout = stdout
    setattr(sys, "__stdout__", stdout)  # noqa: B010 - the worker prints its banner and shutdown notes there
    sys.stderr = cast(TextIO, LogStream(logging.getLogger("celery.stderr"), logging.WARNING, sys.stderr))
    from celery import signals

    signals.worker_shutting_down.connect(_say_shutdown, weak=False, dispatch_uid="bridge.process.logs")


def _say_shutdown(sig: str = "", how: str = "", **_: Any) -> None:
    """Celery's "worker: Warm shutdown (MainProcess)" note, which it writes to the descriptor past any logging."""
    logging.getLogger("celery.apps.worker").info("worker: %s shutdown (MainProcess)", how, extra={"signal": sig})


def fatal(message: str) -> NoReturn:
    """Stop a process at start-up with one line (formatted like every other line) naming what is wrong."""
    record = logging.LogRecord("bridge", logging.CRITICAL, __file__, 0, message, None, None)
    stream = _real_stderr()
    stream.write(make_formatter().format(record) + "\n")
    stream.flush()
    raise SystemExit(1)
