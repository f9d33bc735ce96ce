"""On SQLite a read takes no write lock: a /metrics scrape over a large table does not hold up intake."""

from __future__ import annotations

import threading

from bridge import store
from bridge.process import metrics
from bridge.store import schema as db
from bridge.store.clock import db_now
from testkit.factories import github_request, issues_event
from testkit.harness import GITHUB_SECRET
from tests.test_sync_guarantees import SOURCE

ROWS = 150_000


def _fill(engine, rows: int) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            "INSERT INTO events (source, dedup_key, event_name, item_key, action, source_ts, received_at, status,"
            " attempts, next_attempt_at, headers, payload, event_json) VALUES"
            " ('github', ?, 'issues.edited', ?, 'updated', 0, 0, ?, 0, 0, '{}', x'7b7d', '{}')",
            ((f"bulk-{n}", f"acme/web#{n % 5000}", "done" if n % 7 else "failed") for n in range(rows)),
        )
        cur.execute("COMMIT")
    finally:
        raw.close()


def test_a_metrics_scrape_over_a_large_table_does_not_delay_a_webhook(tmp_path):
    """Held still inside its reads, a scrape lets a writer that never waits for a lock store every delivery: a
    scrape holding the write lock would make each of them fail at once (no timing, so no machine is too slow)."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path}/bridge.db"
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    _fill(engine, ROWS)
    counted: list[int] = []  # the statements of one scrape, counted in a first scrape
    scraper_thread: list[int] = []
    held, writes_done = threading.Event(), threading.Event()

    def watch(_conn, _cursor, _sql, *_args) -> None:  # type: ignore[no-untyped-def]
        if not scraper_thread:  # the first scrape: count
            counted.append(1)
        elif threading.get_ident() == scraper_thread[0]:  # the second: held at its last statement
            counted.append(1)
            if len(counted) == 2 * last:
                held.set()
                writes_done.wait(30)

    event.listen(engine, "before_cursor_execute", watch)
    metrics.render(engine)
    last = len(counted)
    assert last > 1

    def scrape() -> None:
        scraper_thread.append(threading.get_ident())
        metrics.render(engine)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    assert held.wait(30), "the scrape never reached its last statement"
    writer = db.make_engine(url)  # a second process's view: its own connections, no waiting for a lock
    event.listen(writer, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout = 0"))
    try:
        for n in range(20):
            body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened", number=n + 1))
            store.record_delivery(writer, SOURCE.parse(body, headers), dedup_key=f"new-{n}", headers={}, payload=body)
    finally:
        writes_done.set()
        scraper.join(30)
        writer.dispose()
    assert store.count_by_status(engine)["pending"] == 20


def test_a_write_on_a_locked_database_fails_as_the_callers_expect(tmp_path):
    """The BEGIN of a write transaction runs on the driver's connection (bridge/store/schema.py): a database locked
    past the busy timeout still fails as SQLAlchemy's OperationalError, which the worker retries later and the web
    answers with a 503, not as the driver's own exception (which neither recognises)."""
    import sqlite3

    import pytest
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    engine = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
    db.ensure_schema(engine)
    engine.dispose()
    event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout = 100"))
    holder = sqlite3.connect(tmp_path / "bridge.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError, match="locked"), engine.begin():
            pass
    finally:
        holder.rollback()
        holder.close()
    with engine.begin() as conn:  # the connection is usable again once the lock is gone
        assert db_now(conn) > 0


def test_ctrl_c_inside_a_statement_leaves_the_write_lock_free_for_the_cleanup(tmp_path):
    """A Ctrl-C that lands inside a write transaction's statement (a backfill interrupted while it releases parked
    events): while the interrupt is still being handled (its traceback alive, as in a `finally` or `except` that
    records the interruption), another writer can take the lock at once. SQLite kept it, held by the interrupted
    statement's cursor, and the backfill's "interrupted" record failed with "database is locked" after 30 s."""
    import sqlite3

    import pytest
    from sqlalchemy import event, select

    from testkit.dbs import deliver

    engine = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
    db.ensure_schema(engine)
    for n in range(1, 6):
        deliver(engine, n)

    def ctrl_c(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("SELECT events.id"):
            raise KeyboardInterrupt  # as the statement's first rows are ready

    event.listen(engine, "after_cursor_execute", ctrl_c)
    other = sqlite3.connect(f"{tmp_path}/bridge.db", timeout=0, isolation_level=None)
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                with engine.begin() as conn:
                    conn.execute(select(db.events.c.id))
            except KeyboardInterrupt:
                other.execute("BEGIN IMMEDIATE")  # the cleanup's write: "database is locked" before
                other.execute("ROLLBACK")
                raise
    finally:
        other.close()
        engine.dispose()
