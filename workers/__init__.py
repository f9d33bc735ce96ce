"""The Celery app: `celery -A workers worker` / `celery -A workers beat`.

Celery needs the app at import; it is built from the validated settings (a bad setting stops the
worker here with one line naming it). On the embedded default a worker or beat starts the private Redis first;
a test or a script that imports the tasks does not (it would leave a Redis running behind it).
"""

from __future__ import annotations

from bridge.process.broker import ensure_embedded_redis, make_celery
from bridge.process.logs import capture_output, configure_logging, fatal, is_celery_process
from bridge.settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as exc:
    fatal(str(exc))  # one line naming the setting (Celery would print a traceback)
configure_logging(settings)
if is_celery_process():  # not when a test or a script imports the tasks: their stdout stays theirs
    capture_output()  # what Celery prints (banners, shutdown notes) becomes JSON log lines too
    if settings.embedded_broker:
        ensure_embedded_redis(settings)
app = make_celery(settings)

from workers import tasks  # noqa: E402,F401  - registers the tasks on `app`
