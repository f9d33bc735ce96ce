"""The Celery app: `celery -A workers worker` / `celery -A workers beat`.

Celery needs the app at import; it is built from the validated settings (a bad setting stops the
worker here with one line naming it). On the embedded default the private Redis is started first.
"""

from __future__ import annotations

import sys

from bridge.process.broker import ensure_embedded_redis, make_celery
from bridge.process.logs import configure_logging
from bridge.settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as exc:  # one line naming the setting, not a traceback
    sys.exit(f"issue-bridge {' '.join(sys.argv[3:4]) or 'worker'}: {exc}")
configure_logging(settings)
if settings.embedded_broker:
    ensure_embedded_redis(settings)
app = make_celery(settings)

from workers import tasks  # noqa: E402,F401  - registers the tasks on `app`
