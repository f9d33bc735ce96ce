"""The Zoho client against `responses` (no network): auth, name resolution, bodies, errors, both dialects."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from sqlalchemy import select

from bridge import store
from bridge.mapping.model import IssueDraft
from bridge.settings import load_settings
from bridge.store import schema as db
from bridge.targets.zoho import auth
from bridge.targets.zoho.client import ZohoClient
from bridge.targets.zoho.errors import ResolutionError, ZohoConfigError, ZohoPermanentError, ZohoTransientError
from bridge.targets.zoho.ratelimit import block_status

API = "https://projectsapi.zoho.test"
ACCOUNTS = "https://accounts.zoho.test"
TOKEN_URL = ACCOUNTS + "/oauth/v2/token"
PORTAL, PROJECT = "739121528", "1752587000000097024"
ISSUES = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues"
BUGS = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/bugs"
DEFAULTFIELDS = f"{API}/restapi/portal/{PORTAL}/projects/{PROJECT}/bugs/defaultfields/"
CREDS = {"ZOHO_CLIENT_ID": "1000.CLIENT", "ZOHO_CLIENT_SECRET": "s3cret", "ZOHO_REFRESH_TOKEN": "1000.refresh"}
EXTERNAL_ID = "github:acme/web#7"
MARKER = f"[issue-bridge:{EXTERNAL_ID}]"

OPTIONS = {
    "status": ["Open", "In Progress", "Closed"],
    "severity": ["None", "Minor", "Major", "Critical"],
    "classification": ["Bug", "Security"],
    "module": ["Authentication", "UI"],
    "priority": ["Low", "High"],
}


def option_id(field: str, name: str, options: dict[str, list[str]] = OPTIONS) -> str:
    return f"{100 + list(options).index(field)}{options[field].index(name):03d}"


def defaultfields_body(options: dict[str, list[str]] = OPTIONS) -> dict:
    return {
        "defaultfields": {
            f"{field}_details": [{f"{field}_id": option_id(field, n, options), f"{field}_name": n} for n in names]
            for field, names in options.items()
        }
    }


def v3_error(status: int, title: str, message: str, field: str | None = None) -> dict:
    detail = {"message": message} | ({"field_name": field} if field else {})
    return {"error": {"status_code": str(status), "title": title, "error_type": "X", "details": [detail]}}


INVALID_TOKEN = v3_error(401, "INVALID_OAUTHTOKEN", "Invalid OAuth access token.")


def token_answer(token: str, expires_in: int = 3600) -> dict:
    return {
        "access_token": token,
        "api_domain": "https://www.zohoapis.com",
        "token_type": "Bearer",
        "expires_in": expires_in,
    }


@pytest.fixture
def make_client(tmp_path: Path):
    engines = []

    def make(*, creds: bool = True, **extra: str) -> ZohoClient:
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
            "ZOHO_API_BASE": API,
            "ZOHO_ACCOUNTS_URL": ACCOUNTS,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
            "ZOHO_TIMEOUT_SECONDS": "5",
            **(CREDS if creds else {}),
            **extra,
        }
        settings = load_settings(env)
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
        yield mock


def draft(**changes) -> IssueDraft:
    values = dict(
        portal=PORTAL,
        project=PROJECT,
        external_id=EXTERNAL_ID,
        external_id_field="external_id",
        title="Login button does nothing",
        description="Clicking it has no effect.",
        options={"status": "Open", "severity": "Major", "classification": "Bug", "module": "UI", "priority": "High"},
    )
    values.update(changes)
    return IssueDraft(**values)


def api_calls(mock: responses.RequestsMock) -> list:
    return [c for c in mock.calls if not c.request.url.startswith(ACCOUNTS)]


def token_calls(mock: responses.RequestsMock) -> list:
    return [c for c in mock.calls if c.request.url.startswith(ACCOUNTS)]


def body_of(call) -> dict:
    return json.loads(call.request.body)


class Clock:
    """Stands in for the `time` module inside bridge.zoho.auth, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# -- OAuth ----------------------------------------------------------------------------------------------


