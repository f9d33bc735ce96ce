"""The stale sweep at rest: CPU of each part of `workers.tasks.requeue_stale` in one process, with nothing to do.

Beat sends the sweep every 10 s, so an idle bridge runs it six times a minute (`bench/idle.py` measures the whole
bridge). This times its parts (the heartbeat write, the mapping look, the stale items, the metric fold, the
backfill check) on an empty embedded database (SQLite, a fresh data folder), `--rounds` times after a warm-up,
in a process of its own; with `--before REF` the same is run first on the code of git revision REF.

    .venv/bin/python bench/sweep.py [--rounds 2000] [--before REF]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, REPO, code_tree, print_header, temp_dir, write_json

PARTS = """
import json, os, sys, time
from bridge.backfill import feeder
from bridge.process.runtime import get_runtime
from bridge.store import calllog, claims, counters

rt = get_runtime()
rt.sync  # the engine, the schema, the mappings
parts = {
    "heartbeat": lambda: calllog.heartbeat(rt.engine),
    "mappings": lambda: list(rt.sync.reload_mappings()),
    "stale items": lambda: claims.stale_items(rt.engine, grace=rt.settings.stale_after_seconds),
    "metric fold": lambda: counters.fold(rt.engine),
    "backfill check": lambda: feeder.anything_parked(rt.engine) and feeder.chain_alive(rt.engine),
}
rounds = int(sys.argv[1])
used = dict.fromkeys(parts, 0.0)
for n in range(rounds + rounds // 10):
    for name, part in parts.items():
        started = time.process_time()
        part()
        if n >= rounds // 10:  # the first tenth warms up
            used[name] += time.process_time() - started
print(json.dumps({name: 1000 * cpu / rounds for name, cpu in used.items()}))
"""


def measure(code: Path, rounds: int) -> dict[str, float]:
    with temp_dir("bench-sweep-") as tmp:
        (tmp / "mappings").mkdir()
        (tmp / "mappings" / "github.yaml").write_text((REPO / "mappings/examples/github.yaml").read_text())
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
        env.update(BRIDGE_HOME=str(tmp), BRIDGE_DATA_DIR=str(tmp / "var"), MAPPINGS_DIR=str(tmp / "mappings"))
        env.update(GITHUB_WEBHOOK_SECRET="bench", PYTHONPATH=str(code))
        out = subprocess.run(
            [PYTHON, "-c", PARTS, str(rounds)], cwd=tmp, env=env, capture_output=True, text=True, check=True
        )
        parts: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return parts


def report(name: str, parts: dict[str, float]) -> None:
    shown = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
    print(f"-- {name}: {sum(parts.values()):.3f} ms of CPU per sweep ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--before", metavar="REF", help="also measure the code of this git revision, first")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    info = print_header("sweep: the stale sweep's parts at rest, in one process (embedded)")
    out: dict[str, Any] = {}
    if args.before:
        with code_tree(args.before) as old:
            out[f"before ({args.before})"] = measure(old, args.rounds)
        report(f"before ({args.before})", out[f"before ({args.before})"])
    out["this tree"] = measure(REPO, args.rounds)
    report("this tree", out["this tree"])
    write_json(args.json, {"machine": info, "results": out})


if __name__ == "__main__":
    main()
