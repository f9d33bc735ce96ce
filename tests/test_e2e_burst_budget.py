"""A burst of new issues far over Zoho's budget, on real processes (issue #21).

Was: the create intent was written before the call waited for the budget; when the wait timed out nothing
had been sent, yet the next attempt looked the item up: ~2 Zoho calls per new issue in any burst over the
budget, and a permanent duplicate once more than 1,000 issues had been made since (the lookup read only the
newest 1,000). Now only an operation that was sent can be in doubt: one call per new issue, and no lookup.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ISSUES = 300
EXISTING = 1500


def _preload(fake: FakeZoho, n: int) -> None:
    """Issues made by hand in the project before the bridge came (its marker is on none of them)."""
    token = fake.mint_token()
    project = next(iter(fake.projects))
    url = f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects/{project}/issues"
    with requests.Session() as session:
        for i in range(n):
            answer = session.post(
                url, json={"name": f"made by hand {i}"}, headers={"Authorization": f"Zoho-oauthtoken {token}"}
            )
            assert answer.status_code == 200, answer.text


def test_a_burst_over_the_budget_costs_one_call_per_new_issue_and_no_duplicate(tmp_path):
    with FakeZoho() as fake:
        _preload(fake, EXISTING)
        calls_before = len(fake.api_calls())
        budget = {"ZOHO_RATE_LIMIT_PER_MINUTE": "100", "ZOHO_RATE_WINDOW_SECONDS": "8", "COALESCE_MS": "0"}
        stack = BridgeStack(tmp_path, fake, extra_env=budget).start(workers=1)
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda n: stack.github("issues", issues_event("opened", number=n)),
                                        range(1, ISSUES + 1)))  # fmt: skip
            assert all(a.status_code == 200 for a in answers)
            assert stack.wait_idle(timeout=300) == {"done": ISSUES}
        finally:
            stack.stop()
        ours = [i for i in fake.issues() if str(i.get("external_id", "")).startswith("github:")]
        assert len(ours) == ISSUES and len({i["external_id"] for i in ours}) == ISSUES  # one each, no duplicate
        calls = fake.api_calls()[calls_before:]
        lookups = [c for c in calls if c["method"] == "GET" and c["path"].endswith("/issues")]
        assert lookups == []  # nothing was in doubt: a wait for the budget sends nothing
        assert len(calls) <= ISSUES * 1.05, len(calls)  # the creates, and the field metadata once