def test_token_refresh_is_a_form_post_and_never_in_the_url(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(ISSUES + "/1", json={"id": "1"})
    client = make_client()
    assert client.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1").data == {"id": "1"}

    [grant] = token_calls(rsps)
    assert grant.request.method == "POST"
    assert urlsplit(grant.request.url).query == ""  # secrets in URLs end up in access logs
    assert grant.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v for k, [v] in parse_qs(grant.request.body).items()}
    assert form == {
        "grant_type": "refresh_token",
        "client_id": "1000.CLIENT",
        "client_secret": "s3cret",
        "refresh_token": "1000.refresh",
    }
    [call] = api_calls(rsps)
    assert call.request.headers["Authorization"] == "Zoho-oauthtoken tok-1"


def test_token_is_stored_and_shared_by_a_second_client(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(ISSUES + "/1", json={"id": "1"})
    first, second = make_client(), make_client()  # two processes' worth of clients on one database
    first.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    first.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    second.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")

    assert len(token_calls(rsps)) == 1
    assert {c.request.headers["Authorization"] for c in api_calls(rsps)} == {"Zoho-oauthtoken tok-1"}
    with first.engine.connect() as conn:
        rows = conn.execute(select(db.oauth_tokens)).all()
    assert [r.access_token for r in rows] == ["tok-1"]
    assert rows[0].expires_at == pytest.approx(time.time() + 3600, abs=30)
    assert first.tokens.refreshes == 1 and second.tokens.refreshes == 0


def _time_passes(client: ZohoClient, clock: Clock, seconds: float) -> None:
    """Time passes for this process (its monotonic clock) and for the database (the stored expiry comes nearer)."""
    clock.now += seconds
    with client.engine.begin() as conn:
        conn.execute(db.oauth_tokens.update().values(expires_at=db.oauth_tokens.c.expires_at - seconds))


def test_token_is_refreshed_only_when_expired(make_client, rsps, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(auth, "time", clock)
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    client = make_client()
    assert client.tokens.get() == "tok-1"
    _time_passes(client, clock, 3000)  # still valid (and outside the one-minute safety margin)
    assert client.tokens.get() == "tok-1"
    assert make_client().tokens.get() == "tok-1"
    assert len(token_calls(rsps)) == 1
    _time_passes(client, clock, 600 - auth.EXPIRY_MARGIN + 1)  # inside the margin: refresh before it dies mid-call
    assert client.tokens.get() == "tok-2"
    assert make_client().tokens.get() == "tok-2"  # the new one is shared too
    assert len(token_calls(rsps)) == 2


def test_a_host_clock_hours_off_neither_refreshes_a_shared_token_nor_uses_an_expired_one(
    make_client, rsps, monkeypatch
):
    """The shared token's expiry is kept by the database's clock: a worker whose host clock runs two hours
    ahead (or behind) takes the token another process stored, and the token budget (10 per 10 minutes) is not
    spent on refreshes its own clock invents."""
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    assert make_client().tokens.get() == "tok-1"
    for skew in (7200.0, -7200.0):
        skewed = Clock()
        skewed.now += skew
        monkeypatch.setattr(auth, "time", skewed)
        assert make_client().tokens.get() == "tok-1"
    assert len(token_calls(rsps)) == 1


def test_expires_in_milliseconds_is_understood(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-ms", expires_in=3_600_000))
    client = make_client()
    client.tokens.get()
    with client.engine.connect() as conn:
        expires_at = conn.execute(select(db.oauth_tokens.c.expires_at)).scalar_one()
    assert expires_at == pytest.approx(time.time() + 3600, abs=30)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, INVALID_TOKEN),
        (400, v3_error(400, "INVALID_OAUTHTOKEN", "Invalid OAuth access token.")),  # seed 001 lines 57-63
    ],
    ids=["401", "400-INVALID_OAUTHTOKEN"],
)
def test_rejected_token_is_refreshed_once_and_the_call_repeated(make_client, rsps, monkeypatch, status, body):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    rsps.get(ISSUES + "/1", json=body, status=status)
    rsps.get(ISSUES + "/1", json={"id": "1"})
    client = make_client()
    client.tokens.get()  # tok-1 was issued by an earlier call: now it has expired
    assert client.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1").data == {"id": "1"}
    assert [c.request.headers["Authorization"] for c in api_calls(rsps)] == [
        "Zoho-oauthtoken tok-1",
        "Zoho-oauthtoken tok-2",
    ]
    assert len(token_calls(rsps)) == 2
    assert make_client().tokens.get() == "tok-2"  # the rejected token was replaced for everyone


