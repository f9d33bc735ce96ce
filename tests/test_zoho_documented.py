"""One test per departure from the seed documents listed in shared/docs/zoho-facts.md (issue #10).

Every Zoho answer here is a sample copied from the documents (tests/zoho_seed_samples.py), so the client is
held to what Zoho is documented to send, not to what a fake happens to send.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from bridge.mapping.model import IssueDraft
from bridge.settings import SettingsError, datacentre_mismatch, load_settings
from bridge.store import schema as db
from bridge.store.clock import engine_now
from bridge.targets.zoho import auth
from bridge.targets.zoho.client import ZohoClient, parse_defaultfields
from bridge.targets.zoho.errors import ZohoPermanentError, ZohoRateLimited, ZohoTransientError
from bridge.targets.zoho.ratelimit import RateLimiter, block_status
from testkit import zoho_seed_samples as seed

API = "https://projectsapi.zoho.test"
ACCOUNTS = "https://accounts.zoho.test"
TOKEN_URL = ACCOUNTS + "/oauth/v2/token"
PORTAL, PROJECT = "739121528", "1752587000000097024"
ISSUES = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues"
BUGS = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/bugs"
USERS = f"{API}/api/v3/portal/{PORTAL}/projects/{PROJECT}/users"
DEFAULTFIELDS = f"{API}/restapi/portal/{PORTAL}/projects/{PROJECT}/bugs/defaultfields/"
CREDS = {"ZOHO_CLIENT_ID": "1000.CLIENT", "ZOHO_CLIENT_SECRET": "s3cret", "ZOHO_REFRESH_TOKEN": "1000.refresh"}
EXTERNAL_ID = "github:acme/web#7"
MARKER = f"[issue-bridge:{EXTERNAL_ID}]"
TOKEN = {"access_token": "tok-1", "api_domain": "https://www.zohoapis.com", "token_type": "Bearer", "expires_in": 3600}
# The option lists come from an undocumented v1 call; Zoho's own wrapper reads the status list as
# `status_deatils` (zoho-facts.md, "What the documents leave open").
OPTIONS = {
    "status_details": [{"status_id": "11", "status_name": "Open"}, {"status_id": "12", "status_name": "Closed"}],
    "severity_details": [{"severity_id": "21", "severity_name": "Major"}],
}


@pytest.fixture
def make_client(tmp_path: Path):
    engines = []

    def make(**extra: str) -> ZohoClient:
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
            "ZOHO_API_BASE": API,
            "ZOHO_ACCOUNTS_URL": ACCOUNTS,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
            **CREDS,
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
        mock.post(TOKEN_URL, json=TOKEN)
        mock.get(DEFAULTFIELDS, json={"defaultfields": OPTIONS})
        yield mock


def draft(**changes) -> IssueDraft:
    values = dict(
        portal=PORTAL,
        project=PROJECT,
        external_id=EXTERNAL_ID,
        external_id_field=None,
        title="Login button does nothing",
        description="Clicking it has no effect.",
        options={"status": "Open"},
    )
    values.update(changes)
    return IssueDraft(**values)


def api_calls(mock: responses.RequestsMock) -> list:
    return [c for c in mock.calls if not c.request.url.startswith(ACCOUNTS)]


def query_of(call) -> dict[str, str]:
    return {k: v for k, [v] in parse_qs(urlsplit(call.request.url).query).items()}


# -- API roots, scopes, data centres -----------------------------------------------------------------------


def test_each_dialect_has_its_documented_api_root_and_zoho_api_base_overrides(tmp_path):
    base = {"BRIDGE_DATA_DIR": str(tmp_path)}
    assert load_settings(base).zoho_api_base == "https://projectsapi.zoho.com"  # seed 001:10
    assert load_settings({**base, "ZOHO_DIALECT": "bugtracker"}).zoho_api_base == "https://bugtracker.zoho.com"
    over = {**base, "ZOHO_DIALECT": "bugtracker", "ZOHO_API_BASE": "https://bugtracker.zoho.eu"}
    assert load_settings(over).zoho_api_base == "https://bugtracker.zoho.eu"


def test_documented_limits_are_the_defaults(tmp_path):
    projects = load_settings({"BRIDGE_DATA_DIR": str(tmp_path)})
    assert (projects.zoho_rate_limit_per_minute, projects.zoho_rate_window_seconds) == (100, 120.0)  # 001:737
    assert projects.zoho_rate_block_seconds == 1800.0 and projects.zoho_daily_limit == 0
    # seed 000:761-765: Free / Premium / Enterprise at 100 / 200 / 500 a minute, 5,000 / 25,000 / 100,000 a day
    for plan, minute, day in (("free", 100, 5000), ("premium", 200, 25000), ("Enterprise", 500, 100000)):
        bt = load_settings({"BRIDGE_DATA_DIR": str(tmp_path), "ZOHO_DIALECT": "bugtracker", "ZOHO_PLAN": plan})
        assert (bt.zoho_rate_limit_per_minute, bt.zoho_rate_window_seconds, bt.zoho_daily_limit) == (minute, 60, day)
    with pytest.raises(SettingsError, match="premium"):  # not a documented plan name
        load_settings({"BRIDGE_DATA_DIR": str(tmp_path), "ZOHO_DIALECT": "bugtracker", "ZOHO_PLAN": "standard"})


def test_a_data_centre_mismatch_is_named_at_start_up(tmp_path):
    env = {"BRIDGE_DATA_DIR": str(tmp_path), "ZOHO_ACCOUNTS_URL": "https://accounts.zoho.eu"}
    warning = datacentre_mismatch(load_settings(env))
    assert warning and ".eu" in warning and ".com" in warning and "ZOHO_API_BASE" in warning
    same = {**env, "ZOHO_API_BASE": "https://projectsapi.zoho.eu"}
    assert datacentre_mismatch(load_settings(same)) is None
    assert datacentre_mismatch(load_settings({**env, "ZOHO_API_BASE": "http://127.0.0.1:9"})) is None  # a fake


# -- users, projects, option lists ---------------------------------------------------------------------------


def test_assignee_is_resolved_by_the_one_user_call_reading_id(make_client, rsps):
    rsps.get(f"{USERS}/monica.hemsworth@zylker.com", json=seed.PROJECT_USER)
    rsps.post(ISSUES, json=seed.ISSUE_CREATED)
    client = make_client()
    assert client.create_issue(draft(assignee_email="Monica.Hemsworth@zylker.com")) == seed.ISSUE_CREATED["id"]
    get_user, create = api_calls(rsps)[-2:]
    assert urlsplit(get_user.request.url).path.endswith("/users/monica.hemsworth@zylker.com")
    assert json.loads(create.request.body)["assignee"] == {"zpuid": seed.PROJECT_USER["id"]}  # seed 001:3749


def test_an_unknown_assignee_is_said_out_loud_and_the_fallback_tried(make_client, rsps, caplog):
    error = {"error": {"status_code": "400", "title": "INVALID_PARAMETER_VALUE", "details": [{"message": "no"}]}}
    rsps.get(f"{USERS}/ghost@example.com", status=400, json=error)
    rsps.get(f"{USERS}/monica.hemsworth@zylker.com", json=seed.PROJECT_USER)
    client = make_client()
    body = client.issue_body(
        draft(assignee_email="ghost@example.com", assignee_fallback="monica.hemsworth@zylker.com"), creating=True
    )
    assert body["assignee"] == {"zpuid": seed.PROJECT_USER["id"]}
    with caplog.at_level(logging.WARNING, logger="bridge.zoho"):
        body = client.issue_body(draft(assignee_email="ghost@example.com"), creating=True)
    assert "assignee" not in body and "left unassigned" in caplog.text


def test_the_projects_list_is_a_top_level_array(make_client, rsps):
    rsps.get(f"{API}/api/v3/portal/{PORTAL}/projects", json=seed.PROJECTS)
    projects = make_client().projects(PORTAL)
    assert [(p["id"], p["name"]) for p in projects] == [("7000000082003", "via_api_006_03_DEC_1157AM")]
    assert query_of(api_calls(rsps)[0]) == {"page": "1", "per_page": "100"}


@pytest.mark.parametrize("status_key", ["status_details", "status_deatils"])
def test_both_spellings_of_the_status_list_are_read(status_key):
    options = {status_key: OPTIONS["status_details"], "severity_details": OPTIONS["severity_details"]}
    table = parse_defaultfields({"defaultfields": options})
    assert table["status"] == {"open": ("11", "Open"), "closed": ("12", "Closed")}
    assert table["severity"] == {"major": ("21", "Major")}
    assert table["module"] == {}  # empty: `mappings check` reports it for a mapping that uses it


# -- bodies: tags, due dates, long text --------------------------------------------------------------------


def test_tags_on_update_are_added_and_removed_from_the_tags_last_applied(make_client, rsps):
    rsps.patch(f"{ISSUES}/{seed.ISSUE_UPDATED['id']}", json=seed.ISSUE_UPDATED)
    client = make_client()
    created = client.issue_body(draft(tags=("t1", "t2")), creating=True)
    assert created["tags"] == [{"id": "t1"}, {"id": "t2"}]  # create: seed 001:3749
    client.update_issue(draft(tags=("t2", "t3")), seed.ISSUE_UPDATED["id"], applied_tags=("t1", "t2"))
    patch = api_calls(rsps)[-1]
    assert patch.request.method == "PATCH"
    assert json.loads(patch.request.body)["tags"] == [{"add": [{"id": "t3"}], "remove": [{"id": "t1"}]}]  # 001:3911
    client.update_issue(draft(tags=("t2", "t3")), seed.ISSUE_UPDATED["id"], applied_tags=("t2", "t3"))
    assert "tags" not in json.loads(api_calls(rsps)[-1].request.body)  # nothing changed: no tag operation


def test_due_dates_are_sent_in_the_documented_timestamp_form(make_client, rsps):
    body = make_client().issue_body(draft(due_date="2025-12-12"), creating=True)
    assert body["due_date"] == "2025-12-12T12:00:00.000Z"  # the form of seed 001:3749; noon keeps the day
    bt = make_client(ZOHO_DIALECT="bugtracker").issue_body(draft(due_date="2025-01-25"), creating=True)
    assert bt["due_date"] == "2025-01-25"  # seed 000's example


def test_a_huge_description_and_comment_are_cut_with_a_marker_and_a_link(make_client, rsps):
    rsps.post(f"{ISSUES}/1/comments", json=seed.COMMENT_ADDED)
    client = make_client()
    url = "https://github.com/acme/web/issues/7"
    body = client.issue_body(draft(description="x" * 4_000_000, source_url=url), creating=True)
    assert len(body["description"]) < 40_000
    assert f"truncated by issue-bridge: the full text is at {url}" in body["description"]
    assert body["description"].endswith(MARKER)  # the second anchor survives the cut
    needle = "(issue-bridge github comment 99)"
    client.add_comment(PORTAL, PROJECT, "1", "y" * 4_000_000 + "\n\n" + needle, source_url=url + "#c99")
    sent = json.loads(api_calls(rsps)[-1].request.body)["comment"]
    assert len(sent) < 20_000 and sent.endswith(needle) and url + "#c99" in sent


# -- finding an issue: the crash window ----------------------------------------------------------------------


def test_no_lookup_when_nothing_is_in_doubt(make_client, rsps):
    client = make_client()
    assert client.find_issue(draft()) is None
    assert api_calls(rsps) == []  # a new issue costs the create call alone


def test_crash_window_lookup_lists_by_created_time_then_reads_the_marker(make_client, rsps):
    listed = copy.deepcopy(seed.ISSUE_LIST)
    mine, other = copy.deepcopy(listed["issues"][0]), copy.deepcopy(listed["issues"][0])
    intent = time.time() - 30
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(intent + 5))
    other.update(id="501", created_time=now_iso)  # the seed's name: another item's issue
    mine.update(id="502", created_time=now_iso, name=draft().title)
    old = listed["issues"][0]  # the seed's own issue, created in 2024: older than the intent, ends the scan
    listed["issues"] = [mine, other, old]
    rsps.get(ISSUES, json=listed)
    rsps.get(f"{ISSUES}/502/description", json={"description": f"Clicking it has no effect.\n\n{MARKER}"})
    rsps.get(f"{ISSUES}/501/description", json=seed.ISSUE_DESCRIPTION)
    client = make_client()
    assert client.find_issue(draft(), created_after=intent) == "502"
    calls = api_calls(rsps)
    assert query_of(calls[0]) == {"sort_by": "DESC(created_time)", "page": "1", "per_page": "200"}
    assert [urlsplit(c.request.url).path.rsplit("/", 2)[1] for c in calls[1:]] == ["502"]  # its name first
    assert client.find_marked_issues(draft(), created_after=intent) == ["502"]  # every candidate, for duplicates
    read = [urlsplit(c.request.url).path for c in api_calls(rsps)[len(calls) :] if "/description" in c.request.url]
    assert read == [f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/501/description"]  # 502 is remembered


def test_find_marked_issues_pages_until_older_than_the_intent(make_client, rsps):
    intent = time.time() - 30
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(intent + 1))
    page1 = copy.deepcopy(seed.ISSUE_LIST)
    template = page1["issues"][0]
    page1["issues"] = [{**template, "id": str(600 + i), "created_time": stamp} for i in range(200)]
    page1["page_info"] = {"per_page": 200, "page": 1, "has_next_page": True}
    page2 = {"issues": [{**template, "id": "900", "created_time": stamp}, template], "page_info": {"page": 2}}
    rsps.get(ISSUES, json=page1)
    rsps.get(ISSUES, json=page2)
    for i in [*range(600, 800), 900]:
        text = f"x\n\n{MARKER}" if i in (650, 900) else "x"
        rsps.get(f"{ISSUES}/{i}/description", json={"description": text})
    assert make_client().find_marked_issues(draft(), created_after=intent) == ["650", "900"]
    assert [query_of(c)["page"] for c in api_calls(rsps) if c.request.url.startswith(ISSUES + "?")] == ["1", "2"]


def test_a_proven_cfid_filter_answers_in_one_call(make_client, rsps):
    client = make_client()
    client.knowledge.learn(PORTAL, custom_field="accepted", filter_cfid="accepted", cfid="1752587000000080001")
    hit = {**seed.ISSUE_LIST["issues"][0], "id": "77", "external_id": EXTERNAL_ID}
    rsps.get(ISSUES, json={"issues": [hit], "page_info": {"has_next_page": False}})
    assert client.find_issue(draft(external_id_field="external_id")) == "77"
    [call] = api_calls(rsps)
    spec = json.loads(query_of(call)["filter"])
    assert spec[0]["criteria"] == [{"cfid": "1752587000000080001", "criteria_condition": "is", "value": [EXTERNAL_ID]}]


def test_a_refused_custom_field_is_learned_and_the_create_sent_without_it(make_client, rsps):
    refused = {
        "error": {
            "status_code": "400",
            "title": "INVALID_PARAMETER_VALUE",
            "error_type": "FIELDS_VALIDATION_ERROR",
            "details": [{"message": "Invalid field", "field_name": "external_id"}],
        }
    }
    rsps.post(ISSUES, status=400, json=refused)
    rsps.post(ISSUES, json=seed.ISSUE_CREATED)
    client = make_client()
    assert client.create_issue(draft(external_id_field="external_id")) == seed.ISSUE_CREATED["id"]
    first, second = [json.loads(c.request.body) for c in api_calls(rsps) if c.request.method == "POST"]
    assert first["external_id"] == EXTERNAL_ID and "external_id" not in second
    assert second["description"].endswith(MARKER)  # the marker carries the external id
    assert make_client().knowledge.fact(PORTAL, "custom_field") == "refused"  # for every worker


# -- comments, move, delete ------------------------------------------------------------------------------------


def test_find_comment_pages_through_the_comments(make_client, rsps):
    first = copy.deepcopy(seed.COMMENTS)
    first["page_info"] = {**first["page_info"], "has_next_page": True}
    second = copy.deepcopy(seed.COMMENTS)
    second["comments"][0].update(id="9002", comment="hello\n\n(issue-bridge github comment 5)")
    rsps.get(f"{ISSUES}/1/comments", json=first)
    rsps.get(f"{ISSUES}/1/comments", json=second)
    assert make_client().find_comment(PORTAL, PROJECT, "1", "(issue-bridge github comment 5)") == "9002"
    assert [query_of(c)["page"] for c in api_calls(rsps)] == ["1", "2"]


def test_move_and_delete_answer_204(make_client, rsps):
    rsps.post(f"{ISSUES}/1/move", status=204)
    rsps.delete(f"{ISSUES}/1", status=204)
    client = make_client()
    client.move_issue(PORTAL, PROJECT, "1", "23806000097533251")
    client.delete_issue(PORTAL, PROJECT, "1")
    move, delete = api_calls(rsps)
    assert json.loads(move.request.body) == {"to_project": "23806000097533251"}  # seed 001:4007-4062
    assert delete.request.method == "DELETE"
    with pytest.raises(ZohoPermanentError, match="documents no move"):
        make_client(ZOHO_DIALECT="bugtracker").move_issue(PORTAL, PROJECT, "1", "2")


# -- BugTracker ------------------------------------------------------------------------------------------------


def test_bugtracker_create_answers_the_seed_sample_and_users_are_paged(make_client, rsps):
    users = [{"id": str(100 + i), "email": f"u{i}@example.com"} for i in range(100)]
    rsps.get(USERS, json={"users": users})
    rsps.get(USERS, json={"users": [{"id": "123456000000098765", "email": "jane@company.com"}]})
    rsps.post(BUGS, status=201, json=seed.BT_BUG_CREATED)
    client = make_client(ZOHO_DIALECT="bugtracker")
    assert client.create_issue(draft(assignee_email="jane@company.com")) == "123456000000234567"
    user_pages = [query_of(c) for c in api_calls(rsps) if "/users" in c.request.url]
    assert user_pages == [{"index": "1", "range": "100"}, {"index": "101", "range": "100"}]
    body = json.loads(api_calls(rsps)[-1].request.body)
    assert body["assignee"] == 123456000000098765 and body["description"].endswith(MARKER)


def test_bugtracker_error_is_keyed_on_its_code(make_client, rsps):
    rsps.post(BUGS, status=400, json=seed.BT_ERROR)
    with pytest.raises(ZohoPermanentError) as err:
        make_client(ZOHO_DIALECT="bugtracker").create_issue(draft())
    assert "6008" in err.value.reason and err.value.field == "title"


# -- limits -----------------------------------------------------------------------------------------------------


def test_a_headerless_429_blocks_every_worker_for_the_documented_time(make_client, rsps):
    too_many = {"error": {"status_code": "429", "title": "TOO_MANY_REQUESTS", "details": [{"message": "x"}]}}
    rsps.post(ISSUES, status=429, json=too_many)  # seed 001:737-739: no Retry-After, no X-RateLimit-*
    first = make_client(ZOHO_RATE_BLOCK_SECONDS="1800")
    second = make_client(ZOHO_RATE_BLOCK_SECONDS="1800")
    with pytest.raises(ZohoRateLimited) as err:
        first.create_issue(draft())
    assert err.value.retry_after == pytest.approx(1800)
    sent = len(api_calls(rsps))
    with pytest.raises(ZohoRateLimited) as err:
        second.add_comment(PORTAL, PROJECT, "1", "hello")  # another worker: waits too, Zoho hears nothing
    assert err.value.retry_after == pytest.approx(1800, abs=5)
    assert len(api_calls(rsps)) == sent
    remaining, until = block_status(first.engine)
    assert remaining == pytest.approx(1800, abs=5) and until == pytest.approx(engine_now(first.engine) + 1800, abs=5)


def test_bugtracker_remaining_zero_waits_for_the_reset(make_client, rsps):
    reset = int(time.time()) + 40
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    rsps.post(BUGS, status=201, json=seed.BT_BUG_CREATED, headers=headers)
    client = make_client(ZOHO_DIALECT="bugtracker")
    client.create_issue(draft())
    with pytest.raises(ZohoRateLimited) as err:
        client.create_issue(draft())
    # The wait ends at the reset: what was left of the 40 s when the refusal came (the client's set-up and first
    # call can take seconds on a loaded machine), never past it.
    left = reset - time.time()
    assert left - 1.5 <= err.value.retry_after <= 41, (err.value.retry_after, left)
    assert len(api_calls(rsps)) == 1


def test_the_daily_quota_waits_for_the_next_utc_day(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/q.db")
    db.ensure_schema(engine)
    limiter = RateLimiter(engine, 0, daily_limit=3)
    other = RateLimiter(engine, 0, daily_limit=3)  # another worker
    assert [limiter.acquire(timeout=0), other.acquire(timeout=0), limiter.acquire(timeout=0)] == [0.0] * 3
    with pytest.raises(Exception) as err:
        other.acquire(timeout=1)
    now = engine_now(engine)
    assert 0 < err.value.wait <= 86400 and (now + err.value.wait) % 86400 == pytest.approx(0, abs=2)
    assert "daily quota" in str(err.value)


def test_the_token_budget_is_not_spent_when_a_fresh_token_is_refused(make_client, rsps):
    rsps.get(f"{ISSUES}/1", status=400, json=seed.INVALID_OAUTHTOKEN)  # seed 001:76-84
    clients = [make_client() for _ in range(3)]
    for client in clients * 3:
        with pytest.raises(auth.ZohoConfigError):
            client.call("GET", f"/api/v3/portal/{PORTAL}/projects/{PROJECT}/issues/1")
    assert len([c for c in rsps.calls if c.request.url.startswith(ACCOUNTS)]) == 1
    assert len(api_calls(rsps)) == 1


def test_a_description_that_cannot_be_read_now_is_read_on_the_next_try(make_client, rsps):
    intent = time.time() - 30
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(intent + 1))
    template = seed.ISSUE_LIST["issues"][0]
    listed = {"issues": [{**template, "id": str(i), "created_time": stamp} for i in (1, 2, 3)]}
    rsps.get(ISSUES, json=listed)
    rsps.get(f"{ISSUES}/1/description", json=seed.ISSUE_DESCRIPTION)
    rsps.get(f"{ISSUES}/2/description", status=500, json={"error": {"title": "INTERNAL_SERVER_ERROR"}})
    rsps.get(f"{ISSUES}/2/description", json={"description": f"x\n\n{MARKER}"})
    rsps.get(f"{ISSUES}/3/description", json=seed.ISSUE_DESCRIPTION)
    client = make_client()
    with pytest.raises(ZohoTransientError, match="1 descriptions could not be read yet"):
        client.find_issue(draft(), created_after=intent)  # not "no issue": that would create a duplicate
    assert client.find_issue(draft(), created_after=intent) == "2"
    described = [c.request.url for c in api_calls(rsps) if "/description" in c.request.url]
    assert [u.rsplit("/", 2)[1] for u in described] == ["1", "2", "3", "2"]  # 1 and 3 are not read again
