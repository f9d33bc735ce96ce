"""What a source writer wrote, collected for the journal.

A writer (`bridge/sources/writers.py`) reports each write it makes to a source with `record_write`: a
comment it posted (`kind="comment"`, the comment's id) or a state value it set (`kind="state"`, `key=value`).
The delivery core's side work (`bridge/core/sidework.py`) runs every writer call inside `collecting()` and
files what was reported on the item's journal operation: its result (the comment id, by which the bridge
knows its own comments) and the values whose webhook echo it awaits. Nothing is written here: the journal's
row is written in the item's fenced step.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from sqlalchemy.engine import Engine

_writes: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar("source_writes", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[str, str]]]:
    """Collect the (kind, ref) writes reported while the block runs."""
    found: list[tuple[str, str]] = []
    token = _writes.set(found)
    try:
        yield found
    finally:
        _writes.reset(token)


def record_write(engine: Engine | None, source: str, external_id: str, kind: str, ref: str) -> None:
    """A writer wrote `ref` (`kind`: comment | state) to the source's item. Filed by the caller's collector."""
    found = _writes.get()
    if found is not None:
        found.append((kind, ref))
