"""Webhook intake: a fixed chain that answers fast and never waits on Zoho.

identify the source → size → verify the raw bytes → parse into one NormalizedEvent → store durably
(dedup) → wake a worker → answer. Processing failures never reach the sender.

A delivery is the one request that comes by the thousand, so `WebhookRoutes` serves `POST /webhooks/<source>`
straight from the WSGI environ, in front of Flask: Flask's request context, dispatch and header lookups cost
about a quarter of a delivery's CPU (docs/benchmarks.md). Every other request, and any other method on these
paths, goes to Flask, whose routes for the same paths run the same `handle`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.engine import Engine
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from bridge import store
from bridge.events import BadDelivery, IgnoredEvent, Unauthorized
from bridge.sources import PathTokenSource, Source
from bridge.sources.validate import DEDUP_KEY_LIMIT, check_event, check_text
from bridge.store import calllog
from bridge.store.clock import engine_now
from bridge.store.deliveries import Delivery, GroupWriter

log = logging.getLogger("bridge.intake")
bp = Blueprint("intake", __name__)
# Headers worth keeping with the raw delivery (for `bridge events show` and replays); never secrets.
# Bugzilla and BugHerd send no headers of their own worth keeping (no event, no delivery id); the
# configured Bugzilla auth header (BUGZILLA_WEBHOOK_HEADER) is never kept, whatever its name.
KEPT_HEADERS = (
    "Content-Type",
    "User-Agent",
    "X-Forwarded-For",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-GitHub-Hook-ID",
)

# Where the WSGI environ holds each of them (what werkzeug's `request.headers` looks up, without its per-lookup
# key translation).
_KEPT_ENVIRON = tuple(
    (name, "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
    for name in KEPT_HEADERS
)

# The `answer` label of a refused delivery in /metrics.
# How long a delivery waits to be stored before the sender is told to retry (503 + Retry-After): within GitHub's
# 10 s, after which it counts the delivery failed whatever the answer (SQLite waits up to 30 s on a locked file).
STORE_DEADLINE_SECONDS = 8.0
REFUSED_ANSWERS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 408: "timeout", 413: "too_large"}
# A body must arrive within this many seconds (GitHub itself gives up after 10): a client trickling it
# byte by byte would otherwise hold a worker thread for as long as it likes.
BODY_READ_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What intake answers: a status and a JSON body (what `jsonify` writes: sorted keys, compact, a newline)."""

    code: int
    body: bytes
    retry_after: int | None = None

    @classmethod
    def json(cls, payload: Mapping[str, object], code: int = 200, retry_after: int | None = None) -> Answer:
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        return cls(code, f"{text}\n".encode(), retry_after)

    def headers(self) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(self.body)))]
        return headers + ([("Retry-After", str(self.retry_after))] if self.retry_after is not None else [])

    def response(self) -> Response:
        response = Response(self.body, self.code, mimetype="application/json")
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        return response


class EnvironHeaders(Mapping[str, str]):
    """A request's headers read from the WSGI environ by name (the sources only `get` a few): werkzeug's own
    view translates the name on every lookup through a generic path."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key

    def __getitem__(self, name: str) -> str:
        return str(self._environ[self._key(name)])

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._environ.get(self._key(name))
        return default if value is None else str(value)

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class WebhookRequest:
    """What intake reads of a request, straight from the WSGI environ."""

    __slots__ = ("content_length", "environ", "headers")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.headers = EnvironHeaders(environ)
        self.content_length = get_content_length(environ)


def _writer(app: Flask) -> GroupWriter:
    """This app's intake writer (bridge/store/deliveries.py: a group commit, one writer thread per process)."""
    writer = app.extensions.get("intake_writer")
    if writer is None:
        writer = app.extensions["intake_writer"] = GroupWriter(app.extensions["bridge"].engine)
    return cast(GroupWriter, writer)


class ReceiptClock:
    """The database's clock as intake needs it (to clamp future-dated timestamps), without a query per delivery:
    read from the database at most every `resample` seconds per process, and advanced in between by this host's
    monotonic clock, which measures the interval only (a host whose time of day is off changes nothing)."""

    def __init__(self, resample: float = 30.0) -> None:
        self.resample = resample
        self._sample: tuple[int, float, float] | None = None  # (pid, database time, monotonic time) of the read

    def now(self, engine: Engine) -> float:
        sample, mono = self._sample, time.monotonic()
        if sample is None or sample[0] != os.getpid() or mono - sample[2] >= self.resample:
            sample = self._sample = (os.getpid(), engine_now(engine), time.monotonic())
            return sample[1]
        return sample[1] + (mono - sample[2])


