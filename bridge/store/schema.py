"""The bridge's own store: tables (SQLAlchemy Core) and the engine, for SQLite and PostgreSQL alike.

The event row is the source of truth for every delivery; the broker only wakes workers.
Times are stored as UNIX seconds (float): comparable, portable, no timezone surprises.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sqlite3
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
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

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

# external item ↔ Zoho issue. state: creating (a create is planned or in doubt: see `operations`) | linked |
# deleted | dry-run | unlinked
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
    # Per field, what the bridge last wrote to the Zoho issue (JSON {draft field: value}), for every item: field
    # ownership (`sync: create_only | if_unchanged_in_zoho`) holds for issues synced before it was configured.
    Column("written", Text),
    Column("filter_matched", Boolean),  # `when:`'s last answer; NULL: never filtered (counts as matching)
    Column("zoho_status", String(255)),  # the Zoho status last seen or set by the bridge (talking back)
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
# Led by `item_key`, not `source`: an index that also starts with `source` is, to a planner without statistics
# (PostgreSQL with autovacuum off), as good as the primary key for the identity lookup of every delivery, which
# then reads every binding of the source (bridge/migrations/versions/0017).
Index("ix_item_identities_item", item_identities.c.item_key, item_identities.c.source)

# source comment ↔ Zoho comment. state: posted | deleted (a post in doubt is an operation: `operations`)
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
# writers, from before migration 0015, are summed with it).
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

# The journal of outside operations (bridge/core/journal.py, bridge/store/journal.py): every write made to an
# outside system on an item's behalf, planned -> sent -> confirmed | failed, in the item's fenced steps. An
# operation left `sent` is in doubt; its resolver checks it when due. One row per (item, kind, ref): a create,
# the latest update, a comment by its source id, an attachment by its key, a back-link, a Zoho comment copied.
operations = Table(
    "operations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("ref", String(255), nullable=False, default=""),
    Column("state", String(16), nullable=False),  # planned | sent | confirmed | failed
    Column("payload", Text),  # JSON: what is (to be) written, never a secret
    Column("result", String(255)),  # what the system answered: the id it made
    Column("attempts", Integer, nullable=False, default=0),  # failed tries (a wait for a budget is not one)
    Column("next_at", Float),  # database time it is due (to send, to resolve); NULL: nothing due
    Column("last_error", Text),
    Column("planned_at", Float, nullable=False),
    Column("sent_at", Float),  # the latest time it was handed to the network
    Column("done_at", Float),
    Column("echo", String(16)),  # writes to a source: awaiting | seen | expired (its webhook echo)
    UniqueConstraint("source", "item_key", "kind", "ref", name="uq_operations_item"),
)
Index("ix_operations_due", operations.c.next_at)
Index("ix_operations_state", operations.c.state, operations.c.kind)

# The shared call budgets of every outside system (bridge/outbound/budget.py, bridge/store/budgets.py), timed by
# the database's clock: per budget its block (a throttle, a reset time, an outage breaker), the GCRA clock
# (`tat`, for rates with bursts) and the UTC day's count (daily quotas)...
budget_state = Table(
    "budget_state",
    metadata,
    Column("budget", String(64), primary_key=True),
    Column("blocked_until", Float, nullable=False, default=0.0),
    Column("reason", Text),
    Column("outages", Integer, nullable=False, default=0),  # consecutive failures to answer (the breaker)
    Column("tat", Float, nullable=False, default=0.0),
    Column("day", String(10)),
    Column("day_count", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
)
# ...and, for a sliding window of N calls, N slots: a call takes the one used longest ago, only if that
# use is more than a window ago.
budget_slots = Table(
    "budget_slots",
    metadata,
    Column("budget", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("used_at", Float, nullable=False),
)
Index("ix_budget_slots_used", budget_slots.c.budget, budget_slots.c.used_at)

# Small durable values: back-off deadline, polling high-water marks.
kv = Table(
    "kv",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)


# -- seeing and steering each item (issue 23) -------------------------------------------------------------------

# A delivery answered "duplicate" (a redelivery of a stored one): one row per stored delivery, counted, for the
# item's story. Written only on the duplicate answer's path, never on an accepted delivery's; bounded by the
# deliveries stored (pruned with them).
delivery_repeats = Table(
    "delivery_repeats",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("dedup_key", String(255), primary_key=True),
    Column("event_id", Integer, nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("sender", String(255)),  # the sender's User-Agent (or hook id), as intake kept it
)
Index("ix_delivery_repeats_item", delivery_repeats.c.source, delivery_repeats.c.item_key)

# What an operator did to an item (resync, link, unlink, pause, resume, recover, adopt), for its story.
operator_actions = Table(
    "operator_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("at", Float, nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text),
    Column("actor", String(32), nullable=False),  # "cli" | "admin"
)
Index("ix_operator_actions_item", operator_actions.c.source, operator_actions.c.item_key, operator_actions.c.id)

# A source or a mapping file paused (`issue-bridge pause`): its deliveries are stored, nothing is sent for it.
pauses = Table(
    "pauses",
    metadata,
    Column("kind", String(16), primary_key=True),  # "source" | "mapping"
    Column("name", String(255), primary_key=True),  # the source's name, or the mapping file's name
    Column("since", Float, nullable=False),
    Column("actor", String(32)),
)

# Items the core must not claim: stopped one by one (`why` "stopped"), or found under a paused mapping file
# (`why` "mapping:<file name>"). Claims and the sweeper skip them; `resume` deletes the rows and wakes the items.
held_items = Table(
    "held_items",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("item_key", String(255), primary_key=True),
    Column("why", String(300), nullable=False),
    Column("since", Float, nullable=False),
)
Index("ix_held_items_why", held_items.c.why)

# Calls to a source's API made on an item's behalf (enrichment, back-links, status writes), for its story.
source_calls = Table(
    "source_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("at", Float, nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("status", Integer),  # None: no answer (network, timeout)
    Column("duration_ms", Float),
    Column("message", Text),
)
Index("ix_source_calls_item", source_calls.c.source, source_calls.c.item_key, source_calls.c.id)
Index("ix_source_calls_at", source_calls.c.at)

# Calls per minute to each source's API, by lane ("live": workers and beat; "backfill": backfills and other
# commands): the budget charts. One row per system, minute and lane; the last two hours are kept.
call_minutes = Table(
    "call_minutes",
    metadata,
    Column("system", String(32), primary_key=True),
    Column("minute", Integer, primary_key=True, autoincrement=False),  # UNIX minute (seconds // 60)
    Column("lane", String(16), primary_key=True),
    Column("calls", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
)

# Zoho issues found carrying a marker, by `links recover` (the bridge's own, after a restore) or by the index
# adoption reads (`ADOPT_EXISTING`, `backfill --adopt-only`): issues made by hand name the item's source URL.
# A create first looks here (no Zoho call), so an issue found is adopted, never made a second time.
zoho_found = Table(
    "zoho_found",
    metadata,
    Column("portal", String(64), primary_key=True),
    Column("issue_id", String(64), primary_key=True),
    Column("project", String(64), nullable=False),
    Column("issue_key", String(64)),  # Zoho's prefix key, e.g. EC1-I14
    Column("title", Text),
    Column("created_at", Float),
    Column("external_id", String(255)),  # the marker (or custom field) it carries; None: made by hand
    Column("urls", Text),  # JSON list of the URLs its description names
    Column("via", String(16), nullable=False),  # "recover" | "index"
    Column("seen_at", Float, nullable=False),
)
Index("ix_zoho_found_external", zoho_found.c.external_id)
Index("ix_zoho_found_project", zoho_found.c.portal, zoho_found.c.project)


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


def shown_url(database_url: str) -> str:
    """The database URL as it may be shown (a password rendered as ***)."""
    return make_url(database_url).render_as_string(hide_password=True)


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
            # On the driver's connection: every transaction starts here, and SQLAlchemy's statement machinery
            # (events, a cursor result) costs more than the BEGIN itself.
            statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"
            try:
                conn.connection.dbapi_connection.execute(statement)
            except sqlite3.Error as exc:  # what callers catch (a locked database: retry later), as SQLAlchemy raises it
                raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

        @event.listens_for(engine, "handle_error")
        def _close_cursor_on_exit(context):  # type: ignore[no-untyped-def]
            # Ctrl-C (or SystemExit) inside a statement: SQLAlchemy invalidates the connection but leaves the
            # statement's cursor open, and SQLite keeps a connection closed with a live statement open, its write
            # lock held, until the traceback that holds the cursor is gone. The cleanup that runs meanwhile (a
            # backfill recording its interruption) then waits for the lock and fails. Close the cursor first.
            cursor = getattr(context.execution_context, "cursor", None)
            if cursor is not None and not isinstance(context.original_exception, Exception):
                with contextlib.suppress(Exception):
                    cursor.close()

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


def ensure_schema(engine: Engine) -> tuple[str | None, str] | None:
    """Run the Alembic migrations to head once, under a cross-process lock (never race at boot). Returns None when
    the schema was at head already, else (the revision it was at: None for a new database, the head)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        config = _alembic_config(conn)
        head = str(ScriptDirectory.from_config(config).get_current_head())
        if MigrationContext.configure(conn).get_current_revision() == head:
            return None  # the common case: nothing to do, no lock taken
    with _schema_lock(engine), engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        if before == head:
            return None  # another process upgraded it meanwhile
        command.upgrade(_alembic_config(conn), "head")
    return before, head


def check_database(engine: Engine) -> str | None:
    """None when the database answers, else what is wrong (for /readyz)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM events WHERE 1=0"))
        return None
    except Exception as exc:  # readiness reports any failure, whatever its type
        return f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
