"""The web layer (the only code that imports Flask): intake, health, admin pages, and the app factory."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from bridge.process.broker import ensure_embedded_redis, make_celery
from bridge.process.logs import configure_logging
from bridge.process.runtime import Runtime
from bridge.settings import Settings, datacentre_mismatch, load_settings
from bridge.sources import enabled_sources
from bridge.store.deliveries import NotStoredInTime
from bridge.web import admin_guard
from bridge.web.intake import Answer
from bridge.web.proxy import TrustedProxies
from bridge.web.publisher import WakePublisher

log = logging.getLogger("bridge.web")
# Seconds a sender (or an operator redelivering by hand) is asked to wait when the database cannot take a write.
DATABASE_RETRY_AFTER = 30
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost", "")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings)
    runtime = Runtime(settings)
    runtime.engine  # noqa: B018 - create the schema now, not at the first webhook
    if settings.embedded_broker:
        ensure_embedded_redis(settings)
    celery = make_celery(settings)
    app = Flask("bridge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_webhook_bytes
    flask_wsgi = app.wsgi_app
    app.session_interface = admin_guard.HttpsAwareSessionInterface()  # the admin cookie: Secure over HTTPS
    if settings.trusted_proxies:
        log.info(
            "believing X-Forwarded-For/-Proto/-Host from %s",
            ", ".join(str(network) for network in settings.trusted_proxies),
        )
    app.extensions["bridge"] = runtime
    app.extensions["celery"] = celery
    app.extensions["publisher"] = WakePublisher(celery)
    app.extensions["sources"] = enabled_sources(settings)
    for name, enabled in settings.enabled_sources().items():
        if not enabled:
            log.warning("source %s is disabled: its secret is not set; its endpoint refuses every delivery", name)
    if settings.dry_run:
        log.warning("no Zoho credentials: DRY-RUN mode, Zoho calls are recorded, not sent")
    if mismatch := datacentre_mismatch(settings):
        log.warning("%s", mismatch)

    from bridge.web import admin, front, intake, zoho_hook
    from bridge.web.health import bp as health_bp

    app.register_blueprint(intake.bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(front.bp)  # `/`: what this is and where to point each tracker
    app.register_blueprint(zoho_hook.bp)  # POST /webhooks/zoho/<token> (bridge/reverse)
    admin.init_app(app, settings)  # /admin: 404 unless ADMIN_TOKEN is set
    register_error_handlers(app)

    def take_settings_edits() -> None:
        # An accepted .env edit applies to this process from this request on (README, "Settings that take effect").
        if runtime.refresh():
            fresh = runtime.settings
            app.config["MAX_CONTENT_LENGTH"] = fresh.max_webhook_bytes
            app.extensions["sources"] = enabled_sources(fresh)
            admin.configure(app, fresh)

    app.before_request(take_settings_edits)
    # Deliveries skip Flask (bridge/web/intake.py); every other request goes on to it. In front of both, behind a
    # reverse proxy: the client's address, scheme and host, believed only from TRUSTED_PROXIES.
    app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
        intake.WebhookRoutes(app, flask_wsgi, take_settings_edits, error_answer),
        lambda: runtime.settings.trusted_proxies,  # read per request: a .env edit applies
    )
    return app


def _database_unavailable(exc: BaseException) -> bool:
    """Locked, full, unreachable, out of connections: a write that may well work in a moment."""
    if isinstance(exc, OperationalError | PoolTimeout | NotStoredInTime):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def register_error_handlers(app: Flask) -> None:
    """Every error answers JSON, never an HTML page; a database that cannot be written answers a retryable 503.

    The admin pages render their own HTML errors (their blueprint handlers run first).
    """

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        return jsonify({"status": "error", "error": exc.description or exc.name}), code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response | tuple[Response, int]:
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        return error_answer(exc, request.path).response()


def error_answer(exc: BaseException, path: str) -> Answer:
    """The answer to an unexpected exception, its detail logged under an error id (the answer names only the id)."""
    if isinstance(exc, HTTPException):
        return Answer.json({"status": "error", "error": exc.description or exc.name}, exc.code or 500)
    error_id = secrets.token_hex(6)
    if _database_unavailable(exc):
        log.error(
            "database unavailable",
            extra={"error_id": error_id, "path": path, "error": type(exc.__cause__ or exc).__name__},
            exc_info=exc,
        )
        body = {
            "status": "error",
            "error": "the database cannot take this request right now: retry later",
            "error_id": error_id,
        }
        return Answer.json(body, 503, retry_after=DATABASE_RETRY_AFTER)
    log.error("unexpected error", extra={"error_id": error_id, "path": path}, exc_info=exc)
    return Answer.json({"status": "error", "error": "internal error", "error_id": error_id}, 500)


def warn_if_metrics_open(settings: Settings, bind: str) -> None:
    """A start-up warning: /metrics answers anyone who can reach a non-loopback bind unless METRICS_TOKEN is set."""
    if settings.metrics_token or bind.startswith(("unix:", "fd://")):
        return
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    if host not in LOOPBACK_HOSTS:
        log.warning(
            "METRICS_TOKEN is not set and the web server listens on %s: /metrics is open to anyone who can reach it "
            "(setting the token is recommended)",
            bind,
        )
