"""What-if for intake: the bridge with one cost taken out at a time (bench/whatif_app.py), at 32 senders.

Same method as bench/intake.py (same gunicorn settings, interleaved rounds, forked load generator, ~5 KB
signed bodies, no worker), with more servers loaded in turn: the bare endpoint, the bridge as it is,
and the variants. The variants are upper bounds for the fixes proposed in docs/benchmarks.md, not fixes.

    .venv/bin/python bench/intake_whatif.py [--quick] [--config embedded|redis-pg] [--web-concurrency N]
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BareServer,
    GunicornServer,
    Numbers,
    make_stack,
    print_header,
    store_config,
    temp_dir,
    write_json,
)
from bench.intake import TARGET_LEVEL, bridge_target, intake_passes, median_of, server_target, warm_up

VARIANTS = ("no-wake", "prebuilt-insert", "no-log", "no-wake,prebuilt-insert,no-log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round (~1 min)")
    parser.add_argument("--config", choices=("embedded", "redis-pg"), default="embedded")
    parser.add_argument("--web-concurrency", type=int, default=None, help="WEB_CONCURRENCY for every server")
    parser.add_argument("--requests", type=int, default=None, help="requests per pass (default 2000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db number for redis-pg (must be empty)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    count = args.requests or (800 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)
    info = print_header("intake what-if: the bridge with one cost taken out, 32 senders")
    extra = {"WEB_CONCURRENCY": str(args.web_concurrency)} if args.web_concurrency else {}
    rows: list[dict[str, Any]] = []
    with store_config(args.config, args.redis_db) as config, temp_dir("bench-whatif-") as tmp:
        print(f"-- {config.name}; no worker; WEB_CONCURRENCY={args.web_concurrency or 'default (2)'}")
        stack = make_stack(tmp, config, fake=None, extra_env=extra)
        try:
            stack.start_web()
            with ExitStack() as servers:
                bare = servers.enter_context(BareServer(stack.env, stack.logs / "bare.log"))
                targets = {"bare": server_target(bare), "bridge": bridge_target(stack)}
                for variant in VARIANTS:
                    env = {**stack.env, "BENCH_WHATIF": variant}
                    log = stack.logs / f"whatif-{variant.replace(',', '+')}.log"
                    server = servers.enter_context(GunicornServer("bench.whatif_app:app", env, log))
                    targets[variant] = server_target(server)
                numbers = Numbers()
                for target in targets.values():
                    warm_up(target.port, numbers)
                results = intake_passes(targets, (TARGET_LEVEL,), {TARGET_LEVEL: count}, rounds, numbers)
        finally:
            stack.stop()
    by_target = results[TARGET_LEVEL]
    bare_rps = median_of(by_target["bare"])["rps"]
    bridge_rps = median_of(by_target["bridge"])["rps"]
    print(f"   {'server':<32} {'req/s':>7} {'p50':>6} {'p99':>6} {'vs bare':>8} {'vs bridge':>9} {'CPU ms/req':>10}")
    for name, runs in by_target.items():
        med = median_of(runs)
        row = {
            "server": name,
            **med,
            "ratio_to_bare": med["rps"] / bare_rps,
            "ratio_to_bridge": med["rps"] / bridge_rps,
        }
        rows.append(row)
        print(
            f"   {name:<32} {med['rps']:>7.0f} {med['p50_ms']:>6.1f} {med['p99_ms']:>6.1f}"
            f" {row['ratio_to_bare']:>8.2f} {row['ratio_to_bridge']:>9.2f} {med.get('cpu ms/req: server', 0):>10.2f}"
        )
    print(f"   ({count} requests per pass, {rounds} round(s), medians; latencies in ms)")
    write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
