"""Database work per synced item: transactions and statements the sync service runs for each new issue
and each update, counted exactly (SQLAlchemy events) in this process against FakeZoho.

The delivery and scale benchmarks show the worker's time going to the database; this says how many round
trips that is and which `bridge` functions make them; then the same work again on as many new items, not
counted, for the time and the CPU the calling thread spent per item (the worker's own cost: the fake answers
on threads of its own). Each item is stored with `store.record_delivery`
(as the intake does) and processed with `Runtime.sync.process_item` (what the Celery task calls), with the
product's defaults (COALESCE_MS=300: the events are made older than the window first, so nothing sleeps).
Phases: a new issue, an edit, a comment on a linked item. (The figures of the delivery core before the fenced
claims of issue #11, measured with a frozen copy of it that was removed since, are kept in docs/benchmarks.md.)

    .venv/bin/python bench/sync_db_ops.py [--quick] [--config embedded|redis-pg] [--items N] [--limit 0|100]
                                          [--profile N]

`--profile N`: the timed pass of each phase under cProfile (its CPU figure is then not comparable), the N
functions with the most own time printed after it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from bench.common import (
    GITHUB_SECRET,
    REPO,
    FakeZoho,
    github_webhook,
    postgres_database,
    print_header,
    temp_dir,
    write_json,
)
from bridge import store
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import schema as db


class DbCounter:
    """Counts transactions and statements on an engine, by the `bridge` function that ran them."""

    def __init__(self, engine: Engine) -> None:
        self.commits = self.rollbacks = self.statements = self.checkouts = 0
        self.by_site: Counter[str] = Counter()
        self.on = True  # off while CPU is measured: naming each statement's caller costs more than the statement
        event.listen(engine.pool, "checkout", self._checkout)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        event.listen(engine, "before_cursor_execute", self._statement)

    def _checkout(self, *_args: Any) -> None:
        if not self.on:
            return
        self.checkouts += 1  # with pool_pre_ping (PostgreSQL) each one costs a `SELECT 1` round trip

    def _commit(self, _conn: Any) -> None:
        self.commits += self.on

    def _rollback(self, _conn: Any) -> None:
        self.rollbacks += self.on

    def _statement(self, *_args: Any) -> None:
        if not self.on:
            return
        self.statements += 1
        self.by_site[_call_site()] += 1

    def snapshot(self) -> tuple[int, int, int, int, Counter[str]]:
        return self.commits, self.rollbacks, self.statements, self.checkouts, Counter(self.by_site)


def _call_site() -> str:
    """The innermost frame in bridge/ that is not the engine set-up: `module.function`."""
    for frame in reversed(traceback.extract_stack(limit=40)):
        path = frame.filename
        if "/bridge/" in path and not path.endswith(("bridge/store/schema.py", "bridge/store/driver.py")):
            module = path.rsplit("/bridge/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{module}.{frame.name}"
    return "(sqlalchemy / other)"


def run(config: str, items: int, limit: int, profile: int = 0) -> dict[str, Any]:
    with ExitStack() as stack:
        tmp = stack.enter_context(temp_dir("bench-syncdb-"))
        fake = stack.enter_context(FakeZoho(keep_alive=True))  # persistent connections, as Zoho's servers keep them
        database_url = stack.enter_context(postgres_database()) if config == "redis-pg" else ""
        env = {
            "BRIDGE_DATA_DIR": str(tmp),
            "DATABASE_URL": database_url,
            "BROKER_URL": "redis://127.0.0.1:6379/15",  # never used: no task is sent from here
            "MAPPINGS_DIR": str(REPO / "mappings" / "examples"),
            "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_PORTAL_ID": fake.portal_id,
            "ZOHO_RATE_LIMIT_PER_MINUTE": str(limit),
            "LOG_LEVEL": "WARNING",
        }
        runtime = Runtime(load_settings(env, read_dotenv=False))
        from testkit.factories import comment_event, github_request  # the payload builders the tests use

        engine = runtime.engine
        source = GitHubSource(GITHUB_SECRET)
        counter = DbCounter(engine)

        def store_event(number: int, event: str = "issues", **kwargs: Any) -> None:
            if event == "issue_comment":
                payload = comment_event("created", number=number, comment_id=number, text="a comment", commented=90)
                body, headers = github_request(GITHUB_SECRET, "issue_comment", payload, delivery=f"c-{number}")
            else:
                body, headers = github_webhook(number, **kwargs)
            event_id, _ = store.record_delivery(
                engine, source.parse(body, headers), dedup_key=headers["X-GitHub-Delivery"], headers={}, payload=body
            )
            with engine.begin() as conn:  # older than the coalescing window: the worker does not wait
                conn.execute(update(db.events).where(db.events.c.id == event_id).values(received_at=time.time() - 5))

        def phase(name: str, first: int, event: str = "issues", **kwargs: Any) -> dict[str, Any]:
            numbers = range(first, first + items)
            timed = range(first + items, first + 2 * items)  # the same work again, not counted: its CPU
            for n in [*numbers, *timed]:
                store_event(n, event, **kwargs)
            calls_before = len(fake.api_calls())
            before = counter.snapshot()
            for n in numbers:
                runtime.sync.process_item("github", f"acme/web#{n}")
            after = counter.snapshot()
            counter.on = False
            profiler = cProfile.Profile() if profile else None
            started, cpu_started = time.perf_counter(), time.thread_time()
            if profiler is not None:
                profiler.enable()
            for n in timed:
                runtime.sync.process_item("github", f"acme/web#{n}")
            if profiler is not None:
                profiler.disable()
            seconds = time.perf_counter() - started
            cpu = time.thread_time() - cpu_started  # this thread only: FakeZoho answers on threads of its own
            counter.on = True
            if profiler is not None:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile)
                print(f"-- profile, {name} (own time, {items} items):\n{text.getvalue()}")
            sites = after[4] - before[4]
            return {
                "phase": name,
                "items": items,
                "zoho_calls_per_item": (len(fake.api_calls()) - calls_before) / (2 * items),
                "commits_per_item": (after[0] - before[0]) / items,
                "rollbacks_per_item": (after[1] - before[1]) / items,
                "statements_per_item": (after[2] - before[2]) / items,
                "checkouts_per_item": (after[3] - before[3]) / items,
                "ms_per_item": 1000 * seconds / items,
                "cpu_ms_per_item": 1000 * cpu / items,
                "statements_by_site": {k: v / items for k, v in sites.most_common()},
            }

        # A first item so the token, the field metadata and the rate-limit slots exist.
        store_event(1)
        runtime.sync.process_item("github", "acme/web#1")
        results = [
            phase("new issue", 5000),
            phase("edit (title)", 5000, action="edited", title="Edited", updated=60.0),
            phase("comment", 5000, "issue_comment"),
        ]
        engine.dispose()
    return {"config": config, "limit": limit, "phases": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("embedded", "redis-pg"), default="redis-pg")
    parser.add_argument("--quick", action="store_true", help="5 items per phase (~15 s)")
    parser.add_argument("--items", type=int, default=None, help="items per phase (default 20)")
    parser.add_argument("--limit", type=int, default=None, help="ZOHO_RATE_LIMIT_PER_MINUTE (default: 0 and 100)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile the timed passes: top N")
    args = parser.parse_args()
    args.items = args.items or (5 if args.quick else 20)
    info = print_header("sync service: database work per item, counted in-process")
    out = []
    for limit in [args.limit] if args.limit is not None else [0, 100]:
        result = run(args.config, args.items, limit, args.profile)
        out.append(result)
        label = "limiter off" if limit == 0 else f"limiter on ({limit}/min, the default)"
        print(f"-- {args.config}; ZOHO_RATE_LIMIT_PER_MINUTE={limit} ({label}); {args.items} items per phase")
        for p in result["phases"]:
            print(
                f"   {p['phase']:<24}: {p['zoho_calls_per_item']:.1f} Zoho calls;"
                f" {p['commits_per_item'] + p['rollbacks_per_item']:.1f} transactions"
                f" ({p['commits_per_item']:.1f} write,"
                f" {p['rollbacks_per_item']:.1f} read-only), {p['statements_per_item']:.1f} statements,"
                f" {p['checkouts_per_item']:.1f} pool checkouts; {p['ms_per_item']:.1f} ms per item,"
                f" {p['cpu_ms_per_item']:.2f} ms of the worker thread's CPU"
            )
            sites = ", ".join(f"{k} {v:g}" for k, v in p["statements_by_site"].items())
            print(f"      statements by caller: {sites}")
    write_json(args.json, {"machine": info, "results": out})


if __name__ == "__main__":
    main()
