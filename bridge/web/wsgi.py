"""gunicorn entry point: `gunicorn bridge.web.wsgi:app`."""

import sys

from bridge.settings import SettingsError
from bridge.web import create_app

try:
    app = create_app()
except SettingsError as exc:  # one line naming the setting, not a traceback
    sys.exit(f"issue-bridge web: {exc}")
