"""Growth: does the bridge cost the same after years of history? Each figure on a database preloaded with
`--events` stored deliveries (realistic GitHub bodies, with their attempts, Zoho calls and links, spread over
the past `--history-days`; made in bulk by the database itself), as a ratio to the same figure on an empty
database (holding one full page of failed events), in the same run:

- intake req/s and p99 at 32 senders (real gunicorn, real broker, no worker draining);
- /metrics time; admin pages over HTTP, logged in: front, events (done), failed, one event's page (from the
  middle of the history) and its item's page (`/admin/lookup`);
- a worker's time per new issue (webhook POST to the create call at FakeZoho, one worker);
- with `--prune`: `events replay --failed` peak memory and the database size before and after `db prune`
  (RETENTION_DAYS=30, RETENTION_PAYLOAD_DAYS=7; slow at a million rows).

    .venv/bin/python bench/growth.py --db postgresql --events 1000000
    .venv/bin/python bench/growth.py --db sqlite --events 200000

Target: every ratio <= 1.2. A million rows take ~5 GB of disk (SQLite ~13 KB per delivery, PostgreSQL ~4 KB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, text

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
# The empty database holds a full page of failed events (the failed page shows 200) and of done ones (the events
# page shows 50), so both databases render the same pages and the ratio measures history, not a page's length.
BASELINE_FAILED, BASELINE_DONE = 250, 60
STATUSES = [("done", 90), ("superseded", 5), ("skipped", 4), ("failed", 1)]


# -- preload ---------------------------------------------------------------------------------------------


SENTINEL = 987654321  # the issue number in the template delivery, replaced by each row's own


def _templates() -> dict[str, str]:
    """One real delivery (a ~5.4 KB `issues` body, its headers, its normalized event, a Zoho call) as text
    templates in which NUM stands for the issue number."""
    source = GitHubSource(GITHUB_SECRET)
    body, headers = github_webhook(SENTINEL, action="edited")
    event = source.parse(body, headers)
    number = str(SENTINEL)
    request = json.dumps({"name": event.fields.get("title", ""), "description": "x" * 600})
    response = json.dumps({"issues": [{"id": number, "name": "x" * 400}]})
    return {
        "body": body.decode().replace(number, "NUM"),
        "event_json": json.dumps(event.to_json()).replace(number, "NUM"),
        "item_key": event.item_key.replace(number, "NUM"),
        "fields": json.dumps(event.fields, default=str).replace(number, "NUM"),
        "request": request.replace(number, "NUM"),
        "response": response.replace(number, "NUM"),
    }


def preload(database_url: str, count: int, history_days: float, numbers: Numbers, *, only: str | None = None) -> float:
    """`count` finished deliveries of count/5 items over the past `history_days` (all in status `only` when
    given), each with its attempt and Zoho call, and a link per item: made by the database itself from one
    real delivery used as a template (INSERT ... SELECT over a series), 100,000 rows per statement; returns
    the seconds taken."""
    started = time.perf_counter()
    engine = db.make_engine(database_url)
    db.ensure_schema(engine)
    pg = engine.dialect.name == "postgresql"
    first = numbers.take(count // 5 + 1)
    t = _templates()
    now = time.time()
    span = history_days * DAY
    # status by a fixed hash of the row number: 90 % done, 5 % superseded, 4 % skipped, 1 % failed
    pick = "((i * 7919) % 100)"
    status = (
        f"'{only}'"
        if only
        else f"CASE WHEN {pick} < 90 THEN 'done' WHEN {pick} < 95 THEN 'superseded' "
        f"WHEN {pick} < 99 THEN 'skipped' ELSE 'failed' END"
    )
    num = "CAST(:first + (i - 1) / 5 AS TEXT)"
    at = ":now - :span * (1.0 - CAST(i AS FLOAT) / :count)"
    blob = "convert_to({}, 'UTF8')" if pg else "CAST({} AS BLOB)"
    chunk = 100_000
    with engine.begin() as conn:
        base = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM events")).scalar_one())
    for low in range(1, count + 1, chunk):
        high = min(count, low + chunk - 1)
        series = (
            "generate_series(CAST(:low AS BIGINT), CAST(:high AS BIGINT)) AS g(i)"
            if pg
            else "(WITH RECURSIVE g(i) AS (SELECT :low UNION ALL SELECT i + 1 FROM g WHERE i < :high) SELECT i FROM g)"
        )
        params = {"low": low, "high": high, "first": first, "now": now, "span": span, "count": count, "base": base, **t}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (id, source, dedup_key, event_name, item_key, action, source_ts, "  # noqa: S608
                    "received_at, status, attempts, next_attempt_at, last_error, headers, payload, event_json, "
                    "processed_at, origin) "
                    f"SELECT :base + i, 'github', 'preload-' || CAST(:base + i AS TEXT), "
                    "CASE WHEN i % 5 = 1 THEN 'issues.opened' ELSE 'issues.edited' END, "
                    f"replace(:item_key, 'NUM', {num}), CASE WHEN i % 5 = 1 THEN 'created' ELSE 'updated' END, "
                    f"{at} - 1, {at}, {status}, 1, 0.0, "
                    f"CASE WHEN {status} = 'failed' THEN 'Zoho answered 400' END, "
                    '\'{"X-GitHub-Event": "issues"}\', '
                    f"{blob.format(f'replace(:body, {chr(39)}NUM{chr(39)}, {num})')}, "
                    f"replace(:event_json, 'NUM', {num}), {at} + 0.5, 'live' FROM {series}"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO attempts (event_id, number, started_at, finished_at, outcome) "
                    "SELECT id, 1, received_at, processed_at, status FROM events "
                    "WHERE id BETWEEN :base + :low AND :base + :high"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO zoho_calls (event_id, at, method, endpoint, path, request_json, status, "
                    "response_text, duration_ms, dry_run) SELECT id, received_at + 0.2, "
                    "CASE WHEN id % 5 = 1 THEN 'POST' ELSE 'PATCH' END, "
                    "CASE WHEN id % 5 = 1 THEN 'issue.create' ELSE 'issue.update' END, "
                    "'/api/v3/portal/1/projects/2/issues/' || CAST(id AS TEXT), "
                    "replace(:request, 'NUM', CAST(id AS TEXT)), "
                    "CASE WHEN status = 'failed' THEN 400 ELSE 200 END, replace(:response, 'NUM', CAST(id AS TEXT)), "
                    "80.0 + (id * 37) % 200, false FROM events WHERE id BETWEEN :base + :low AND :base + :high"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO links (source, external_id, item_key, portal, project, zoho_issue_id, state, "
                    "last_state_ts, applied_hash, last_fields, created_at, updated_at) "
                    "SELECT 'github', 'github:' || item_key, item_key, '1', '2', 'Z' || CAST(id AS TEXT), 'linked', "
                    "received_at, '0000000000000000000000000000000000000000000000000000000000000000', "
                    "replace(:fields, 'NUM', CAST(id AS TEXT)), received_at, received_at "
                    "FROM events WHERE id BETWEEN :base + :low AND :base + :high AND (id - :base) % 5 = 1"
                ),
                params,
            )
        print(f"      preloaded {high:,} of {count:,} ({time.perf_counter() - started:.0f} s)")
        sys.stdout.flush()
    with engine.begin() as conn:
        conn.execute(delete(db.metric_counters))
        conn.execute(delete(db.metric_deltas))
        counters.seed_from_history(conn)  # as migration 0007 does for an upgraded installation
        if pg:
            conn.exec_driver_sql("SELECT setval('events_id_seq', (SELECT max(id) FROM events))")
    if pg:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        raw = engine.raw_connection()  # outside a transaction: SQLite checkpoints only there
        try:
            raw.cursor().execute("ANALYZE")
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
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


def middle_event(stack: BridgeStack) -> tuple[int, str]:
    """An event from the middle of the history (its page), and its item (the item's page: `/admin/lookup`)."""
    with stack.engine.connect() as conn:
        top = int(conn.execute(text("SELECT MAX(id) FROM events")).scalar_one())
        row = conn.execute(
            text("SELECT id, item_key FROM events WHERE id >= :id ORDER BY id LIMIT 1"), {"id": top // 2}
        )
        event_id, item_key = row.one()
    return int(event_id), str(item_key)


def prune(stack: BridgeStack) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    cmd = [PYTHON, "-m", "bridge.cli", "db", "prune", "--json"]
    result = subprocess.run(cmd, cwd=REPO, env=stack.env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"db prune failed: {result.stdout}{result.stderr}")
    return time.perf_counter() - t0, json.loads(result.stdout.strip().splitlines()[-1])


def setup(stack: BridgeStack, args: argparse.Namespace, preload_events: int, numbers: Numbers) -> dict[str, Any]:
    out: dict[str, Any] = {"events": preload_events}
    if preload_events:
        seconds = preload(stack.settings.database_url, preload_events, args.history_days, numbers)
        out["preload_s"] = round(seconds, 1)
    else:  # a full page of failed and of done events: both databases render the same pages
        preload(stack.settings.database_url, BASELINE_FAILED, 1.0, numbers, only="failed")
        preload(stack.settings.database_url, BASELINE_DONE, 1.0, numbers, only="done")
    db.ensure_schema(stack.engine)
    out["size_before"] = database_bytes(stack)
    return out


def login(stack: BridgeStack) -> Any:
    import requests

    session = requests.Session()
    page = session.get(stack.base_url + "/admin/login", timeout=30).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    form = {"token": ADMIN_TOKEN, "csrf_token": csrf.group(1) if csrf else ""}
    r = session.post(stack.base_url + "/admin/login", data=form, timeout=30)
    assert r.ok, r.status_code
    return session


def measure_both(
    stacks: dict[str, tuple[BridgeStack, FakeZoho]],
    outs: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    numbers: Numbers,
) -> None:
    """Every figure for the empty and the preloaded database in alternation (A, B, A, B …), so a change in the
    machine's load during the run weighs on both alike: this machine is shared and its load moves a lot."""
    for label, (stack, fake) in stacks.items():  # a worker's time per new issue, on a quiet queue, one at a time
        stack.start_worker("worker", concurrency=1)
        outs[label]["worker_s_per_issue"] = round(worker_per_issue(stack, fake, numbers, args.issues), 3)
        stack.kill("worker")
    passes: dict[str, list[Any]] = {label: [] for label in stacks}
    for stack, _fake in stacks.values():  # warm
        run_load_forked(stack.port, github_requests(stack.port, 200, first_number=numbers.take(200)), 8, 60)
    for _ in range(args.intake_rounds):
        for label, (stack, _fake) in stacks.items():
            requests_ = github_requests(stack.port, args.requests, first_number=numbers.take(args.requests))
            passes[label].append(run_load_forked(stack.port, requests_, 32, 60))
    for label, runs in passes.items():
        outs[label]["intake"] = {
            "rps": round(statistics.median(r.rps for r in runs), 1),
            "p99_ms": round(statistics.median(r.p99 for r in runs), 1),
            "refused": {s: n for r in runs for s, n in r.statuses.items() if s != 200},
        }
    sessions = {label: login(stack) for label, (stack, _fake) in stacks.items()}
    urls: dict[str, dict[str, str]] = {}
    for label, (stack, _fake) in stacks.items():
        middle, item = middle_event(stack)
        base = stack.base_url
        urls[label] = {
            "metrics_ms": f"{base}/metrics",
            "admin_ms": f"{base}/admin/",
            "admin_events_ms": f"{base}/admin/?status=done",
            "admin_failed_ms": f"{base}/admin/failed",
            "admin_event_ms": f"{base}/admin/events/{middle}",
            "admin_item_ms": f"{base}/admin/lookup?q={quote(item)}",
        }
    for figure in urls[next(iter(stacks))]:
        times: dict[str, list[float]] = {label: [] for label in stacks}
        for label in stacks:
            timed_get(sessions[label], urls[label][figure], 2)  # warm
        for _ in range(args.rounds):
            for label in stacks:
                times[label].append(timed_get(sessions[label], urls[label][figure], 1))
        for label in stacks:
            outs[label][figure] = round(statistics.median(times[label]), 2)
    if args.prune:
        for label, (stack, _fake) in stacks.items():
            seconds, report = prune(stack)
            outs[label]["prune"] = {
                "seconds": round(seconds, 1),
                **{k: report[k] for k in ("events", "payloads", "zoho_calls")},
            }
            outs[label]["size_after"] = database_bytes(stack)
            outs[label]["replay_failed_kb"], outs[label]["replay_output"] = replay_peak_kb(stack)


RATIOS = [
    ("intake req/s at 32 senders", ("intake", "rps"), "higher"),
    ("intake p99 ms", ("intake", "p99_ms"), "lower"),
    ("/metrics ms", ("metrics_ms",), "lower"),
    ("admin front page ms", ("admin_ms",), "lower"),
    ("admin events page ms", ("admin_events_ms",), "lower"),
    ("admin failed page ms", ("admin_failed_ms",), "lower"),
    ("admin event page ms", ("admin_event_ms",), "lower"),
    ("admin item page ms", ("admin_item_ms",), "lower"),
    ("worker s per new issue", ("worker_s_per_issue",), "lower"),
]
PRUNE_RATIOS = [("replay --failed max RSS KB", ("replay_failed_kb",), "lower")]


def dig(d: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        d = d[key]
    return float(d)  # type: ignore[arg-type]


def report(name: str, empty: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    print(f"\n-- {name}: {full['events']} preloaded events vs an empty database")
    print(f"   {'figure':<30} {'empty':>12} {'preloaded':>12} {'cost ratio':>10}")
    ratios = {}
    for label, path, better in RATIOS + (PRUNE_RATIOS if "prune" in full else []):
        a, b = dig(empty, path), dig(full, path)
        ratio = (a / b if better == "higher" else b / a) if a and b else float("nan")
        ratios[label] = round(ratio, 2)
        flag = "" if ratio <= 1.2 else "  > 1.2"
        print(f"   {label:<30} {a:>12.2f} {b:>12.2f} {ratio:>10.2f}{flag}")
    n = full["events"]
    before, base = full["size_before"]["live_bytes"], empty["size_before"]
    per_before = (before - base["live_bytes"]) / n
    print(f"   database: {before / 1e6:.1f} MB live ({per_before:.0f} bytes per stored delivery)")
    if "prune" not in full:
        return {"ratios": ratios, "bytes_per_delivery_before": round(per_before)}
    after = full["size_after"]["live_bytes"]
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
    parser.add_argument("--prune", action="store_true", help="then `db prune` and `replay --failed` (slow at 1M)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ.pop("BRIDGE_TEST_DATABASE_URL", None)
    os.environ.pop("BRIDGE_TEST_BROKER_URL", None)
    info = print_header(f"growth: {args.events} preloaded events, {args.history_days:g} days of history")
    numbers = Numbers()
    results: dict[str, Any] = {"machine": info, "args": vars(args)}
    for kind in args.db.split(","):
        with contextlib.ExitStack() as scope:
            stacks: dict[str, tuple[BridgeStack, FakeZoho]] = {}
            runs: dict[str, dict[str, Any]] = {}
            for label, count, redis_db in (("empty", 0, args.redis_db), ("preloaded", args.events, args.redis_db - 1)):
                broker = scope.enter_context(redis_database(redis_db))
                url = scope.enter_context(postgres_database()) if kind == "postgresql" else ""
                tmp = scope.enter_context(temp_dir(f"bench-growth-{label}-"))
                fake = scope.enter_context(FakeZoho())
                extra = {"ADMIN_TOKEN": ADMIN_TOKEN, "RETENTION_DAYS": "30", "RETENTION_PAYLOAD_DAYS": "7"}
                stack = make_stack(tmp, StoreConfig(f"{kind} {label}", url, broker), fake, extra)
                runs[label] = setup(stack, args, count, numbers)
                scope.callback(stack.stop)
                stack.start_web()
                stacks[label] = (stack, fake)
            measure_both(stacks, runs, args, numbers)
        for label, out in runs.items():
            print(f"   {kind} {label}: {json.dumps({k: v for k, v in out.items() if k != 'replay_output'})}")
        sys.stdout.flush()
        results[kind] = {**runs, "summary": report(kind, runs["empty"], runs["preloaded"])}
    write_json(args.json, results)


if __name__ == "__main__":
    main()