def _receipt_clock(app: Flask) -> ReceiptClock:
    clock = app.extensions.get("receipt_clock")
    if clock is None:
        clock = app.extensions["receipt_clock"] = ReceiptClock()
    return cast(ReceiptClock, clock)


class BodyTimeout(Exception):
    """The client did not send its body within BODY_READ_SECONDS."""


def _answer(status: str, **extra: object) -> Answer:
    return Answer.json({"status": status, **extra})


def _count(engine: Engine, source: str, event: str, answer: str) -> None:
    """Count a delivery answered without being stored (stored ones are counted from the events table)."""
    try:
        store.count_answer(engine, source=source, event=event[:64], answer=answer)
    except Exception:  # a metric must never cost the sender its answer
        log.warning("could not count a delivery answer", exc_info=True, extra={"source": source, "answer": answer})


def _refuse(engine: Engine, source: str, code: int, reason: str) -> Answer:
    log.info("delivery refused", extra={"source": source, "answer": code, "reason": reason})
    # No event label: it would come from an unauthenticated or malformed request (unbounded label values).
    _count(engine, source, "", REFUSED_ANSWERS.get(code, str(code)))
    return Answer.json({"status": "error", "error": reason}, code)


def _event_label(source: Source, body: bytes, headers: Mapping[str, str], event_hint: str | None) -> str:
    """The event name of a verified delivery that was not parsed into an event (for metrics)."""
    label = getattr(source, "event_label", None)
    if callable(label):
        return _clean(str(label(body, headers, event_hint)), 64)
    # GitHub names the event in a header; BugHerd in the URL (already checked against its event list).
    return _clean(event_hint or headers.get("X-GitHub-Event", ""), 64)


def _clean(text: str, limit: int) -> str:
    """Sender-chosen text fit for a log line, a metric label or an answer: cut, lone surrogates escaped."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class _ReadDeadlines:
    """Shuts the reading side of sockets whose body is overdue: one thread per process, not one per request. The
    thread sleeps until the earliest deadline, and without a timeout while no body is being read: an idle web
    worker is not woken (issue #24)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0
        self._fresh()
        # A forked child (gunicorn's workers) starts with a new lock and list: the parent's thread is not there, and
        # a condition copied while it waited would hand the child's first notify to that thread's dead waiter.
        ref = weakref.ref(self)

        def in_child() -> None:
            me = ref()
            if me is not None:
                me._fresh()

        os.register_at_fork(after_in_child=in_child)

    def _fresh(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[float, socket.socket]] = {}
        self._idle = False  # the thread waits without a timeout: the next watched socket must wake it
        self._started = False  # the thread is started by the first watched socket of this process

    def watch(self, sock: socket.socket) -> int:
        with self._cond:
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="body-deadlines", daemon=True).start()
            self._next += 1
            # Deadlines are added in time order: a thread waiting until an earlier one wakes in time for this one,
            # so it is woken only from its untimed wait, and then sleeps a whole period: under any load it wakes
            # about once per `seconds`, not per request (a wake-up per request cost intake a tenth of its CPU).
            if self._idle:
                self._idle = False
                self._cond.notify()
            self._pending[self._next] = (time.monotonic() + self.seconds, sock)
            return self._next

    def release(self, token: int) -> None:
        with self._cond:
            self._pending.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                earliest = min((deadline for deadline, _ in self._pending.values()), default=None)
                if earliest is None:
                    self._idle = True
                    self._cond.wait()
                    if not self._idle:  # woken by a watched socket: its deadline is at most `seconds` away
                        self._cond.wait(self.seconds)  # even if it is released meanwhile: one wake per period
                    self._idle = False
                    continue
                if earliest > now:
                    self._cond.wait(earliest - now)
                    continue
                overdue = [token for token, (deadline, _) in self._pending.items() if deadline <= now]
                # shut while still holding the lock: a body read in time and released meanwhile keeps its socket
                # whole for the next request on the same kept-alive connection (shutdown does not block)
                for token in overdue:
                    with contextlib.suppress(OSError):  # the client may be gone already
                        self._pending.pop(token)[1].shutdown(socket.SHUT_RD)


