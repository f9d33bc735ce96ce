"""Liveness and readiness for load balancers."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from bridge import db, metrics

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    runtime = current_app.extensions["bridge"]
    problems: list[str] = []
    if problem := db.check_database(runtime.engine):
        problems.append(problem)
    try:
        with current_app.extensions["celery"].connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # readiness reports whatever is wrong with the broker
        problems.append(f"broker: {type(exc).__name__}: {exc}")
    runtime.registry.reload_if_changed()
    for file_problems in runtime.registry.problems.values():
        problems.extend(f"mapping {p}" for p in file_problems)
    if not runtime.registry.all():
        problems.append(f"mappings: no valid mapping file in {runtime.settings.mappings_dir}")
    body = {
        "status": "ready" if not problems else "not ready",
        "problems": problems,
        "dry_run": runtime.settings.dry_run,
    }
    return jsonify(body), 200 if not problems else 503


@bp.get("/metrics")
def prometheus_metrics() -> Response | tuple[Response, int]:
    runtime = current_app.extensions["bridge"]
    token = runtime.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return jsonify({"status": "error", "error": "metrics need Authorization: Bearer <METRICS_TOKEN>"}), 401
    return Response(metrics.render(runtime.engine), mimetype="text/plain; version=0.0.4; charset=utf-8")
