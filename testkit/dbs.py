"""A fresh, migrated database per test on SQLite and, when a PostgreSQL server is named, on PostgreSQL:
`BRIDGE_TEST_POSTGRES_URL` (for these in-process tests only, so a pass can cover both databases here while its
real-process stacks stay on the embedded default) or `BRIDGE_TEST_DATABASE_URL` (which moves the stacks too)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from bridge import store
from bridge.events import NormalizedEvent
from bridge.store import schema as db

DAY = 86400.0


def fresh_engine(kind: str, tmp_path: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
        db.ensure_schema(engine)
        yield engine
        engine.dispose()
        return
    server = os.environ.get("BRIDGE_TEST_POSTGRES_URL") or os.environ.get("BRIDGE_TEST_DATABASE_URL", "")
    if not server.startswith("postgresql"):
        pytest.skip("no PostgreSQL server named (BRIDGE_TEST_POSTGRES_URL or BRIDGE_TEST_DATABASE_URL)")
    import psycopg

    base = server.replace("postgresql+psycopg://", "postgresql://")
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine("postgresql+psycopg://" + base.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name)
    try:
        db.ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    yield from fresh_engine(request.param, tmp_path)


def deliver(engine: Engine, n: int, *, source: str = "github", body_bytes: int = 2000) -> int:
    """Store delivery number `n` (item acme/web#n) the way intake does; returns its event id."""
    event = NormalizedEvent(
        source=source,
        item_kind="issue",
        item_key=f"acme/web#{n}",
        action="created",
        event_name="issues.opened",
        source_ts=datetime.now(UTC),
        fields={"title": f"Issue {n}"},
        source_project="acme/web",
    )
    payload = json.dumps({"issue": {"number": n, "body": "x" * body_bytes}}).encode()
    event_id, new = store.record_delivery(
        engine, event, dedup_key=f"d-{source}-{n}", headers={"X-GitHub-Event": "issues"}, payload=payload
    )
    assert new
    return event_id


def attempt(engine: Engine, event_id: int, outcome: str, detail: str = "") -> int:
    """Count one finished attempt of an event, as the delivery core does; returns the event's attempt count."""
    from bridge.store import outcomes
    from bridge.store.clock import db_now

    with engine.begin() as conn:
        now = db_now(conn)
        return outcomes.count_attempt(conn, event_id, started_at=now, now=now, outcome=outcome, detail=detail)


def finish(engine: Engine, event_id: int, status: str, *, error: str | None = None) -> bool:
    """End a pending event, as the delivery core does (False: it was not pending)."""
    from bridge.store import outcomes
    from bridge.store.clock import db_now

    with engine.begin() as conn:
        return outcomes.finish(conn, event_id, status, db_now(conn), error=error)


def link(engine: Engine, *, source: str, external_id: str, item_key: str, zoho_issue_id: str, **where: str) -> None:
    """An item linked to its Zoho issue (intent written, then confirmed), as the delivery core leaves it."""
    from bridge.store import links
    from bridge.store.clock import db_now

    with engine.begin() as conn:
        now = db_now(conn)
        portal, project = where.get("portal", "p"), where.get("project", "q")
        links.write_intent(
            conn, source=source, external_id=external_id, item_key=item_key, portal=portal, project=project, now=now
        )
        links.update_link(conn, source=source, item_key=item_key, now=now, zoho_issue_id=zoho_issue_id, state="linked")


def age(engine: Engine, event_id: int, days: float) -> None:
    """Pretend the event was received and processed `days` ago (test setup of history)."""
    import time

    at = time.time() - days * DAY
    with engine.begin() as conn:
        values = {"received_at": at}
        row = conn.execute(db.events.select().where(db.events.c.id == event_id)).one()
        if row.processed_at is not None:
            values["processed_at"] = at
        conn.execute(update(db.events).where(db.events.c.id == event_id).values(**values))
        conn.execute(update(db.zoho_calls).where(db.zoho_calls.c.event_id == event_id).values(at=at))
