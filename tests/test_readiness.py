"""Readiness that keeps deliveries flowing: a stopped broker is `degraded` (200) and its deliveries are still
taken and, once the broker is back, processed; real gunicorn, worker, beat, redis-server and a fake Zoho."""

from __future__ import annotations

import pytest
import requests

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, RedisServer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.external_redis]


def test_broker_stopped_is_degraded_and_deliveries_are_taken_and_later_processed(tmp_path):
    redis = RedisServer(tmp_path)
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, broker_url=redis.url)
    try:
        stack.start()
        assert requests.get(stack.base_url + "/readyz", timeout=10).json()["status"] == "ready"
        redis.stop()
        r = requests.get(stack.base_url + "/readyz", timeout=10)
        assert r.status_code == 200, r.text  # a load balancer keeps this node: it can still store deliveries
        assert r.json()["status"] == "degraded" and r.json()["checks"]["broker"] is False
        assert any(reason.startswith("broker: unreachable") for reason in r.json()["reasons"])

        answer = stack.github("issues", issues_event("opened", number=77, title="Taken while the broker was down"))
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        redis.start()  # same port: the beat job re-enqueues what waited
        wait_for(lambda: fake.issues(), 90, what="the delivery to reach Zoho after the broker came back")
        assert [i["name"] for i in fake.issues()] == ["Taken while the broker was down"]
        assert stack.wait_idle(60).get("failed", 0) == 0
        wait_for(
            lambda: requests.get(stack.base_url + "/readyz", timeout=10).json()["status"] == "ready",
            30,
            what="/readyz to be ready again",
        )
    finally:
        stack.stop()
        fake.stop()
        redis.proc.poll() is None and redis.stop()
