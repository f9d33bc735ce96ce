"""Zoho's answers read by their body, as live portals send them (zoho-facts.md, "What public clients that ran
against live portals report"), and the outage breaker every worker waits on (issue 20, Zoho part).

Every answer is either a seed sample (testkit/zoho_seed_samples.py) or the live throttle body quoted in
zoho-facts.md (`testkit.fakes.zoho.throttle_body`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import responses
from click.testing import CliRunner
from sqlalchemy import select

from bridge.cli import main
from bridge.mapping.model import IssueDraft
from bridge.settings import SettingsError, load_settings
from bridge.store import budgets as budget_rows
from bridge.store import schema as db
from bridge.targets.zoho.client import ZohoClient
from bridge.targets.zoho.errors import ZohoConfigError, ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.targets.zoho.ratelimit import block_status
from testkit import zoho_seed_samples as seed
from testkit.fakes.zoho import throttle_body

API = "https://projectsapi.zoho.test"
ACCOUNTS = "https://accounts.zoho.test"
TOKEN_URL = ACCOUNTS + "/oauth/v2/token"
PORTAL, PROJECT = "739121528", "1752587000000097024"
ISSUES = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues"
CREDS = {"ZOHO_CLIENT_ID": "1000.CLIENT", "ZOHO_CLIENT_SECRET": "s3cret", "ZOHO_REFRESH_TOKEN": "1000.refresh"}
TOKEN = {"access_token": "tok-1", "api_domain": "https://www.zohoapis.com", "token_type": "Bearer", "expires_in": 3600}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
        "ZOHO_API_BASE": API,
        "ZOHO_ACCOUNTS_URL": ACCOUNTS,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        **CREDS,
    }


@pytest.fixture
def make_client(env: dict[str, str]):
    engines = []

    def make(**extra: str) -> ZohoClient:
        settings = load_settings({**env, **extra})
        engine = db.make_engine(settings.database_url)
        db.ensure_schema(engine)
        engines.append(engine)
        return ZohoClient(settings, engine)

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(TOKEN_URL, json=TOKEN)
        yield mock


def draft() -> IssueDraft:
    ids = {"portal": PORTAL, "project": PROJECT, "external_id": "github:acme/web#7", "external_id_field": None}
    return IssueDraft(**ids, title="T", description="D")


def api_calls(mock: responses.RequestsMock) -> list:
    return [c for c in mock.calls if not c.request.url.startswith(ACCOUNTS)]


# -- the throttle, in a 400, a 429 or a 200 --------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 429, 200])
def test_the_live_throttle_is_a_global_block_for_the_minutes_it_names(make_client, rsps, status):
    rsps.post(ISSUES, status=status, json=throttle_body(22))
    first, other = make_client(), make_client()  # two workers sharing the database
    with pytest.raises(ZohoRateLimited) as err:
        first.create_issue(draft())
    assert 22 * 60 - 5 <= (err.value.retry_after or 0) <= 22 * 60
    remaining, _until = block_status(first.engine)
    assert 22 * 60 - 5 <= remaining <= 22 * 60  # "Try again after 22 minutes", not the 30-minute default
    with pytest.raises(ZohoRateLimited):
        other.get_issue(PORTAL, PROJECT, "1")  # the other worker waits: no call goes into the block
    assert len(api_calls(rsps)) == 1
    with first.engine.connect() as conn:
        state = budget_rows.peek(conn, "zoho")
    assert state is not None and "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED" in (state.reason or "")
    assert "Try again after 22 minutes" in (state.reason or "")


def test_the_throttle_without_minutes_waits_for_retry_after_else_the_documented_block(make_client, rsps):
    body = throttle_body(None)  # "Cannot execute more than 100 requests per API in 2 minutes."
    rsps.post(ISSUES, status=400, json=body, headers={"Retry-After": "90"})
    client = make_client()
    with pytest.raises(ZohoRateLimited):
        client.create_issue(draft())
    assert 85 <= block_status(client.engine)[0] <= 90
    client.limiter.unblock()
    rsps.replace(responses.POST, ISSUES, status=400, json=body)
    with pytest.raises(ZohoRateLimited):
        client.create_issue(draft())
    assert 1795 <= block_status(client.engine)[0] <= 1800  # ZOHO_RATE_BLOCK_SECONDS: seed 001:737-739


def test_a_block_is_capped_at_rate_block_max_seconds(make_client, rsps):
    rsps.post(ISSUES, status=429, headers={"Retry-After": "31536000"})  # a year
    client = make_client()
    with pytest.raises(ZohoRateLimited):
        client.create_issue(draft())
    assert 3590 <= block_status(client.engine)[0] <= 3600  # the default cap: an hour
    capped = make_client(RATE_BLOCK_MAX_SECONDS="120")
    capped.limiter.unblock()
    rsps.replace(responses.POST, ISSUES, status=400, json=throttle_body(22))
    with pytest.raises(ZohoRateLimited):
        capped.create_issue(draft())
    assert 115 <= block_status(capped.engine)[0] <= 120


def test_rate_block_max_seconds_is_validated(env):
    with pytest.raises(SettingsError, match="RATE_BLOCK_MAX_SECONDS"):
        load_settings({**env, "RATE_BLOCK_MAX_SECONDS": "0"})


def test_an_error_body_inside_a_200_is_an_error_and_a_create_answered_so_made_nothing(make_client, rsps):
    refused = {"error": {"status_code": "400", "title": "INVALID_PARAMETER_VALUE", "details": [{"message": "bad"}]}}
    refused["error"]["details"][0]["field_name"] = "name"
    rsps.post(ISSUES, status=200, json=refused)
    client = make_client()
    with pytest.raises(ZohoPermanentError) as err:
        client.create_issue(draft())
    assert not isinstance(err.value, ZohoTransientError)  # not "answered without an id" (a create in doubt)
    assert err.value.status == 400 and err.value.field == "name"


def test_a_bugtracker_error_code_inside_a_200_is_an_error(make_client, rsps):
    bugs = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/bugs"
    rsps.post(bugs, status=200, json=seed.BT_ERROR)  # seed 000:871-880
    client = make_client(ZOHO_DIALECT="bugtracker")
    with pytest.raises(ZohoPermanentError) as err:
        client.create_issue(draft())
    assert not isinstance(err.value, ZohoTransientError) and err.value.field == "title"


# -- an outage is one breaker every worker waits on ----------------------------------------------------------


@pytest.mark.parametrize("failure", ["503", "network"])
def test_an_outage_opens_the_breaker_and_a_good_answer_closes_it(make_client, rsps, failure):
    if failure == "503":
        rsps.get(f"{ISSUES}/1", status=503, body="Service Unavailable")
    else:
        rsps.get(f"{ISSUES}/1", body=requests.ConnectionError("refused"))
    first, other = make_client(), make_client(ITEM_LEASE_SECONDS="2")  # (the other holds a call 0.7 s at most)
    for _ in range(2):  # one lost answer is that call's retry; a second in a row is an outage
        with pytest.raises(ZohoTransientError) as err:
            first.get_issue(PORTAL, PROJECT, "1")
        assert not isinstance(err.value, ZohoRateLimited)  # the one that met it: an outage (a capped back-off)
    with pytest.raises(ZohoRateLimited):
        other.get_issue(PORTAL, PROJECT, "1")  # everyone else: a wait, no call into the outage
    assert len(api_calls(rsps)) == 2
    with first.engine.connect() as conn:
        state = budget_rows.peek(conn, "zoho")
    assert state is not None and state.outages == 1 and state.blocked_until > 0
    first.limiter.budgets.unblock("zoho")  # (stands in for the pause running out)
    with first.engine.begin() as conn:  # the breaker is open again, its pause over
        conn.execute(db.budget_state.update().values(outages=1, blocked_until=0.0))
    rsps.replace(responses.GET, f"{ISSUES}/1", json=seed.ISSUE_DETAILS)
    assert first.get_issue(PORTAL, PROJECT, "1") is not None
    with first.engine.connect() as conn:
        assert conn.execute(select(db.budget_state.c.outages)).scalar() == 0  # closed by the good answer


# -- the token endpoint's configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize("error", ["invalid_client", "invalid_code", "invalid_grant"])
def test_token_endpoint_refusals_are_a_configuration_error_reported_once(make_client, error, caplog):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(TOKEN_URL, status=200, json={"error": error})  # Zoho answers these with 200 (001:367-389)
        mock.get(f"{ISSUES}/1", json=seed.ISSUE_DETAILS)
        first, other = make_client(), make_client()
        for client in (first, other, first, other):
            with pytest.raises(ZohoConfigError) as err:
                client.get_issue(PORTAL, PROJECT, "1")
            assert error in err.value.reason
        assert len(mock.calls) == 1  # one request to the accounts server, not one per item or worker
    assert sum("Zoho token refresh refused" in r.getMessage() for r in caplog.records) <= 2  # once per process


def test_a_changed_credential_is_tried_again_at_once(make_client, env):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(TOKEN_URL, status=200, json={"error": "invalid_client"})
        with pytest.raises(ZohoConfigError):
            make_client().get_issue(PORTAL, PROJECT, "1")
        mock.replace(responses.POST, TOKEN_URL, json=TOKEN)
        mock.get(f"{ISSUES}/1", json=seed.ISSUE_DETAILS)
        fixed = make_client(ZOHO_CLIENT_SECRET="the-right-one")  # the admin fixed the secret
        assert fixed.get_issue(PORTAL, PROJECT, "1") is not None


# -- lifting a block by hand -----------------------------------------------------------------------------------


def test_zoho_unblock_lifts_the_block_and_status_says_why(make_client, rsps, env):
    rsps.post(ISSUES, status=400, json=throttle_body(22))
    client = make_client()
    with pytest.raises(ZohoRateLimited):
        client.create_issue(draft())
    shown = CliRunner().invoke(main, ["status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "blocked until" in shown.output and "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED" in shown.output
    lifted = CliRunner().invoke(main, ["zoho", "unblock"], env=env)
    assert lifted.exit_code == 0, lifted.output
    assert "lifted" in lifted.output
    assert block_status(client.engine)[0] == 0.0
    again = CliRunner().invoke(main, ["zoho", "unblock"], env=env)
    assert again.exit_code == 0 and "no block" in again.output


# -- the block on the pages people look at ---------------------------------------------------------------------


def test_the_admin_page_front_page_and_metrics_say_blocked_until_and_the_admin_lifts_it(tmp_path):
    from tests.test_admin import TOKEN, csrf_of, login, make_app

    app = make_app(tmp_path, ADMIN_TOKEN=TOKEN)
    engine = app.extensions["bridge"].engine
    try:
        from bridge.outbound.budget import Budgets

        Budgets(engine).block("zoho", 1320, "Zoho throttled the bridge (HTTP 400 URL_ROLLING_THROTTLES_LIMIT_EXCEEDED)")
        client = app.test_client()
        front = client.get("/").text
        assert "blocked until" in front and "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED" in front
        metrics = client.get("/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("bridge_zoho_blocked{"))
        assert "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED" in line and line.endswith(" 1.0")
        login(client)
        page = client.get("/admin/").text
        assert 'id="zoho-block"' in page and "blocked until" in page
        lifted = client.post("/admin/zoho/unblock", data={"csrf_token": csrf_of(page)})
        assert lifted.status_code == 302
        assert block_status(engine)[0] == 0.0
        assert 'id="zoho-block"' not in client.get("/admin/").text
        assert "bridge_zoho_blocked{" not in client.get("/metrics").text
        refused = client.post("/admin/zoho/unblock", data={"csrf_token": "forged"})
        assert refused.status_code == 400  # the CSRF guard covers the button
    finally:
        engine.dispose()


def test_a_bugtracker_429_without_retry_after_waits_for_x_ratelimit_reset(make_client, rsps):
    bugs = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/bugs"
    reset = int(time.time()) + 40  # seed 000:777-783 documents X-RateLimit-Reset, not Retry-After
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    rsps.post(bugs, status=429, json={"code": 6009, "message": "Rate Limit Exceeded"}, headers=headers)
    client = make_client(ZOHO_DIALECT="bugtracker")
    with pytest.raises(ZohoRateLimited):
        client.create_issue(draft())
    assert 35 <= block_status(client.engine)[0] <= 41


def test_an_accounts_server_outage_opens_the_breaker_too(make_client):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(TOKEN_URL, status=503, body="down")
        first, other = make_client(), make_client(ITEM_LEASE_SECONDS="2")
        for _ in range(2):
            with pytest.raises(ZohoTransientError):
                first.get_issue(PORTAL, PROJECT, "1")
        with pytest.raises(ZohoRateLimited):
            other.get_issue(PORTAL, PROJECT, "1")  # waits: the accounts server is not asked again meanwhile
        assert len(mock.calls) == 2