def test_token_rejected_twice_is_a_configuration_error_and_no_loop(make_client, rsps, monkeypatch):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    seed_invalid = v3_error(400, "INVALID_OAUTHTOKEN", "Invalid OAuth access token.")  # seed 001:76-84
    rsps.get(ISSUES + "/1", json=seed_invalid, status=400)
    client = make_client()
    client.tokens.get()  # tok-1 was issued by an earlier call
    with pytest.raises(ZohoConfigError) as err:
        client.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    assert not isinstance(err.value, ZohoTransientError)
    assert "scopes" in err.value.reason and "data centre" in err.value.reason
    assert len(api_calls(rsps)) == 2 and len(token_calls(rsps)) == 2  # one refresh, no loop
    other = make_client()  # another worker: neither calls nor refreshes while the error stands
    for _ in range(3):
        with pytest.raises(ZohoConfigError):
            other.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    assert len(api_calls(rsps)) == 2 and len(token_calls(rsps)) == 2


def test_a_fresh_token_refused_is_a_configuration_error_at_once(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(ISSUES + "/1", json=v3_error(400, "INVALID_OAUTHTOKEN", "Invalid OAuth access token."), status=400)
    with pytest.raises(ZohoConfigError):
        make_client().call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    assert len(api_calls(rsps)) == 1 and len(token_calls(rsps)) == 1  # the token budget is not touched again


def test_invalid_client_is_permanent_and_names_the_settings(make_client, rsps):
    rsps.post(TOKEN_URL, json={"error": "invalid_client"})  # Zoho answers OAuth errors with 200
    client = make_client()
    with pytest.raises(ZohoPermanentError) as err:
        client.create_issue(draft(options={}))
    for name in ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "ZOHO_ACCOUNTS_URL"):
        assert name in err.value.reason
    assert "invalid_client" in err.value.reason
    assert "s3cret" not in err.value.reason and "1000.refresh" not in err.value.reason
    assert api_calls(rsps) == []


def test_too_many_token_requests_is_transient(make_client, rsps):
    rsps.post(
        TOKEN_URL,
        json={
            "error": "Access Denied",
            "error_description": "You have made too many requests continuously. Please try again after some time.",
        },
    )
    client = make_client()
    with pytest.raises(ZohoTransientError) as err:
        client.tokens.get()
    assert err.value.retry_after and err.value.retry_after > 0
    assert "Access Denied" in err.value.reason


def test_accounts_server_error_and_network_error_are_transient(make_client, rsps):
    rsps.post(TOKEN_URL, status=503, body="unavailable")
    with pytest.raises(ZohoTransientError):
        make_client().tokens.get()
    rsps.replace(responses.POST, TOKEN_URL, body=requests.ConnectionError("refused"))
    with pytest.raises(ZohoTransientError):
        make_client().tokens.get()
    rsps.replace(responses.POST, TOKEN_URL, json=["not", "an", "object"])
    with pytest.raises(ZohoTransientError):
        make_client().tokens.get()


# -- names → ids -----------------------------------------------------------------------------------------


