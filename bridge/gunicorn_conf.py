"""gunicorn settings used by the Procfile and `bridge run` (measured: see docs/benchmarks.md)."""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"  # fastest here; put a buffering proxy in front in production (keep-alive idles a worker)
timeout = 30
graceful_timeout = 10
preload_app = True  # build the app (schema, broker check) once in the master, before forking
accesslog = None
control_socket_disable = True


def post_fork(server, worker):
    # Connections opened in the master must not be shared by the forked workers.
    from bridge.wsgi import app

    app.extensions["bridge"].engine.dispose(close=False)
