"""Behaviour of the FakeZoho test server (tests/fakes/zoho.py), exercised over real HTTP."""

import json
import time

import pytest
import requests

from testkit.fakes.zoho import FakeZoho, throttle_body

PORTAL, WEB, API = "739121528", "1752587000000097024", "1752587000000098001"
OAUTH = {
    "grant_type": "refresh_token",
    "client_id": "1000.TESTCLIENT",
    "client_secret": "test-secret",
    "refresh_token": "1000.refresh.test",
}


@pytest.fixture
def fake():
    with FakeZoho() as f:
        yield f


def token(fake):
    body = requests.post(f"{fake.base_url}/oauth/v2/token", params=OAUTH, timeout=5).json()
    return body["access_token"]


class Client:
    """Tiny authenticated client against one fake."""

    def __init__(self, fake):
        self.fake, self.headers = fake, {"Authorization": f"Zoho-oauthtoken {token(fake)}"}

    def __call__(self, method, path, **kw):
        return requests.request(method, self.fake.base_url + path, headers=self.headers, timeout=5, **kw)


@pytest.fixture
def api(fake):
    return Client(fake)


def issues_path(project=WEB):
    return f"/api/v3/portal/{PORTAL}/projects/{project}/issues"


def bugs_path(project=WEB):
    return f"/api/v3/portal/{PORTAL}/projects/{project}/bugs"


def v3_detail(resp):
    err = resp.json()["error"]
    return err["title"], err["details"][0]


# ------------------------------------------------------------------ OAuth
def test_token_refresh_success_and_errors(fake):
    url = f"{fake.base_url}/oauth/v2/token"
    ok = requests.post(url, params=OAUTH, timeout=5).json()
    assert ok["access_token"].startswith("1000.") and len(ok["access_token"].split(".")) == 3
    assert ok["token_type"] == "Bearer" and ok["expires_in"] == 3600 and "ZohoProjects.bugs.ALL" in ok["scope"]
    assert ok["api_domain"] == "https://www.zohoapis.com"
    form = requests.post(url, data=OAUTH, timeout=5)  # form body works too
    assert form.status_code == 200 and "access_token" in form.json()
    bad_client = requests.post(url, params={**OAUTH, "client_secret": "nope"}, timeout=5)
    assert bad_client.status_code == 200 and bad_client.json() == {"error": "invalid_client"}
    bad_refresh = requests.post(url, params={**OAUTH, "refresh_token": "1000.other"}, timeout=5)
    assert bad_refresh.status_code == 200 and bad_refresh.json() == {"error": "invalid_code"}
    assert fake.token_refreshes == 2
    assert all(e["oauth"] for e in fake.requests_log) and fake.api_calls() == []


def test_the_eleventh_token_within_ten_minutes_deletes_the_oldest(fake):
    def portals(tok):
        headers = {"Authorization": f"Zoho-oauthtoken {tok}"}
        return requests.get(f"{fake.base_url}/api/v3/portals", headers=headers, timeout=5)

    first = token(fake)  # seed 001:486 "the first created access token will be deleted", 001:491
    assert portals(first).status_code == 200
    later = [token(fake) for _ in range(10)]
    assert fake.token_refreshes == 11 and fake.tokens_deleted == 1 and fake.token_refreshes_denied == 0
    dead = portals(first)
    assert dead.status_code == 400 and v3_detail(dead)[0] == "INVALID_OAUTHTOKEN"
    assert portals(later[0]).status_code == 200


def test_the_eleventh_token_is_refused_in_the_refuse_variant():
    with FakeZoho(token_limit="refuse") as fake:
        for _ in range(10):
            token(fake)
        denied = requests.post(f"{fake.base_url}/oauth/v2/token", params=OAUTH, timeout=5)
        assert denied.status_code == 200
        assert denied.json()["error"] == "Access Denied" and "too many requests" in denied.json()["error_description"]
        assert fake.token_refreshes == 10 and fake.token_refreshes_denied == 1


def test_missing_wrong_scheme_and_expired_tokens_get_invalid_oauthtoken(fake):
    url = fake.base_url + issues_path() + "?page=1&per_page=10"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 400  # seed 001:76-84: INVALID_OAUTHTOKEN comes with HTTP 400
    assert missing.json() == {
        "error": {
            "status_code": "400",
            "title": "INVALID_OAUTHTOKEN",
            "error_type": "FIELDS_VALIDATION_ERROR",
            "details": [{"message": "Invalid OAuth access token."}],
        }
    }
    tok = token(fake)
    assert requests.get(url, headers={"Authorization": f"Bearer {tok}"}, timeout=5).status_code == 400
    good = {"Authorization": f"Zoho-oauthtoken {tok}"}
    assert requests.get(url, headers=good, timeout=5).status_code == 204  # valid token, no issues yet
    fake.expire_tokens()
    assert requests.get(url, headers=good, timeout=5).status_code == 400
    bt = requests.get(fake.base_url + bugs_path(), headers=good, timeout=5)
    assert bt.status_code == 401 and bt.json()["code"] == 6004
    assert bt.json()["details"]["field"] == "Authorization"
    assert [e["auth"] for e in fake.api_calls()] == [False, False, True, False, False]


