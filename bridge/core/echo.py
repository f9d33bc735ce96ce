"""Recognizing the bridge's own writes when the source sends them back as webhooks.

The rule never looks at wording an admin may change: a comment is ours when its source id is one the bridge
recorded when it posted it (or, for the race where the webhook arrives before the answer, when it carries
the hidden marker the code appends). A state change is ours when every field it changed is a value the
bridge wrote to that item and has not yet seen come back (`source_writes`, consumed once).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Engine

from bridge.events import Comment
from bridge.sources.writers import MARKER_PREFIXES
from bridge.store import reverse as state
from bridge.store import schema as db

# Fields the source bumps on its own with every change: they never make an event a person's.
NOISE = frozenset({"updated_at", "closed_at", "state_reason", "last_change_time", "updated_at_ts"})


def is_own_comment(engine: Engine, source: str, comment: Comment) -> bool:
    return any(p in comment.body for p in MARKER_PREFIXES) or state.is_own_comment(engine, source, comment.id)


def changed_refs(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed, in the form writers record: `key=value`, or `key+=x` / `key-=x` for list fields."""
    refs: list[str] = []
    for key, new in after.items():
        if key in NOISE or before.get(key) == new:
            continue
        old = before.get(key)
        if isinstance(new, list) and isinstance(old, list):
            refs += [f"{key}+={x}" for x in new if x not in old] + [f"{key}-={x}" for x in old if x not in new]
        else:
            refs.append(f"{key}={new}")
    return refs


def absorb_state_echo(
    engine: Engine, source: str, external_id: str, before: dict[str, Any], after: dict[str, Any]
) -> bool:
    """True when the event only carries changes the bridge itself wrote: they are consumed, no Zoho call."""
    refs = changed_refs(before, after)
    if not refs:
        return False
    t = db.source_writes
    with engine.begin() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.ref).where(
                and_(t.c.source == source, t.c.external_id == external_id, t.c.kind == "state", t.c.consumed.is_(False))
            )
        ).all()
        ids: list[int] = []
        for ref in refs:
            match = next((r.id for r in rows if r.ref == ref and r.id not in ids), None)
            if match is None:
                return False  # a person changed something too: sync it as usual
            ids.append(match)
        conn.execute(update(t).where(t.c.id.in_(ids)).values(consumed=True))
    return True
