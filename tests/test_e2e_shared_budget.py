"""One Zoho budget and one token for all worker processes, counted at the fake Zoho itself."""

from __future__ import annotations

import pytest

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]  # also on PostgreSQL + Redis in CI

LIMIT, WINDOW = 8, 3.0  # a short window stands in for Zoho's minute so the test stays quick


def test_two_worker_processes_share_the_rate_limit_and_the_token(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(
        tmp_path,
        fake,
        extra_env={
            "ZOHO_RATE_LIMIT_PER_MINUTE": str(LIMIT),
            "ZOHO_RATE_WINDOW_SECONDS": str(WINDOW),
            "COALESCE_MS": "0",
        },
    )
    try:
        stack.start(workers=2)  # two worker processes, each with a pool of 2
        for n in range(1, 21):  # a new issue is one call now (no lookup): 20 issues overrun the budget
            assert stack.github("issues", issues_event("opened", number=n)).status_code == 200
        counts = stack.wait_idle(timeout=90)
        assert counts == {"done": 20}
        assert len(fake.issues()) == 20
        calls = fake.api_calls()
        assert len(calls) > 2 * LIMIT  # enough work to hit the budget several times over
        # No window at the fake ever saw more than the budget (the limiter's margin covers transit).
        assert fake.max_calls_in_window(WINDOW) <= LIMIT
        assert all(c["status"] != 429 for c in calls)
        # One access token for every process: refreshed once, not once per worker.
        assert fake.token_refreshes == 1
    finally:
        stack.stop()
        fake.stop()
