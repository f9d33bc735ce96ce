"""Liveness and readiness for load balancers, and the readiness gauges for /metrics.

`/readyz` answers 200 whenever this process can store deliveries (its database answers): a broker outage
or a refused mapping edit is `degraded`, still 200, because the stored delivery is processed later and a
load balancer that took the node out would make GitHub (which never redelivers on its own) lose it.
`/readyz/strict` is the "everything is healthy" check: 503 unless nothing at all is wrong.
Details that name hosts, sockets or folders are shown only with `Authorization: Bearer <ADMIN_TOKEN or
METRICS_TOKEN>`; everyone else gets the same reasons in general words.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from bridge.process import metrics
from bridge.store import schema as db

bp = Blueprint("health", __name__)
MAPPINGS_RECHECK_SECONDS = 2.0  # how often /readyz, /metrics look for mapping edits (the workers look per event)


@dataclass
class Readiness:
    database_ok: bool
    broker_ok: bool
    mappings_ok: bool
    reasons: list[str] = field(default_factory=list)  # general words, safe for anyone
    details: list[str] = field(default_factory=list)  # with hosts, sockets and paths, for operators

    @property
    def status(self) -> str:
        if not self.database_ok:
            return "not ready"
        return "ready" if self.broker_ok and self.mappings_ok else "degraded"


def check_readiness(runtime: Any, celery: Any) -> Readiness:
    """Database, broker and mappings, each checked once; never raises."""
    ready = Readiness(database_ok=True, broker_ok=True, mappings_ok=True)
    if problem := db.check_database(runtime.engine):
        ready.database_ok = False
        ready.reasons.append("database: unreachable: deliveries cannot be stored")
        ready.details.append(problem)
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # readiness reports whatever is wrong with the broker
        ready.broker_ok = False
        ready.reasons.append("broker: unreachable: deliveries are stored and processed when it is back")
        ready.details.append(f"broker: {type(exc).__name__}: {exc}")
    registry = runtime.registry
    registry.reload_if_due(MAPPINGS_RECHECK_SECONDS)  # anyone may call /readyz: never a reload per request
    in_force = {Path(m.path).name for m in registry.all()}
    mappings_dir = Path(runtime.settings.mappings_dir)
    for file, problems in sorted(registry.problems.items()):
        name = Path(file).name
        kept = "the last good version is in force" if name in in_force else "no version of it is in force"
        ready.mappings_ok = False
        ready.reasons.append(f"mapping {name}: edit refused; {kept}")
        for problem in problems:
            text = str(problem)
            ready.details.append(f"mapping {text.replace(str(mappings_dir) + '/', '')}")
    if not registry.all():
        ready.mappings_ok = False
        ready.reasons.append("mappings: no valid mapping file: deliveries are stored but wait for one")
        ready.details.append(f"mappings: no valid mapping file in {mappings_dir}")
    return ready


def _authorized() -> bool:
    settings = current_app.extensions["bridge"].settings
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
    tokens = [t for t in (settings.admin_token, settings.metrics_token) if t]
    return bool(given) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


def _answer(ready: Readiness, *, ok: bool) -> tuple[Response, int]:
    runtime = current_app.extensions["bridge"]
    body: dict[str, Any] = {
        "status": ready.status,
        "stores_deliveries": ready.database_ok,
        "checks": {"database": ready.database_ok, "broker": ready.broker_ok, "mappings": ready.mappings_ok},
        "reasons": ready.reasons,
        "dry_run": runtime.settings.dry_run,
    }
    if _authorized():
        body["problems"] = ready.details
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ok else 503


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """For load balancers: 200 while deliveries can be stored (`ready` or `degraded`), else 503."""
    ready = check_readiness(current_app.extensions["bridge"], current_app.extensions["celery"])
    return _answer(ready, ok=ready.database_ok)


@bp.get("/readyz/strict")
def readyz_strict() -> tuple[Response, int]:
    """For monitoring: 200 only when database, broker and mappings are all fine."""
    ready = check_readiness(current_app.extensions["bridge"], current_app.extensions["celery"])
    return _answer(ready, ok=ready.status == "ready")


def readiness_metrics(ready: Readiness) -> str:
    """Prometheus text for the readiness gauges (metrics.py's render() output gets this appended)."""
    lines = [
        "# HELP bridge_ready 1 when the check passes: database, broker, mappings (0 on any is degraded or worse)",
        "# TYPE bridge_ready gauge",
    ]
    checks = {"database": ready.database_ok, "broker": ready.broker_ok, "mappings": ready.mappings_ok}
    lines += [f'bridge_ready{{check="{name}"}} {int(ok)}' for name, ok in checks.items()]
    lines += [
        "# HELP bridge_degraded 1 while deliveries are stored but something keeps them from flowing",
        "# TYPE bridge_degraded gauge",
        f"bridge_degraded {int(ready.status == 'degraded')}",
    ]
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def prometheus_metrics() -> Response | tuple[Response, int]:
    runtime = current_app.extensions["bridge"]
    token = runtime.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return jsonify({"status": "error", "error": "metrics need Authorization: Bearer <METRICS_TOKEN>"}), 401
    ready = check_readiness(runtime, current_app.extensions["celery"])
    text = metrics.render(runtime.engine).decode() if ready.database_ok else ""
    return Response(text + readiness_metrics(ready), content_type="text/plain; version=0.0.4; charset=utf-8")
