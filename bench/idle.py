"""At rest: what an idle embedded bridge costs, in CPU and in log lines, over a quiet minute.

`issue-bridge run` (supervisor, gunicorn, celery worker, celery beat and the private redis-server; SQLite; dry
run) is started in a scratch home, handed one delivery and left to settle; then nothing happens for `--seconds`
(default 60) while the CPU time of every process of the bridge and the lines it logs at INFO or above are
counted. CPU is the scheduler's own count per thread (`/proc/PID/task/TID/schedstat`, in nanoseconds), which
decides the verdict; the 10 ms clock ticks of `/proc/PID/stat` are printed beside it (a quiet minute is a few
dozen ticks, so they move by whole percents of the figure). With `--before REF` the same is measured, in the
same run, for the code of git revision REF.

    .venv/bin/python bench/idle.py [--seconds 60] [--settle 20] [--before REF]

Targets: under 0.3% of one core, and no line at INFO or above.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PYTHON,
    REPO,
    code_tree,
    cpu_seconds,
    github_webhook,
    print_header,
    process_tree,
    temp_dir,
    thread_cpu_ns,
    verdict,
    write_json,
)
from testkit.harness import GITHUB_SECRET, free_port, wait_for

TARGET_CPU_PERCENT, TARGET_INFO_LINES = 0.3, 0
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _web_up(port: int) -> bool:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _post_one(port: int) -> int:
    import requests

    body, headers = github_webhook(1)
    return requests.post(f"http://127.0.0.1:{port}/webhooks/github", data=body, headers=headers, timeout=10).status_code


def _name(pid: int) -> str:
    """A short name for a process of the bridge, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return f"{pid} (gone)"
    words = [Path(a).name if "/" in a else a for a in argv if a]
    for key in ("beat", "worker", "gunicorn", "redis-server", "run"):
        if key in words or any(w.startswith(key) for w in words[:1]):
            return f"{key} {pid}"
    return f"{' '.join(words)[:40]} {pid}"


def _lines(path: Path, start: int, end: int) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start).decode("utf-8", "replace").splitlines()


def _level(line: str) -> tuple[int, str]:
    """(level number, what logged it) of one log line: JSON lines as the bridge writes them, else Celery's own
    `[date: LEVEL/process] message` form; anything else counts as a WARNING (it reached the log unformatted)."""
    try:
        data = json.loads(line)
        msg = re.sub(r"\[[0-9a-f-]{36}\]|succeeded in \S+", "", str(data.get("msg")))  # task ids, run times
        return LEVELS.get(str(data.get("level", "")).lower(), 30), f"{data.get('logger')}: {msg}"[:100]
    except ValueError:
        pass
    for name, number in LEVELS.items():
        if f"{name.upper()}/" in line or f" {name.upper()} " in line:
            return number, line[:100]
    return 30, line[:100]


class ExactCpu:
    """CPU used by processes' threads since it was made, from the scheduler's nanosecond count: looked at once a
    second, so a thread that ends in the window counts up to its last look (`gone` says how many ended)."""

    def __init__(self, pids: list[int]) -> None:
        self.start = {pid: thread_cpu_ns(pid) for pid in pids}
        self.last = {pid: dict(threads) for pid, threads in self.start.items()}

    def look(self) -> None:
        for pid, seen in self.last.items():
            seen.update(thread_cpu_ns(pid))

    @property
    def gone(self) -> int:
        return sum(len(seen.keys() - thread_cpu_ns(pid).keys()) for pid, seen in self.last.items())

    def used(self) -> dict[int, int]:
        return {
            pid: sum(ns - self.start[pid].get(tid, 0) for tid, ns in seen.items()) for pid, seen in self.last.items()
        }


