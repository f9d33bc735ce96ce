"""gunicorn settings used by the Procfile and `bridge run` (measured: see docs/benchmarks.md).

Threaded workers, so slow clients cannot starve intake: a connection that trickles its request holds one
thread, not a whole worker, and the worker's heartbeat runs in its main loop, so it is never SIGKILLed for a
slow request (a sync worker is killed after `timeout` seconds on one). The intake puts a deadline on each body
(bridge/web/intake.py BODY_READ_SECONDS); connections that send nothing wait in the poller, not in a thread.
Measured in tests/test_slow_clients.py: 50 trickling connections, valid deliveries still answered in < 1 s.

Every answer is JSON, gunicorn's own included: a request line over `limit_request_line` (414), a header over
`limit_request_field_size` or more than `limit_request_fields` headers (431), or a request gunicorn cannot parse
(400) is answered by `write_json_error` instead of gunicorn's HTML page (tests/test_json_lines.py, on the real
server). Every log line is JSON too: gunicorn's error log goes through the bridge's formatter (`JsonLogger`).

Forwarded headers are believed by the app alone, from TRUSTED_PROXIES (bridge/web/proxy.py): gunicorn's own
`forwarded_allow_ips` (127.0.0.1 by default) would otherwise set the scheme from any local peer's
X-Forwarded-Proto.
"""

import json

from gunicorn import util
from gunicorn.glogging import Logger

from bridge.process.logs import fatal, make_formatter, redactor
from bridge.settings import SettingsError, load_settings

# A bad setting stops the server here with one line naming it (loading the app would print a traceback).
try:
    _settings = load_settings()
except SettingsError as exc:
    fatal(str(exc))

workers = _settings.web_concurrency
worker_class = "gthread"
threads = _settings.web_threads  # per worker: each trickling client can hold one
worker_connections = 1000
keepalive = 5
timeout = 30  # heartbeat only: with gthread a slow request never counts against it
graceful_timeout = 10
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
preload_app = True  # build the app (schema, broker check) once in the master, before forking
accesslog = None
control_socket_disable = True
forwarded_allow_ips = ""  # see above: TRUSTED_PROXIES decides, in the app
secure_scheme_headers: dict[str, str] = {}
logger_class = "bridge.process.gunicorn_conf.JsonLogger"


class JsonLogger(Logger):
    """gunicorn's logger with its error log (start-up banner, worker boots and exits, refused requests) written
    by the bridge's formatter (JSON lines when not a terminal) through its secret filter."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(make_formatter())
            handler.addFilter(redactor)


ERROR_TEXT_LIMIT = 200  # characters of gunicorn's reason echoed back (it can quote the offending request line)


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's `util.write_error` (same signature), answering JSON like every other answer of the bridge."""
    error = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"status": "error", "error": error[:ERROR_TEXT_LIMIT]}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn offers no setting for its error pages; every worker's Worker.handle_error calls util.write_error.
util.write_error = write_json_error


def when_ready(server):
    from bridge.web import warn_if_metrics_open
    from bridge.web.wsgi import app

    for bind in server.cfg.bind:
        warn_if_metrics_open(app.extensions["bridge"].settings, bind)


def post_fork(server, worker):
    # Connections opened in the master must not be shared by the forked workers.
    from bridge.web.wsgi import app

    app.extensions["bridge"].engine.dispose(close=False)
