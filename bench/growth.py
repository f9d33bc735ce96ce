"""Growth: does the bridge cost the same after years of history? Each figure on a database preloaded with
`--events` stored deliveries (realistic GitHub bodies, with their attempts, Zoho calls and links, spread over
the past `--history-days`), as a ratio to the same figure on an empty database, in the same run:

- intake req/s and p99 at 32 senders (real gunicorn, real broker);
- /metrics time; admin dashboard and failed page time (logged in, over HTTP);
- a worker's time per new issue (webhook POST to the create call at FakeZoho, one worker);
- `events replay --failed` peak memory (max RSS of the command; the preload holds 1 % failed events);
- database size before and after `db prune` (RETENTION_DAYS=30, RETENTION_PAYLOAD_DAYS=7), and per delivery.

    .venv/bin/python bench/growth.py [--events 1000000] [--db sqlite,postgresql] [--json out.json]

Target: every ratio <= 1.2, and the size after a prune bounded by the retention settings, not by history.
The 1M-row run needs ~6 GB of disk per database and a long preload; `--events 20000` runs in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text

from bench.common import (
    PYTHON,
    REPO,
    FakeZoho,
    Numbers,
    StoreConfig,
    github_requests,
    github_webhook,
    make_stack,
    postgres_database,
    print_header,
    redis_database,
    run_load_forked,
    temp_dir,
    write_json,
)
from bench.delivery import creates
from bridge.sources.github.webhook import GitHubSource
from bridge.store import counters
from bridge.store import schema as db
from testkit.harness import GITHUB_SECRET, BridgeStack

ADMIN_TOKEN = "growth-bench-admin-token-0123456789"
DAY = 86400.0
BASELINE_FAILED = 5
STATUSES = [("done", 90), ("superseded", 5), ("skipped", 4), ("failed", 1)]


# -- preload ---------------------------------------------------------------------------------------------


def preload(database_url: str, count: int, history_days: float, numbers: Numbers, *, only: str | None = None) -> float:
    """`count` finished deliveries of count/5 items over the past `history_days` (all in status `only` when
    given); returns the seconds taken."""
    started = time.perf_counter()
    engine = db.make_engine(database_url)
    db.ensure_schema(engine)
    source = GitHubSource(GITHUB_SECRET)
    rng = random.Random(14)
    now = time.time()
    first = numbers.take(count)
    chunk = 1000
    statuses = [s for s, weight in STATUSES for _ in range(weight)]
    for start in range(0, count, chunk):
        events, attempts, calls, links = [], [], [], []
        for i in range(start, min(count, start + chunk)):
            number = first + i // 5  # five deliveries per issue
            body, headers = github_webhook(number, action="opened" if i % 5 == 0 else "edited")
            ev = source.parse(body, headers)
            at = now - history_days * DAY * (1 - i / count)  # oldest first, as history is
            status = only or rng.choice(statuses)
            events.append(
                {
                    "id": i + 1,
                    "source": "github",
                    "dedup_key": f"preload-{i}",
                    "event_name": ev.event_name,
                    "item_key": ev.item_key,
                    "action": ev.action,
                    "source_ts": at - 1,
                    "received_at": at,
                    "status": status,
                    "attempts": 1,
                    "next_attempt_at": 0.0,
                    "last_error": "Zoho answered 400" if status == "failed" else None,
                    "headers": json.dumps(
                        {"X-GitHub-Event": "issues", "X-GitHub-Delivery": headers["X-GitHub-Delivery"]}
                    ),
                    "payload": body,
                    "event_json": json.dumps(ev.to_json()),
                    "processed_at": at + 0.5,
                }
            )
            attempts.append(
                {"event_id": i + 1, "number": 1, "started_at": at, "finished_at": at + 0.5, "outcome": status}
            )
            request = json.dumps({"name": ev.fields.get("title", ""), "description": "x" * 600})
            calls.append(
                {
                    "event_id": i + 1,
                    "at": at + 0.2,
                    "method": "POST" if i % 5 == 0 else "PATCH",
                    "endpoint": "issue.create" if i % 5 == 0 else "issue.update",
                    "path": f"/api/v3/portal/1/projects/2/issues/{number}",
                    "request_json": request,
                    "status": 400 if status == "failed" else 200,
                    "response_text": json.dumps({"issues": [{"id": str(number), "name": "x" * 400}]}),
                    "duration_ms": 80.0 + rng.random() * 200,
                    "dry_run": False,
                }
            )
            if i % 5 == 0:
                links.append(
                    {
                        "source": "github",
                        "external_id": str(number),
                        "item_key": ev.item_key,
                        "portal": "1",
                        "project": "2",
                        "zoho_issue_id": f"Z{number}",
                        "state": "linked",
                        "last_state_ts": at,
                        "applied_hash": "0" * 64,
                        "last_fields": json.dumps(ev.fields, default=str)[:2000],
                        "created_at": at,
                        "updated_at": at,
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(db.events), events)
            conn.execute(insert(db.attempts), attempts)
            conn.execute(insert(db.zoho_calls), calls)
            if links:
                conn.execute(insert(db.links), links)
    with engine.begin() as conn:
        counters.seed_from_history(conn)  # as migration 0007 does for an upgraded installation
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval('events_id_seq', (SELECT max(id) FROM events))")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


# -- measurements -----------------------------------------------------------------------------------------


def database_bytes(stack: BridgeStack) -> dict[str, int]:
    engine = stack.engine
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            total = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
            return {"bytes": total, "live_bytes": total}
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
    path = Path(str(engine.url.database))
    files = sum(p.stat().st_size for p in [path, Path(f"{path}-wal")] if p.exists())
    return {"bytes": files, "live_bytes": int((pages - free) * size)}


def timed_get(session: Any, url: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = session.get(url, timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(times)


def worker_per_issue(stack: BridgeStack, fake: FakeZoho, numbers: Numbers, count: int) -> float:
    """Median seconds from a new issue's webhook to its create call at FakeZoho (one worker)."""
    import requests

    warm = numbers.take(1)  # the first one waits for the worker to start: not counted
    body, headers = github_webhook(warm)
    assert requests.post(stack.base_url + "/webhooks/github", data=body, headers=headers, timeout=30).ok
    deadline = time.time() + 120
    while time.time() < deadline and warm not in creates(fake):
        time.sleep(0.25)
    first = numbers.take(count)
    sent = {}
    for n in range(first, first + count):
        body, headers = github_webhook(n)
        sent[n] = time.time()
        assert requests.post(stack.base_url + "/webhooks/github", data=body, headers=headers, timeout=30).ok
        time.sleep(0.5)
    deadline = time.time() + 120
    seen: dict[int, float] = {}
    while time.time() < deadline and len(seen) < count:
        seen = {n: t for n, t in creates(fake).items() if n in sent}
        time.sleep(0.25)
    if len(seen) < count:
        raise SystemExit(f"only {len(seen)} of {count} issues reached FakeZoho")
    return statistics.median(seen[n] - sent[n] for n in sent)