def test_access_token_expires_after_ttl():
    with FakeZoho(token_ttl_seconds=0.2) as fake:
        api = Client(fake)
        assert api("GET", issues_path(), params={"page": 1, "per_page": 10}).status_code == 204
        time.sleep(0.3)
        assert api("GET", issues_path(), params={"page": 1, "per_page": 10}).status_code == 400


# ------------------------------------------------------------------ Projects v3 issues
def test_create_with_option_ids_and_default_status(fake, api):
    body = {
        "name": "Login broken",
        "description": "steps",
        "flag": "external",
        "severity": {"id": fake.option_id("severity", "Major")},
        "classification": {"id": fake.option_id("classification", "Bug")},
        "module": {"id": fake.option_id("module", "UI")},
        "is_it_reproducible": {"id": fake.option_id("is_it_reproducible", "Always")},
        "assignee": {"zpuid": fake.users[1]["zpuid"]},
        "tags": [{"id": "42"}],
        "external_id": "github:acme/web#1",
    }
    resp = api("POST", issues_path(), json=body)
    assert resp.status_code == 200, resp.text
    issue = resp.json()
    assert issue["id"] == "1752587000000100001" and issue["prefix"] == "EC1-I1"
    assert issue["status"]["id"] == "1752587000000010000"
    assert issue["status"]["name"] == "Open" and issue["status"]["is_closed_type"] is False
    assert issue["severity"] == {"id": "1752587000000020002", "value": "Major"}
    assert issue["classification"]["value"] == "Bug" and issue["module"]["value"] == "UI"
    assert issue["flag"] == "External" and issue["assignee"]["name"] == "Bob Dev"
    assert issue["external_id"] == "github:acme/web#1" and issue["created_time"].endswith("Z")
    stored = fake.issues(project_id=WEB, dialect="projects")
    assert len(stored) == 1 and stored[0]["name"] == "Login broken" and stored[0]["project_id"] == WEB
    assert fake.issues(project_id=API) == [] and fake.issues(dialect="bugtracker") == []
    assert api("GET", f"{issues_path()}/{issue['id']}").json()["name"] == "Login broken"


@pytest.mark.parametrize(
    "status",
    ["Open", {"name": "Open"}, {"id": "999"}, {"id": "1752587000000010000", "name": "Open"}, None],
)
def test_option_field_must_be_a_known_id_object(fake, api, status):
    resp = api("POST", issues_path(), json={"name": "x", "status": status})
    assert resp.status_code == 400
    title, detail = v3_detail(resp)
    assert title == "INVALID_PARAMETER_VALUE" and detail["field_name"] == "status"
    assert json.dumps(status) in detail["message"]
    assert fake.issues() == []


def test_unknown_key_and_v3_priority_are_rejected(fake, api):
    for key, val in (("title", "x"), ("priority", {"id": fake.option_id("priority", "High")}), ("foo", 1)):
        resp = api("POST", issues_path(), json={"name": "x", key: val})
        assert resp.status_code == 400
        title, detail = v3_detail(resp)
        assert (title, detail) == ("INVALID_PARAMETER_VALUE", {"message": "Unknown field", "field_name": key})
    assert fake.issues() == []


@pytest.mark.parametrize("body", [{}, {"description": "d"}, {"name": ""}, {"name": "   "}, {"name": 5}])
def test_missing_or_empty_name_is_rejected(fake, api, body):
    resp = api("POST", issues_path(), json=body)
    assert resp.status_code == 400 and v3_detail(resp)[1]["field_name"] == "name"


def test_body_must_be_json_object(api):
    assert v3_detail(api("POST", issues_path(), data="name=x"))[0] == "INVALID_INPUTSTREAM"
    assert v3_detail(api("POST", issues_path(), json=[{"name": "x"}]))[0] == "INVALID_INPUTSTREAM"


