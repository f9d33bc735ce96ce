"""The changed pieces the what-if app (bench/whatif_app.py) swaps in; importable without side effects."""

from __future__ import annotations

import json
import time

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bridge import store
from bridge.events import NormalizedEvent
from bridge.store import schema as db

_INSERT_EVENT = insert(db.events)


def record_delivery_prebuilt(
    engine: Engine, event: NormalizedEvent, *, dedup_key: str, headers: dict[str, str], payload: bytes
) -> tuple[int, bool]:
    """bridge.store.record_delivery with a statement built once (same row, same duplicate handling)."""
    values = {
        "source": event.source,
        "dedup_key": dedup_key,
        "event_name": event.event_name,
        "item_key": event.item_key,
        "action": event.action,
        "source_ts": event.source_ts.timestamp(),
        "received_at": time.time(),
        "status": store.PENDING,
        "attempts": 0,
        "next_attempt_at": 0.0,
        "headers": json.dumps(headers),
        "payload": payload,
        "event_json": json.dumps(event.to_json()),
        "notes": "; ".join(event.notes) or None,
    }
    try:
        with engine.begin() as conn:
            result = conn.execute(_INSERT_EVENT, values)
            return int(result.inserted_primary_key[0]), True
    except IntegrityError:
        with engine.connect() as conn:
            existing = conn.execute(
                select(db.events.c.id).where(db.events.c.source == event.source, db.events.c.dedup_key == dedup_key)
            ).scalar_one()
        return int(existing), False


def no_wake(source: str, item_key: str) -> None:
    return None