def test_names_resolve_case_and_whitespace_insensitively_and_are_cached(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    client = make_client()
    assert client.resolve(PORTAL, PROJECT, "status", "  in   PROGRESS ") == option_id("status", "In Progress")
    assert client.resolve(PORTAL, PROJECT, "severity", "major") == option_id("severity", "Major")
    assert client.resolve(PORTAL, PROJECT, "module", "UI") == option_id("module", "UI")
    assert len(api_calls(rsps)) == 1  # one metadata call for the project, then the cache


def test_unknown_name_refreshes_once_then_lists_the_valid_names(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    client = make_client()
    client.resolve(PORTAL, PROJECT, "status", "Open")
    with pytest.raises(ResolutionError) as err:
        client.resolve(PORTAL, PROJECT, "severity", "Catastrophic")
    assert isinstance(err.value, ZohoPermanentError)  # goes to failed, never retried
    assert err.value.field == "severity"
    assert "Catastrophic" in err.value.reason
    for name in OPTIONS["severity"]:
        assert name in err.value.reason
    assert len([c for c in api_calls(rsps) if c.request.url == DEFAULTFIELDS]) == 2


def test_option_added_in_zoho_is_found_by_the_refresh(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    added = {**OPTIONS, "status": [*OPTIONS["status"], "To be Tested"]}
    rsps.get(DEFAULTFIELDS, json=defaultfields_body(added))
    client = make_client()
    client.resolve(PORTAL, PROJECT, "status", "Open")
    assert client.resolve(PORTAL, PROJECT, "status", "to be tested") == option_id("status", "To be Tested", added)


# -- projects dialect: bodies and verbs ------------------------------------------------------------------------


@pytest.fixture
def projects(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    return make_client()


def test_create_body_has_ids_the_external_id_and_no_priority(projects, rsps):
    rsps.post(ISSUES, json={"id": "1752587000000100001", "name": "Login button does nothing"})
    assert projects.create_issue(draft()) == "1752587000000100001"
    [create] = [c for c in api_calls(rsps) if c.request.method == "POST"]
    assert create.request.url == ISSUES
    assert create.request.headers["Content-Type"] == "application/json"
    assert body_of(create) == {
        "name": "Login button does nothing",
        "description": f"Clicking it has no effect.\n\n{MARKER}",  # the second anchor, on every issue
        "status": {"id": option_id("status", "Open")},
        "severity": {"id": option_id("severity", "Major")},
        "classification": {"id": option_id("classification", "Bug")},
        "module": {"id": option_id("module", "UI")},
        "external_id": EXTERNAL_ID,
    }


def test_create_without_an_id_in_the_answer_is_not_taken_as_success(projects, rsps):
    rsps.post(ISSUES, json={"unexpected": True})
    with pytest.raises(ZohoTransientError, match="without an id"):
        projects.create_issue(draft())


def test_update_is_a_patch_of_the_issue(projects, rsps):
    rsps.patch(ISSUES + "/555", json={"id": "555"})
    projects.update_issue(draft(title="Login broken on Safari"), "555")
    [update] = [c for c in api_calls(rsps) if c.request.method == "PATCH"]
    assert update.request.url == ISSUES + "/555"
    body = body_of(update)
    assert body["name"] == "Login broken on Safari"
    assert body["status"] == {"id": option_id("status", "Open")}
    assert "priority" not in body


def test_close_patches_only_the_status(projects, rsps):
    rsps.patch(ISSUES + "/555", json={"id": "555"})
    projects.close_issue(draft(), "555", "closed")
    [update] = [c for c in api_calls(rsps) if c.request.method == "PATCH"]
    assert body_of(update) == {"status": {"id": option_id("status", "Closed")}}


def test_comment_is_posted_as_comment(projects, rsps):
    rsps.post(ISSUES + "/555/comments", json={"comments": [{"id": "c-1", "comment": "hello"}]})
    assert projects.add_comment(PORTAL, PROJECT, "555", "hello") == "c-1"
    [post] = api_calls(rsps)
    assert post.request.url == ISSUES + "/555/comments"
    assert body_of(post) == {"comment": "hello"}


def test_comment_update_and_delete(projects, rsps):
    rsps.patch(ISSUES + "/555/comments/c-1", json={"comments": [{"id": "c-1"}]})
    rsps.delete(ISSUES + "/555/comments/c-1", status=204)
    projects.update_comment(PORTAL, PROJECT, "555", "c-1", "edited")
    projects.delete_comment(PORTAL, PROJECT, "555", "c-1")
    patch, delete = api_calls(rsps)
    assert (patch.request.method, body_of(patch)) == ("PATCH", {"comment": "edited"})
    assert delete.request.method == "DELETE" and delete.request.body is None


# -- errors -------------------------------------------------------------------------------------------------


def test_invalid_parameter_value_is_permanent_with_zohos_message_and_field(projects, rsps):
    message = "You don't have sufficient permission to create an internal forum."
    rsps.post(ISSUES, status=400, json=v3_error(400, "INVALID_PARAMETER_VALUE", message, "type"))
    with pytest.raises(ZohoPermanentError) as err:
        projects.create_issue(draft())
    assert not isinstance(err.value, ZohoTransientError)
    assert message in err.value.reason and "type" in err.value.reason
    assert "INVALID_PARAMETER_VALUE" in err.value.reason
    assert err.value.status == 400 and err.value.field == "type"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(projects, rsps, status):
    body = v3_error(status, "INTERNAL_SERVER_ERROR", "Internal server error. Please contact support.")
    rsps.post(ISSUES, status=status, json=body)
    with pytest.raises(ZohoTransientError) as err:
        projects.create_issue(draft())
    assert err.value.status == status


def test_429_with_retry_after_is_transient_and_backs_everyone_off(projects, rsps):
    rsps.post(ISSUES, status=429, headers={"Retry-After": "7"}, json=v3_error(429, "TOO_MANY_REQUESTS", "slow down"))
    before = time.time()
    with pytest.raises(ZohoTransientError) as err:
        projects.create_issue(draft())
    assert err.value.status == 429
    assert err.value.retry_after == pytest.approx(7, abs=0.5)
    backoff = block_status(projects.engine)[1]
    assert backoff is not None and before + 6 <= float(backoff) <= time.time() + 8


def test_429_with_only_x_ratelimit_reset_is_honoured(projects, rsps):
    reset = int(time.time()) + 42
    rsps.post(ISSUES, status=429, headers={"X-RateLimit-Reset": str(reset)}, json={})
    with pytest.raises(ZohoTransientError) as err:
        projects.create_issue(draft())
    left = reset - time.time()  # what is left of the wait when checked (a loaded machine is slow to get here)
    assert left - 1.5 <= err.value.retry_after <= 43, (err.value.retry_after, left)
    assert block_status(projects.engine)[1] == pytest.approx(reset, abs=2)


def test_429_retry_after_as_http_date(projects, rsps):
    from email.utils import formatdate

    rsps.post(ISSUES, status=429, headers={"Retry-After": formatdate(time.time() + 20, usegmt=True)}, json={})
    with pytest.raises(ZohoTransientError) as err:
        projects.create_issue(draft())
    assert err.value.retry_after == pytest.approx(20, abs=2)


@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_network_errors_are_transient_and_recorded(projects, rsps, exc):
    rsps.post(ISSUES, body=exc)
    projects.event_id = 9
    with pytest.raises(ZohoTransientError, match="network error"):
        projects.create_issue(draft())
    last = store.calls_for_event(projects.engine, 9)[-1]
    assert (last["method"], last["status"]) == ("POST", None)
    assert type(exc).__name__ in last["response_text"]


def test_not_found_is_permanent(projects, rsps):
    rsps.patch(ISSUES + "/404", status=404, json=v3_error(404, "INVALID_PARAMETER_VALUE", "Given issue id is invalid"))
    with pytest.raises(ZohoPermanentError, match="Given issue id is invalid"):
        projects.update_issue(draft(), "404")


def test_non_json_error_answer_keeps_the_text(projects, rsps):
    rsps.post(ISSUES, status=400, body="<html>Bad gateway config</html>", content_type="text/html")
    with pytest.raises(ZohoPermanentError, match="Bad gateway config"):
        projects.create_issue(draft())


# -- every call is recorded --------------------------------------------------------------------------------


def test_every_call_is_recorded_with_status_and_answer(projects, rsps):
    rsps.post(ISSUES, json={"id": "77"})
    rsps.patch(ISSUES + "/77", status=400, json=v3_error(400, "INVALID_PARAMETER_VALUE", "bad name", "name"))
    projects.event_id = 5
    projects.create_issue(draft())
    with pytest.raises(ZohoPermanentError):
        projects.update_issue(draft(), "77")
    calls = store.calls_for_event(projects.engine, 5)
    assert [(c["method"], c["path"], c["status"], c["dry_run"]) for c in calls] == [
        ("GET", f"/restapi/portal/{PORTAL}/projects/{PROJECT}/bugs/defaultfields/", 200, False),
        ("POST", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues", 200, False),
        ("PATCH", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/77", 400, False),
    ]
    assert json.loads(calls[1]["request_json"])["name"] == "Login button does nothing"
    assert '"77"' in calls[1]["response_text"]
    assert "bad name" in calls[2]["response_text"]
    assert all(c["duration_ms"] is not None and c["duration_ms"] >= 0 for c in calls)
    assert store.calls_for_event(projects.engine, 6) == []


def test_tokens_never_reach_the_call_records(projects, rsps):
    rsps.post(ISSUES, json={"id": "77"})
    projects.event_id = 5
    projects.create_issue(draft())
    with projects.engine.connect() as conn:
        rows = conn.execute(select(db.zoho_calls)).all()
    assert rows and not any("tok-1" in json.dumps(list(r), default=str) for r in rows)


# -- BugTracker dialect --------------------------------------------------------------------------------------


@pytest.fixture
def bugtracker(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    return make_client(ZOHO_DIALECT="bugtracker")


def test_bugtracker_create_uses_names_and_carries_the_marker(bugtracker, rsps):
    rsps.post(BUGS, status=201, json={"bugs": [{"id": "900", "key": "PRJ-1"}]})
    assert bugtracker.create_issue(draft()) == "900"
    [create] = api_calls(rsps)  # no defaultfields lookup: BugTracker takes names
    assert create.request.url == BUGS
    assert body_of(create) == {
        "title": "Login button does nothing",
        "description": f"Clicking it has no effect.\n\n{MARKER}",
        "status": "Open",
        "severity": "Major",
        "classification": "Bug",
        "module": "UI",
        "priority": "High",
    }


def test_bugtracker_marker_alone_when_the_description_is_empty(bugtracker, rsps):
    rsps.post(BUGS, status=201, json={"bugs": [{"id": "900"}]})
    bugtracker.create_issue(draft(description=""))
    assert body_of(api_calls(rsps)[0])["description"] == MARKER


def test_bugtracker_update_is_put_and_close_sends_the_status_name(bugtracker, rsps):
    rsps.put(BUGS + "/900", json={"bugs": [{"id": "900"}]})
    bugtracker.update_issue(draft(title="v2"), "900")
    bugtracker.close_issue(draft(), "900", "Closed")
    update, close = api_calls(rsps)
    assert update.request.method == "PUT" and update.request.url == BUGS + "/900"
    assert body_of(update)["title"] == "v2" and MARKER in body_of(update)["description"]
    assert body_of(close) == {"status": "Closed"}


def test_bugtracker_comment_uses_content(bugtracker, rsps):
    rsps.post(BUGS + "/900/comments", status=201, json={"comments": [{"id": "c-9", "content": "hi"}]})
    rsps.put(BUGS + "/900/comments/c-9", json={"comments": [{"id": "c-9"}]})
    assert bugtracker.add_comment(PORTAL, PROJECT, "900", "hi") == "c-9"
    bugtracker.update_comment(PORTAL, PROJECT, "900", "c-9", "hi again")
    post, put = api_calls(rsps)
    assert body_of(post) == {"content": "hi"}
    assert put.request.method == "PUT" and body_of(put) == {"content": "hi again"}


def test_bugtracker_validation_error_is_permanent_with_the_detail(bugtracker, rsps):
    error = {
        "code": 6008,
        "message": "Validation Failed",
        "details": {"field": "title", "error": "Title is required and cannot be empty"},
    }
    rsps.post(BUGS, status=400, json=error)
    with pytest.raises(ZohoPermanentError) as err:
        bugtracker.create_issue(draft())
    assert not isinstance(err.value, ZohoTransientError)
    assert "Title is required and cannot be empty" in err.value.reason
    assert "6008" in err.value.reason
    assert err.value.field == "title"


def test_bugtracker_6004_refreshes_the_token_and_repeats(bugtracker, rsps, monkeypatch):
    error = {"code": 6004, "message": "Authentication Failed", "details": {"field": "Authorization", "error": "x"}}
    rsps.post(BUGS, status=401, json=error)
    rsps.post(BUGS, status=201, json={"bugs": [{"id": "900"}]})
    bugtracker.tokens.get()  # tok-1 was issued by an earlier call
    assert bugtracker.create_issue(draft()) == "900"
    assert [c.request.headers["Authorization"] for c in api_calls(rsps)] == [
        "Zoho-oauthtoken tok-1",
        "Zoho-oauthtoken tok-2",
    ]


def test_bugtracker_rate_limit_6009_is_transient(bugtracker, rsps):
    error = {"code": 6009, "message": "Rate Limit Exceeded", "details": {"field": "", "error": "slow down"}}
    reset = int(time.time()) + 30
    rsps.post(BUGS, status=429, json=error, headers={"X-RateLimit-Reset": str(reset)})
    with pytest.raises(ZohoTransientError) as err:
        bugtracker.create_issue(draft())
    left = reset - time.time()  # what is left of the wait when checked (a loaded machine is slow to get here)
    assert left - 1.5 <= err.value.retry_after <= 31, (err.value.retry_after, left)


def test_bugtracker_find_searches_for_the_marker(bugtracker, rsps):
    bugs = [
        {"id": "1", "title": "x", "description": "mentions [issue-bridge:github:acme/web#70]"},
        {"id": "2", "title": "y", "description": f"text\n\n{MARKER}"},
    ]
    rsps.get(BUGS + "/search", json={"bugs": bugs})
    assert bugtracker.find_issue(draft()) is None  # no intent in doubt: no call at all
    assert api_calls(rsps) == []
    assert bugtracker.find_issue(draft(), created_after=time.time() - 5) == "2"
    [call] = api_calls(rsps)
    query = parse_qs(urlsplit(call.request.url).query)
    assert query == {"search_text": [MARKER], "index": ["1"], "range": ["100"]}  # paged (seed 000:1267-1298)
    rsps.replace(responses.GET, BUGS + "/search", json={"bugs": bugs[:1]})
    # the search index may lag behind a create: nothing found, the bug list is read too (000:1267-1298)
    rsps.get(BUGS, json={"bugs": bugs[:1]})
    assert bugtracker.find_issue(draft(), created_after=time.time() - 5) is None
    rsps.replace(responses.GET, BUGS, json={"bugs": bugs})
    assert bugtracker.find_issue(draft(), created_after=time.time() - 5) == "2"  # found in the list


def test_bugtracker_search_hits_without_a_description_are_read(bugtracker, rsps):
    brief = [{"id": "1", "title": "x"}, {"id": "2", "title": "y"}]  # 000 shows no search answer: no description
    rsps.get(BUGS + "/search", json={"bugs": brief})
    rsps.get(BUGS + "/1", json={"bugs": [{"id": "1", "description": "mentions [issue-bridge:github:acme/web#70]"}]})
    rsps.get(BUGS + "/2", json={"id": "2", "description": f"text\n\n{MARKER}"})
    assert bugtracker.find_issue(draft(), created_after=time.time() - 5) == "2"
    reads = len(api_calls(rsps))
    assert bugtracker.find_issue(draft(), created_after=time.time() - 5) == "2"
    assert len(api_calls(rsps)) - reads == 1  # the descriptions read are kept: only the search again


# -- dry-run -----------------------------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_records_the_would_be_calls(make_client):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as strict:  # any request would fail
        client = make_client(creds=False)
        assert client.dry_run
        client.event_id = 3
        assert client.find_issue(draft(), created_after=time.time()) is None  # nothing in doubt in a dry run
        issue_id = client.create_issue(draft())
        client.update_issue(draft(title="v2"), issue_id)
        comment_id = client.add_comment(PORTAL, PROJECT, issue_id, "hello")
        assert issue_id and comment_id
        assert len(strict.calls) == 0
    calls = store.calls_for_event(client.engine, 3)
    assert [c["method"] for c in calls] == ["POST", "PATCH", "POST"]
    assert all(c["dry_run"] and c["status"] is None for c in calls)
    create = json.loads(calls[0]["request_json"])
    assert calls[0]["path"] == f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues"
    assert create["name"] == "Login button does nothing" and create["external_id"] == EXTERNAL_ID
    assert set(create["status"]) == {"id"} and "Open" in create["status"]["id"]
    assert json.loads(calls[2]["request_json"]) == {"comment": "hello"}
    with client.engine.connect() as conn:
        assert conn.execute(select(db.oauth_tokens)).all() == []


def test_dry_run_ids_are_stable_per_item(make_client):
    client = make_client(creds=False)
    assert client.create_issue(draft()) == client.create_issue(draft())
    assert client.create_issue(draft()) != client.create_issue(draft(external_id="github:acme/web#8"))


def test_back_off_after_429_holds_back_every_client_sharing_the_budget(make_client, rsps):
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    rsps.post(ISSUES, status=429, headers={"Retry-After": "60"}, json=v3_error(429, "TOO_MANY_REQUESTS", "slow"))
    first = make_client(ZOHO_RATE_LIMIT_PER_MINUTE="100")
    second = make_client(ZOHO_RATE_LIMIT_PER_MINUTE="100")  # another worker process
    with pytest.raises(ZohoTransientError):
        first.create_issue(draft())
    sent = len(api_calls(rsps))
    started = time.monotonic()
    with pytest.raises(ZohoTransientError) as err:
        second.add_comment(PORTAL, PROJECT, "555", "hello")
    assert time.monotonic() - started < 10  # does not sit out the minute inside a worker
    assert err.value.retry_after == pytest.approx(60, abs=2)  # tells the caller when to come back
    assert len(api_calls(rsps)) == sent  # and Zoho heard nothing


def test_zoho_refusing_a_cached_option_id_refreshes_the_metadata_and_sends_again(make_client, rsps):
    """Someone recreated the 'Major' severity in Zoho: its id changed under our cache."""
    client = make_client()
    rsps.post(TOKEN_URL, json=token_answer("1000.tok"))
    renamed = {**OPTIONS, "severity": ["None", "Minor", "Critical", "Major"]}  # Major moved: a new id
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    rsps.get(DEFAULTFIELDS, json=defaultfields_body(renamed))
    rsps.post(ISSUES, status=400, json=v3_error(400, "INVALID_PARAMETER_VALUE", "Invalid severity id", "severity"))
    rsps.post(ISSUES, json={"id": "42"})
    assert client.create_issue(draft()) == "42"
    posts = [c for c in api_calls(rsps) if c.request.method == "POST"]
    assert len(posts) == 2
    assert json.loads(posts[0].request.body)["severity"] == {"id": option_id("severity", "Major")}
    assert json.loads(posts[1].request.body)["severity"] == {"id": option_id("severity", "Major", renamed)}


def test_a_refused_option_id_that_stays_refused_fails_after_one_refresh(make_client, rsps):
    client = make_client()
    rsps.post(TOKEN_URL, json=token_answer("1000.tok"))
    rsps.get(DEFAULTFIELDS, json=defaultfields_body())
    rsps.post(ISSUES, status=400, json=v3_error(400, "INVALID_PARAMETER_VALUE", "Invalid module id", "module"))
    with pytest.raises(ZohoPermanentError, match="Invalid module id"):
        client.create_issue(draft())
    assert len([c for c in api_calls(rsps) if c.request.method == "POST"]) == 2