def replay_peak_kb(stack: BridgeStack) -> tuple[int, str]:
    """Max RSS (KB) of `issue-bridge events replay --failed`, and its output."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "bridge.cli", "events", "replay", "--failed"],
        cwd=REPO,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = proc.stdout.read().decode() if proc.stdout else ""
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return int(usage.ru_maxrss), out.strip().splitlines()[-1] if out.strip() else ""


def prune(stack: BridgeStack) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    cmd = [PYTHON, "-m", "bridge.cli", "db", "prune", "--json"]
    result = subprocess.run(cmd, cwd=REPO, env=stack.env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"db prune failed: {result.stdout}{result.stderr}")
    return time.perf_counter() - t0, json.loads(result.stdout.strip().splitlines()[-1])


def measure(config: StoreConfig, args: argparse.Namespace, preload_events: int, numbers: Numbers) -> dict[str, Any]:
    import requests

    out: dict[str, Any] = {"events": preload_events}
    with temp_dir("bench-growth-") as tmp, FakeZoho() as fake:
        stack = make_stack(
            tmp,
            config,
            fake,
            {"ADMIN_TOKEN": ADMIN_TOKEN, "RETENTION_DAYS": "30", "RETENTION_PAYLOAD_DAYS": "7"},
        )
        if preload_events:
            seconds = preload(stack.settings.database_url, preload_events, args.history_days, numbers)
            out["preload_s"] = round(seconds, 1)
        else:  # the same few failed events, so `replay --failed` runs the same code on both databases
            preload(stack.settings.database_url, BASELINE_FAILED, 1.0, numbers, only="failed")
        db.ensure_schema(stack.engine)
        out["size_before"] = database_bytes(stack)
        try:
            stack.start_web()
            # The worker's time per new issue first, on a quiet queue; then intake with no worker draining.
            stack.start_worker("worker", concurrency=1)
            out["worker_s_per_issue"] = round(worker_per_issue(stack, fake, numbers, args.issues), 3)
            stack.kill("worker")
            run_load_forked(stack.port, github_requests(stack.port, 200, first_number=numbers.take(200)), 8, 60)
            passes = []
            for _ in range(args.intake_rounds):
                requests_ = github_requests(stack.port, args.requests, first_number=numbers.take(args.requests))
                passes.append(run_load_forked(stack.port, requests_, 32, 60))
            bad = {s: n for r in passes for s, n in r.statuses.items() if s != 200}
            out["intake"] = {
                "rps": round(statistics.median(r.rps for r in passes), 1),
                "p99_ms": round(statistics.median(r.p99 for r in passes), 1),
                "refused": bad,
            }
            session = requests.Session()
            timed_get(session, stack.base_url + "/metrics", 3)  # warm
            metrics_ms = timed_get(session, stack.base_url + "/metrics", args.rounds)
            page = session.get(stack.base_url + "/admin/login", timeout=30).text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
            form = {"token": ADMIN_TOKEN, "csrf_token": csrf.group(1) if csrf else ""}
            r = session.post(stack.base_url + "/admin/login", data=form, timeout=30)
            assert r.ok, r.status_code
            out["metrics_ms"] = round(metrics_ms, 2)
            out["admin_ms"] = round(timed_get(session, stack.base_url + "/admin/", args.rounds), 2)
            out["admin_failed_ms"] = round(timed_get(session, stack.base_url + "/admin/failed", args.rounds), 2)
            seconds, report = prune(stack)
            out["prune"] = {
                "seconds": round(seconds, 1),
                **{k: report[k] for k in ("events", "payloads", "zoho_calls")},
            }
            out["size_after"] = database_bytes(stack)
            out["replay_failed_kb"], out["replay_output"] = replay_peak_kb(stack)
        finally:
            stack.stop()
    return out


RATIOS = [
    ("intake req/s at 32 senders", ("intake", "rps"), "higher"),
    ("intake p99 ms", ("intake", "p99_ms"), "lower"),
    ("/metrics ms", ("metrics_ms",), "lower"),
    ("admin dashboard ms", ("admin_ms",), "lower"),
    ("admin failed page ms", ("admin_failed_ms",), "lower"),
    ("worker s per new issue", ("worker_s_per_issue",), "lower"),
    ("replay --failed max RSS KB", ("replay_failed_kb",), "lower"),
]


def dig(d: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        d = d[key]
    return float(d)  # type: ignore[arg-type]


def report(name: str, empty: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    print(f"\n-- {name}: {full['events']} preloaded events vs an empty database")
    print(f"   {'figure':<30} {'empty':>12} {'preloaded':>12} {'cost ratio':>10}")
    ratios = {}
    for label, path, better in RATIOS:
        a, b = dig(empty, path), dig(full, path)
        ratio = (a / b if better == "higher" else b / a) if a and b else float("nan")
        ratios[label] = round(ratio, 2)
        flag = "" if ratio <= 1.2 else "  > 1.2"
        print(f"   {label:<30} {a:>12.2f} {b:>12.2f} {ratio:>10.2f}{flag}")
    n = full["events"]
    before, after, base = full["size_before"]["live_bytes"], full["size_after"]["live_bytes"], empty["size_before"]
    per_before = (before - base["live_bytes"]) / n
    kept = n - full["prune"]["events"]
    print(
        f"   database: {before / 1e6:.1f} MB live before the prune, {after / 1e6:.1f} MB after "
        f"(file {full['size_after']['bytes'] / 1e6:.1f} MB; empty: {base['live_bytes'] / 1e6:.2f} MB); "
        f"{per_before:.0f} bytes per stored delivery before; prune dropped {full['prune']['events']} events "
        f"and {full['prune']['payloads']} bodies in {full['prune']['seconds']} s; {kept} events kept"
    )
    size_ratio = after / empty["size_after"]["live_bytes"]
    print(f"   size after the prune / the empty database's after the same run: {size_ratio:.2f}")
    print(f"   replay: {full['replay_output']} (empty: {empty['replay_output']})")
    return {
        "ratios": {**ratios, "live bytes after prune": round(size_ratio, 2)},
        "bytes_per_delivery_before": round(per_before),
        "kept_events": kept,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="preloaded deliveries (the issue asks 1M)")
    parser.add_argument("--history-days", type=float, default=365.0)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=2000, help="deliveries in the intake pass")
    parser.add_argument("--rounds", type=int, default=15, help="GETs per page timing (median)")
    parser.add_argument("--intake-rounds", type=int, default=2, help="intake passes (median)")
    parser.add_argument("--issues", type=int, default=10, help="new issues for the worker timing")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ.pop("BRIDGE_TEST_DATABASE_URL", None)
    os.environ.pop("BRIDGE_TEST_BROKER_URL", None)
    info = print_header(f"growth: {args.events} preloaded events, {args.history_days:g} days of history")
    numbers = Numbers()
    results: dict[str, Any] = {"machine": info, "args": vars(args)}
    for kind in args.db.split(","):
        runs = {}
        for label, count in (("empty", 0), ("preloaded", args.events)):
            with redis_database(args.redis_db) as broker:
                if kind == "sqlite":
                    runs[label] = measure(StoreConfig("SQLite + Redis", "", broker), args, count, numbers)
                else:
                    with postgres_database() as url:
                        runs[label] = measure(StoreConfig("PostgreSQL + Redis", url, broker), args, count, numbers)
            print(f"   {kind} {label}: {json.dumps({k: v for k, v in runs[label].items() if k != 'replay_output'})}")
            sys.stdout.flush()
        results[kind] = {**runs, "summary": report(kind, runs["empty"], runs["preloaded"])}
    write_json(args.json, results)


if __name__ == "__main__":
    main()
