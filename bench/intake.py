"""Intake: webhooks accepted per second and p50/p99 latency through gunicorn, against a bare endpoint.

The bridge (`bridge.web.wsgi:app`) and the baseline (`bench/bare_app.py`, 200 and no work) run side by side
under the Procfile's settings (`gunicorn -c python:bridge.process.gunicorn_conf`). For each sender count the two
are loaded in turn, `--rounds` times (medians are reported), by threads of this process: one connection
per sender, kept alive when the server allows it (gunicorn's sync workers close after every response).
Bodies: ~5 KB signed GitHub `issues.opened` deliveries (testkit/factories.py, padded) for distinct issues.
No worker runs: this is intake only (verify, parse, store the row, queue the wake-up, answer).

    .venv/bin/python bench/intake.py [--quick] [--config embedded|redis-pg|both] [--profile] [--before REF]

With `--before REF` the code of git revision REF is started too (its own data, its own database) and loaded in
turn with the other two, so the old and the new intake are compared in the same run.

Targets (32 senders): the bridge's throughput >= 0.5 of the bare endpoint's on the embedded default (>= 0.4 on
Redis + PostgreSQL), p99 < 50 ms, and <= 1.0 ms of server CPU per delivery.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    GITHUB_PATH,
    REDIS_HOST,
    REDIS_PORT,
    BareServer,
    BridgeStack,
    CpuMeter,
    GunicornServer,
    LoadResult,
    Numbers,
    OldBridgeStack,
    PySpy,
    StoreConfig,
    code_tree,
    github_requests,
    make_stack,
    postgres_database,
    print_header,
    process_tree,
    profile_split,
    run_load_forked,
    store_config,
    store_pids,
    summarize_profile,
    temp_dir,
    verdict,
    write_json,
)

LEVELS = (1, 8, 32)
THREADS = {
    "request threads": "ThreadWorker.handle (",  # gunicorn gthread
    "intake writer": "GroupWriter._run (",
    "wake-publisher thread": "WakePublisher._run (",
}
# The steps of the intake view, for the profile summary.
FOCUS = (
    "GitHubSource.verify",
    "GitHubSource.parse",
    "GroupWriter.record",
    "WakePublisher.wake",
    "Logger.info",
    "jsonify",
)
TARGET_RATIO = {"embedded": 0.5, "redis-pg": 0.4}
TARGET_P99_MS, TARGET_CPU_MS, TARGET_LEVEL = 50.0, 1.0, 32


def warm_up(port: int, numbers: Numbers, count: int = 200) -> None:
    result = run_load_forked(port, github_requests(port, count, first_number=numbers.take(count)), 4, 30)
    if result.statuses.get(200, 0) != count:
        raise SystemExit(f"warm-up on port {port} failed: {result.summary()}")


@dataclass
class Target:
    """A server to load, and how to find the processes whose CPU time counts while it is loaded
    (looked up at the start of each pass: gunicorn workers and database backends come and go)."""

    port: int
    cpu_groups: Callable[[], dict[str, list[int]]]


def bridge_target(stack: BridgeStack) -> Target:
    return Target(stack.port, lambda: {"server": process_tree(stack.procs["web"].pid), **store_pids(stack)})


def server_target(server: GunicornServer) -> Target:
    assert server.proc is not None
    pid = server.proc.pid
    return Target(server.port, lambda: {"server": process_tree(pid)})


def intake_passes(
    targets: dict[str, Target],
    levels: tuple[int, ...],
    counts: dict[int, int],
    rounds: int,
    numbers: Numbers,
    max_seconds: float = 60.0,
    after_pass: Callable[[str], None] | None = None,
) -> dict[int, dict[str, list[LoadResult]]]:
    """{level: {target name: [result per round]}}; targets are loaded in turn within each round.

    `after_pass(target name)` runs after each pass (e.g. to let workers drain what the pass stored).
    """
    results: dict[int, dict[str, list[LoadResult]]] = {}
    for level in levels:
        results[level] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, target in targets.items():
                requests = github_requests(target.port, counts[level], first_number=numbers.take(counts[level]))
                with CpuMeter(target.cpu_groups()) as meter:
                    result = run_load_forked(target.port, requests, level, max_seconds)
                meter.used.pop("this process", None)  # idle: the load generator is a forked child
                result.cpu = {**result.cpu, **meter.used}
                results[level][name].append(result)
                bad = {s: n for s, n in result.statuses.items() if s != 200}
                if bad or result.errors:
                    print(f"   !! {name} at {level} senders: statuses {bad} errors {dict(result.errors)}")
                if after_pass is not None:
                    after_pass(name)
    return results


def median_of(results: list[LoadResult]) -> dict[str, float]:
    out = {
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": statistics.median(r.p50 for r in results),
        "p99_ms": statistics.median(r.p99 for r in results),
        "completed": sum(r.completed for r in results),
    }
    for group in results[0].cpu:
        if group.endswith("%"):
            out[group] = statistics.median(r.cpu[group] for r in results)
        else:
            out[f"cpu ms/req: {group}"] = statistics.median(r.cpu_ms_per_request(group) for r in results)
    return out


def report_cpu(results: dict[int, dict[str, list[LoadResult]]]) -> None:
    """Where the CPU went: ms of CPU per request by process group, and how busy the machine was."""
    print("   CPU per request (ms) by process group, and machine busy % (both cores):")
    for level, by_target in results.items():
        for name, runs in by_target.items():
            med = median_of(runs)
            parts = [f"{k.removeprefix('cpu ms/req: ')} {v:.2f}" for k, v in med.items() if k.startswith("cpu ms")]
            busy = med.get("machine busy %", float("nan"))
            print(f"   {level:>7} senders {name:>6}: " + ", ".join(parts) + f"; machine busy {busy:.0f}%")


def report(
    results: dict[int, dict[str, list[LoadResult]]], baseline: str = "bare", target_ratio: float = 0.5
) -> list[dict[str, Any]]:
    """Each server against the baseline at each sender count; the targets are checked for "bridge"."""
    rows = []
    names = [n for n in next(iter(results.values())) if n != baseline]
    head = "".join(f" | {n + ' req/s':>14} {'p50':>6} {'p99':>6} {'ratio':>5}" for n in names)
    print(f"   {'senders':>7} | {baseline + ' req/s':>10} {'p50':>6} {'p99':>6}{head}")
    for level, by_target in results.items():
        base = median_of(by_target[baseline])
        row: dict[str, Any] = {"senders": level, baseline: base}
        line = f"   {level:>7} | {base['rps']:>10.0f} {base['p50_ms']:>6.1f} {base['p99_ms']:>6.1f}"
        for name in names:
            subj = median_of(by_target[name])
            ratio = subj["rps"] / base["rps"] if base["rps"] else float("nan")
            row[name], row[f"ratio {name}"] = subj, ratio
            line += f" | {subj['rps']:>14.0f} {subj['p50_ms']:>6.1f} {subj['p99_ms']:>6.1f} {ratio:>5.2f}"
        print(line)
        if "bridge" in row:
            row["ratio"] = row["ratio bridge"]
        if level == TARGET_LEVEL and "bridge" in row:
            bridge = row["bridge"]
            row["ratio_met"] = row["ratio bridge"] >= target_ratio
            row["p99_met"] = bridge["p99_ms"] < TARGET_P99_MS
            row["cpu_met"] = bridge.get("cpu ms/req: server", float("inf")) <= TARGET_CPU_MS
            print(
                f"   bridge at {level} senders: ratio >= {target_ratio}: {verdict(row['ratio_met'])}; "
                f"p99 < {TARGET_P99_MS:.0f} ms: {verdict(row['p99_met'])}; "
                f"server CPU <= {TARGET_CPU_MS} ms per delivery: {verdict(row['cpu_met'])}"
            )
        rows.append(row)
    print("   (latencies in ms; medians over rounds)")
    report_cpu(results)
    sys.stdout.flush()
    return rows


def profile_pass(stack: BridgeStack, bare: GunicornServer, count: int, numbers: Numbers, out_dir: Path) -> None:
    """One more 32-sender pass on each server under py-spy (not part of the measured figures)."""
    assert bare.proc is not None
    for name, pid, port in (("bridge", stack.procs["web"].pid, stack.port), ("bare", bare.proc.pid, bare.port)):
        out = out_dir / f"intake-{name}.pyspy.txt"
        requests = github_requests(port, count, first_number=numbers.take(count))
        with PySpy(pid, out):
            result = run_load_forked(port, requests, TARGET_LEVEL, 60)
        print(f"   profiled {name}: {result.rps:.0f} req/s under py-spy, on-CPU samples (raw stacks: {out})")
        profile_split(out, THREADS, title=f"{name}: on-CPU samples by thread")
        summarize_profile(out, "ThreadWorker.handle (", top=25, title=f"{name}: request threads, per request")
    bridge_out = out_dir / "intake-bridge.pyspy.txt"
    summarize_profile(bridge_out, "handle (bridge/web/intake.py", top=12, title="bridge: the view", focus=FOCUS)
    summarize_profile(bridge_out, "GroupWriter._run (", top=12, title="bridge: intake writer thread")
    summarize_profile(bridge_out, "WakePublisher._run (", top=12, title="bridge: wake-publisher thread")


def stored_rows(stack: BridgeStack) -> int:
    return sum(stack.counts().values())


def run_config(config_name: str, args: argparse.Namespace, counts: dict[int, int]) -> dict[str, Any]:
    with store_config(config_name, args.redis_db) as config, temp_dir("bench-intake-") as tmp:
        print(f"-- {config.name}; no worker running; WEB_CONCURRENCY={args.web_concurrency or 'default (2)'}")
        extra = {"WEB_CONCURRENCY": str(args.web_concurrency)} if args.web_concurrency else {}
        stack = make_stack(tmp, config, fake=None, extra_env=extra)
        with contextlib.ExitStack() as old:
            older = old_stack(old, args.before, config_name, args, tmp, extra) if args.before else None
            try:
                stack.start_web()
                if older is not None:
                    older.start_web()
                rows = passes(stack, older, args, counts, config_name)
            finally:
                stack.stop()
                if older is not None:
                    older.stop()
    return {"config": config.name, "rows": rows}


def old_stack(
    old: contextlib.ExitStack, ref: str, config_name: str, args: argparse.Namespace, tmp: Path, extra: dict[str, str]
) -> BridgeStack:
    """The bridge at git revision `ref`, with a store of its own (a second PostgreSQL database on redis-pg)."""
    code = old.enter_context(code_tree(ref))
    config = StoreConfig("before")
    if config_name == "redis-pg":
        url = old.enter_context(postgres_database())
        config = StoreConfig("before", url, f"redis://{REDIS_HOST}:{REDIS_PORT}/{args.redis_db}")
    (tmp / "before").mkdir()
    return OldBridgeStack(code, tmp / "before", config, extra)


def passes(
    stack: BridgeStack, older: BridgeStack | None, args: argparse.Namespace, counts: dict[int, int], config_name: str
) -> list[dict[str, Any]]:
    with BareServer(stack.env, stack.logs / "bare.log") as bare:
        numbers = Numbers()
        warm_up(stack.port, numbers)
        warm_up(bare.port, numbers)
        targets = {"bare": server_target(bare), "bridge": bridge_target(stack)}
        if older is not None:
            warm_up(older.port, numbers)
            targets = {"bare": targets["bare"], "before": bridge_target(older), "bridge": targets["bridge"]}
        before = stored_rows(stack)
        results = intake_passes(targets, LEVELS, counts, args.rounds, numbers)
        accepted = sum(r.statuses.get(200, 0) for by in results.values() for r in by["bridge"])
        stored = stored_rows(stack) - before
        rows = report(results, target_ratio=TARGET_RATIO[config_name])
        print(f"   rows stored by the bridge during the passes: {stored} (200 answers: {accepted})")
        if stored != accepted:
            print("   !! the bridge answered 200 without storing every delivery")
        if args.profile:
            profile_pass(stack, bare, counts[TARGET_LEVEL], numbers, Path(args.profile_dir))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round (~1 min)")
    parser.add_argument("--config", choices=("embedded", "redis-pg", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per sender count (default 3)")
    parser.add_argument("--requests", type=int, default=None, help="requests per pass at 8 and 32 senders")
    parser.add_argument("--web-concurrency", type=int, default=None, help="WEB_CONCURRENCY for both servers")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db number for redis-pg (must be empty)")
    parser.add_argument("--profile", action="store_true", help="then profile a 32-sender pass with py-spy")
    parser.add_argument("--profile-dir", default="bench/profiles")
    parser.add_argument("--before", metavar="REF", help="also load the bridge at this git revision, in turn")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    many = args.requests or (800 if args.quick else 2500)
    counts = {1: max(100, many // 4), 8: many, 32: many}
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.profile:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    info = print_header("intake: bridge vs bare Flask endpoint, same gunicorn settings")
    print(f"   requests per pass: {counts}; rounds: {args.rounds}; body ~5.4 KB; path {GITHUB_PATH}")
    configs = ["embedded", "redis-pg"] if args.config == "both" else [args.config]
    out = [run_config(name, args, counts) for name in configs]
    write_json(args.json, {"machine": info, "results": out})


if __name__ == "__main__":
    main()
