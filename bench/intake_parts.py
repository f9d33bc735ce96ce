"""Intake, step by step: CPU and wall time per delivery of each step of the intake view, in one process.

The steps `bridge/web/intake.py` runs for an accepted delivery, each timed over the same ~5 KB signed
deliveries: verify, parse, the event's JSON, `store.record_delivery`, the "delivery accepted" log line
(to /dev/null), and the wake-up (`celery.send_task`). Alongside, the insert done with one prebuilt
statement (bench/whatif_app.py's `record_delivery_prebuilt`), to size that fix. The shares are of the sum
of the steps measured in the same run; gunicorn and Flask's own cost is in bench/intake.py (bare endpoint).

    .venv/bin/python bench/intake_parts.py [--quick] [--config embedded|redis-pg]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    GITHUB_SECRET,
    REPO,
    github_webhook,
    print_header,
    store_config,
    temp_dir,
    write_json,
)
from bench.variants import record_delivery_prebuilt
from bridge import store
from bridge.process.broker import TASK_SYNC_ITEM, ensure_embedded_redis, make_celery, stop_embedded_redis
from bridge.process.logs import configure_logging
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource


def timed(count: int, fn: Callable[[int], object]) -> tuple[float, float]:
    """(CPU ms, wall ms) per call of fn(i) for i in range(count)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        fn(i)
    return 1000 * (time.process_time() - cpu) / count, 1000 * (time.perf_counter() - wall) / count


def run(config_name: str, count: int, redis_db: int) -> dict[str, Any]:
    with ExitStack() as stack:
        config = stack.enter_context(store_config(config_name, redis_db))
        tmp = stack.enter_context(temp_dir("bench-parts-"))
        env = {
            "BRIDGE_DATA_DIR": str(tmp),
            "DATABASE_URL": config.database_url,
            "BROKER_URL": config.broker_url,
            "MAPPINGS_DIR": str(REPO / "mappings" / "examples"),
            "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        }
        settings = load_settings(env, read_dotenv=False)
        configure_logging(settings)
        devnull = stack.enter_context(open(os.devnull, "w"))  # the log handler's stream
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
        engine = Runtime(settings).engine
        if settings.embedded_broker:
            ensure_embedded_redis(settings)
            stack.callback(stop_embedded_redis, settings)
        celery = make_celery(settings)
        source = GitHubSource(GITHUB_SECRET)
        deliveries = [github_webhook(n) for n in range(1, 3 * count + 1)]
        events = [source.parse(body, headers) for body, headers in deliveries]
        log = logging.getLogger("bridge.intake")

        def record(i: int) -> object:
            body, headers = deliveries[i]
            key = headers["X-GitHub-Delivery"]
            return store.record_delivery(
                engine, events[i], dedup_key=key, headers={"X-GitHub-Event": "issues"}, payload=body
            )

        def record_prebuilt(i: int) -> object:
            body, headers = deliveries[count + i]
            key = headers["X-GitHub-Delivery"]
            return record_delivery_prebuilt(
                engine, events[count + i], dedup_key=key, headers={"X-GitHub-Event": "issues"}, payload=body
            )

        extra = {"source": "github", "event_id": 1, "event": "issues.opened", "item": "acme/web#1", "answer": 200}
        steps: dict[str, Callable[[int], object]] = {
            "verify (HMAC)": lambda i: source.verify(*deliveries[i]),
            "parse": lambda i: source.parse(*deliveries[i]),
            "event JSON": lambda i: json.dumps(events[i].to_json()),
            "store.record_delivery": record,
            "log line": lambda i: log.info("delivery accepted", extra={**extra, "ms": 1.0}),
            "wake-up (celery send_task)": lambda i: celery.send_task(TASK_SYNC_ITEM, args=("github", f"acme/web#{i}")),
        }
        results = {name: timed(count, fn) for name, fn in steps.items()}
        prebuilt = timed(count, record_prebuilt)
        engine.dispose()
    return {"config": config.name, "count": count, "steps": results, "prebuilt_insert": prebuilt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 deliveries per step (~10 s)")
    parser.add_argument("--config", choices=("embedded", "redis-pg", "both"), default="both")
    parser.add_argument("--count", type=int, default=None, help="deliveries per step (default 2000)")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db number for redis-pg (must be empty)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    count = args.count or (500 if args.quick else 2000)
    info = print_header("intake, step by step, in one process")
    out = []
    for name in ["embedded", "redis-pg"] if args.config == "both" else [args.config]:
        r = run(name, count, args.redis_db)
        out.append(r)
        total = sum(cpu for cpu, _ in r["steps"].values())
        print(f"-- {r['config']}; {count} deliveries per step; CPU and wall ms per delivery, share of the steps' CPU")
        for step, (cpu, wall) in r["steps"].items():
            print(f"   {step:<28} cpu {cpu:6.3f}  wall {wall:6.3f}  {100 * cpu / total:5.1f}%")
        print(f"   {'sum of the steps':<28} cpu {total:6.3f}")
        cpu, wall = r["prebuilt_insert"]
        base = r["steps"]["store.record_delivery"][0]
        label = "insert, prebuilt statement"
        print(f"   {label:<28} cpu {cpu:6.3f}  wall {wall:6.3f}  ({cpu / base:.2f} x record_delivery)")
    write_json(args.json, {"machine": info, "results": out})


if __name__ == "__main__":
    main()