def test_patch_updates_and_validates(fake, api):
    iid = api("POST", issues_path(), json={"name": "a", "tags": [{"id": "1"}, {"id": "2"}]}).json()["id"]
    closed = fake.option_id("status", "Closed")
    body = {
        "status": {"id": closed},
        "external_id": "github:acme/web#9",
        "tags": [{"add": [{"id": "3"}], "remove": [{"id": "1"}]}],
    }
    resp = api("PATCH", f"{issues_path()}/{iid}", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == {
        "id": closed,
        "name": "Closed",
        "is_closed_type": True,
        "is_default": False,
        "color": "statuscol_blue",
    }
    stored = fake.issue(iid)
    assert stored["name"] == "a" and stored["external_id"] == "github:acme/web#9"
    assert [t["id"] for t in stored["tags"]] == ["2", "3"]
    assert v3_detail(api("PATCH", f"{issues_path()}/{iid}", json={"name": ""}))[1]["field_name"] == "name"
    assert v3_detail(api("PATCH", f"{issues_path()}/{iid}", json={"followers": []}))[1]["field_name"] == "followers"
    assert api("PATCH", f"{issues_path()}/1752587000000199999", json={"name": "b"}).status_code == 404
    assert api("PATCH", f"{issues_path(API)}/{iid}", json={"name": "b"}).status_code == 404  # other project
    assert api("DELETE", f"{issues_path()}/{iid}").status_code == 204
    assert api("GET", f"{issues_path()}/{iid}").status_code == 404 and fake.issues() == []


def test_wrong_method_unknown_url_and_unknown_ids(api, probing_fakes):
    resp = api("PUT", f"{issues_path()}/1752587000000100001", json={"name": "x"})
    assert resp.status_code == 405
    title, detail = v3_detail(resp)
    assert title == "INVALID_METHOD" and detail["field_name"] == "PUT"
    assert api("DELETE", issues_path()).status_code == 405
    assert v3_detail(api("GET", f"/api/v3/portal/{PORTAL}/forums"))[0] == "URL_RULE_NOT_CONFIGURED"
    wrong_portal = api("GET", f"/api/v3/portal/1/projects/{WEB}/issues", params={"page": 1, "per_page": 1})
    assert wrong_portal.status_code == 404 and v3_detail(wrong_portal)[1]["field_name"] == "portal"
    wrong_project = api("POST", issues_path("123"), json={"name": "x"})
    assert wrong_project.status_code == 404 and v3_detail(wrong_project)[1]["field_name"] == "project"


def test_list_filter_by_custom_field_and_204_when_absent(fake, api):
    for n in (1, 2, 3):
        assert api("POST", issues_path(), json={"name": f"bug {n}", "external_id": f"github:acme/web#{n}"}).ok

    def crit(api_name, value, cond="is"):
        return {"api_name": api_name, "criteria_condition": cond, "value": value}

    flt = {"criteria": [crit("external_id", ["github:acme/web#2"])], "pattern": "1"}
    found = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(flt)})
    assert found.status_code == 200
    assert [i["name"] for i in found.json()["issues"]] == ["bug 2"]
    assert found.json()["page_info"] == {"per_page": 10, "page": 1}  # 001:3554: no has_next_page
    wrapped = json.dumps([{"criteria": [crit("external_id", ["github:acme/web#3"])]}])
    assert api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": wrapped}).json()["issues"]
    both = {"criteria": [crit("name", ["BUG"], "contains"), crit("external_id", "github:acme/web#1")]}
    res = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(both)})
    assert [i["name"] for i in res.json()["issues"]] == ["bug 1"]
    absent = {"criteria": [crit("external_id", ["github:acme/web#404"])], "pattern": "1"}
    none = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(absent)})
    assert none.status_code == 204 and none.content == b""
    paged = api("GET", issues_path(), params={"page": 1, "per_page": 2, "sort_by": "DESC(last_modified_time)"})
    assert len(paged.json()["issues"]) == 2 and "has_next_page" not in paged.json()["page_info"]
    assert paged.json()["page_info"]["sort_by"] == [{"field_names": ["last_modified_time"], "order_by": "DESCENDING"}]
    fake.set_variant(issue_page_info="has_next_page")
    paged = api("GET", issues_path(), params={"page": 1, "per_page": 2})
    assert paged.json()["page_info"]["has_next_page"] is True
    missing = api("GET", issues_path(), params={"per_page": 2})
    assert missing.status_code == 400 and v3_detail(missing)[1]["field_name"] == "page"
    bad = {"criteria": [crit("severity", ["x"])]}
    assert api("GET", issues_path(), params={"page": 1, "per_page": 2, "filter": json.dumps(bad)}).status_code == 400