_deadlines = _ReadDeadlines(BODY_READ_SECONDS)


def _read_body(req: WebhookRequest, limit: int) -> bytes | None:
    """The raw body, or None when it is over `limit` bytes; BadDelivery when it cannot be read.

    A chunked body (what gunicorn hands over as a terminated stream without Content-Length) would be
    cut at the limit by werkzeug without a word, and then fail verification or parsing: read it
    ourselves, one byte past the limit, to answer 413 instead. Under gunicorn the read has a deadline:
    when it passes, the socket's reading side is shut, so even a byte-a-second client lets go.
    """
    sock = req.environ.get("gunicorn.socket")
    token = _deadlines.watch(sock) if sock is not None else None
    started = time.monotonic()
    try:
        return _read(req, limit)
    except Exception as exc:  # gunicorn's chunk parser, a client that went away, a short body
        if time.monotonic() - started >= BODY_READ_SECONDS:
            raise BodyTimeout() from exc
        raise BadDelivery(f"the body could not be read: {type(exc).__name__}") from exc
    finally:
        if token is not None:
            _deadlines.release(token)


def _read(req: WebhookRequest, limit: int) -> bytes | None:
    length = req.content_length
    if length is not None or not req.environ.get("wsgi.input_terminated"):
        body = get_input_stream(req.environ).read()  # what werkzeug's `get_data` reads (none without a length)
        if length is not None and len(body) < length:
            raise BadDelivery("the body is shorter than its Content-Length")
        return body
    stream = req.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _unknown_event(source: PathTokenSource, event_hint: str | None) -> str:
    expected = ", ".join(source.path_events)
    if event_hint is None:
        return f"the webhook URL must end with the {source.display_name} event: one of {expected}"
    return f"unknown {source.display_name} event {event_hint[:60]!r} (expected one of {expected})"


