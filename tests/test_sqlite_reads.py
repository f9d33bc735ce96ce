"""On SQLite a read takes no write lock: a /metrics scrape over a large table does not hold up intake."""

from __future__ import annotations

import threading
import time

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
    engine = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
    db.ensure_schema(engine)
    _fill(engine, ROWS)
    started = time.perf_counter()
    metrics.render(engine)
    scrape_seconds = time.perf_counter() - started
    scraping = threading.Event()
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            scraping.set()
            metrics.render(engine)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    scraping.wait(5)
    worst = 0.0
    try:
        for n in range(20):
            body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened", number=n + 1))
            event = SOURCE.parse(body, headers)
            t0 = time.perf_counter()
            store.record_delivery(engine, event, dedup_key=f"new-{n}", headers={}, payload=body)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(scrape_seconds / 7)  # land at different moments of the scrapes
    finally:
        stop.set()
        scraper.join(30)
    # A scrape holding the write lock would delay some of these by up to a whole scrape.
    assert worst < max(0.25, scrape_seconds / 2), (worst, scrape_seconds)
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