def test_comments_create_list_patch_delete(fake, api):
    iid = api("POST", issues_path(), json={"name": "a"}).json()["id"]
    path = f"{issues_path()}/{iid}/comments"
    created = api("POST", path, json={"comment": "first", "notify_users": []})
    assert created.status_code == 200
    c = created.json()["comments"][0]
    assert c["comment"] == "first" and c["added_via"] == "API" and c["added_by"]["name"] == "Alice Admin"
    assert set(c) >= {"id", "created_time", "last_modified_time"}
    assert api("POST", path, json={"comment": ""}).status_code == 400
    assert v3_detail(api("POST", path, json={"comment": "x", "content": "x"}))[1]["field_name"] == "content"
    listed = api("GET", path).json()
    assert [x["comment"] for x in listed["comments"]] == ["first"] and listed["page_info"]["page"] == 1
    updated = api("PATCH", f"{path}/{c['id']}", json={"comment": "edited"})
    assert updated.status_code == 200 and updated.json()["comments"][0]["comment"] == "edited"
    assert api("PATCH", f"{path}/{c['id']}", json={}).status_code == 400
    assert fake.comments(iid)[0]["comment"] == "edited"
    assert api("DELETE", f"{path}/{c['id']}").status_code == 204
    assert api("DELETE", f"{path}/{c['id']}").status_code == 404
    assert fake.comments(iid) == []
    assert api("POST", f"{issues_path()}/1752587000000199999/comments", json={"comment": "x"}).status_code == 404


def test_metadata_endpoints(fake, api):
    for suffix in ("/", ""):
        resp = api("GET", f"/restapi/portal/{PORTAL}/projects/{WEB}/bugs/defaultfields{suffix}")
        assert resp.status_code == 200
        df = resp.json()["defaultfields"]
        assert df["status_details"][0] == {"status_id": "1752587000000010000", "status_name": "Open"}
        assert {"severity_id": "1752587000000020004", "severity_name": "Blocker"} in df["severity_details"]
        assert [x["priority_name"] for x in df["priority_details"]] == [
            "None",
            "Low",
            "Medium",
            "High",
            "Critical",
        ]
        assert df["reproducible_details"][0]["reproducible_name"] == "Always"
        assert {x["module_name"] for x in df["module_details"]} >= {"UI", "API"}
        assert any(x["classification_name"] == "Feature(New)" for x in df["classification_details"])
    fields = api(
        "GET",
        f"/api/v3/portal/{PORTAL}/settings/fields",
        params={"module": "Issues", "page": 1, "per_page": 100},
    )
    shown = fields.json()["fields"]  # the shape 001:16991 shows: api_name, id, display_name, type; nothing more
    assert all(set(f) == {"api_name", "id", "display_name", "type"} for f in shown)
    assert ("external_id", "singleline") in [(f["api_name"], f["type"]) for f in shown]
    fake.set_variant(fields_answer="empty")  # the sample 001:17171 shows for settings/fields: `{ }`
    assert (
        api(
            "GET", f"/api/v3/portal/{PORTAL}/settings/fields", params={"module": "Issues", "page": 1, "per_page": 9}
        ).json()
        == {}
    )
    fake.set_variant(fields_answer="extended")
    extended = api(
        "GET", f"/api/v3/portal/{PORTAL}/settings/fields", params={"module": "Issues", "page": 1, "per_page": 9}
    )
    custom = [f for f in extended.json()["fields"] if not f["is_default"]]
    assert [(f["api_name"], f["type"]) for f in custom] == [("external_id", "singleline")]
    assert api("GET", "/api/v3/portals").json()[0]["id"] == PORTAL
    projects = api("GET", f"/api/v3/portal/{PORTAL}/projects").json()  # seed 001:1002-1080: a top-level array
    assert {p["id"]: p["name"] for p in projects} == {WEB: "Web", API: "API"}
    users = api("GET", f"/api/v3/portal/{PORTAL}/projects/{WEB}/users").json()["users"]
    assert [u["email"] for u in users] == ["alice@example.com", "bob@example.com"]
    assert all("zpuid" not in u and u["id"] for u in users)  # seed 001:13526-13626
    one = api("GET", f"/api/v3/portal/{PORTAL}/projects/{WEB}/users/Bob@Example.com").json()
    assert one["id"] == fake.users[1]["zpuid"] and one["email"] == "bob@example.com"
    assert api("GET", f"/api/v3/portal/{PORTAL}/projects/{WEB}/users/ghost@example.com").status_code == 400


