"""The budget figure: with back-links and reverse polling on, a 100-issue burst drains as fast as without.

Both runs share one Zoho budget of LIMIT calls per WINDOW seconds (the limiter adds a 1 s margin per window),
counted at the fake Zoho. The reverse side waits while forward events are due, so its calls (a Zoho read per
back-link, one list call per poll) come after the burst, not inside it.
"""

from __future__ import annotations

import math
import time

import pytest

from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for
from tests.test_e2e_reverse_github import _stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ISSUES, LIMIT, WINDOW, MARGIN = 100, 20, 2.0, 1.0


def _burst(tmp_path, *, reverse: bool) -> dict[str, float]:
    zoho, github = FakeZoho().start(), FakeGitHub().start()
    for n in range(1, ISSUES + 1):
        github.add_issue("acme/web", n, title=f"Issue {n}", labels=("bug",), at=n)
    env = {"ZOHO_RATE_LIMIT_PER_MINUTE": str(LIMIT), "ZOHO_RATE_WINDOW_SECONDS": str(WINDOW), "COALESCE_MS": "0"}
    if reverse:
        stack = _stack(tmp_path, zoho, github, conflict="source_wins", poll=2.0, extra=env)
    else:
        stack = BridgeStack(tmp_path, zoho, extra_env=env)
        github.webhook_url, github.webhook_secret = stack.base_url + "/webhooks/github", "It's a Secret to Everybody"
        stack.start()
    try:
        started = time.time()
        for n in range(1, ISSUES + 1):
            github.deliver("issues", "opened", "acme/web", n, sender="octocat")
        creates = lambda: [c for c in zoho.api_calls("POST") if c["path"].endswith("/issues")]  # noqa: E731
        wait_for(lambda: len(creates()) >= ISSUES, 240, what="every issue created in Zoho")
        drained = creates()[-1]["t"] - started
        forward_calls = len([c for c in zoho.api_calls() if c["t"] <= creates()[-1]["t"]])
        in_burst = [c for c in zoho.api_calls("GET") if c["t"] <= creates()[-1]["t"]]
        reverse_calls = [c for c in in_burst if "sort_by" in c["query"] or c["path"].rsplit("/", 1)[-1].isdigit()]
        result = {"drain": drained, "calls": forward_calls, "reverse_in_burst": len(reverse_calls)}
        if reverse:

            def per_issue() -> list[int]:
                return [len(github.comments_of("acme/web", n)) for n in range(1, ISSUES + 1)]

            wait_for(lambda: min(per_issue()) >= 1, 180, what="a back-link on every issue")
            result["backlinks_done"] = time.time() - started
            time.sleep(4)  # two more ticks: still one each
            assert max(per_issue()) == 1
            result["backlinks"] = sum(per_issue())
        assert len(zoho.issues()) == ISSUES
        assert zoho.max_calls_in_window(WINDOW) <= LIMIT
        return result
    finally:
        stack.stop()
        github.stop()
        zoho.stop()


def test_forward_burst_drains_as_fast_with_reverse_on(tmp_path):
    off = _burst(tmp_path / "off", reverse=False)
    on = _burst(tmp_path / "on", reverse=True)
    ideal = (math.ceil(on["calls"] / LIMIT) - 1) * (WINDOW + MARGIN)
    print(
        f"\n{ISSUES}-issue burst, budget {LIMIT}/{WINDOW:.0f}s: ideal {ideal:.1f}s for {on['calls']} calls; "
        f"reverse off {off['drain']:.1f}s ({off['calls']} calls), on {on['drain']:.1f}s ({on['calls']} calls), "
        f"ratio {on['drain'] / off['drain']:.2f}; {on['backlinks']} back-links, all posted {on['backlinks_done']:.1f}s"
    )
    assert on["backlinks"] == ISSUES
    # The reverse side made no Zoho call while the burst drained: forward sync had the whole budget.
    assert on["reverse_in_burst"] == 0 and on["calls"] == off["calls"]
    # Wall time on a shared 2-core machine is noisy; the call counts above are the exact measure.
    assert on["drain"] <= 1.3 * off["drain"]
