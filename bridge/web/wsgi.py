"""gunicorn entry point: `gunicorn bridge.web.wsgi:app`."""

from bridge.web import create_app

app = create_app()