def measure(code: Path, seconds: float, settle: float) -> dict[str, Any]:
    """Start `issue-bridge run` from the code in `code`, settle, then measure a quiet `seconds`."""
    with temp_dir("bench-idle-") as tmp:
        home = tmp / "home"
        (home / "mappings").mkdir(parents=True)
        shutil.copy(REPO / "mappings" / "examples" / "github.yaml", home / "mappings" / "github.yaml")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "GITHUB_", "BUGZILLA_", "BUGHERD_"))}
        env.pop("DATABASE_URL", None)
        env.pop("BROKER_URL", None)
        env.update(
            {
                "BRIDGE_HOME": str(home),
                "BRIDGE_DATA_DIR": str(home / "var"),
                "MAPPINGS_DIR": str(home / "mappings"),
                "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
                "LOG_LEVEL": "INFO",
                "PYTHONPATH": str(code),
                "PYTHONUNBUFFERED": "1",
            }
        )
        log_path = tmp / "bridge.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", "bridge.cli", "run", "--port", str(port), "--host", "127.0.0.1"],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(lambda: _web_up(port), 90, what=f"issue-bridge run on port {port} (see {log_path})")
            status = _post_one(port)
            time.sleep(settle)  # the delivery processed, every beat job run at least once where it runs at all
            pids = process_tree(proc.pid)
            redis_pid = home / "var" / "redis.pid"
            if redis_pid.exists():
                pids.append(int(redis_pid.read_text().strip()))
            start_offset = log_path.stat().st_size
            cpu_before = {pid: cpu_seconds([pid]) for pid in pids}
            exact = ExactCpu(pids)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                exact.look()
            by_process = Counter({_name(pid): cpu_seconds([pid]) - before for pid, before in cpu_before.items()})
            cpu_used = sum(by_process.values())
            exact_by_process = Counter({_name(pid): ns / 1e9 for pid, ns in exact.used().items()})
            gone = exact.gone
            lines = _lines(log_path, start_offset, log_path.stat().st_size)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    levels = [_level(line) for line in lines if line.strip()]
    loud = Counter(what for number, what in levels if number >= LEVELS["info"])
    exact_used = sum(exact_by_process.values())
    return {
        "delivery answer": status,
        "processes": len(pids),
        "cpu_seconds": exact_used,
        "cpu_percent_of_a_core": 100 * exact_used / seconds,
        "cpu_seconds_by_process": dict(exact_by_process.most_common()),
        "threads_gone": gone,
        "tick_cpu_seconds": cpu_used,
        "tick_cpu_percent_of_a_core": 100 * cpu_used / seconds,
        "tick_cpu_seconds_by_process": dict(by_process.most_common()),
        "lines": len(levels),
        "info_or_above": sum(loud.values()),
        "loudest": loud.most_common(8),
    }


def report(name: str, result: dict[str, Any], seconds: float) -> None:
    cpu, info = result["cpu_percent_of_a_core"], result["info_or_above"]
    print(f"-- {name}: {result['processes']} processes, the delivery answered {result['delivery answer']}")
    print(
        f"   CPU {result['cpu_seconds']:.3f} s in {seconds:g} s = {cpu:.3f}% of a core "
        f"[< {TARGET_CPU_PERCENT}%: {verdict(cpu < TARGET_CPU_PERCENT)}] (the scheduler's count; "
        f"{result['threads_gone']} threads ended in the window; in 10 ms ticks: {result['tick_cpu_seconds']:.2f} s "
        f"= {result['tick_cpu_percent_of_a_core']:.3f}%)"
    )
    print(
        f"   log lines {result['lines']}, at INFO or above {info} ({60 * info / seconds:.1f} a minute) "
        f"[{TARGET_INFO_LINES}: {verdict(info <= TARGET_INFO_LINES)}]"
    )
    by_process = result["cpu_seconds_by_process"].items()
    print("   CPU seconds by process: " + ", ".join(f"{k} {v:.3f}" for k, v in by_process))
    for what, count in result["loudest"]:
        print(f"      {count:>4}  {what}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="the quiet window measured")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds between the delivery and the window")
    parser.add_argument("--before", metavar="REF", help="also measure the code of this git revision, first")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    info = print_header(f"idle: an embedded bridge left alone for {args.seconds:g} s")
    out: dict[str, Any] = {}
    if args.before:
        with code_tree(args.before) as old:
            out[f"before ({args.before})"] = measure(old, args.seconds, args.settle)
        report(f"before ({args.before})", out[f"before ({args.before})"], args.seconds)
    out["this tree"] = measure(REPO, args.seconds, args.settle)
    report("this tree", out["this tree"], args.seconds)
    write_json(args.json, {"machine": info, "results": out})


if __name__ == "__main__":
    main()
