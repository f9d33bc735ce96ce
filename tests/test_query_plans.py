"""Every query on the hot path, and every query of a /metrics scrape, is answered from an index: none reads
`events`, `zoho_calls` or `attempts` in full. Checked with the databases' own planners (SQLite's EXPLAIN QUERY
PLAN; PostgreSQL's EXPLAIN with sequential scans priced out, so a plan still showing one has no index to use).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sqlalchemy import event

from bridge import store
from bridge.process import metrics
from bridge.store import calllog, claims, links, retention
from bridge.store import pages as store_pages
from testkit import dbs
from testkit.dbs import age, deliver, engine  # noqa: F401  (the fixture)

HISTORY_TABLES = ("events", "zoho_calls", "attempts")
SQLITE_SCAN = re.compile(r"\bSCAN (?:TABLE )?(" + "|".join(HISTORY_TABLES) + r")\b")
PG_INDEX_NODE = re.compile(r"(Index Only Scan|Index Scan|Bitmap Heap Scan).* on (" + "|".join(HISTORY_TABLES) + r")\b")
PG_SCAN = re.compile(r"Seq Scan on (" + "|".join(HISTORY_TABLES) + r")\b")


def captured(engine, action: Callable[[], object]) -> list[tuple[str, object]]:  # noqa: F811
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, executemany):  # type: ignore[no-untyped-def]
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return statements


def _pk_walk(statement: str, plan: str) -> bool:
    """SQLite shows a walk down the primary key that stops at LIMIT (a keyset page) as "SCAN events":
    bounded by the page, not the table, as long as the order comes from the key itself (no temp b-tree)."""
    keyset = re.search(r"ORDER BY events\.id DESC\s+LIMIT", statement)
    return bool(keyset) and "TEMP B-TREE" not in plan


def _pg_full_index_scan(plan: str) -> bool:
    """An index walked end to end: an index (or bitmap) scan of a history table with no condition in its
    subtree (Index Cond, Recheck Cond), outside a Limit."""
    lines = plan.splitlines()

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip(" ->"))

    for i, line in enumerate(lines):
        if not re.search(
            r"(Index Only Scan|Index Scan|Bitmap Heap Scan).* on (" + "|".join(HISTORY_TABLES) + r")\b", line
        ):
            continue
        subtree = []
        for nxt in lines[i + 1 :]:
            if indent(nxt) <= indent(line):
                break
            subtree.append(nxt)
        limited = any("Limit" in above for above in lines[:i])
        if not any("Index Cond" in d or "Recheck Cond" in d for d in subtree) and not limited:
            return True
    return False


def full_scans(engine, statements: list[tuple[str, object]]) -> list[str]:  # noqa: F811
    bad = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            cur.execute("SET enable_seqscan = off")
        for statement, parameters in statements:
            if not any(t in statement for t in HISTORY_TABLES):
                continue
            if engine.dialect.name == "sqlite":
                cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = "\n".join(str(row[-1]) for row in cur.fetchall())
                found = SQLITE_SCAN.search(plan) and not _pk_walk(statement, plan)
            else:
                cur.execute("EXPLAIN " + statement, parameters)
                plan = "\n".join(str(row[0]) for row in cur.fetchall())
                found = PG_SCAN.search(plan) or _pg_full_index_scan(plan)
            if found:
                bad.append(f"{statement}\n--> {plan}")
        raw.rollback()
    finally:
        raw.close()
    return bad


def history(engine) -> list[int]:  # noqa: F811
    """A little of everything: done, failed, pending events, attempts, calls, a link."""
    ids = []
    for n in range(1, 41):
        event_id = deliver(engine, n)
        ids.append(event_id)
        if n % 4 == 0:
            continue  # stays pending
        calllog.record_zoho_call(
            engine,
            event_id=event_id,
            method="POST",
            path="/portal/1/projects/2/issues",
            request_json={"name": "x"},
            status=200 if n % 5 else 500,
            response_text="{}",
            duration_ms=30.0 + n,
            dry_run=False,
        )
        dbs.attempt(engine, event_id, "retry" if n % 5 == 0 else "done")
        dbs.finish(engine, event_id, store.FAILED if n % 5 == 0 else store.DONE)
        if n < 20:
            age(engine, event_id, 10 if n % 2 else 40)
    dbs.link(engine, source="github", external_id="1", item_key="acme/web#1", zoho_issue_id="Z1")
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
    return ids


def test_metrics_scrape_reads_no_history_table_in_full(engine):  # noqa: F811
    history(engine)
    statements = captured(engine, lambda: metrics.render(engine))
    assert any("metric_counters" in s for s, _ in statements)
    assert full_scans(engine, statements) == []


def test_hot_path_and_paged_queries_use_indexes(engine):  # noqa: F811
    ids = history(engine)
    some, failed = ids[5], ids[4]  # acme/web#6 (done), acme/web#5 (failed)
    now = time.time()

    def hot_path() -> None:
        # intake: a duplicate delivery looks its first copy up
        event = store.get_event(engine, some)
        assert event is not None
        store.record_delivery(engine, event.event, dedup_key="d-github-6", headers={}, payload=b"{}")
        # a worker on one item
        store.pending_for_item(engine, "github", "acme/web#8", now)
        with engine.connect() as conn:
            claims.next_due(conn, "github", "acme/web#8")
        dbs.attempt(engine, ids[7], "done")
        dbs.finish(engine, ids[7], store.DONE)
        store.get_link(engine, "github", "1")
        with engine.connect() as conn:
            links.comment_links(conn, "github", "1")
        store.get_raw_delivery(engine, some)
        store.attempts_for_event(engine, some)
        store.calls_for_event(engine, some)
        # beat jobs
        store.stale_items(engine, older_than=now, now=now)
        retention.prune(engine, retention_days=30, payload_days=7, pause=0)
        retention.prune(engine, retention_days=30, payload_days=7, dry_run=True)
        # pages and commands
        store_pages.page_events(engine, limit=10)
        store_pages.page_events(engine, status=store.DONE, before_id=ids[-1], limit=10)
        store_pages.page_events(engine, status=store.FAILED, limit=10)
        list(store_pages.iter_events(engine, status=store.PENDING, batch=3))
        for batch in store_pages.id_batches(engine, store.FAILED, batch=2):
            store.reset_for_replay(engine, [ref.id for ref in batch])
        store_pages.status_counts(engine)
        store.reset_for_replay(engine, [failed])

    statements = captured(engine, hot_path)
    assert len(statements) > 30
    assert full_scans(engine, statements) == []


def test_the_check_catches_a_full_scan(engine):  # noqa: F811
    """The plan check itself: a query with no usable index is reported."""
    history(engine)
    statements = captured(engine, lambda: store.count_by_status(engine))  # GROUP BY status over every event
    assert full_scans(engine, statements) != []


def _vm_steps(engine, action: Callable[[], object]) -> int:  # noqa: F811
    """SQLite virtual-machine steps (in thousands) the action's statements ran on one pooled connection."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        raw.set_progress_handler(count, 1000)
        try:
            action(conn)  # type: ignore[call-arg]
        finally:
            raw.set_progress_handler(None, 1000)
    return steps[0]


def test_what_pauses_hold_back_is_counted_from_the_held_items_not_from_the_backlog(tmp_path):
    """The front page, /metrics and `status` count the pending events each pause holds back: with no item held,
    that costs the same whatever the backlog (it read every pending event, to join it to the held items: at
    200,000 stored deliveries with a backlog of 4,200 it took 5 ms, twice per scrape, against 0.3 ms)."""
    from bridge.store import schema as db
    from bridge.store import steer

    def steps_with(pending: int) -> int:
        store_engine = db.make_engine(f"sqlite:///{tmp_path}/{pending}.db")
        db.ensure_schema(store_engine)
        for n in range(pending):
            deliver(store_engine, n + 1, body_bytes=100)
        with store_engine.begin() as conn:
            steer.hold(conn, "github", "acme/web#999999", steer.STOPPED)  # held, with nothing pending
        try:
            with store_engine.connect() as conn:
                assert steer.waiting(conn) == {}  # the held item has nothing pending: no line for its reason
            return _vm_steps(store_engine, lambda conn: steer.waiting(conn))
        finally:
            store_engine.dispose()

    small, large = steps_with(10), steps_with(3000)
    assert large <= small + 2, (small, large)
