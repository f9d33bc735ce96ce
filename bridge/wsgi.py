"""gunicorn entry point: `gunicorn bridge.wsgi:app`."""

from bridge.web import create_app

app = create_app()
