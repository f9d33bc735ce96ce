"""On SQLite a read takes no write lock: a /metrics scrape over a large table does not hold up intake."""

from __future__ import annotations

import threading
import time

from bridge import store
from bridge.process import metrics
from bridge.store import schema as db
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
