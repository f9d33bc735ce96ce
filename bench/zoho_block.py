"""A burst against a Zoho budget shared with another client, so Zoho blocks once: how long the burst takes to
drain against the ideal, and how many calls go into the block after Zoho's first refusal (target 0).

Real processes (testkit/harness.py: gunicorn, a celery worker, beat) against FakeZoho, which keeps Zoho's own
count: L calls per W seconds per Zoho user, then a block of B seconds answered in the chosen throttle form
(live portals: HTTP 400 `URL_ROLLING_THROTTLES_LIMIT_EXCEEDED` "Try again after N minutes", zoho-facts.md).
The bridge keeps the same budget (L per W) for its own calls, but when the burst begins another integration of
the same Zoho user spends S of the window (`FakeZoho.spend`), so the bridge's count is wrong and Zoho blocks it.
The message names whole minutes; the bridge honours at most RATE_BLOCK_MAX_SECONDS, set to B here (the scale
of the run: B stands for the 15-30 minute lockouts live portals report).

Ideal = the block the bridge cannot avoid + the creates it must make paced at L per W after the first L:
B + max(0, items - L) / L x W. Drain = the first webhook to the last create Zoho accepted. Reported beside
it: the reads the bridge made for creates left in doubt (a create Zoho refused with the throttle is looked up
by its marker before it is sent again: the delivery core's crash-window lookup).

    .venv/bin/python bench/zoho_block.py [--items 300] [--limit 100] [--window 20] [--block 15] [--other 60]
                                         [--form 400] [--json FILE]
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

TARGET_IN_BLOCK = 0


def creates(fake: FakeZoho) -> list[dict]:
    return [
        c
        for c in fake.api_calls(method="POST")
        if c["path"].endswith("/issues") and c["status"] == 200 and not c.get("throttled")
    ]


def run(tmp: Path, *, items: int, limit: int, window: float, block: float, other: int, form: str) -> dict:
    fake = FakeZoho(v3_limit=limit, v3_window=window, block_seconds=block, throttle=form).start()
    env = {
        "ZOHO_RATE_LIMIT_PER_MINUTE": str(limit),
        "ZOHO_RATE_WINDOW_SECONDS": str(window),
        "ZOHO_RATE_BLOCK_SECONDS": str(block),  # the 429 form names no time: the documented block, scaled
        "RATE_BLOCK_MAX_SECONDS": str(block),  # the 400/200 forms name whole minutes: capped at the run's scale
        "COALESCE_MS": "0",
    }
    stack = BridgeStack(tmp, fake, extra_env=env)
    try:
        stack.start(workers=1)
        stack.github("issues", issues_event("opened", number=items + 1, title="warm-up"))
        wait_for(lambda: len(creates(fake)) >= 1, 60, what="the warm-up issue")
        stack.wait_idle(timeout=60)
        time.sleep(window + 1.5)  # an idle window: the burst starts with the whole budget
        fake.spend(other)  # another integration of the same Zoho user
        started = time.time()
        for n in range(1, items + 1):
            assert stack.github("issues", issues_event("opened", number=n, title=f"Issue {n}", updated=n)).ok
        posted = time.time() - started
        deadline = 300 + 3 * items * window / limit + 4 * block
        wait_for(lambda: len(creates(fake)) >= items + 1, deadline, what="the burst drained")
        counts = stack.wait_idle(timeout=120)
        last = max(c["t"] for c in creates(fake))
        burst = [c for c in fake.api_calls() if c["t"] >= started]
        refusals = [c for c in burst if c.get("throttled")]
        first = refusals[0]["t"] if refusals else None
        into_block = [c for c in burst if first is not None and first < c["t"] < first + block]
        drain = last - started
        ideal = block + max(0, items - limit) / limit * window
        lookups = [c for c in burst if c["method"] == "GET"]
        return {
            "form": form,
            "items": items,
            "budget": f"{limit} per {window:g} s, {other} spent by another client at the start",
            "block_s": block,
            "webhooks_posted_s": round(posted, 2),
            "drain_s": round(drain, 2),
            "ideal_s": round(ideal, 2),
            "x_ideal": round(drain / ideal, 3),
            "zoho_calls": len(burst),
            "refusals": len(refusals),
            "calls_into_block_after_first_refusal": len(into_block),
            "first_refusal_after_s": round(first - started, 2) if first else None,
            "reads_for_creates_in_doubt": len(lookups),
            "issues": len(fake.issues()),
            "distinct_names": len({i["name"] for i in fake.issues()}),
            "events": counts,
        }
    finally:
        stack.stop()
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--limit", type=int, default=100, help="Zoho calls per window (documented: 100)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds (documented: 120)")
    parser.add_argument("--block", type=float, default=15.0, help="Zoho's block in seconds (live: 15-30 minutes)")
    parser.add_argument("--other", type=int, default=60, help="calls another client spends when the burst begins")
    parser.add_argument("--form", choices=("429", "400", "200"), default="400")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zoho-block-") as tmp:
        result = run(
            Path(tmp),
            items=opts.items,
            limit=opts.limit,
            window=opts.window,
            block=opts.block,
            other=opts.other,
            form=opts.form,
        )
    print(json.dumps(result, indent=2))
    met = result["calls_into_block_after_first_refusal"] <= TARGET_IN_BLOCK
    ok = result["events"] == {"done": opts.items + 1} and result["distinct_names"] == result["issues"] == opts.items + 1
    print(
        f"{opts.items} new items, Zoho blocks once ({opts.form} form, {opts.block:g} s): drained in "
        f"{result['drain_s']} s against an ideal {result['ideal_s']} s ({result['x_ideal']} x); "
        f"{result['refusals']} refusal(s), {result['calls_into_block_after_first_refusal']} call(s) into the block "
        f"after the first (target {TARGET_IN_BLOCK}: {'MET' if met else 'MISSED'}); every item once, none failed: "
        f"{'yes' if ok else 'NO'}"
    )
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