# ------------------------------------------------------------------ BugTracker dialect
def test_bugtracker_create_by_names_search_comments_and_headers(fake, api, probing_fakes):
    body = {
        "title": "Checkout crash",
        "description": "NullPointer in cart",
        "priority": "High",
        "severity": "Critical",
        "status": "Open",
        "classification": "Bug",
        "module": "Checkout",
        "reproducible": "Never",
        "assignee": fake.users[0]["zpuid"],
        "flag": "Bug",
        "due_date": "2025-01-25",
    }
    custom = api("POST", bugs_path(), json={**body, "external_id": "bugzilla:42"})  # 000 documents no custom fields
    assert custom.status_code == 400 and custom.json()["details"]["field"] == "external_id"
    resp = api("POST", bugs_path(), json=body)
    assert resp.status_code == 201, resp.text
    bug = resp.json()["bugs"][0]
    assert bug["key"] == "PRJ-1" and bug["priority"] == "High" and bug["severity"] == "Critical"
    assert bug["classification"] == {"id": fake.option_id("classification", "Bug"), "name": "Bug"}
    assert bug["module"]["name"] == "Checkout" and bug["assignee"]["name"] == "Alice Admin"
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert resp.headers[header].isdigit()
    assert int(resp.headers["X-RateLimit-Reset"]) > time.time()
    assert fake.issues(dialect="bugtracker")[0]["title"] == "Checkout crash" and fake.issues(dialect="projects") == []

    wrong = api("POST", bugs_path(), json={"title": "x", "severity": "Huge"})
    assert wrong.status_code == 400 and wrong.json()["code"] == 6008
    assert wrong.json()["details"]["field"] == "severity"
    assert "Minor, Major, Critical, Blocker" in wrong.json()["details"]["error"]
    assert "X-RateLimit-Remaining" in wrong.headers
    unknown = api("POST", bugs_path(), json={"title": "x", "name": "x"})
    assert unknown.status_code == 400 and unknown.json()["details"]["field"] == "name"
    assert api("POST", bugs_path(), json={"description": "no title"}).json()["details"]["field"] == "title"
    assert api("POST", bugs_path(), json={"title": "x", "due_date": "25/01/2025"}).status_code == 400
    assert api("POST", bugs_path(), data="title=x").json()["code"] == 6003

    api("POST", bugs_path(), json={"title": "Login slow"})
    found = api("GET", f"{bugs_path()}/search", params={"search_text": "nullpointer"}).json()["bugs"]
    assert [b["title"] for b in found] == ["Checkout crash"] and "description" not in found[0]  # as the list
    assert api("GET", f"{bugs_path()}/search", params={"search_text": "nullpoint"}).json() == {"bugs": []}
    assert api("GET", f"{bugs_path()}/search", params={"search_text": "zzz"}).json() == {"bugs": []}
    assert len(api("GET", bugs_path()).json()["bugs"]) == 2

    put = api("PUT", f"{bugs_path()}/{bug['id']}", json={"status": "Closed", "fix_version": "2.1.1"})
    assert put.status_code == 200 and put.json()["bugs"][0]["status"] == "Closed"
    assert api("PATCH", f"{bugs_path()}/{bug['id']}", json={}).json()["code"] == 6002
    assert api("GET", f"{bugs_path()}/1752587000000199999").json()["code"] == 6006

    cpath = f"{bugs_path()}/{bug['id']}/comments"
    made = api("POST", cpath, json={"content": "seen", "is_private": False})
    assert made.status_code == 201 and made.json()["comments"][0]["content"] == "seen"
    assert api("POST", cpath, json={"comment": "x"}).json()["details"]["field"] == "comment"
    cid = made.json()["comments"][0]["id"]
    assert api("PUT", f"{cpath}/{cid}", json={"content": "edited"}).json()["comments"][0]["content"] == "edited"
    assert [c["content"] for c in api("GET", cpath).json()["comments"]] == ["edited"]
    assert api("DELETE", f"{cpath}/{cid}").status_code == 204 and fake.comments(bug["id"]) == []
    assert api("DELETE", f"{bugs_path()}/{bug['id']}").status_code == 204


# ------------------------------------------------------------------ faults and limits
def test_fail_next_and_injected_429_change_nothing(fake, api):
    fake.fail_next(2, 429)
    fake.set_faults(retry_after_seconds=7)
    for _ in range(2):
        resp = api("POST", issues_path(), json={"name": "x"})
        # seed 001:737-739 documents no header for v3: the 30-minute block is the client's to know
        assert resp.status_code == 429 and "Retry-After" not in resp.headers
        assert "X-RateLimit-Reset" not in resp.headers
        assert v3_detail(resp)[0] == "TOO_MANY_REQUESTS"
    assert fake.issues() == []
    fake.fail_next(1)
    failed = api("POST", bugs_path(), json={"title": "x"})
    assert failed.status_code == 500 and failed.json() == {"code": 500, "message": "Internal Server Error"}
    assert fake.issues() == []

    fake.set_faults(error_429_rate=1.0, retry_after_seconds=2)
    resp = api("POST", issues_path(), json={"name": "x"})
    assert resp.status_code == 429 and "Retry-After" not in resp.headers
    resp = api("POST", bugs_path(), json={"title": "x"})  # 000:777-783: X-RateLimit-Reset, no Retry-After
    assert resp.status_code == 429 and "Retry-After" not in resp.headers and int(resp.headers["X-RateLimit-Reset"])
    assert resp.json()["code"] == 6009
    fake.bt_retry_after = True
    assert api("POST", bugs_path(), json={"title": "x"}).headers["Retry-After"] == "2"
    assert fake.issues() == [] and fake.rate_limited == 0
    assert token(fake)  # OAuth is never faulted
    fake.set_faults(error_500_rate=1.0)
    resp = api("POST", issues_path(), json={"name": "x"})
    assert resp.status_code == 500 and v3_detail(resp)[0] == "INTERNAL_SERVER_ERROR" and fake.issues() == []
    fake.set_faults()
    assert api("POST", issues_path(), json={"name": "x"}).status_code == 200 and len(fake.issues()) == 1


