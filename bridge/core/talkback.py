"""What the rest of the bridge calls of `bridge.core` talk-back.

The sync service calls four functions from here (one line each); the beat runs `tick` (`workers/tasks.py`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from sqlalchemy.engine import Engine

from bridge import store
from bridge.core.backlink import post_due_backlinks, request_backlink
from bridge.core.echo import absorb_state_echo
from bridge.core.echo import is_own_comment as is_own_comment
from bridge.core.zoho_poll import forward_busy, guard_status, poll_zoho
from bridge.mapping import MappingRegistry
from bridge.settings import Settings
from bridge.store import Link
from bridge.targets.zoho.client import ZohoClient

__all__ = ["guard_status", "is_own_comment", "is_own_write", "request_backlink", "tick"]
log = logging.getLogger("bridge.reverse")
TICK_LEASE, TICK_LEASE_SECONDS = "reverse:tick", 600.0


def is_own_write(engine: Engine, link: Link, fields: dict[str, Any]) -> bool:
    """The event only carries what the bridge wrote to the source (its webhook echo)."""
    return absorb_state_echo(engine, link.source, link.external_id, link.last_fields or {}, fields)


def tick(settings: Settings, engine: Engine, registry: MappingRegistry, client: ZohoClient) -> dict[str, int]:
    """One beat tick of the reverse side. Forward sync goes first: with forward events due, nothing here runs."""
    if forward_busy(engine):
        return {"skipped_busy": 1}
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not store.acquire_lease(engine, TICK_LEASE, holder, TICK_LEASE_SECONDS):
        return {"skipped_running": 1}  # one tick at a time, across processes: a slow one is not doubled
    client.event_id = None  # these calls belong to no event
    try:
        registry.reload_if_changed()
        counts = {
            "backlinks": post_due_backlinks(settings, engine, registry, client, busy=lambda: forward_busy(engine))
        }
        counts.update(poll_zoho(settings, engine, registry, client))
    finally:
        store.release_lease(engine, TICK_LEASE, holder)
    if counts.get("applied") or counts.get("backlinks"):
        log.info("reverse tick", extra=counts)
    return counts
