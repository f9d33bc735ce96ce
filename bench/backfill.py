"""Backfill benchmark: N GitHub issues with C comments each, backfilled through real processes into FakeZoho under
Zoho Projects' documented limit (100 calls per 120 s, seed 001:737-739), with live webhooks posted meanwhile.

Prints: Zoho calls made, the time the backfill took against the ideal (its calls / its budget share), the most
calls Zoho saw in any window (must stay within the limit), and live-delivery latency before and during.

Time is compressed so a run fits a coffee break: `--compress K` divides Zoho's 120 s window by K (the limit of
100 calls per window stays), so the budget is K times the real one and the run K times shorter. The full run of
the issue (`--issues 1000 --comments 3`: 5,000 calls, ~3.3 h at the real budget) takes `5000 / (50 per window)`
windows: ~10 min at `--compress 20`. `--quick` is 150 issues (750 calls, ~90 s at K=20).

    .venv/bin/python bench/backfill.py --quick
    .venv/bin/python bench/backfill.py --issues 1000 --comments 3 --compress 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.backfill import list_backfills
from testkit.factories import issues_event
from testkit.fakes.github import TOKEN, FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, BridgeStack, wait_for

WEB = "1752587000000097024"
LIMIT, WINDOW = 100, 120.0  # Zoho Projects: 100 calls per 2 minutes
SHARE = 0.5
COMMAND = ("backfill", "github", "--repo", "acme/web", "--state", "all", "--wait")


def live_latency(stack: BridgeStack, zoho: FakeZoho, number: int) -> float:
    external = f"github:acme/web#{number}"
    started = time.monotonic()
    stack.github("issues", issues_event("opened", number=number, title=f"live {number}", updated=number))
    wait_for(lambda: any(i.get("external_id") == external for i in zoho.issues(WEB)), 300, what=external)
    return time.monotonic() - started


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=1000)
    parser.add_argument("--comments", type=int, default=3)
    parser.add_argument("--compress", type=float, default=20.0, help="divide Zoho's 120 s window by this")
    parser.add_argument("--quick", action="store_true", help="150 issues (about 90 s)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.issues = 150
    window = WINDOW / args.compress
    tmp = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    github = FakeGitHub().start()
    zoho = FakeZoho().start()
    for n in range(1, args.issues + 1):
        github.add_issue("acme/web", n, title=f"Old issue {n}", labels=("bug",), at=n)
        for c in range(args.comments):
            github.add_comment("acme/web", n, f"comment {c}", at=100_000 + n * 10 + c)
    env = {
        "ZOHO_RATE_LIMIT_PER_MINUTE": str(LIMIT),
        "ZOHO_RATE_WINDOW_SECONDS": str(window),
        "BACKFILL_BUDGET_SHARE": str(SHARE),
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": github.base_url,
    }
    stack = BridgeStack(tmp, zoho, extra_env=env, mappings=[REPO / "mappings" / "examples" / "github.yaml"]).start()
    try:
        live_latency(stack, zoho, 900_000)  # warm-up (token, options)
        baseline = [live_latency(stack, zoho, 900_001 + i) for i in range(5)]
        calls_before = len(zoho.api_calls())
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", *COMMAND],
            cwd=REPO,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        during: list[float] = []
        stop = threading.Event()

        def post_live() -> None:
            n = 910_000
            while not stop.is_set():
                during.append(live_latency(stack, zoho, n))
                n += 1
                stop.wait(2.0)

        poster = threading.Thread(target=post_live, daemon=True)
        poster.start()
        out, _ = proc.communicate(timeout=24 * 3600)
        took = time.monotonic() - started
        stop.set()
        poster.join(300)
        stack.wait_idle(600)
        backfill_calls = len(zoho.api_calls()) - calls_before - len(during) * 2
        rate = SHARE * LIMIT / window
        issues = [i for i in zoho.issues(WEB) if not i["name"].startswith("live ")]
        comments = sum(len(zoho.comments(i["id"])) for i in issues)
        [row] = list_backfills(stack.engine)
        figures = {
            "issues": args.issues,
            "comments_each": args.comments,
            "zoho_limit": f"{LIMIT} per {window:.1f}s (Zoho's 100 per 120 s compressed x{args.compress:g})",
            "backfill_share": SHARE,
            "zoho_issues": len(issues),
            "zoho_comments": comments,
            "backfill_zoho_calls": backfill_calls,
            "github_calls": row["source_calls"],
            "took_s": round(took, 1),
            "ideal_s": round(backfill_calls / rate, 1),
            "ratio_to_ideal": round(took / (backfill_calls / rate), 3),
            "took_at_real_budget_h": round(took * args.compress / 3600, 2),
            "max_calls_in_any_window": zoho.max_calls_in_window(window),
            "live_latency_before_s": summary(baseline),
            "live_latency_during_s": summary(during),
            "cli_tail": out.strip().splitlines()[-2:],
        }
        print(json.dumps(figures, indent=2))
        ok_once = len(issues) == args.issues and comments == args.issues * args.comments
        ok_limit = figures["max_calls_in_any_window"] <= LIMIT
        ok_live = figures["live_latency_during_s"]["p50"] <= figures["live_latency_before_s"]["p50"] + 2.0
        print(f"each once: {'MET' if ok_once else 'MISSED'}; within the Zoho limit: {'MET' if ok_limit else 'MISSED'}")
        print(f"live p50 within normal latency + 2 s: {'MET' if ok_live else 'MISSED'}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        stack.stop()
        zoho.stop()
        github.stop()


if __name__ == "__main__":
    main()