def test_error_500_after_commit_creates_then_fails(fake, api):
    fake.set_faults(error_500_after_commit_rate=1.0)
    resp = api("POST", issues_path(), json={"name": "lost answer", "external_id": "github:acme/web#5"})
    assert resp.status_code == 500
    assert [i["external_id"] for i in fake.issues()] == ["github:acme/web#5"]
    iid = fake.issues()[0]["id"]
    assert api("POST", f"{issues_path()}/{iid}/comments", json={"comment": "c"}).status_code == 500
    assert len(fake.comments(iid)) == 1
    assert api("POST", bugs_path(), json={"title": "b"}).status_code == 500
    assert len(fake.issues(dialect="bugtracker")) == 1
    assert api("PATCH", f"{issues_path()}/{iid}", json={"name": "n"}).status_code == 200  # not a create


def test_slow_fault_delays_answer(fake, api):
    fake.set_faults(slow_rate=1.0, slow_seconds=0.2)
    start = time.monotonic()
    assert api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code == 200
    assert time.monotonic() - start >= 0.2


def test_rate_limit_per_minute_is_enforced():
    with FakeZoho(rate_limit_per_minute=3) as fake:
        api = Client(fake)
        statuses = [api("GET", bugs_path()).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        last = api("GET", bugs_path())
        assert last.status_code == 429 and last.json()["code"] == 6009
        assert 0 <= int(last.headers["X-RateLimit-Reset"]) - time.time() <= 61
        assert last.headers["X-RateLimit-Limit"] == "3" and last.headers["X-RateLimit-Remaining"] == "0"
        assert fake.rate_limited == 3
        assert fake.max_calls_in_window(60, statuses={200}) == 3


def test_max_calls_in_window_and_log(fake, api):
    for _ in range(3):
        api("GET", f"/api/v3/portal/{PORTAL}/projects")
    time.sleep(0.3)
    for _ in range(2):
        api("POST", issues_path(), json={"name": "x"})
    api("POST", issues_path(), json={})  # 400
    assert fake.max_calls_in_window(60) == 6
    assert fake.max_calls_in_window(0.25) == 3
    assert fake.max_calls_in_window(60, statuses={200}) == 5
    assert fake.max_calls_in_window(60, statuses={400}) == 1
    posts = fake.api_calls(method="POST", path_contains="/issues")
    assert [e["status"] for e in posts] == [200, 200, 400] and posts[0]["json"] == {"name": "x"}
    entry = fake.api_calls()[0]
    assert set(entry) >= {"t", "method", "path", "query", "json", "status", "auth"} and entry["auth"] is True
    fake.reset()
    assert fake.requests_log == [] and fake.issues() == [] and fake.token_refreshes == 0
    assert api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code == 400  # tokens were forgotten


# ------------------------------------------------------------------ variants where the documents are silent
@pytest.mark.parametrize("mode", ["accepted", "ignored", "refused"])
def test_issue_custom_field_by_api_name_variants(mode):
    with FakeZoho(custom_field=mode) as fake:
        api = Client(fake)
        resp = api("POST", issues_path(), json={"name": "x", "external_id": "github:acme/web#1"})
        if mode == "refused":
            assert resp.status_code == 400 and v3_detail(resp)[1]["field_name"] == "external_id" and fake.issues() == []
        else:
            assert resp.status_code == 200
            assert fake.issues()[0].get("external_id") == ("github:acme/web#1" if mode == "accepted" else None)


def test_filters_by_cfid_always_and_by_api_name_per_variant():
    with FakeZoho(filter_api_name="refused") as fake:
        api = Client(fake)
        api("POST", issues_path(), json={"name": "x", "external_id": "e-1"})
        by_cfid = [{"criteria": [{"cfid": "1752587000000080001", "criteria_condition": "is", "value": ["e-1"]}]}]
        resp = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(by_cfid)})
        assert resp.status_code == 200 and [i["external_id"] for i in resp.json()["issues"]] == ["e-1"]
        by_name = [{"criteria": [{"api_name": "external_id", "criteria_condition": "is", "value": ["e-1"]}]}]
        resp = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(by_name)})
        assert resp.status_code == 400
        fake.set_variant(filter_api_name="accepted")
        resp = api("GET", issues_path(), params={"page": 1, "per_page": 10, "filter": json.dumps(by_name)})
        assert resp.status_code == 200


