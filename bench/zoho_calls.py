"""Zoho calls per new issue, per edit burst, and a backlog drained under the documented projects limit.

Real processes (testkit/harness.py: gunicorn, a celery worker, beat) against FakeZoho over HTTP.

1. new issues: `--items` GitHub issues opened one after another; Zoho calls per new issue (target 1.0), with
   the one-off option-list read (one per worker process, cached) shown apart.
2. edit burst: `--burst` `issues.edited` deliveries for one existing issue, as fast as one sender goes; Zoho
   calls made (target 1: the burst coalesces into one PATCH).
3. backlog: `--backlog` new issues posted at once under the documented projects limit, 100 calls per window,
   with the window shortened from 120 s to `--window` s (the ratio is what matters); FakeZoho enforces the
   same limit and blocks for 30 s on a breach, so a single 429 would show. Time from the first POST to the
   last create against the ideal N / (100 per window).

    .venv/bin/python bench/zoho_calls.py [--items 20] [--burst 20] [--backlog 300] [--window 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

LIMIT = 100  # seed 001:737-739: 100 calls within 2 minutes


def creates(fake: FakeZoho) -> list[dict]:
    return [c for c in fake.api_calls(method="POST") if c["path"].endswith("/issues") and c["status"] == 200]


def metadata(calls: list[dict]) -> int:
    return sum(1 for c in calls if "/defaultfields" in c["path"])


def new_issues(stack: BridgeStack, fake: FakeZoho, items: int) -> dict:
    before = len(fake.api_calls())
    for n in range(1, items + 1):
        stack.github("issues", issues_event("opened", number=n, title=f"New issue {n}", updated=n))
    wait_for(lambda: len(creates(fake)) >= items, 60, what="the new issues")
    stack.wait_idle(timeout=60)
    calls = fake.api_calls()[before:]
    meta = metadata(calls)
    return {
        "items": items,
        "calls": len(calls),
        "option_list_reads": meta,
        "calls_per_new_issue": round((len(calls) - meta) / items, 3),
        "calls_per_new_issue_with_metadata": round(len(calls) / items, 3),
    }


def edit_burst(stack: BridgeStack, fake: FakeZoho, size: int) -> dict:
    before = len(fake.api_calls())
    for k in range(size):
        title = f"New issue 1, edit {k}"
        stack.github("issues", issues_event("edited", number=1, title=title, updated=1000 + k))
    stack.wait_idle(timeout=60)
    time.sleep(1.0)
    calls = fake.api_calls()[before:]
    return {"edits": size, "calls": len(calls), "methods": sorted({c["method"] for c in calls})}


def backlog(tmp: Path, n: int, window: float) -> dict:
    fake = FakeZoho(v3_limit=LIMIT, v3_window=window, block_seconds=30.0).start()
    env = {"ZOHO_RATE_LIMIT_PER_MINUTE": str(LIMIT), "ZOHO_RATE_WINDOW_SECONDS": str(window), "COALESCE_MS": "0"}
    stack = BridgeStack(tmp / "backlog", fake, extra_env=env)
    try:
        stack.start(workers=1)
        stack.github("issues", issues_event("opened", number=100000, title="warm-up"))
        wait_for(lambda: len(creates(fake)) >= 1, 60, what="the warm-up issue")
        stack.wait_idle(timeout=60)
        time.sleep(window + 1.5)  # an empty window: the backlog starts with the whole budget
        started = time.time()
        for k in range(1, n + 1):
            stack.github("issues", issues_event("opened", number=k, title=f"Backlog {k}"))
        wait_for(lambda: len(creates(fake)) >= n + 1, 60 + 3 * n * window / LIMIT, what="the backlog")
        last = max(c["t"] for c in creates(fake))
        calls = [c for c in fake.api_calls() if c["t"] >= started]
        elapsed = last - started
        ideal = n / (LIMIT / window)
        return {
            "issues": n,
            "window_s": window,
            "limit": LIMIT,
            "seconds": round(elapsed, 2),
            "ideal_seconds": round(ideal, 2),
            "ratio": round(elapsed / ideal, 3),
            "calls": len(calls),
            "429s": sum(1 for c in calls if c["status"] == 429),
            "max_calls_in_any_window": fake.max_calls_in_window(window),
        }
    finally:
        stack.stop()
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=300)
    parser.add_argument("--window", type=float, default=6.0)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zoho-") as tmp_name:
        tmp = Path(tmp_name)
        fake = FakeZoho().start()
        stack = BridgeStack(tmp / "calls", fake)  # product timings: COALESCE_MS=150 in the harness
        try:
            stack.start(workers=1)
            result = {
                "new_issues": new_issues(stack, fake, opts.items),
                "edit_burst": edit_burst(stack, fake, opts.burst),
            }
        finally:
            stack.stop()
            fake.stop()
        result["backlog"] = backlog(tmp, opts.backlog, opts.window)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
