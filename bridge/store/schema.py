"""The bridge's own store: tables (SQLAlchemy Core) and the engine, for SQLite and PostgreSQL alike.

The event row is the source of truth for every delivery; the broker only wakes workers.
Times are stored as UNIX seconds (float): comparable, portable, no timezone surprises.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

# One row per delivery the bridge accepted (status: pending → done | failed | ignored | superseded).
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("dedup_key", String(255), nullable=False),
    Column("event_name", String(64), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("source_ts", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("last_error", Text),
    Column("headers", Text, nullable=False, default="{}"),
    Column("payload", LargeBinary, nullable=False),
    Column("event_json", Text, nullable=False),
    Column("notes", Text),
    Column("processed_at", Float),
    # "live" (webhooks, polls) or "backfill:<id>": lets status and metrics tell the lanes apart.
    Column("origin", String(32), nullable=False, default="live", server_default="live"),
    UniqueConstraint("source", "dedup_key", name="uq_events_source_dedup"),
)
Index("ix_events_item", events.c.source, events.c.item_key, events.c.status)
Index("ix_events_status_next", events.c.status, events.c.next_attempt_at)
# Keyset pages by status (lists, replay --failed, gauges of pending/failed) and the retention sweep by age.
Index("ix_events_status_id", events.c.status, events.c.id)
Index("ix_events_processed", events.c.processed_at, events.c.status)
Index("ix_events_origin", events.c.origin, events.c.status)

# external item ↔ Zoho issue. state: creating (intent written before Zoho's create) | linked | deleted
links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("portal", String(64), nullable=False),
    Column("project", String(64), nullable=False),
    Column("zoho_issue_id", String(64)),
    Column("state", String(16), nullable=False),
    Column("last_state_ts", Float, nullable=False, default=0.0),
    Column("applied_hash", String(64)),  # hash of the last body sent, to skip no-op updates
    Column("last_fields", Text),  # the item's fields as last applied (JSON): events carrying fewer keep them
    Column("intent_at", Float),  # DB time the create intent was written: a later attempt is "in doubt"
    Column("create_sent_at", Float),  # DB time the latest create was about to be sent (intent_at: the first)
    Column("recheck_at", Float),  # DB time to look for a late duplicate of a create that was in doubt
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("source", "external_id", name="uq_links_source_external"),
)
Index("ix_links_item", links.c.source, links.c.item_key)
Index("ix_links_zoho_issue", links.c.zoho_issue_id)  # the admin lookup by Zoho issue id

# A source's never-changing identity of an item (GitHub: the issue id) → the item's handle (`item_key`),
# bound by the item's first delivery (bridge/store/identities.py). A transfer binds the new issue id to the
# old one's handle. Items of sources whose item key is their identity (Bugzilla, BugHerd) have no row.
item_identities = Table(
    "item_identities",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("identity", String(255), primary_key=True),
    Column("item_key", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_item_identities_item", item_identities.c.source, item_identities.c.item_key)

# source comment ↔ Zoho comment. state: posting (intent) | posted | deleted
comment_links = Table(
    "comment_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("comment_id", String(255), nullable=False),
    Column("zoho_comment_id", String(64)),
    Column("state", String(16), nullable=False),
    Column("last_ts", Float, nullable=False, default=0.0),
    Column("body_hash", String(64)),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("source", "external_id", "comment_id", name="uq_comment_links"),
)

# Every processing attempt of an event, with its outcome (shown by `bridge events show`).
attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("outcome", String(16)),
    Column("detail", Text),
)

# Every Zoho call made (or, in dry-run, that would have been made), with Zoho's answer.
zoho_calls = Table(
    "zoho_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, index=True),
    Column("at", Float, nullable=False),
    Column("method", String(8), nullable=False),
    Column("endpoint", String(32), nullable=False, default="other"),  # e.g. issue.create, for metrics
    Column("path", Text, nullable=False),
    Column("request_json", Text),
    Column("status", Integer),
    Column("response_text", Text),
    Column("duration_ms", Float),
    Column("dry_run", Boolean, nullable=False, default=False),
)
Index("ix_zoho_calls_at", zoho_calls.c.at)  # retention of calls made outside any event (lookups, refreshes)

# Deliveries answered without being stored (ignored, duplicate, refused), for metrics across hosts.
intake_counters = Table(
    "intake_counters",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("event", String(64), primary_key=True),
    Column("answer", String(16), primary_key=True),
    Column("count", Integer, nullable=False),
)

# Metrics (bridge/store/counters.py): each change appends its deltas to `metric_deltas` in its own transaction
# (inserts only: writers never wait on one another), and `counters.fold` moves them into `metric_counters`, one
# row per series (name, labels). A scrape reads these few rows plus the deltas not folded yet instead of
# scanning history, and pruning history leaves them alone. `shard` is always 0 now (rows of the old sharded
# writers, from before migration 0100, are summed with it).
metric_counters = Table(
    "metric_counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("labels", String(255), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("value", Float, nullable=False),
)
metric_deltas = Table(
    "metric_deltas",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("labels", String(255), nullable=False),
    Column("value", Float, nullable=False),
)

# The shared OAuth access token (one refresh per expiry across all processes).
oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("access_token", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("refreshed_at", Float, nullable=False),
)

# Leases: per-item claims and the token-refresh / polling locks. Expire so a killed holder frees them.
# An item's row is never deleted: `generation` grows by one per claim (the fencing token every write of
# the claim checks), `retry_at` / `failures` are the item's back-off after a failed attempt (DB clock).
leases = Table(
    "leases",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("generation", Integer, nullable=False, default=0, server_default="0"),
    Column("retry_at", Float, nullable=False, default=0.0, server_default="0"),
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
)

# The shared Zoho call budget: one row per slot of the sliding window, plus the global back-off.
rate_slots = Table(
    "rate_slots",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("used_at", Float, nullable=False, index=True),
)

# Small durable values: back-off deadline, polling high-water marks.
kv = Table(
    "kv",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)


_WRITE = "bridge_write"


def _writes_begin_immediate(engine: Engine) -> None:
    """Mark the connections `engine.begin()` hands out as writers (see `_sqlite_begin`)."""

    @contextlib.contextmanager
    def begin() -> Iterator[Connection]:
        with engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    engine.begin = begin  # type: ignore[method-assign]


# One row per backfill run (`issue-bridge backfill …`). state: running | interrupted | failed | read
# (every page read and stored; its events may still be syncing). `cursor` is the source reader's own
# JSON position, written after each page, so `--resume` continues where it stopped.
backfills = Table(
    "backfills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("scope", Text, nullable=False),  # canonical JSON of the options (repo/product/project, filters)
    Column("state", String(16), nullable=False),
    Column("cursor", Text),
    Column("items_read", Integer, nullable=False, default=0),
    Column("events_stored", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("source_calls", Integer, nullable=False, default=0),
    Column("planned_zoho_calls", Float, nullable=False, default=0.0),
    Column("paced_until", Float, nullable=False, default=0.0),  # when its last stored event becomes due
    Column("last_error", Text),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
)
Index("ix_backfills_scope", backfills.c.source, backfills.c.scope)


# Talking back to the source (bridge/reverse). One row per linked item with back-link or reverse sync on:
# the back-link's state (pending → posting → posted | failed; `backlink_ref` is the source comment id),
# the Zoho status last seen or acted on, and the poll's view of it.
reverse_items = Table(
    "reverse_items",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("backlink_state", String(16), nullable=False, default="none"),
    Column("backlink_ref", String(255)),
    Column("backlink_attempts", Integer, nullable=False, default=0),
    Column("backlink_next_at", Float, nullable=False, default=0.0),
    Column("backlink_error", Text),
    Column("zoho_status", String(255)),  # the Zoho status name last seen (or set) by the bridge
    Column("updated_at", Float, nullable=False),
)
Index("ix_reverse_items_backlink", reverse_items.c.backlink_state, reverse_items.c.backlink_next_at)

# What the bridge itself wrote to a source, so the source's webhook echo of it is recognized by id and
# value, never by wording. kind: comment (ref = the source comment id) | state (ref = the value written).
source_writes = Table(
    "source_writes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("ref", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("consumed", Boolean, nullable=False, default=False),
)
Index("ix_source_writes_item", source_writes.c.source, source_writes.c.external_id, source_writes.c.kind)

# Mapping v3 (migration 0009). One row per source attachment of an item; state: fetching (intent) | uploaded
# (Zoho holds the file, `zoho_attachment_id`) | associated (on the issue: done) | skipped (too large, refused host).
attachment_links = Table(
    "attachment_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("attachment_key", String(255), nullable=False),  # "bugzilla:attachment:12", "bugherd:screenshot:<sha>"
    Column("zoho_attachment_id", String(64)),
    Column("state", String(16), nullable=False),
    Column("note", Text),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("source", "external_id", "attachment_key", name="uq_attachment_links"),
)

# Per item: the filter's last answer and the field values the bridge last wrote to Zoho (field ownership).
item_sync_state = Table(
    "item_sync_state",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("last_matched", Boolean),  # NULL: never filtered (links made before `when:`), counts as matching
    Column("applied_values", Text),  # JSON {draft field: value} as last sent
    Column("updated_at", Float, nullable=False),
)


def make_engine(database_url: str) -> Engine:
    """An engine tuned for many small transactions from several processes."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers and one writer work side by side across processes; NORMAL keeps
            # commits durable against process crashes (the contract's kill -9) without an fsync each.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # SQLAlchemy emits the BEGIN itself (below), so the driver must not.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # `engine.begin()` (a write) takes the write lock up front, so read-then-write transactions
            # (claims, limiter) never fail on upgrade; `engine.connect()` (a read) takes no lock at all,
            # so a long read (a /metrics scrape) never holds up intake's inserts.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

        _writes_begin_immediate(engine)
        return engine
    return create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextlib.contextmanager
def _schema_lock(engine: Engine) -> Iterator[None]:
    """Serialize schema creation between processes that start at the same moment."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        lock_path = Path(str(url.database) + ".schema.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    key = int(hashlib.sha256(b"issue-bridge-schema").hexdigest()[:15], 16)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _alembic_config(connection):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def ensure_schema(engine: Engine) -> None:
    """Run the Alembic migrations to head once, under a cross-process lock (never race at boot)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        config = _alembic_config(conn)
        head = ScriptDirectory.from_config(config).get_current_head()
        if MigrationContext.configure(conn).get_current_revision() == head:
            return  # the common case: nothing to do, no lock taken
    with _schema_lock(engine), engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")


def check_database(engine: Engine) -> str | None:
    """None when the database answers, else what is wrong (for /readyz)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM events WHERE 1=0"))
        return None
    except Exception as exc:  # readiness reports any failure, whatever its type
        return f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
