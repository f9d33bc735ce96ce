"""Scale: the intake and delivery figures with 1, 2 and 4 worker processes, on Redis + PostgreSQL.

For each worker count N (N celery workers, pool of `--concurrency` each, default 1: N worker processes
in all; beat running), with a fresh PostgreSQL database and Redis db each time:

- intake at 32 senders while the workers drain what it stores (the bare endpoint, same gunicorn
  settings, loaded in turn as the baseline; the workers finish each pass's backlog before the next pass);
- delivery latency: `--items` new issues at `--rate`/s, webhook POST to the create call at FakeZoho;
- drain: `--drain` new issues posted at once, issues created per second (ratio to N = 1);
- rate-limited backlog (fresh stack): `--backlog` new issues at L per W s: time against C/L windows,
  and the most calls FakeZoho saw in any window (must be <= L with every worker count).

    .venv/bin/python bench/scale.py [--quick] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import delivery, intake
from bench.common import (
    BareServer,
    FakeZoho,
    Numbers,
    make_stack,
    print_header,
    start_workers,
    store_config,
    temp_dir,
    verdict,
    write_json,
)


def one_count(workers: int, args: argparse.Namespace, opts: delivery.Options) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers, "concurrency": opts.concurrency}
    with store_config("redis-pg", args.redis_db) as config, temp_dir("bench-scale-") as tmp, FakeZoho() as fake:
        stack = make_stack(tmp, config, fake)
        try:
            stack.start_web()
            start_workers(stack, workers, opts.concurrency)
            stack.start_beat()
            numbers = Numbers()
            delivery.warm_up(stack, fake, numbers, 2 * workers * opts.concurrency)
            with BareServer(stack.env, stack.logs / "bare.log") as bare:
                intake.warm_up(bare.port, numbers)

                def drained(name: str) -> None:
                    if name == "bridge" and not delivery.wait_idle(stack, 300):
                        print("   !! the workers did not drain the intake pass within 300 s")

                targets = {"bare": intake.server_target(bare), "bridge": intake.bridge_target(stack)}
                level = intake.TARGET_LEVEL
                started = time.time()
                results = intake.intake_passes(
                    targets, (level,), {level: args.requests}, args.rounds, numbers, after_pass=drained
                )
                out["intake"] = intake.report(results)[0]
                out["intake_drain_seconds"] = time.time() - started
            out["latency"] = delivery.latency_phase(stack, fake, numbers, opts)
            out["drain"] = delivery.drain_phase(stack, fake, numbers, opts, workers)
        finally:
            stack.stop()
    lat, drain = out["latency"], out["drain"]
    print(
        f"   latency, {lat['items']} new issues at {lat['rate_per_s']:g}/s: p50 {lat['p50_ms']:.0f} ms,"
        f" p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms (created {lat['created']})"
    )
    print(
        f"   drain, {drain['items']} new issues at once: {drain['items_per_s']:.1f} issues/s"
        f" (workers' CPU {drain.get('cpu: workers', float('nan')):.1f} ms per issue,"
        f" machine busy {drain.get('cpu: machine busy %', float('nan')):.0f}%)"
    )
    if not args.skip_backlog:
        with store_config("redis-pg", args.redis_db) as config, temp_dir("bench-scale-backlog-") as tmp:
            out["backlog"] = delivery.backlog_phase(config, opts, tmp)
        delivery.print_backlog(out["backlog"])
    sys.stdout.flush()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller passes, one intake round (~3 min)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size of each worker (default 1)")
    parser.add_argument("--requests", type=int, default=None, help="intake: requests per pass (default 1000)")
    parser.add_argument("--rounds", type=int, default=None, help="intake: rounds (default 2)")
    parser.add_argument("--items", type=int, default=None, help="latency: new issues (default 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="latency: webhooks per second (default 10)")
    parser.add_argument("--drain", type=int, default=None, help="drain: new issues posted at once (default 200)")
    parser.add_argument("--limit", type=int, default=30, help="rate-limited backlog: L calls per window")
    parser.add_argument("--window", type=float, default=10.0, help="rate-limited backlog: window in seconds")
    parser.add_argument("--backlog", type=int, default=None, help="rate-limited backlog: new issues (default 40)")
    parser.add_argument("--skip-backlog", action="store_true")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db number (must be empty)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    args.requests = args.requests or (500 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    counts = [int(n) for n in args.workers.split(",")]
    opts = delivery.Options(
        config="redis-pg",
        workers=1,
        concurrency=args.concurrency,
        items=args.items or (50 if args.quick else 100),
        rate=args.rate,
        drain=args.drain or (100 if args.quick else 200),
        burst=50,
        limit=args.limit,
        window=args.window,
        backlog=args.backlog or (25 if args.quick else 40),
        redis_db=args.redis_db,
        profile_dir=None,
    )
    info = print_header("scale: worker processes on Redis + PostgreSQL")
    results = []
    for n in counts:
        opts.workers = n
        print(f"-- {n} worker process(es) x pool {opts.concurrency}, Redis + PostgreSQL, beat running")
        results.append(one_count(n, args, opts))
    print("== summary")
    base = results[0]["drain"]["items_per_s"]
    print(
        f"   {'workers':>7} | {'intake req/s':>12} {'p99':>6} {'vs bare':>7} | {'latency p50':>11} {'p99':>6} |"
        f" {'drain/s':>8} {'vs first':>8} | {'backlog x ideal':>15} {'max/window':>10}"
    )
    for r in results:
        i, lat, d, b = r["intake"], r["latency"], r["drain"], r.get("backlog", {})
        backlog = f"{b['ratio']:.2f}" if b else "-"
        worst = f"{b['max_calls_in_window']}/{b['limit']} {verdict(b['window_met'])}" if b else "-"
        print(
            f"   {r['workers']:>7} | {i['bridge']['rps']:>12.0f} {i['bridge']['p99_ms']:>6.1f} {i['ratio']:>7.2f} |"
            f" {lat['p50_ms']:>11.0f} {lat['p99_ms']:>6.0f} | {d['items_per_s']:>8.1f}"
            f" {d['items_per_s'] / base:>8.2f} | {backlog:>15} {worst:>10}"
        )
    write_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
