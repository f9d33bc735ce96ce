"""`POST /webhooks/zoho/<token>`: Zoho's UI-configured webhook, a nudge to look at one issue now.

Authenticated like BugHerd's URL token (ZOHO_WEBHOOK_TOKEN; a wrong token is 401, never 410). The body is
never trusted for state: only its issue id is read. The request stores a nudge for the linked item and wakes a
worker, which reads the issue from Zoho under the item's claim and decides as a poll would: no web request
calls an outside system. An issue the bridge did not link is ignored (200).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from bridge.core import zoho_poll
from bridge.store import operator

log = logging.getLogger("bridge.intake")
bp = Blueprint("zoho_hook", __name__)


def _answer(status: str, code: int = 200, **extra: object) -> tuple[Response, int]:
    return jsonify({"status": status, **extra}), code


def _issue_id(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    value = body.get("issue_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text.isdigit() else None


@bp.post("/webhooks/zoho/<token>")
def zoho_webhook(token: str) -> tuple[Response, int]:
    runtime = current_app.extensions["bridge"]
    expected = runtime.settings.zoho_webhook_token
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        return _answer("error", 401, error="unknown webhook token (ZOHO_WEBHOOK_TOKEN)")
    issue_id = _issue_id(request.get_json(silent=True))
    if issue_id is None:
        return _answer("error", 400, error='expected a JSON object with "issue_id" (the Zoho issue id, digits)')
    link = operator.link_by_issue(runtime.engine, issue_id)
    if link is None or not link.zoho_issue_id or link.state != "linked":
        return _answer("ignored", event_id=None, reason="the issue is not linked to a source item")
    event_id, _ = zoho_poll.nudge(
        runtime.engine, link, status=None, modified=None, dedup_key=f"zoho-hook:{issue_id}:{uuid.uuid4().hex}"
    )
    current_app.extensions["publisher"].wake(link.source, link.item_key)
    return _answer("accepted", event_id=event_id)
