"""The budget, with back-links and reverse polling on: a burst of new issues gets the whole Zoho budget.

One Zoho budget of LIMIT calls per WINDOW seconds, counted at the fake Zoho. The reverse side waits while forward
events are due, so its calls (a Zoho read per back-link, one list call per poll) come after the burst, not inside
it: the burst costs exactly what it costs with reverse sync off (one create per new issue), never more than the
budget in any window, and then every issue gets one back-link. The drain time with and without reverse sync is a
speed figure: `bench/reverse_budget.py` measures it, as a ratio in one run.
"""

from __future__ import annotations

import pytest

from testkit.fakes.github import FakeGitHub
from testkit.fakes.zoho import FakeZoho
from testkit.harness import wait_for
from tests.test_e2e_reverse_github import _stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ISSUES, LIMIT, WINDOW = 20, 8, 2.0  # the burst spans windows; back-links are paced by GitHub (1 s apart)


def test_a_burst_gets_the_whole_budget_with_reverse_sync_on(tmp_path):
    zoho, github = FakeZoho().start(), FakeGitHub().start()
    for n in range(1, ISSUES + 1):
        github.add_issue("acme/web", n, title=f"Issue {n}", labels=("bug",), at=n)
    env = {"ZOHO_RATE_LIMIT_PER_MINUTE": str(LIMIT), "ZOHO_RATE_WINDOW_SECONDS": str(WINDOW), "COALESCE_MS": "0"}
    stack = _stack(tmp_path, zoho, github, conflict="source_wins", poll=2.0, extra=env)
    try:
        for n in range(1, ISSUES + 1):
            github.deliver("issues", "opened", "acme/web", n, sender="octocat")
        creates = lambda: [c for c in zoho.api_calls("POST") if c["path"].endswith("/issues")]  # noqa: E731
        wait_for(lambda: len(creates()) >= ISSUES, 240, what="every issue created in Zoho")
        last_create = creates()[-1]["t"]
        in_burst = [c for c in zoho.api_calls() if c["t"] <= last_create]
        # The reverse side made no Zoho call while the burst drained (no poll's issue list, no read of one issue
        # for a back-link): the burst's calls are one create per new issue and the project's fields, read once.
        reverse = [c for c in in_burst if "sort_by" in c["query"] or c["path"].rsplit("/", 1)[-1].isdigit()]
        assert reverse == []
        assert [c for c in in_burst if c["method"] == "POST"] == creates()[:ISSUES]
        others = {c["path"].rstrip("/").rsplit("/", 1)[-1] for c in in_burst if c["method"] != "POST"}
        assert others <= {"defaultfields"}, others

        def per_issue() -> list[int]:
            return [len(github.comments_of("acme/web", n)) for n in range(1, ISSUES + 1)]

        wait_for(lambda: min(per_issue()) >= 1, 180, what="a back-link on every issue")
        stack.wait_idle()
        assert per_issue() == [1] * ISSUES  # once each
        assert len(zoho.issues()) == ISSUES
        assert zoho.max_calls_in_window(WINDOW) <= LIMIT
    finally:
        stack.stop()
        github.stop()
        zoho.stop()
