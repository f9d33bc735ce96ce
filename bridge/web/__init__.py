"""The web layer (the only code that imports Flask): intake, health, admin pages, and the app factory."""

from __future__ import annotations

import logging

from flask import Flask

from bridge.broker import ensure_embedded_redis, make_celery
from bridge.logs import configure_logging
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from bridge.sources import enabled_sources
from bridge.web.publisher import WakePublisher

log = logging.getLogger("bridge.web")


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
    app.extensions["bridge"] = runtime
    app.extensions["celery"] = celery
    app.extensions["publisher"] = WakePublisher(celery)
    app.extensions["sources"] = enabled_sources(settings)
    for name, enabled in settings.enabled_sources().items():
        if not enabled:
            log.warning("source %s is disabled: its secret is not set; its endpoint refuses every delivery", name)
    if settings.dry_run:
        log.warning("no Zoho credentials: DRY-RUN mode, Zoho calls are recorded, not sent")

    from bridge.web import admin, zoho_hook
    from bridge.web.health import bp as health_bp
    from bridge.web.intake import bp as intake_bp

    app.register_blueprint(intake_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(zoho_hook.bp)  # POST /webhooks/zoho/<token> (bridge/reverse)
    admin.init_app(app, settings)  # /admin: 404 unless ADMIN_TOKEN is set
    return app
