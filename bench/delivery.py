"""Delivery: webhook → Zoho latency, backlog drain, calls per burst, and a rate-limited backlog.

Real processes (testkit/harness.py: gunicorn, celery worker(s), beat) against FakeZoho, a real HTTP
server in this process, with the product's default timings (COALESCE_MS=300, STALE_AFTER_SECONDS=60).

1. latency: `--items` new GitHub issues sent at `--rate`/s, no Zoho limit; latency = the create call
   arriving at the fake minus the webhook POST. Baseline: the floor this design allows, measured in
   the same run: coalescing window + the intake answer + the lookup and create round trips made
   directly to the fake.
2. drain: `--drain` new issues posted at once, no limit: issues created per second (and CPU per issue).
   Baseline: the same lookup + create round trips made directly from one thread.
3. burst: 50 `issues.edited` deliveries for one existing issue, then for one new issue (opened + 49
   edits), as fast as one sender goes: Zoho calls made (target <= 3).
4. rate-limited backlog (a fresh stack): ZOHO_RATE_LIMIT_PER_MINUTE=L per ZOHO_RATE_WINDOW_SECONDS=W,
   FakeZoho enforcing the same L per W; `--backlog` new issues posted at once. Time from the first POST
   to the last create, against the ideal C/L windows for the C calls made (target <= 1.1x), and the
   most calls the fake saw in any window of W seconds (must be <= L).

    .venv/bin/python bench/delivery.py [--quick] [--config embedded|redis-pg] [--workers 1] [--profile]
                                       [--before REF [--rounds N]]

With `--before REF` the latency and drain phases run on the code of git revision REF too (its own stack, data
and database), in turn with this tree's, `--rounds` times each (before, after, before, after ...), so the two
are compared in one run on the same machine load; the bursts and the backlog are then skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

import testkit.fakes.zoho as fake_zoho
from bench.common import (
    GITHUB_PATH,
    BridgeStack,
    CpuMeter,
    FakeZoho,
    Numbers,
    OldBridgeStack,
    PySpy,
    Sender,
    StoreConfig,
    code_tree,
    github_requests,
    github_webhook,
    http_request,
    make_stack,
    percentile,
    print_header,
    process_tree,
    send_paced,
    start_workers,
    store_config,
    store_pids,
    summarize_profile,
    temp_dir,
    verdict,
    write_json,
)

BURST_TARGET_CALLS = 3
BACKLOG_TARGET_RATIO = 1.1


@dataclass
class Options:
    config: str
    workers: int
    concurrency: int
    items: int
    rate: float
    drain: int
    burst: int
    limit: int
    window: float
    backlog: int
    redis_db: int
    profile_dir: Path | None
    profile_cpu: bool = False


# -- reading the fake ---------------------------------------------------------------------------------------


def creates(fake: FakeZoho) -> dict[int, float]:
    """{issue number: time the create arrived} from the fake's log (GitHub items of acme/*)."""
    out: dict[int, float] = {}
    for entry in fake.api_calls("POST"):
        body = entry.get("json") or {}
        ext = body.get("external_id") if isinstance(body, dict) else None
        if entry["path"].rstrip("/").endswith("/issues") and isinstance(ext, str) and "#" in ext:
            out.setdefault(int(ext.rsplit("#", 1)[1]), entry["t"])
    return out


def wait_creates(fake: FakeZoho, numbers: set[int], timeout: float) -> dict[int, float]:
    deadline = time.time() + timeout
    seen: dict[int, float] = {}
    while time.time() < deadline:
        seen = {n: t for n, t in creates(fake).items() if n in numbers}
        if len(seen) == len(numbers):
            break
        time.sleep(0.25)
    return seen


