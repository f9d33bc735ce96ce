"""Builds the long-lived objects a process needs, once: engine, mappings, Zoho client, sync service."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.engine import Engine

from bridge import store
from bridge.core.service import SyncService, retry_failed_side_work
from bridge.mapping import MappingRegistry
from bridge.process.logs import redactor
from bridge.settings import Settings, SettingsWatcher, load_settings
from bridge.sources import KNOWN_FIELDS
from bridge.store import schema as db
from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge")


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        engine = db.make_engine(self.settings.database_url)
        db.ensure_schema(engine)
        return engine

    @cached_property
    def registry(self) -> MappingRegistry:
        registry = MappingRegistry(
            self.settings.mappings_dir, known_fields=KNOWN_FIELDS, last_good=DatabaseLastGood(self.engine)
        )
        for problems in registry.problems.values():
            for problem in problems:
                log.error("mapping refused: %s", problem)
        return registry

    @cached_property
    def zoho(self) -> ZohoClient:
        return ZohoClient(self.settings, self.engine)

    @cached_property
    def sync(self) -> SyncService:
        return SyncService(self.settings, self.engine, self.registry, self.zoho)

    @cached_property
    def watcher(self) -> SettingsWatcher:
        return SettingsWatcher(self.settings)

    def refresh(self) -> bool:
        """Take over an accepted `.env` edit (README, "Settings that take effect"): the Zoho client and the sync
        service are rebuilt with the new settings, the next event uses them. True when something changed."""
        fresh = self.watcher.check()
        if fresh is None:
            return False
        with _refresh_lock:
            self.settings = fresh
            for built in ("zoho", "sync"):
                self.__dict__.pop(built, None)
            for secret in fresh.secrets():
                redactor.add(secret)
        try:
            retry_failed_side_work(self.engine, "settings changed")  # a token set may be what they lacked
        except Exception:  # the database may be what changed; the next event reports it
            log.exception("settings changed: failed side operations could not be planned again")
        return True


class DatabaseLastGood:
    """The last good text of each mapping file, in the shared database (kv `mapping.last_good.<file>`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> str | None:
        return store.kv_get(self.engine, f"mapping.last_good.{name}")

    def put(self, name: str, text: str) -> None:
        if store.kv_get(self.engine, f"mapping.last_good.{name}") != text:
            store.kv_set(self.engine, f"mapping.last_good.{name}", text)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime (worker processes build it lazily, after the fork)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(load_settings())
    _runtime.refresh()  # one stat of .env: an edit applies from the next task on
    return _runtime


_refresh_lock = threading.Lock()