def test_status_list_spelling_and_date_only_due_dates():
    with FakeZoho(status_key="status_deatils", date_only_due="refused") as fake:
        api = Client(fake)
        df = api("GET", f"/restapi/portal/{PORTAL}/projects/{WEB}/bugs/defaultfields/").json()["defaultfields"]
        assert "status_deatils" in df and "status_details" not in df
        assert api("POST", issues_path(), json={"name": "x", "due_date": "2025-12-12"}).status_code == 400
        ok = api("POST", issues_path(), json={"name": "x", "due_date": "2025-12-12T02:12:00.000Z"})  # seed 001:3749
        assert ok.status_code == 200


def test_the_list_documents_no_description_and_sorts_by_created_time(fake, api):
    for n in range(3):
        api("POST", issues_path(), json={"name": f"n{n}", "description": f"d{n}"})
        time.sleep(0.002)
    resp = api("GET", issues_path(), params={"page": 1, "per_page": 10, "sort_by": "DESC(created_time)"})
    assert [i["name"] for i in resp.json()["issues"]] == ["n2", "n1", "n0"]
    assert all("description" not in i for i in resp.json()["issues"])
    first = resp.json()["issues"][-1]["id"]
    assert api("GET", f"{issues_path()}/{first}/description").json() == {"description": "d0"}  # seed 001:4006


def test_tags_on_update_must_use_add_remove(fake, api):
    iid = api("POST", issues_path(), json={"name": "x", "tags": [{"id": "t1"}]}).json()["id"]
    assert api("PATCH", f"{issues_path()}/{iid}", json={"tags": [{"id": "t2"}]}).status_code == 400
    ok = api("PATCH", f"{issues_path()}/{iid}", json={"tags": [{"add": [{"id": "t2"}], "remove": [{"id": "t1"}]}]})
    assert ok.status_code == 200 and ok.json()["tags"] == [{"id": "t2"}]


