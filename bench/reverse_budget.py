"""Talking back within the budget: a 100-issue burst's forward sync with back-links and reverse polling on,
against the same burst with them off (the baseline, same run), under one shared Zoho limit.

Real processes (testkit/harness.py: gunicorn, a celery worker, beat) against FakeZoho, which enforces the limit
(L calls per W seconds; a breach blocks it for 30 s, so a single 429 would show) and FakeGitHub, which takes the
back-link comments. The reverse side is on as an admin would run it: `backlink:`, `reverse.status`,
`reverse.comments: true`, polled every W/2 seconds (the default is 60 s against Zoho's 120 s window).

Each run: one warm-up issue (its back-link and a few polls happen), an idle window so the burst starts with
the whole budget, then `--issues` `issues.opened` at once. Drain = first POST to the last create at FakeZoho.
Ideal = forward calls / L windows of W seconds (the figure docs/benchmarks.md uses). Targets: drain with the
reverse side on <= 1.1 x ideal, and no reverse call (poll list, back-link read) inside the burst.

    .venv/bin/python bench/reverse_budget.py [--issues 100] [--limit 50] [--window 20] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.factories import issues_event
from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, BridgeStack, wait_for

TARGET = 1.1
REVERSE_PATH = re.compile(r"/issues/\d+(/comments)?/?$")
REVERSE_KEYS = """
backlink:
  template: "Tracked in Zoho as {key}: {url}"
reverse:
  status:
    Closed: {close: completed}
    Reopened: {reopen: true}
  comments: true
"""


def creates(fake: FakeZoho) -> list[dict]:
    return [c for c in fake.api_calls(method="POST") if c["path"].endswith("/issues") and c["status"] == 200]


def is_reverse(call: dict) -> bool:
    """A poll list (sorted by modified time), a back-link's read of one issue, or a comments read."""
    return call["method"] == "GET" and ("sort_by" in call["query"] or bool(REVERSE_PATH.search(call["path"])))


def burst(tmp: Path, *, reverse: bool, issues: int, limit: int, window: float) -> dict:
    fake = FakeZoho(v3_limit=limit, v3_window=window, block_seconds=30.0).start()
    github = FakeGitHub().start()
    for n in range(1, issues + 2):
        github.add_issue("acme/web", n, title=f"Issue {n}", labels=("bug",), at=n)
    env = {"ZOHO_RATE_LIMIT_PER_MINUTE": str(limit), "ZOHO_RATE_WINDOW_SECONDS": str(window), "COALESCE_MS": "0"}
    mappings = None
    if reverse:
        path = tmp / "src" / "github.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((REPO / "mappings" / "examples" / "github.yaml").read_text() + REVERSE_KEYS)
        mappings = [path]
        env.update(
            GITHUB_TOKEN=github.token, GITHUB_API_URL=github.base_url, ZOHO_POLL_SECONDS=str(max(2.0, window / 2))
        )
    stack = BridgeStack(tmp, fake, extra_env=env, mappings=mappings)
    github.webhook_url, github.webhook_secret = stack.base_url + "/webhooks/github", GITHUB_SECRET
    try:
        stack.start(workers=1)
        github.deliver("issues", "opened", "acme/web", issues + 1, sender="octocat")  # the warm-up issue
        wait_for(lambda: len(creates(fake)) >= 1, 60, what="the warm-up issue")
        if reverse:
            wait_for(lambda: github.comments_of("acme/web", issues + 1), 60, what="the warm-up back-link")
        stack.wait_idle(timeout=60)
        time.sleep(window + 1.5)  # an idle window: the burst starts with the whole budget (minus the polls)
        started = time.time()
        for n in range(1, issues + 1):
            stack.github("issues", issues_event("opened", number=n, title=f"Issue {n}", updated=n))
        wait_for(lambda: len(creates(fake)) >= issues + 1, 120 + 3 * issues * window / limit, what="the burst")
        last = max(c["t"] for c in creates(fake))
        in_burst = [c for c in fake.api_calls() if started <= c["t"] <= last]
        forward = [c for c in in_burst if not is_reverse(c)]
        drain = last - started
        ideal = len(forward) / limit * window
        result = {
            "reverse": reverse,
            "issues": issues,
            "drain_s": round(drain, 2),
            "forward_calls": len(forward),
            "ideal_s": round(ideal, 2),
            "x_ideal": round(drain / ideal, 3),
            "reverse_calls_in_burst": len(in_burst) - len(forward),
            "reverse_calls_seen": [f"{c['method']} {c['path']}" for c in in_burst if is_reverse(c)][:5],
            "429s": sum(1 for c in fake.api_calls() if c["status"] == 429),
            "max_calls_in_any_window": fake.max_calls_in_window(window),
        }
        if reverse:

            def posted() -> int:
                return sum(1 for n in range(1, issues + 1) if github.comments_of("acme/web", n))

            wait_for(lambda: posted() >= issues, 120 + 3 * issues * window / limit, what="every back-link")
            result["backlinks_done_s"] = round(time.time() - started, 2)
            time.sleep(window / 2 + 1)
            result["backlinks"] = sum(len(github.comments_of("acme/web", n)) for n in range(1, issues + 1))
            result["429s"] = sum(1 for c in fake.api_calls() if c["status"] == 429)
            result["max_calls_in_any_window"] = fake.max_calls_in_window(window)
        return result
    finally:
        stack.stop()
        github.stop()
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=100)
    parser.add_argument("--limit", type=int, default=50, help="Zoho calls per window (shared)")
    parser.add_argument("--window", type=float, default=20.0, help="the window in seconds (Zoho: 120)")
    parser.add_argument("--quick", action="store_true", help="40 issues, 20 calls per 8 s")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    if opts.quick:
        opts.issues, opts.limit, opts.window = 40, 20, 8.0
    with tempfile.TemporaryDirectory(prefix="bench-reverse-") as tmp_name:
        tmp = Path(tmp_name)
        off = burst(tmp / "off", reverse=False, issues=opts.issues, limit=opts.limit, window=opts.window)
        on = burst(tmp / "on", reverse=True, issues=opts.issues, limit=opts.limit, window=opts.window)
    result = {"budget": f"{opts.limit} per {opts.window:g} s", "off": off, "on": on}
    result["on_vs_off"] = round(on["drain_s"] / off["drain_s"], 3)
    met = on["x_ideal"] <= TARGET and on["reverse_calls_in_burst"] == 0 and on["backlinks"] == opts.issues
    print(json.dumps(result, indent=2))
    print(
        f"{opts.issues}-issue burst under {result['budget']}: reverse off {off['drain_s']} s "
        f"({off['x_ideal']} x ideal), on {on['drain_s']} s ({on['x_ideal']} x ideal {on['ideal_s']} s), "
        f"on/off {result['on_vs_off']}; reverse calls inside the burst: {on['reverse_calls_in_burst']}; "
        f"back-links {on['backlinks']}, all posted {on['backlinks_done_s']} s after the burst began"
    )
    print(f"target drain with reverse on <= {TARGET} x ideal: {'MET' if met else 'MISSED'}")
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
