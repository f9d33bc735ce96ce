"""Retention on SQLite and PostgreSQL: what a prune drops, what it keeps, that it changes no counter, and that
it runs beside live intake without holding deliveries up."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from bridge import store
from bridge.cli import main as cli
from bridge.process import metrics
from bridge.store import calllog, links, retention
from bridge.store import schema as db
from testkit import dbs
from testkit.dbs import age, deliver, engine  # noqa: F401  (the fixture)

COUNTER_LINE = re.compile(
    r"^(bridge_deliveries_total|bridge_events_finished_total|bridge_zoho_calls_total|bridge_event_retries_total"
    r"|bridge_zoho_latency_ms_\w+|bridge_end_to_end_lag_seconds_\w+)[{ ].*$",
    re.M,
)


def _lines(engine) -> list[str]:  # noqa: F811
    text = metrics.render(engine).decode()
    return [m.group(0) for m in COUNTER_LINE.finditer(text)]


def finished(engine, n: int, status: str = store.DONE, *, days: float, calls: int = 1) -> int:  # noqa: F811
    event_id = deliver(engine, n)
    for _ in range(calls):
        calllog.record_zoho_call(
            engine,
            event_id=event_id,
            method="POST",
            path="/portal/1/projects/2/issues",
            request_json={"name": "x"},
            status=500 if status == store.FAILED else 200,
            response_text="{}",
            duration_ms=40.0,
            dry_run=False,
        )
    dbs.attempt(engine, event_id, "failed" if status == store.FAILED else "done")
    dbs.finish(engine, event_id, status, error="Zoho said no" if status == store.FAILED else None)
    age(engine, event_id, days)
    return event_id


def rows(engine, table, *where) -> int:  # noqa: F811
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


def payload_of(engine, event_id: int) -> bytes:  # noqa: F811
    raw = store.get_raw_delivery(engine, event_id)
    assert raw is not None
    return raw[1]


def test_prune_drops_old_bodies_then_old_events_and_keeps_links_failed_and_pending(engine):  # noqa: F811
    old_done = finished(engine, 1, days=40)
    old_superseded = finished(engine, 2, store.SUPERSEDED, days=35)
    week_old = finished(engine, 3, days=10)
    fresh = finished(engine, 4, days=1)
    old_failed = finished(engine, 5, store.FAILED, days=60)
    old_pending = deliver(engine, 6)
    age(engine, old_pending, 50)
    dbs.link(engine, source="github", external_id="1", item_key="acme/web#1", zoho_issue_id="Z1")
    with engine.begin() as conn:
        links.save_comment(conn, source="github", external_id="1", comment_id="c1", zoho_comment_id="ZC1",
                           state="posted", last_ts=1.0, body_hash=None, now=time.time())  # fmt: skip
    calllog.record_zoho_call(
        engine,
        event_id=None,
        method="GET",
        path="/portal/1/projects/2/issues",
        request_json=None,
        status=200,
        response_text="[]",
        duration_ms=10.0,
        dry_run=False,
    )
    with engine.begin() as conn:  # that lookup was made 40 days ago
        conn.execute(
            db.zoho_calls.update().where(db.zoho_calls.c.event_id.is_(None)).values(at=time.time() - 40 * 86400)
        )
    before = _lines(engine)

    preview = retention.prune(engine, retention_days=30, payload_days=7, dry_run=True)
    assert (preview.payloads, preview.events, preview.attempts, preview.zoho_calls) == (1, 2, 2, 3)
    assert rows(engine, db.events) == 6 and payload_of(engine, old_done)  # a dry run changes nothing

    report = retention.prune(engine, retention_days=30, payload_days=7)
    assert (report.events, report.attempts, report.zoho_calls) == (2, 2, 3)
    assert report.payloads == 1  # the 10-day-old one (the older ones went whole)
    assert store.get_event(engine, old_done) is None and store.get_event(engine, old_superseded) is None
    assert rows(engine, db.attempts, db.attempts.c.event_id.in_([old_done, old_superseded])) == 0
    # The 10-day-old event keeps its row, normalized event, attempts and calls; only its raw body went.
    assert store.get_event(engine, week_old) is not None and payload_of(engine, week_old) == b""
    assert len(store.calls_for_event(engine, week_old)) == 1
    assert payload_of(engine, fresh).startswith(b'{"issue"')
    # Failed and pending events stay, whatever their age, with their bodies and Zoho's answers.
    assert payload_of(engine, old_failed) and len(store.calls_for_event(engine, old_failed)) == 1
    assert store.get_event(engine, old_pending).status == store.PENDING
    assert store.get_link(engine, "github", "1").zoho_issue_id == "Z1"
    with engine.connect() as conn:
        assert "c1" in links.comment_links(conn, "github", "1")
    # Counters and histograms are not history: a prune leaves every one of them as it was.
    assert _lines(engine) == before
    text = metrics.render(engine).decode()
    assert 'bridge_events{source="github",status="done"} 2.0' in text  # the stored gauge went down by one
    assert 'bridge_events{source="github",status="superseded"}' not in text
    assert "bridge_queue_depth 1.0" in text

    again = retention.prune(engine, retention_days=30, payload_days=7)
    assert (again.payloads, again.events, again.zoho_calls) == (0, 0, 0)


def test_failed_event_is_pruned_only_after_replay_and_its_new_age(engine):  # noqa: F811
    failed = finished(engine, 1, store.FAILED, days=90)
    assert retention.prune(engine, retention_days=30, payload_days=7).events == 0
    store.reset_for_replay(engine, [failed])
    dbs.finish(engine, failed, store.DONE)
    assert retention.prune(engine, retention_days=30, payload_days=7).events == 0  # done today: kept
    assert payload_of(engine, failed)
    age(engine, failed, 31)
    assert retention.prune(engine, retention_days=30, payload_days=7).events == 1


def test_prune_works_in_small_batches_and_resumes(engine):  # noqa: F811
    ids = [finished(engine, n, days=40, calls=2) for n in range(1, 12)]
    report = retention.prune(engine, retention_days=30, payload_days=7, batch=3, pause=0)
    assert report.events == 11 and report.zoho_calls == 22 and report.batches >= 3
    assert rows(engine, db.events, db.events.c.id.in_(ids)) == 0
    # A stopped prune (max_seconds) leaves the rest for the next run.
    more = [finished(engine, n, days=40) for n in range(20, 30)]
    first = retention.prune(engine, retention_days=30, payload_days=0, batch=2, pause=0.05, max_seconds=0.01)
    assert not first.complete and first.events < 10
    retention.prune(engine, retention_days=30, payload_days=0, batch=2, pause=0)
    assert rows(engine, db.events, db.events.c.id.in_(more)) == 0


def test_db_prune_command_dry_run_and_real(engine, monkeypatch, tmp_path):  # noqa: F811
    finished(engine, 1, days=40)
    finished(engine, 2, days=8)
    monkeypatch.setenv("DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("RETENTION_DAYS", "30")
    monkeypatch.setenv("RETENTION_PAYLOAD_DAYS", "7")
    result = CliRunner().invoke(cli, ["db", "prune", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would drop: 1 raw bodies" in result.output and "1 finished events" in result.output
    assert rows(engine, db.events) == 2
    result = CliRunner().invoke(cli, ["db", "prune"])
    assert result.exit_code == 0, result.output
    assert "dropped: 1 raw bodies" in result.output and rows(engine, db.events) == 1
    assert payload_of(engine, 2) == b""


def _bulk_history(engine, n: int) -> None:  # noqa: F811
    """n finished deliveries, 40 days old, written in one go (setup only)."""
    old = time.time() - 40 * 86400
    body = b'{"issue": {"body": "' + b"x" * 4000 + b'"}}'
    with engine.begin() as conn:
        conn.execute(
            insert(db.events),
            [
                {
                    "source": "github",
                    "dedup_key": f"old-{i}",
                    "event_name": "issues.edited",
                    "item_key": f"acme/old#{i}",
                    "action": "updated",
                    "source_ts": old,
                    "received_at": old,
                    "status": store.DONE,
                    "attempts": 1,
                    "next_attempt_at": 0.0,
                    "headers": "{}",
                    "payload": body,
                    "event_json": "{}",
                    "processed_at": old,
                }
                for i in range(n)
            ],
        )


def _writer_that_never_waits(url: str) -> Any:
    """An engine whose writes fail at once on a lock someone else holds (no wait, so no timing in the test)."""
    from sqlalchemy import event

    writer = db.make_engine(url)

    @event.listens_for(writer, "connect")
    def _no_wait(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        if writer.dialect.name == "sqlite":
            cur.execute("PRAGMA busy_timeout=0")
        else:
            cur.execute("SET lock_timeout = '100ms'")  # a delivery waiting on the prune's locks fails
            dbapi_conn.commit()
        cur.close()

    return writer


@pytest.mark.slow
def test_prune_beside_live_intake_delays_no_delivery(engine):  # noqa: F811
    """Deliveries are stored while `db prune` runs, none waiting for it: held still at its first deleted batch (on
    PostgreSQL inside that batch's transaction, its row locks held; on SQLite, where one writer at a time is the
    rule, after the batch committed and before the next one begins), the prune lets a writer that never waits for a
    lock store 20 deliveries. A prune that locked more than its batch's rows (PostgreSQL), or kept the write lock
    between batches (SQLite), makes them fail at once."""
    import threading

    from sqlalchemy import event

    _bulk_history(engine, 3000)
    url = engine.url.render_as_string(hide_password=False)
    pruner, writer = db.make_engine(url), _writer_that_never_waits(url)
    pg = engine.dialect.name == "postgresql"
    held, go_on = threading.Event(), threading.Event()
    deleted: list[str] = []

    def after_statement(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE FROM EVENTS"):
            deleted.append(statement)
            if pg and len(deleted) == 1:
                hold()

    def between_batches(*_args) -> None:  # type: ignore[no-untyped-def]
        if not pg and len(deleted) == 1 and not held.is_set():  # the first batch committed, the next not begun
            hold()

    def hold() -> None:
        held.set()
        assert go_on.wait(60)

    event.listen(pruner, "after_cursor_execute", after_statement)
    event.listen(pruner, "checkout", between_batches)  # a connection taken after the batch's commit
    reports: list[retention.PruneReport] = []
    thread = threading.Thread(
        target=lambda: reports.append(retention.prune(pruner, retention_days=30, payload_days=7, pause=0))
    )
    thread.start()
    try:
        assert held.wait(60), "the prune never deleted a batch"
        stored = [deliver(writer, 200_000 + n) for n in range(20)]  # raises if it had to wait for the prune
    finally:
        go_on.set()
        thread.join(60)
        writer.dispose()
        pruner.dispose()
    assert len(set(stored)) == 20
    assert reports and reports[0].events == 3000 and reports[0].batches > 1
    assert rows(engine, db.events) == 20
