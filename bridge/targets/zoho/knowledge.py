"""What `bridge zoho verify` learned about a portal, stored in the database and read by every worker.

The documents leave some behaviour open (issue custom fields by API name, filters by API name, the spelling of
the status list, date-only due dates). The admin settles it once against the real portal; until then the
client takes the documented, safe path (the description marker carries the external id).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy.engine import Engine

from bridge import store

KEY = "zoho.learned."  # + portal
TTL = 60.0  # how long a worker trusts its copy before reading the database again

# Facts and their values:
#   custom_field: "accepted" | "ignored" | "refused"   (issue custom field written by API name)
#   cfid: "<id>"                                       (the external-id field's id from the field metadata)
#   filter_cfid: "accepted" | "refused"                (issue list filter keyed by cfid)
#   filter_api_name: "accepted" | "refused"            (issue list filter keyed by API name)
#   status_key: "status_details" | "status_deatils"    (the v1 defaultfields answer)
#   due_date: "timestamp" | "timestamp+date"           (date-only accepted too)


class Knowledge:
    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._pinned: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, portal: str) -> dict[str, Any]:
        if self._engine is None:
            return {}
        with self._lock:
            if portal in self._pinned:
                return self._pinned[portal]
            cached = self._cache.get(portal)
            if cached and time.monotonic() - cached[0] < TTL:
                return cached[1]
        raw = store.kv_get(self._engine, KEY + portal)
        facts = json.loads(raw) if raw else {}
        with self._lock:
            self._cache[portal] = (time.monotonic(), facts)
        return facts

    def fact(self, portal: str, name: str) -> Any:
        return self.get(portal).get(name)

    def learn(self, portal: str, **facts: Any) -> dict[str, Any]:
        if self._engine is None:
            return facts
        raw = store.kv_get(self._engine, KEY + portal)
        merged = {**(json.loads(raw) if raw else {}), **facts}
        store.kv_set(self._engine, KEY + portal, json.dumps(merged, sort_keys=True))
        with self._lock:
            self._cache[portal] = (time.monotonic(), merged)
        return merged

    def assume(self, portal: str, facts: dict[str, Any]) -> None:
        """This process acts on `facts` for the portal, whatever is stored: `zoho verify` tests from a clean slate
        without changing what every worker reads before it has settled anything."""
        with self._lock:
            self._pinned[portal] = dict(facts)

    def release(self, portal: str) -> None:
        """Back to what is stored (a `zoho verify` that settled nothing)."""
        with self._lock:
            self._pinned.pop(portal, None)

    def replace(self, portal: str, facts: dict[str, Any]) -> None:
        """What a conclusive `zoho verify` found replaces what was stored."""
        if self._engine is not None:
            store.kv_set(self._engine, KEY + portal, json.dumps(facts, sort_keys=True))
        with self._lock:
            self._pinned.pop(portal, None)
            self._cache[portal] = (time.monotonic(), dict(facts))