def test_v3_limit_blocks_every_request_headerless_then_recovers():
    with FakeZoho(v3_limit=2, v3_window=60, block_seconds=0.5) as fake:
        api = Client(fake)
        statuses = [api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        last = api("GET", f"/api/v3/portal/{PORTAL}/projects")
        assert "Retry-After" not in last.headers and "X-RateLimit-Reset" not in last.headers
        time.sleep(0.6)
        assert api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code == 200


def test_bugtracker_on_its_own_host_and_move(fake, api):
    with FakeZoho(host_dialect="bugtracker") as bt:
        api_bt = Client(bt)
        assert api_bt("POST", issues_path(), json={"name": "x"}).json()["code"] == 6001  # no Projects /issues here
        assert api_bt("POST", bugs_path(), json={"title": "x"}).status_code == 201
    iid = api("POST", issues_path(), json={"name": "x"}).json()["id"]
    moved = api("POST", f"{issues_path()}/{iid}/move", json={"to_project": "1752587000000098001"})
    assert moved.status_code == 204 and fake.issue(iid)["project_id"] == "1752587000000098001"


@pytest.mark.parametrize("form", ["429", "400", "200"])
def test_the_throttle_forms_live_portals_answer(form):
    """zoho-facts.md: the throttle as HTTP 400 (once 200) with URL_ROLLING_THROTTLES_LIMIT_EXCEEDED naming the
    minutes; the documented form (001:737-739) is a header-less 429."""
    with FakeZoho(v3_limit=2, v3_window=60, block_seconds=125, throttle=form) as fake:
        api = Client(fake)
        statuses = [api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code for _ in range(3)]
        assert statuses == [200, 200, int(form)]
        answer = api("POST", issues_path(), json={"name": "x"})
        assert answer.status_code == int(form) and "Retry-After" not in answer.headers and fake.issues() == []
        title = answer.json()["error"]["title"]
        if form == "429":
            assert title == "TOO_MANY_REQUESTS"
        else:
            assert answer.json() == throttle_body(3)  # 125 s named as "Try again after 3 minutes."
            assert "Try again after 3 minutes." in answer.json()["error"]["details"]["message"]
        assert fake.rate_limited == 2
    with FakeZoho(throttle=form, throttle_retry_after=True) as fake:
        fake.block(90)
        answer = Client(fake)("GET", f"/api/v3/portal/{PORTAL}/projects")
        assert answer.status_code == int(form)
        assert (form == "429") == ("Retry-After" not in answer.headers)  # the documented 429 names no time
        if form != "429":
            assert 89 <= int(answer.headers["Retry-After"]) <= 90


def test_another_client_spends_the_shared_budget():
    with FakeZoho(v3_limit=5, v3_window=60, block_seconds=60, throttle="400") as fake:
        api = Client(fake)
        fake.spend(4)  # the same Zoho user's other integration
        assert api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code == 200
        assert api("GET", f"/api/v3/portal/{PORTAL}/projects").status_code == 400
        assert fake.other_calls == 4 and fake.blocked_until > time.time() + 55


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_an_outage_answers_nothing_useful_then_ends(fake, api, mode):
    fake.outage(0.5, mode=mode)
    if mode == "503":
        assert api("POST", issues_path(), json={"name": "x"}).status_code == 503
        assert requests.post(f"{fake.base_url}/oauth/v2/token", params=OAUTH, timeout=5).status_code == 503
    else:
        with pytest.raises(requests.ConnectionError):
            api("POST", issues_path(), json={"name": "x"})
    assert fake.issues() == []
    time.sleep(0.6)
    assert api("POST", issues_path(), json={"name": "x"}).status_code == 200


def test_bugtracker_search_matches_whole_words_through_a_lagging_index():
    with FakeZoho(search_lag=0.5) as fake:
        api = Client(fake)
        bug = api("POST", bugs_path(), json={"title": "t", "description": "x\n\n[issue-bridge:github:acme/web#70]"})
        bug_id = bug.json()["bugs"][0]["id"]

        def search(text):
            return [b["id"] for b in api("GET", f"{bugs_path()}/search", params={"search_text": text}).json()["bugs"]]

        assert search("[issue-bridge:github:acme/web#70]") == []  # not indexed yet
        time.sleep(0.6)
        assert search("[issue-bridge:github:acme/web#70]") == [bug_id]
        assert search("[issue-bridge:github:acme/web#7]") == []  # "7" is not the word "70"
        api("PUT", f"{bugs_path()}/{bug_id}", json={"description": "moved on"})
        assert search("acme web 70") == [bug_id]  # the index still shows the old text for a while
        time.sleep(0.6)
        assert search("acme web 70") == []
        fake.set_variant(bt_search_fields="full")
        assert api("GET", f"{bugs_path()}/search", params={"search_text": "moved"}).json()["bugs"][0]["description"]


def test_bugtracker_users_as_seed_000_shows_a_user_and_no_lookup_by_email(probing_fakes):
    with FakeZoho(host_dialect="bugtracker") as bt:
        api = Client(bt)
        users = api("GET", f"/api/v3/portal/{PORTAL}/projects/{WEB}/users", params={"index": 1, "range": 100})
        assert users.json()["users"][0] == {
            "id": bt.users[0]["zpuid"],
            "name": "Alice Admin",
            "email": "alice@example.com",
        }
        one = api("GET", f"/api/v3/portal/{PORTAL}/projects/{WEB}/users/alice@example.com")
        assert one.status_code == 404 and one.json()["code"] == 6001  # only Projects v3 documents it


def test_attachment_ids_are_a_multipart_field_as_the_seed_sends_them(fake, api):
    iid = api("POST", issues_path(), json={"name": "x"}).json()["id"]
    files = {"upload_file": ("a.txt", b"hello", "text/plain")}
    att = api("POST", f"/api/v3/portal/{PORTAL}/attachments", files=files).json()["attachment"][0]["attachment_id"]
    path = f"{issues_path()}/{iid}/attachments"
    urlencoded = api("POST", path, data={"attachment_ids": f"[{att}]"})
    assert urlencoded.status_code == 400 and v3_detail(urlencoded)[1]["field_name"] == "attachment_ids"
    form = api("POST", path, files={"attachment_ids": (None, f"[{att}]")})  # 001:5195-5241: --form
    assert form.status_code == 200 and [f["id"] for f in fake.attachments(iid)] == [att]


def test_a_call_no_table_declares_is_logged_for_the_session(probing_fakes):
    log = probing_fakes
    with FakeZoho() as fake:
        assert fake.declared("GET", "/api/v3/portal/1/projects/2/issues?page=1&per_page=10")
        assert fake.declared("POST", "/oauth/v2/token")
        assert not fake.declared("GET", "/api/v3/portal/1/projects/2/tasks")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["method"], e["path"]) for e in entries] == [("GET", "/api/v3/portal/1/projects/2/tasks")]
