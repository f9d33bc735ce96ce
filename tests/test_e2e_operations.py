"""What an operator sees: readiness that says what is wrong, metrics that count what happened, logs
that never carry a secret."""

from __future__ import annotations

import shutil

import pytest
import requests
from sqlalchemy import text

from bridge.settings import load_settings
from bridge.web import create_app
from testkit.factories import comment_event, github_request, issues_event, sign
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, BridgeStack, wait_for


def _env(tmp_path, **extra: str) -> dict[str, str]:
    mappings = tmp_path / "mappings"
    mappings.mkdir(exist_ok=True)
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(mappings),
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        **extra,
    }


def test_readyz_names_a_dead_broker(tmp_path):
    app = create_app(load_settings(_env(tmp_path, BROKER_URL="redis://127.0.0.1:1/0", METRICS_TOKEN="m-token-1")))
    r = app.test_client().get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "degraded"  # deliveries are still stored
    assert r.json["checks"] == {"database": True, "broker": False, "mappings": True}
    assert "problems" not in r.json and "127.0.0.1" not in r.text  # no hosts for strangers
    detailed = app.test_client().get("/readyz", headers={"Authorization": "Bearer m-token-1"})
    assert any(p.startswith("broker:") and "127.0.0.1" in p for p in detailed.json["problems"])
    assert app.test_client().get("/readyz/strict").status_code == 503  # "everything healthy" says no
    gauges = app.test_client().get("/metrics", headers={"Authorization": "Bearer m-token-1"}).text
    assert 'bridge_ready{check="broker"} 0' in gauges and "bridge_degraded 1" in gauges
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.e2e
def test_readyz_database_and_mappings(tmp_path):
    stack = BridgeStack(tmp_path, None, dry_run=True, extra_env={"ADMIN_TOKEN": "ops-admin-token-0123456789"})
    auth = {"Authorization": "Bearer ops-admin-token-0123456789"}
    try:
        stack.start_web()
        ready = requests.get(stack.base_url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        assert requests.get(stack.base_url + "/readyz/strict", timeout=5).status_code == 200
        # A broken mapping edit: degraded (the last good version is in force), with file, line and reason.
        mapping = stack.mappings_dir / "github.yaml"
        mapping.write_text(mapping.read_text().replace("on_delete: close", "on_delete: explode"))
        # Each web process looks at the files at most every few seconds (an anonymous /readyz never reloads them
        # per request): wait until the one answering has looked.
        wait_for(
            lambda: requests.get(stack.base_url + "/readyz/strict", timeout=5).status_code == 503,
            30,
            what="/readyz/strict to see the refused edit",
        )
        r = wait_for(
            lambda: (
                (r := requests.get(stack.base_url + "/readyz", headers=auth, timeout=5)).json()["status"] == "degraded"
                and r
            ),
            30,
            what="/readyz degraded",
        )
        assert r.status_code == 200 and r.json()["status"] == "degraded", r.text
        assert any(p.startswith("mapping github.yaml:") and "on_delete" in p for p in r.json()["problems"]), r.json()
        assert str(stack.mappings_dir) not in r.text  # no folder names, even for operators' reasons
        shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mapping)
        # The database loses its tables: now it cannot store deliveries: 503, and says so.
        with stack.engine.begin() as conn:
            conn.execute(text("ALTER TABLE events RENAME TO events_gone"))
        r = requests.get(stack.base_url + "/readyz", headers=auth, timeout=5)
        assert r.status_code == 503 and r.json()["status"] == "not ready", r.text
        assert any(p.startswith("database:") for p in r.json()["problems"]), r.json()
    finally:
        stack.stop()


@pytest.mark.e2e
def test_metrics_count_the_run_and_logs_carry_no_secret(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, extra_env={"METRICS_TOKEN": "metrics-token-123"})
    try:
        stack.start(beat=False)
        payload = issues_event("opened", number=1)
        accepted = stack.github("issues", payload, delivery="dup-1")
        assert stack.github("issues", payload, delivery="dup-1").json()["status"] == "duplicate"
        stack.wait_idle()  # else the comment's newer issue state supersedes the opened event (coalescing)
        stack.github("issue_comment", comment_event("created", comment_id=5, text="hi", commented=3))
        stack.github("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
        body, headers = github_request("wrong", "issues", payload)
        assert stack.post("/webhooks/github", body, headers).status_code == 401
        stack.wait_idle()

        assert requests.get(stack.base_url + "/metrics", timeout=5).status_code == 401
        r = requests.get(stack.base_url + "/metrics", headers={"Authorization": "Bearer metrics-token-123"}, timeout=5)
        assert r.status_code == 200
        m = r.text
        assert 'bridge_deliveries_total{answer="accepted",event="issues.opened",source="github"} 1.0' in m
        assert 'bridge_deliveries_total{answer="duplicate",event="issues.opened",source="github"} 1.0' in m
        assert 'bridge_deliveries_total{answer="ignored",event="ping",source="github"} 1.0' in m
        assert 'answer="unauthorized"' in m
        assert 'bridge_zoho_calls_total{dry_run="false",endpoint="issue.create",status="200"} 1.0' in m
        assert 'bridge_zoho_calls_total{dry_run="false",endpoint="comment.create",status="200"} 1.0' in m
        assert 'bridge_events{source="github",status="done"} 2.0' in m
        assert "bridge_queue_depth 0.0" in m
        assert "bridge_zoho_latency_ms_count" in m and "bridge_end_to_end_lag_seconds_count 2.0" in m

        with stack.engine.connect() as conn:
            access_tokens = [row[0] for row in conn.execute(text("SELECT access_token FROM oauth_tokens"))]
        assert access_tokens
        secrets = [GITHUB_SECRET, fake.client_secret, fake.refresh_token, "metrics-token-123", *access_tokens]
        secrets.append(sign(GITHUB_SECRET, github_request(GITHUB_SECRET, "issues", payload)[0]).split("=", 1)[1])
        logs = stack.log_text()
        assert '"delivery accepted"' in logs and '"zoho call"' in logs  # one line per delivery and per call
        assert f'"event_id": {accepted.json()["event_id"]}' in logs
        for secret in secrets:
            assert secret not in logs
    finally:
        stack.stop()
        fake.stop()