def handle(
    app: Flask, req: WebhookRequest, source_name: str, event_hint: str | None = None, *, path_token: str | None = None
) -> Answer:
    """`event_hint`: the event named by the URL (BugHerd); `path_token`: the token from the URL, if any."""
    started = time.perf_counter()
    runtime = app.extensions["bridge"]
    engine = runtime.engine
    sources: dict[str, Source] = app.extensions["sources"]
    source = sources.get(source_name)
    if source is None:
        return _refuse(engine, source_name, 401, f"the {source_name} source is disabled: its secret is not configured")
    limit = app.config["MAX_CONTENT_LENGTH"]
    length = req.content_length
    if length is not None and length > limit:
        return _refuse(engine, source_name, 413, "body too large")
    try:
        body = _read_body(req, limit)
    except BadDelivery as exc:
        return _refuse(engine, source_name, 400, exc.reason)
    except BodyTimeout:
        return _refuse(engine, source_name, 408, f"the body did not arrive within {BODY_READ_SECONDS:g} s")
    if body is None:
        return _refuse(engine, source_name, 413, "body too large")
    headers = req.headers
    try:
        if path_token is None:
            source.verify(body, headers)
        else:
            path_source = cast(PathTokenSource, source)
            path_source.verify(body, headers, path_token=path_token)  # the token first: no probing without it
            if event_hint not in path_source.path_events:
                return _refuse(engine, source_name, 404, _unknown_event(path_source, event_hint))
        event = source.parse(body, headers, event_hint)
        # The validation boundary: what passes can be stored and processed (see bridge/sources/validate.py).
        received = datetime.fromtimestamp(_receipt_clock(app).now(engine), UTC)
        event = check_event(event, received)
        dedup_key = check_text("delivery id", source.dedup_key(body, headers, event_hint), DEDUP_KEY_LIMIT)
    except Unauthorized as exc:
        return _refuse(engine, source_name, 401, exc.reason)
    except BadDelivery as exc:
        return _refuse(engine, source_name, 400, exc.reason)
    except IgnoredEvent as exc:
        reason = _clean(exc.reason, 300)  # it can quote the sender's event or action name
        log.info("delivery ignored", extra={"source": source_name, "answer": 200, "reason": reason})
        _count(engine, source_name, _event_label(source, body, headers, event_hint), "ignored")
        return _answer("ignored", reason=reason, event_id=None)
    secret_header = runtime.settings.bugzilla_webhook_header.lower()
    environ = req.environ
    kept = {h: environ[key] for h, key in _KEPT_ENVIRON if key in environ and h.lower() != secret_header}
    if event_hint:
        kept["X-Bridge-Event"] = event_hint
    recorded = _writer(app).record(Delivery(event, dedup_key, kept, body), timeout=STORE_DEADLINE_SECONDS)
    event_id, is_new = recorded
    if not is_new:
        log.info("delivery duplicate", extra={"source": source_name, "event_id": event_id, "answer": 200})
        _count(engine, source_name, event.event_name, "duplicate")
        calllog.delivery_repeated(engine, source=source_name, dedup_key=dedup_key, event_id=event_id,
                                  item_key=recorded.item_key, sender=headers.get("User-Agent"))  # fmt: skip
        return _answer("duplicate", event_id=event_id)
    app.extensions["publisher"].wake(event.source, recorded.item_key)  # the handle it is filed under
    log.info(
        "delivery accepted",
        extra={
            "source": source_name,
            "event_id": event_id,
            "event": event.event_name,
            "item": recorded.item_key,
            "answer": 200,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return _answer("accepted", event_id=event_id)


# The webhook endpoints: (source, event named by the URL, token from the URL) from a request's path, or None.
_PLAIN_PATHS = {"/webhooks/github": "github", "/webhooks/bugzilla": "bugzilla"}
_BUGHERD_PREFIX = "/webhooks/bugherd/"


def route(path_info: str) -> tuple[str, str | None, str | None] | None:
    """The webhook endpoint a path names, matched as Flask's routes below match it (a segment is non-empty and
    holds no slash); None for any other path, which Flask then answers."""
    source = _PLAIN_PATHS.get(path_info)
    if source is not None:
        return source, None, None
    if not path_info.startswith(_BUGHERD_PREFIX):
        return None
    # The server hands PATH_INFO over as latin-1; the URL's bytes are UTF-8 (what werkzeug's routing decodes).
    parts = path_info[len(_BUGHERD_PREFIX) :].encode("latin-1").decode("utf-8", "replace").split("/")
    if len(parts) > 2 or not all(parts):
        return None
    return "bugherd", (parts[1] if len(parts) == 2 else None), parts[0]


class WebhookRoutes:
    """WSGI middleware: a POST to a webhook endpoint is handled here; anything else goes on to `app_wsgi` (Flask).

    `before`: what Flask's `before_request` hooks would do for the request (take a `.env` edit); `failed`: the
    answer the app's error handlers give an exception (JSON; a database that cannot take the write: 503)."""

    def __init__(
        self,
        app: Flask,
        app_wsgi: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]],
        before: Callable[[], None],
        failed: Callable[[BaseException, str], Answer],
    ) -> None:
        self.app, self.app_wsgi, self.before, self.failed = app, app_wsgi, before, failed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = route(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if found is None:
            return self.app_wsgi(environ, start_response)
        source, event_hint, token = found
        try:
            self.before()
            answer = handle(self.app, WebhookRequest(environ), source, event_hint, path_token=token)
        except Exception as exc:
            answer = self.failed(exc, environ.get("PATH_INFO", ""))
        start_response(f"{answer.code} {HTTP_STATUS_CODES[answer.code].upper()}", answer.headers())
        return [answer.body]


def _via_flask(source: str, event_hint: str | None = None, token: str | None = None) -> Response:
    # Reached when a request to these paths does not pass through `WebhookRoutes` (it answers every POST first).
    answer = handle(current_app, WebhookRequest(request.environ), source, event_hint, path_token=token)
    return answer.response()


@bp.post("/webhooks/github")
def github() -> Response:
    return _via_flask("github")


@bp.post("/webhooks/bugzilla")
def bugzilla() -> Response:
    return _via_flask("bugzilla")


@bp.post("/webhooks/bugherd/<token>/<event>")
@bp.post("/webhooks/bugherd/<token>", defaults={"event": None})
def bugherd(token: str, event: str | None) -> Response:
    # One BugHerd webhook per event: its body does not name the event, the URL does.
    return _via_flask("bugherd", event, token)


@bp.errorhandler(413)
def too_large(_exc: Exception) -> Response:
    return Answer.json({"status": "error", "error": "body too large"}, 413).response()
