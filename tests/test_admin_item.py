"""The item page (`/admin/items/<source>/<item key>`), its steering forms, the search box's forms, and the front
page's budget charts and pauses, through the Flask test client (no broker: the wake-up publisher records).
In a real browser at 375 and 1280 px: tests/test_admin_browser.py."""

from __future__ import annotations

import re

from bridge import store
from bridge.store import calllog
from bridge.store import schema as db
from testkit.factories import issues_event
from tests.test_admin import TOKEN, app, client, csrf_of, deliver, login  # noqa: F401  (fixtures)


def test_the_item_page_tells_the_story_and_every_list_leads_to_it(app, client):  # noqa: F811
    engine = app.extensions["bridge"].engine
    event_id = deliver(app, issues_event("opened", number=3, title="Checkout <b>broken</b>"))
    with engine.begin() as conn:  # Zoho's answer as the call log keeps it, with a token in it
        conn.execute(
            db.zoho_calls.insert().values(
                event_id=event_id, at=1.0, method="POST", endpoint="issue.create", path="/api/v3/x/issues",
                status=400, response_text='{"error": "bad", "access_token": "1000.secretsecret"}', dry_run=False,
            )
        )  # fmt: skip
    login(client)
    page = client.get("/admin/items/github/acme/web%233")
    assert page.status_code == 200, page.text
    assert "Content-Security-Policy" in page.headers and "script-src" not in page.headers["Content-Security-Policy"]
    text = page.text
    assert 'id="verdict"' in text and "Not in Zoho yet: 1 event(s) queued" in text, text
    assert "delivery issues.opened (created) accepted" in text
    assert "1000.secretsecret" not in text and "access_token" in text  # masked, never shown
    assert "<b>broken</b>" not in text
    for listing in ("/admin/", f"/admin/events/{event_id}", "/admin/lookup?q=acme/web%233"):
        assert "/admin/items/github/acme/web%233" in client.get(listing).text, listing
    for query in ("https://github.com/acme/web/issues/3", "github:acme/web#3"):
        assert "/admin/items/github/acme/web%233" in client.get("/admin/lookup", query_string={"q": query}).text
    assert client.get("/admin/items/github/acme/web%23404").status_code == 404
    assert client.get("/admin/items/gitlab/x").status_code == 404


def test_steering_from_the_item_page_is_recorded_in_its_story(app, client):  # noqa: F811
    engine = app.extensions["bridge"].engine
    deliver(app, issues_event("opened", number=4))
    login(client)
    page = client.get("/admin/items/github/acme/web%234")
    token = csrf_of(page.text)
    stopped = client.post("/admin/act/pause/github/acme/web%234", data={"csrf_token": token})
    assert stopped.status_code == 302
    page = client.get("/admin/items/github/acme/web%234")
    assert 'data-kind="paused"' in page.text and "stopped by an operator" in page.text
    assert "Start syncing again" in page.text
    assert client.post("/admin/act/pause/github/acme/web%234", data={}).status_code == 400  # no CSRF token
    client.post("/admin/act/resume/github/acme/web%234", data={"csrf_token": token})
    client.post("/admin/act/resync/github/acme/web%234", data={"csrf_token": token})
    page = client.get("/admin/items/github/acme/web%234").text
    actions = re.findall(r"operator \(admin\): (\w+)", page)
    assert actions == ["pause", "resume", "resync"], actions
    assert app.extensions["publisher"].woken.count(("github", "acme/web#4")) >= 3
    linked = client.post("/admin/act/link/github/acme/web%234", data={"csrf_token": token, "issue": "EC1-I99"})
    assert linked.status_code == 302
    assert "no issue the bridge has seen has that key" in client.get("/admin/items/github/acme/web%234").text
    assert store.count_by_status(engine) == {"pending": 2}


def test_the_front_page_draws_each_system_budget_and_the_pauses(app, client):  # noqa: F811
    engine = app.extensions["bridge"].engine
    for status in (200, 200, 500):
        calllog.source_call(engine, system="bugherd", lane="live", item=None, method="GET", path="/api_v2/x.json",
                            status=status, duration_ms=1.0, message=None)  # fmt: skip
    login(client)
    page = client.get("/admin/")
    text = page.text
    for system in ("zoho", "github", "bugzilla", "bugherd"):
        assert f'id="budget-{system}"' in text
    bugherd = text[text.index('id="budget-bugherd"') :]
    assert '<b class="this-minute">3</b>' in bugherd and "limit 60/min" in bugherd
    assert bugherd.count('fill="#c0392b"') == 1  # the failed call, marked
    assert "<svg" in text and "<script" not in text
    token = csrf_of(text)
    client.post("/admin/pauses/pause", data={"csrf_token": token, "name": "github"})
    text = client.get("/admin/").text
    assert 'data-kind="source"' in text and "source <b>github</b>" in text
    metrics = client.get("/metrics").text
    assert 'bridge_paused{kind="source",name="github"} 1.0' in metrics
    assert 'bridge_outside_calls_last_hour{lane="live",system="bugherd"} 3.0' in metrics
    # "this minute" by the database clock: 0 again if the scrape fell in the next minute than the calls
    this_minute = re.search(r'bridge_outside_calls_last_minute\{lane="live",system="bugherd"\} (\S+)', metrics)
    assert this_minute is not None and this_minute.group(1) in ("3.0", "0.0"), metrics
    client.post("/admin/pauses/resume", data={"csrf_token": token, "name": "github"})
    assert "Nothing is paused." in client.get("/admin/").text
