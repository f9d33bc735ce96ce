"""gunicorn settings used by the Procfile and `bridge run` (measured: see docs/benchmarks.md).

Threaded workers, so slow clients cannot starve intake: a connection that trickles its request holds one
thread, not a whole worker, and the worker's heartbeat runs in its main loop, so it is never SIGKILLed for a
slow request (a sync worker is killed after `timeout` seconds on one). The intake puts a deadline on each body
(bridge/web/intake.py BODY_READ_SECONDS); connections that send nothing wait in the poller, not in a thread.
Measured in tests/test_slow_clients.py: 50 trickling connections, valid deliveries still answered in < 1 s.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "64"))  # per worker: each trickling client can hold one
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


def when_ready(server):
    from bridge.web import warn_if_metrics_open
    from bridge.web.wsgi import app

    for bind in server.cfg.bind:
        warn_if_metrics_open(app.extensions["bridge"].settings, bind)


def post_fork(server, worker):
    # Connections opened in the master must not be shared by the forked workers.
    from bridge.web.wsgi import app

    app.extensions["bridge"].engine.dispose(close=False)
