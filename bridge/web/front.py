"""The front page `/`: what this is, where to point each tracker (with this host's URLs), dry-run or live.

It shows no secret: BugHerd's URL carries its token, so the page names the setting instead of the value.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, current_app, render_template, request

from bridge.outbound.budget import blocked_until
from bridge.targets.zoho.ratelimit import BUDGET

log = logging.getLogger("bridge.web")

bp = Blueprint("front", __name__, template_folder="templates")


@bp.get("/")
def index() -> str:
    settings = current_app.extensions["bridge"].settings
    base = request.url_root.rstrip("/")
    enabled = settings.enabled_sources()
    trackers = [
        {
            "name": "GitHub",
            "enabled": enabled["github"],
            "setting": "GITHUB_WEBHOOK_SECRET",
            "urls": [f"{base}/webhooks/github"],
            "how": "Settings → Webhooks → Add webhook; content type application/json; the secret is "
            "GITHUB_WEBHOOK_SECRET; events: Issues and Issue comments.",
        },
        {
            "name": "Bugzilla",
            "enabled": enabled["bugzilla"],
            "setting": "BUGZILLA_WEBHOOK_SECRET",
            "urls": [f"{base}/webhooks/bugzilla"],
            "how": f"Preferences → Webhooks; events create, change, comment; API key header "
            f"{settings.bugzilla_webhook_header} with the value of BUGZILLA_WEBHOOK_SECRET.",
        },
        {
            "name": "BugHerd",
            "enabled": enabled["bugherd"],
            "setting": "BUGHERD_WEBHOOK_TOKEN",
            "urls": [
                f"{base}/webhooks/bugherd/<BUGHERD_WEBHOOK_TOKEN>/{event}"
                for event in ("task_create", "task_update", "comment", "task_destroy")
            ],
            "how": "One webhook per event (or `issue-bridge bugherd register-webhooks`); replace "
            "<BUGHERD_WEBHOOK_TOKEN> with the token's value.",
        },
    ]
    return render_template(
        "front/index.html",
        base=base,
        trackers=trackers,
        dry_run=settings.dry_run,
        dialect=settings.zoho_dialect,
        admin_enabled=bool(settings.admin_token),
        zoho_block=_zoho_block(),
    )


def _zoho_block() -> dict[str, str] | None:
    """ "blocked until …" and why, when every worker waits for Zoho; the page still renders without a database."""
    try:
        _left, until, reason = blocked_until(current_app.extensions["bridge"].engine, BUDGET)
    except Exception:
        log.warning("front page: the Zoho block could not be read", exc_info=True)
        return None
    if until is None:
        return None
    return {"until": datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), "reason": reason or ""}