def wait_idle(stack: BridgeStack, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if stack.counts().get("pending", 0) == 0:
            return True
        time.sleep(0.25)
    return False


# -- baselines ---------------------------------------------------------------------------------------------


def direct_round_trips(fake: FakeZoho, count: int) -> list[float]:
    """Seconds for lookup GET + create POST made straight to the fake (no bridge), one thread."""
    portal, project = fake.portal_id, next(iter(fake.projects))
    url = f"{fake.base_url}/api/v3/portal/{portal}/projects/{project}/issues"
    session = requests.Session()
    session.headers["Authorization"] = f"Zoho-oauthtoken {fake.mint_token()}"
    out = []
    for i in range(count):
        ext = f"bench:direct#{i}"
        crit = {"criteria": [{"api_name": "external_id", "criteria_condition": "is", "value": [ext]}], "pattern": "1"}
        started = time.perf_counter()
        got = session.get(url, params={"page": "1", "per_page": "10", "filter": json.dumps(crit)}, timeout=10)
        made = session.post(url, json={"name": f"direct {i}", "description": "x", "external_id": ext}, timeout=10)
        out.append(time.perf_counter() - started)
        if got.status_code >= 300 or made.status_code >= 300:
            print(f"   !! direct calls answered {got.status_code} / {made.status_code}: {made.text[:200]}")
            break
    session.close()
    return out


def cpu_groups(stack: BridgeStack, workers: int) -> dict[str, list[int]]:
    """The stack's processes by role, for CpuMeter (looked up when a phase starts)."""
    return {
        "workers": [p for i in range(workers) for p in process_tree(stack.procs[f"worker{i + 1}"].pid)],
        "web": process_tree(stack.procs["web"].pid),
        **store_pids(stack),
    }


# -- phases ------------------------------------------------------------------------------------------------


def warm_up(stack: BridgeStack, fake: FakeZoho, numbers: Numbers, count: int) -> None:
    """A few items so every process has its token, field metadata and connections."""
    first = numbers.take(count)
    sent = send_paced(stack.port, github_requests(stack.port, count, first_number=first), 20, 30)
    assert all(s == 200 for _, s in sent), sent
    got = wait_creates(fake, set(range(first, first + count)), 60)
    if len(got) != count:
        raise SystemExit(f"warm-up: {len(got)}/{count} issues created; see {stack.logs}")
    wait_idle(stack, 30)


def latency_phase(stack: BridgeStack, fake: FakeZoho, numbers: Numbers, opts: Options) -> dict[str, Any]:
    first = numbers.take(opts.items)
    reqs = github_requests(stack.port, opts.items, first_number=first)
    send_started = time.perf_counter()
    sent = send_paced(stack.port, reqs, opts.rate, max_seconds=opts.items / opts.rate + 60)
    send_seconds = time.perf_counter() - send_started
    sent_at = {first + i: t for i, (t, status) in enumerate(sent) if status == 200}
    got = wait_creates(fake, set(sent_at), timeout=120 + opts.items / 2)
    wait_idle(stack, 60)
    lat = [1000 * (got[n] - sent_at[n]) for n in got]
    return {
        "items": opts.items,
        "rate_per_s": opts.rate,
        "achieved_send_rate": len(sent) / send_seconds,
        "created": len(got),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
    }


def drain_phase(stack: BridgeStack, fake: FakeZoho, numbers: Numbers, opts: Options, workers: int) -> dict[str, Any]:
    first = numbers.take(opts.drain)
    reqs = github_requests(stack.port, opts.drain, first_number=first)
    profiler = None
    if opts.profile_dir is not None:
        profiler = PySpy(
            stack.procs["worker1"].pid, opts.profile_dir / "delivery-worker.pyspy.txt", idle=not opts.profile_cpu
        )
        profiler.__enter__()
    try:
        with CpuMeter(cpu_groups(stack, workers), self_name="this process (sender + FakeZoho)") as meter:
            started = time.time()
            sent = send_paced(stack.port, reqs, 0, max_seconds=60)
            posted = time.time() - started
            got = wait_creates(fake, {first + i for i, (_, s) in enumerate(sent) if s == 200}, 120 + opts.drain)
            wait_idle(stack, 60)
    finally:
        if profiler is not None:
            profiler.__exit__(None, None, None)
    last = max(got.values()) if got else started
    seconds = last - started
    # No item is due before the coalescing window after its first delivery has passed (COALESCE_MS): the drain
    # from then on is the worker's own speed (the window is a product setting, not work).
    after_window = seconds - float(stack.env.get("COALESCE_MS", "300")) / 1000
    out: dict[str, Any] = {
        "items": opts.drain,
        "created": len(got),
        "post_seconds": posted,
        "seconds": seconds,
        "items_per_s": len(got) / seconds if seconds > 0 else float("nan"),
        "items_per_s_after_window": len(got) / after_window if after_window > 0 else float("nan"),
    }
    for group, used in meter.used.items():
        out[f"cpu: {group}"] = used if group.endswith("%") else 1000 * used / max(1, len(got))
    return out


def burst_phase(stack: BridgeStack, fake: FakeZoho, numbers: Numbers, size: int, *, existing: bool) -> dict[str, Any]:
    number = numbers.take(1)
    reqs: list[bytes] = []
    if existing:
        body, headers = github_webhook(number)
        send_paced(stack.port, [http_request(stack.port, GITHUB_PATH, body, headers)], 0, 30)
        if number not in wait_creates(fake, {number}, 60):
            raise SystemExit(f"burst: issue {number} was never created; see {stack.logs}")
        wait_idle(stack, 30)
    else:
        body, headers = github_webhook(number, updated=0.0)
        reqs.append(http_request(stack.port, GITHUB_PATH, body, headers))
    for i in range(size - len(reqs)):
        body, headers = github_webhook(number, action="edited", title=f"Edited title v{i + 1}", updated=float(i + 1))
        reqs.append(http_request(stack.port, GITHUB_PATH, body, headers))
    before = len(fake.api_calls())
    started = time.time()
    sent = send_paced(stack.port, reqs, 0, 60)
    send_seconds = time.time() - started
    time.sleep(1.0)  # let the coalescing window pass and the worker start
    wait_idle(stack, 60)
    calls = fake.api_calls()[before:]
    issue = next((i for i in fake.issues() if str(i.get("external_id", "")).endswith(f"#{number}")), {})
    return {
        "existing_item": existing,
        "deliveries": len(sent),
        "send_seconds": send_seconds,
        "calls": len(calls),
        "call_list": [f"{c['method']} {c['path'].rsplit('/', 2)[-2:]}" for c in calls],
        "final_title_ok": issue.get("name") == f"Edited title v{size - (0 if existing else 1)}",
        "met": len(calls) <= BURST_TARGET_CALLS,
    }


@contextmanager
def fake_window(seconds: float) -> Iterator[None]:
    """FakeZoho counts its per-minute limit over RATE_WINDOW_SECONDS: shorten it like the bridge's."""
    saved = fake_zoho.RATE_WINDOW_SECONDS
    fake_zoho.RATE_WINDOW_SECONDS = seconds
    try:
        yield
    finally:
        fake_zoho.RATE_WINDOW_SECONDS = saved


def backlog_phase(config: StoreConfig, opts: Options, tmp: Path) -> dict[str, Any]:
    limit, window = opts.limit, opts.window
    with fake_window(window), FakeZoho(rate_limit_per_minute=limit) as fake:
        env = {"ZOHO_RATE_LIMIT_PER_MINUTE": str(limit), "ZOHO_RATE_WINDOW_SECONDS": str(window)}
        stack = make_stack(tmp, config, fake, env)
        try:
            stack.start_web()
            start_workers(stack, opts.workers, opts.concurrency)
            stack.start_beat()
            time.sleep(2.0)  # let the workers connect before the backlog lands
            reqs = github_requests(stack.port, opts.backlog, first_number=1)
            started = time.time()
            sent = send_paced(stack.port, reqs, 0, 60)
            ok = {i + 1 for i, (_, s) in enumerate(sent) if s == 200}
            budget = 120 + 3 * (2 * opts.backlog / limit) * (window + 1)
            got = wait_creates(fake, ok, budget)
            wait_idle(stack, 60)
            calls = fake.api_calls()
        finally:
            stack.stop()
    last = max((c["t"] for c in calls), default=started)
    seconds = last - started
    ideal = len(calls) / limit * window
    kinds: dict[str, int] = {}
    for c in calls:
        kind = "defaultfields" if "defaultfields" in c["path"] else f"{c['method']} issues"
        kinds[kind] = kinds.get(kind, 0) + 1
    worst = fake.max_calls_in_window(window)
    return {
        "items": opts.backlog,
        "created": len(got),
        "limit": limit,
        "window_s": window,
        "calls": len(calls),
        "call_kinds": kinds,
        "seconds": seconds,
        "ideal_seconds": ideal,
        "ratio": seconds / ideal if ideal else float("nan"),
        "max_calls_in_window": worst,
        "rate_limited_429": sum(1 for c in calls if c["status"] == 429),
        "ratio_met": seconds <= BACKLOG_TARGET_RATIO * ideal,
        "window_met": worst <= limit,
    }


# -- running it all ------------------------------------------------------------------------------------------


def unlimited_phases(
    config: StoreConfig, opts: Options, tmp: Path, *, bursts: bool = True, code: Path | None = None
) -> dict[str, Any]:
    """Latency, drain and bursts on one stack with `opts.workers` worker processes and no Zoho limit; `code`: the
    stack runs that extracted revision (`code_tree`) instead of this tree."""
    with FakeZoho(keep_alive=True) as fake:  # persistent connections, as Zoho's servers keep them
        stack = make_stack(tmp, config, fake) if code is None else OldBridgeStack(code, tmp, config, fake=fake)
        try:
            stack.start_web()
            start_workers(stack, opts.workers, opts.concurrency)
            stack.start_beat()
            numbers = Numbers()
            warm_up(stack, fake, numbers, 2 * opts.workers * opts.concurrency)
            floor_trips = direct_round_trips(fake, 30)
            intake_ms = statistics.median(intake_latencies(stack, numbers, 30))
            wait_idle(stack, 60)
            out: dict[str, Any] = {
                "config": config.name,
                "workers": opts.workers,
                "concurrency": opts.concurrency,
                "direct_round_trip_ms": 1000 * statistics.median(floor_trips),
                "intake_ms": intake_ms,
                "coalesce_ms": float(stack.env.get("COALESCE_MS", "300")),
            }
            out["floor_ms"] = out["coalesce_ms"] + out["intake_ms"] + out["direct_round_trip_ms"]
            out["latency"] = latency_phase(stack, fake, numbers, opts)
            out["latency"]["ratio_to_floor"] = out["latency"]["p50_ms"] / out["floor_ms"]
            out["drain"] = drain_phase(stack, fake, numbers, opts, opts.workers)
            out["drain"]["direct_items_per_s"] = 1 / statistics.median(floor_trips)
            out["drain"]["ratio_to_direct"] = out["drain"]["items_per_s"] * statistics.median(floor_trips)
            out["drain"]["ratio_after_window"] = out["drain"]["items_per_s_after_window"] * statistics.median(
                floor_trips
            )
            if bursts:
                out["burst_existing"] = burst_phase(stack, fake, numbers, opts.burst, existing=True)
                out["burst_new"] = burst_phase(stack, fake, numbers, opts.burst, existing=False)
            out["token_refreshes"] = fake.token_refreshes
        finally:
            stack.stop()
    return out


def before_and_after(opts: Options, ref: str, rounds: int) -> list[dict[str, Any]]:
    """Latency and drain of revision `ref` and of this tree, in turn, each on a fresh stack and store."""
    out = []
    with code_tree(ref) as code:
        for n in range(rounds):
            for label, tree in ((f"before ({ref})", code), ("after (this tree)", None)):
                with store_config(opts.config, opts.redis_db) as config, temp_dir("bench-delivery-") as tmp:
                    print(
                        f"-- round {n + 1}, {label}: {config.name}; {opts.workers} worker(s) x pool {opts.concurrency}"
                    )
                    result = unlimited_phases(config, opts, tmp, bursts=False, code=tree)
                print_unlimited(result)
                out.append({"round": n + 1, "code": label, **result})
    return out


def intake_latencies(stack: BridgeStack, numbers: Numbers, count: int) -> list[float]:
    """Round-trip ms of single POSTs from one sender, 50 ms apart (the intake part of the floor)."""
    sender = Sender(stack.port)
    out = []
    for req in github_requests(stack.port, count, first_number=numbers.take(count)):
        started = time.perf_counter()
        sender.send(req)
        out.append(1000 * (time.perf_counter() - started))
        time.sleep(0.05)
    sender.close()
    return out


def print_unlimited(r: dict[str, Any]) -> None:
    lat, drain = r["latency"], r["drain"]
    print(
        f"   floor (same run): coalesce {r['coalesce_ms']:.0f} ms + intake {r['intake_ms']:.1f} ms"
        f" + lookup&create direct {r['direct_round_trip_ms']:.1f} ms = {r['floor_ms']:.0f} ms"
    )
    print(
        f"   latency, {lat['items']} new issues at {lat['rate_per_s']:g}/s (sent at {lat['achieved_send_rate']:.1f}/s):"
        f" created {lat['created']}; p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms,"
        f" max {lat['max_ms']:.0f} ms; p50 / floor = {lat['ratio_to_floor']:.2f}"
    )
    cpu = ", ".join(
        f"{k.removeprefix('cpu: ')} {v:.1f}{'' if k.endswith('%') else ' ms'}"
        for k, v in drain.items()
        if k.startswith("cpu: ")
    )
    print(
        f"   drain, {drain['items']} new issues posted at once ({drain['post_seconds']:.1f} s to post): created"
        f" {drain['created']} in {drain['seconds']:.1f} s = {drain['items_per_s']:.1f} issues/s; direct lookup+create"
        f" from one thread {drain['direct_items_per_s']:.0f}/s (ratio {drain['ratio_to_direct']:.2f});"
        f" after the coalescing window {drain['items_per_s_after_window']:.1f} issues/s"
        f" (ratio {drain['ratio_after_window']:.2f})"
    )
    print(f"   drain CPU per issue by group: {cpu}")
    for key in ("burst_existing", "burst_new"):
        if key in r:
            b = r[key]
            what = "an existing issue" if b["existing_item"] else "a new issue (opened + edits)"
            print(
                f"   burst of {b['deliveries']} deliveries to {what} in {b['send_seconds']:.2f} s: {b['calls']} Zoho"
                f" calls {b['call_list']}; final title right: {b['final_title_ok']}"
                f"  [<= {BURST_TARGET_CALLS}: {verdict(b['met'])}]"
            )
    sys.stdout.flush()


def print_backlog(b: dict[str, Any]) -> None:
    print(
        f"   rate-limited backlog: {b['items']} new issues, L={b['limit']} per {b['window_s']:g} s: {b['calls']} calls"
        f" {b['call_kinds']}; created {b['created']} in {b['seconds']:.1f} s; ideal C/L windows"
        f" {b['ideal_seconds']:.1f} s; ratio {b['ratio']:.2f} [<= {BACKLOG_TARGET_RATIO}: {verdict(b['ratio_met'])}]"
    )
    print(
        f"   most calls in any {b['window_s']:g} s window at the fake: {b['max_calls_in_window']}"
        f" [<= {b['limit']}: {verdict(b['window_met'])}]; 429s: {b['rate_limited_429']}"
    )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer items, smaller backlog (~1.5 min)")
    parser.add_argument("--config", choices=("embedded", "redis-pg"), default="embedded")
    parser.add_argument("--workers", type=int, default=1, help="celery worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size of each (Procfile: nproc = 2)")
    parser.add_argument("--items", type=int, default=None, help="latency: new issues (default 200)")
    parser.add_argument("--rate", type=float, default=5.0, help="latency: webhooks per second (default 5)")
    parser.add_argument("--drain", type=int, default=None, help="drain: new issues posted at once (default 200)")
    parser.add_argument("--burst", type=int, default=50, help="deliveries per burst (default 50)")
    parser.add_argument("--limit", type=int, default=30, help="rate-limited backlog: L calls per window")
    parser.add_argument("--window", type=float, default=10.0, help="rate-limited backlog: window in seconds")
    parser.add_argument("--backlog", type=int, default=None, help="rate-limited backlog: new issues (default 75)")
    parser.add_argument("--skip-backlog", action="store_true", help="skip the rate-limited backlog")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db number for redis-pg (must be empty)")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during the drain (wall time)")
    parser.add_argument("--profile-dir", default="bench/profiles")
    parser.add_argument("--profile-cpu", action="store_true", help="with --profile: on-CPU samples, not wall time")
    parser.add_argument("--before", metavar="REF", help="also run the latency and drain on this git revision")
    parser.add_argument("--rounds", type=int, default=2, help="with --before: rounds of (before, after)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    profile_dir = Path(args.profile_dir) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    opts = Options(
        config=args.config,
        workers=args.workers,
        concurrency=args.concurrency,
        items=args.items or (60 if args.quick else 200),
        rate=args.rate,
        drain=args.drain or (60 if args.quick else 200),
        burst=args.burst,
        limit=args.limit,
        window=args.window,
        backlog=args.backlog or (25 if args.quick else 75),
        redis_db=args.redis_db,
        profile_dir=profile_dir,
        profile_cpu=args.profile_cpu,
    )
    info = print_header("delivery: webhook to Zoho through the worker(s), against FakeZoho")
    results: dict[str, Any] = {"machine": info}
    if args.before:
        results["rounds"] = before_and_after(opts, args.before, args.rounds)
        write_json(args.json, results)
        return
    # Each stack gets fresh stores (a new data folder; for redis-pg a new database and an emptied Redis db).
    with store_config(opts.config, opts.redis_db) as config, temp_dir("bench-delivery-") as tmp:
        print(f"-- {config.name}; {opts.workers} worker process(es) x pool {opts.concurrency}; beat running")
        results["unlimited"] = unlimited_phases(config, opts, tmp)
    print_unlimited(results["unlimited"])
    if profile_dir is not None:
        summarize_profile(
            profile_dir / "delivery-worker.pyspy.txt",
            "SyncService.process_item (",
            top=30,
            title=f"worker pool processes during the drain, {'on-CPU samples' if opts.profile_cpu else 'wall time'}",
        )
    if not args.skip_backlog:
        with store_config(opts.config, opts.redis_db) as config, temp_dir("bench-backlog-") as tmp:
            results["backlog"] = backlog_phase(config, opts, tmp)
        print_backlog(results["backlog"])
    write_json(args.json, results)


if __name__ == "__main__":
    main()
