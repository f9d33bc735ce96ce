"""The counters kept in the transaction of each change agree with what the old full-table scans counted, on
SQLite and PostgreSQL, and count nothing for a change that did not happen."""

from __future__ import annotations

from sqlalchemy import delete

from bridge import store
from bridge.process import metrics
from bridge.store import calllog, counters
from bridge.store import schema as db
from testkit import dbs
from testkit.dbs import deliver, engine  # noqa: F401  (the fixture)


def series(engine) -> dict:  # noqa: F811
    with engine.connect() as conn:
        return {
            name: sorted((sorted(labels.items()), v) for labels, v in rows if v)
            for name, rows in counters.read_all(conn).items()
        }


def test_counters_match_a_rescan_of_history(engine):  # noqa: F811
    ids = [deliver(engine, n) for n in range(1, 9)]
    for i, event_id in enumerate(ids[:6]):
        calllog.record_zoho_call(
            engine,
            event_id=event_id,
            method="POST",
            path="/portal/1/projects/2/issues",
            request_json={},
            status=200 if i % 3 else 429,
            response_text="{}",
            duration_ms=20.0 * (i + 1),
            dry_run=False,
        )
        dbs.attempt(engine, event_id, "retry" if i % 3 == 0 else "done")
        dbs.finish(engine, event_id, store.FAILED if i == 0 else store.DONE)
    store.reset_for_replay(engine, [ids[0]])  # failed → pending
    dbs.finish(engine, ids[0], store.SUPERSEDED)
    store.count_answer(engine, source="github", event="ping", answer="ignored")
    live = series(engine)
    text = metrics.render(engine).decode()
    assert 'bridge_events{source="github",status="done"} 5.0' in text
    assert 'bridge_events{source="github",status="superseded"} 1.0' in text
    assert 'bridge_events{source="github",status="pending"} 2.0' in text and "bridge_queue_depth 2.0" in text
    assert 'bridge_events_finished_total{source="github",status="failed"} 1.0' in text
    assert "bridge_event_retries_total 2.0" in text
    assert 'bridge_zoho_calls_total{dry_run="false",endpoint="issue.create",status="429"} 2.0' in text
    assert "bridge_zoho_latency_ms_count 6.0" in text
    assert (
        'bridge_zoho_latency_ms_bucket{le="50.0"} 2.0' in text or 'bridge_zoho_latency_ms_bucket{le="50"} 2.0' in text
    )

    with engine.begin() as conn:  # what migration 0007 computes from the rows themselves
        conn.execute(delete(db.metric_counters))
        conn.execute(delete(db.metric_deltas))
        counters.seed_from_history(conn)
    rescanned = series(engine)
    # The lag histogram is timed at finish in one and from processed_at in the other: compare its count only.
    # Finishes counted as they happen include the failure replayed since; a rescan sees only the last state.
    for name in ("end_to_end_lag_seconds_sum", "end_to_end_lag_seconds_bucket", "events_finished"):
        live.pop(name), rescanned.pop(name)
    assert live == rescanned


def test_a_duplicate_delivery_counts_as_duplicate_not_accepted(engine):  # noqa: F811
    deliver(engine, 1)
    event = store.get_event(engine, 1)
    assert event is not None
    _, new = store.record_delivery(engine, event.event, dedup_key="d-github-1", headers={}, payload=b"{}")
    assert not new  # the insert rolled back: its counter bump with it
    store.count_answer(engine, source="github", event="issues.opened", answer="duplicate")
    text = metrics.render(engine).decode()
    assert 'bridge_deliveries_total{answer="accepted",event="issues.opened",source="github"} 1.0' in text
    assert 'bridge_deliveries_total{answer="duplicate",event="issues.opened",source="github"} 1.0' in text
    assert 'bridge_events{source="github",status="pending"} 1.0' in text


def test_concurrent_writers_never_wait_on_each_other_nor_deadlock(engine):  # noqa: F811
    """Eight writers, each transaction counting several series in its own (shuffled) order, a folder and a
    scraper running alongside: no transaction fails (PostgreSQL would report a deadlock after its
    deadlock_timeout), and every delta is counted exactly once."""
    import random
    import threading

    from bridge.store.counters import DELIVERIES, RETRIES, ZOHO_CALLS

    writers, rounds = 8, 40
    failures: list[BaseException] = []
    stop = threading.Event()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(rounds):
                calls = [
                    lambda c: counters.delivery_stored(c, "github", "issues.opened"),
                    lambda c: counters.delivery_answered(c, "github", "ping", "ignored"),
                    lambda c: counters.attempt_finished(c, "retry"),
                    lambda c: counters.zoho_call(c, "issue.create", 200, False, 30.0),
                    lambda c: counters.zoho_call(c, "issue.update", 200, False, 70.0),
                ]
                rng.shuffle(calls)
                with engine.begin() as conn:
                    for call in calls:
                        call(conn)
        except BaseException as exc:
            failures.append(exc)

    def fold_and_scrape() -> None:
        try:
            while not stop.is_set():
                counters.fold(engine)
                metrics.render(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    folder = threading.Thread(target=fold_and_scrape)
    folder.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    folder.join(60)
    assert not failures, failures[:3]
    counters.fold(engine)
    with engine.connect() as conn:
        assert not counters.pending_deltas(conn)  # everything folded
    live = series(engine)
    total = writers * rounds
    assert live[RETRIES] == [([], total)]
    accepted = [("answer", "accepted"), ("event", "issues.opened"), ("source", "github")]
    ignored = [("answer", "ignored"), ("event", "ping"), ("source", "github")]
    assert sorted(live[DELIVERIES]) == sorted([(accepted, total), (ignored, total)])
    assert sum(v for _labels, v in live[ZOHO_CALLS]) == 2 * total
    assert live["zoho_latency_ms_count"] == [([], 2 * total)]
    assert live["zoho_latency_ms_sum"] == [([], 100.0 * total)]
