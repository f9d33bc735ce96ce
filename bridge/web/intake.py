"""Webhook intake: a fixed chain that answers fast and never waits on Zoho.

identify the source → size → verify the raw bytes → parse into one NormalizedEvent → store durably
(dedup) → wake a worker → answer. Processing failures never reach the sender.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request

from bridge import store
from bridge.events import BadDelivery, IgnoredEvent, Unauthorized
from bridge.sources import Source

log = logging.getLogger("bridge.intake")
bp = Blueprint("intake", __name__)
# Headers worth keeping with the raw delivery (for `bridge events show` and replays); never secrets.
KEPT_HEADERS = (
    "Content-Type",
    "User-Agent",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-GitHub-Hook-ID",
)


def _answer(status: str, code: int = 200, **extra: object) -> tuple[Response, int]:
    return jsonify({"status": status, **extra}), code


def _refuse(source: str, code: int, reason: str) -> tuple[Response, int]:
    log.info("delivery refused", extra={"source": source, "answer": code, "reason": reason})
    return jsonify({"status": "error", "error": reason}), code


def handle(source_name: str, event_hint: str | None = None) -> tuple[Response, int]:
    started = time.perf_counter()
    sources: dict[str, Source] = current_app.extensions["sources"]
    source = sources.get(source_name)
    if source is None:
        return _refuse(source_name, 401, f"the {source_name} source is disabled: its secret is not configured")
    length = request.content_length
    if length is not None and length > current_app.config["MAX_CONTENT_LENGTH"]:
        return _refuse(source_name, 413, "body too large")
    body = request.get_data(cache=False)
    headers = request.headers
    try:
        source.verify(body, headers)
        event = source.parse(body, headers, event_hint)
    except Unauthorized as exc:
        return _refuse(source_name, 401, exc.reason)
    except BadDelivery as exc:
        return _refuse(source_name, 400, exc.reason)
    except IgnoredEvent as exc:
        log.info("delivery ignored", extra={"source": source_name, "answer": 200, "reason": exc.reason})
        return _answer("ignored", reason=exc.reason, event_id=None)
    runtime = current_app.extensions["bridge"]
    kept = {h: headers[h] for h in KEPT_HEADERS if h in headers}
    if event_hint:
        kept["X-Bridge-Event"] = event_hint
    event_id, is_new = store.record_delivery(
        runtime.engine,
        event,
        dedup_key=source.dedup_key(body, headers, event_hint),
        headers=kept,
        payload=body,
    )
    if not is_new:
        log.info("delivery duplicate", extra={"source": source_name, "event_id": event_id, "answer": 200})
        return _answer("duplicate", event_id=event_id)
    current_app.extensions["publisher"].wake(event.source, event.item_key)
    log.info(
        "delivery accepted",
        extra={
            "source": source_name,
            "event_id": event_id,
            "event": event.event_name,
            "item": event.item_key,
            "answer": 200,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return _answer("accepted", event_id=event_id)


@bp.post("/webhooks/github")
def github() -> tuple[Response, int]:
    return handle("github")


@bp.errorhandler(413)
def too_large(_exc: Exception) -> tuple[Response, int]:
    return jsonify({"status": "error", "error": "body too large"}), 413
