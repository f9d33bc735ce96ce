"""The admin pages through the Flask test client: off without ADMIN_TOKEN, login, CSRF, replay, look-up, escaping.

No broker runs (BROKER_URL points at a closed port) and the wake-up publisher is replaced by a recorder.
The real browser test is tests/test_admin_browser.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bridge import store
from bridge.settings import load_settings
from bridge.store import calllog
from bridge.web import create_app
from bridge.web.admin import session_key
from testkit import dbs
from testkit.factories import github_request, issues_event

SECRET = "It's a Secret to Everybody"
TOKEN = "admin-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent


class RecordingPublisher:
    def __init__(self) -> None:
        self.woken: list[tuple[str, str]] = []

    def wake(self, source: str, item_key: str) -> None:
        self.woken.append((source, item_key))


def make_app(tmp_path: Path, **extra: str):
    mappings = tmp_path / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
        "BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "MAPPINGS_DIR": str(mappings),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        **extra,
    }
    app = create_app(load_settings(env))
    app.config["TESTING"] = True
    app.extensions["publisher"] = RecordingPublisher()
    return app


@pytest.fixture
def app(tmp_path: Path):
    app = make_app(tmp_path, ADMIN_TOKEN=TOKEN)
    yield app
    app.extensions["bridge"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(client, token: str = TOKEN):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"token": token, "csrf_token": csrf_of(page.text), "next": "/admin/"})


def deliver(app, payload: dict) -> int:
    body, headers = github_request(SECRET, "issues", payload)
    answer = app.test_client().post("/webhooks/github", data=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json["event_id"])


def failed_event(app, title: str = "Login button does nothing", number: int = 1) -> int:
    """A delivery that Zoho refused for good: failed, with Zoho's answer recorded."""
    engine = app.extensions["bridge"].engine
    event_id = deliver(app, issues_event("opened", number=number, title=title))
    answer = '{"error": {"status_code": "400", "title": "INVALID_PARAMETER_VALUE", "details": [{"message": "nope"}]}}'
    calllog.record_zoho_call(
        engine,
        event_id=event_id,
        method="POST",
        path="/api/v3/portal/739121528/projects/1752587000000097024/issues",
        request_json={"name": title},
        status=400,
        response_text=answer,
        duration_ms=12.0,
        dry_run=False,
    )
    dbs.attempt(engine, event_id, "failed", "Zoho refused: INVALID_PARAMETER_VALUE nope")
    dbs.finish(engine, event_id, store.FAILED, error="Zoho refused: INVALID_PARAMETER_VALUE nope")
    app.extensions["publisher"].woken.clear()  # the intake's own wake-up
    return event_id


def test_admin_is_404_without_admin_token(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    for path in (
        "/admin",
        "/admin/",
        "/admin/login",
        "/admin/failed",
        "/admin/events/1",
        "/admin/lookup",
        "/admin/mappings",
    ):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.is_json, path  # `/admin` too: JSON, not an HTML redirect
    assert client.post("/admin/login", data={"token": ""}).status_code == 404
    assert "Set-Cookie" not in client.get("/admin/").headers
    app.extensions["bridge"].engine.dispose()


def test_pages_need_a_login(client):
    for path in ("/admin", "/admin/", "/admin/failed", "/admin/events/1", "/admin/lookup?q=x", "/admin/mappings"):
        r = client.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/admin/login?next="), r.headers["Location"]
    page = client.get("/admin/login")
    assert page.status_code == 200 and 'type="password"' in page.text


def test_wrong_token_is_refused(client):
    page = client.get("/admin/login")
    r = client.post("/admin/login", data={"token": "not-it", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401 and "Wrong token" in r.text
    assert client.get("/admin/").status_code == 302  # still logged out
    r = client.post("/admin/login", data={"token": "", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401


def test_login_sets_a_hardened_session_cookie_and_logout_ends_it(app, client):
    r = login(client)
    assert r.status_code == 302 and r.headers["Location"] == "/admin/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("bridge_admin=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/admin" in cookie
    assert TOKEN not in cookie
    assert app.secret_key == session_key(TOKEN) != TOKEN
    page = client.get("/admin/")
    assert page.status_code == 200 and "Events" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script allowed at all
    assert page.headers["X-Frame-Options"] == "DENY"
    r = client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 302
    assert client.get("/admin/").status_code == 302


def test_a_session_signed_for_another_token_is_refused(tmp_path, client):
    login(client)
    other = make_app(tmp_path / "other", ADMIN_TOKEN="another-token-0123456789abcdef")
    cookie = client.get_cookie("bridge_admin", path="/admin")
    assert cookie is not None
    stranger = other.test_client()
    stranger.set_cookie("bridge_admin", cookie.value, path="/admin")
    assert stranger.get("/admin/").status_code == 302  # the rotated token logged everyone out
    other.extensions["bridge"].engine.dispose()


def test_next_never_redirects_off_site(client):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        page = client.get("/admin/login")
        r = client.post("/admin/login", data={"token": TOKEN, "csrf_token": csrf_of(page.text), "next": target})
        assert r.headers["Location"] == "/admin/", target


def test_csrf_is_enforced_on_replay_and_login(app, client):
    event_id = failed_event(app)
    login(client)
    r = client.post(f"/admin/events/{event_id}/replay", data={})
    assert r.status_code == 400 and "reload" in r.text
    r = client.post(f"/admin/events/{event_id}/replay", data={"csrf_token": "forged"})
    assert r.status_code == 400
    assert store.get_event(app.extensions["bridge"].engine, event_id).status == store.FAILED
    assert app.extensions["publisher"].woken == []
    # Login too: a form from elsewhere cannot log a browser in (no login CSRF).
    fresh = app.test_client()
    assert fresh.post("/admin/login", data={"token": TOKEN}).status_code == 400


def test_failed_page_shows_zoho_reason_and_replay_resets_to_pending(app, client):
    event_id = failed_event(app)
    login(client)
    dashboard = client.get("/admin/")
    assert f'id="event-{event_id}" data-status="failed"' in dashboard.text
    page = client.get("/admin/failed")
    assert "INVALID_PARAMETER_VALUE" in page.text and "nope" in page.text  # Zoho's reason and answer
    assert f"/admin/events/{event_id}/replay" in page.text
    r = client.post(
        f"/admin/events/{event_id}/replay",
        data={"csrf_token": csrf_of(page.text), "next": f"/admin/events/{event_id}"},
    )
    assert r.status_code == 302 and r.headers["Location"] == f"/admin/events/{event_id}"
    ev = store.get_event(app.extensions["bridge"].engine, event_id)
    assert ev.status == store.PENDING and ev.attempts == 0 and ev.last_error is None
    assert app.extensions["publisher"].woken == [("github", ev.item_key)]
    detail = client.get(f"/admin/events/{event_id}")
    assert f"Event {event_id} is back in the queue." in detail.text
    assert 'data-status="pending"' in detail.text
    assert "INVALID_PARAMETER_VALUE" in detail.text  # the history of attempts and calls is kept


def test_replay_all_failed(app, client):
    ids = [failed_event(app, number=n) for n in (1, 2)]
    login(client)
    page = client.get("/admin/failed")
    r = client.post("/admin/failed/replay", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 302
    engine = app.extensions["bridge"].engine
    assert [store.get_event(engine, i).status for i in ids] == [store.PENDING, store.PENDING]
    assert "2 failed event(s) are back in the queue." in client.get("/admin/failed").text


def test_event_detail_shows_the_delivery_without_secrets(app, client):
    event_id = deliver(app, issues_event("opened", number=7))
    login(client)
    page = client.get(f"/admin/events/{event_id}")
    assert page.status_code == 200
    assert "X-GitHub-Delivery" in page.text and "Login button does nothing" in page.text
    assert "X-Hub-Signature-256" not in page.text and "sha256=" not in page.text
    assert SECRET not in page.text and TOKEN not in page.text
    assert client.get("/admin/events/999999").status_code == 404


def test_lookup_by_external_id_item_key_and_zoho_id(app, client):
    engine = app.extensions["bridge"].engine
    event_id = deliver(app, issues_event("opened", number=3))
    item_key = store.get_event(engine, event_id).item_key
    dbs.link(
        engine,
        source="github",
        external_id="github:acme/web#3",
        item_key=item_key,
        zoho_issue_id="1752587000000100001",
        portal="739121528",
        project="1752587000000097024",
    )
    login(client)
    for query in ("github:acme/web#3", item_key, "1752587000000100001"):
        page = client.get("/admin/lookup", query_string={"q": query})
        assert page.status_code == 200
        assert "1752587000000100001" in page.text and "1752587000000097024" in page.text, query
        assert f'id="event-{event_id}"' in page.text, query
    missing = client.get("/admin/lookup", query_string={"q": "github:acme/web#404"})
    assert 'id="no-result"' in missing.text


def test_lookup_without_a_link_still_shows_the_item_history(app, client):
    event_id = failed_event(app, number=5)
    item_key = store.get_event(app.extensions["bridge"].engine, event_id).item_key
    login(client)
    page = client.get("/admin/lookup", query_string={"q": item_key})
    assert "No Zoho issue is linked" in page.text and f'id="event-{event_id}"' in page.text


def test_hostile_title_is_escaped_everywhere(app, client):
    hostile = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    event_id = failed_event(app, title=hostile)
    login(client)
    item_key = store.get_event(app.extensions["bridge"].engine, event_id).item_key
    for path in (f"/admin/events/{event_id}", "/admin/failed", f"/admin/lookup?q={item_key}"):
        page = client.get(path)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    detail = client.get(f"/admin/events/{event_id}")
    assert "&lt;script&gt;alert(" in detail.text
    query = client.get("/admin/lookup", query_string={"q": hostile})
    assert "<script>" not in query.text and "&lt;script&gt;" in query.text


def test_mapping_check_shows_problems_with_file_and_line(app, client):
    login(client)
    page = client.get("/admin/mappings")
    assert 'id="no-problems"' in page.text and "github" in page.text and "acme/api" in page.text
    mapping = Path(app.extensions["bridge"].settings.mappings_dir) / "github.yaml"
    mapping.write_text(mapping.read_text().replace("on_delete: close", "on_delete: explode"))
    page = client.get("/admin/mappings")
    assert re.search(r"github\.yaml:\d+</code>: on_delete", page.text), page.text
    assert "acme/api" in page.text  # the last good version stays in force and is shown
    assert "mapping problem(s)" in client.get("/admin/").text


def test_the_lookup_reads_links_by_index_only(app, client):
    """The item page (`/admin/lookup`) finds a link by external id, item key or Zoho issue id without reading
    the links table in full (it grows with every item ever synced: 2x slower at a million deliveries)."""
    from sqlalchemy import event as sa_event

    engine = app.extensions["bridge"].engine
    dbs.link(engine, source="github", external_id="github:acme/web#3", item_key="acme/web#3", zoho_issue_id="Z3")
    plans: list[str] = []

    def explain(conn, _cursor, statement, parameters, _context, _executemany):  # type: ignore[no-untyped-def]
        if re.search(r"\bFROM links\b", statement) and statement.lstrip().upper().startswith("SELECT"):
            rows = conn.connection.dbapi_connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.extend(str(r[-1]) for r in rows)

    login(client)
    sa_event.listen(engine, "before_cursor_execute", explain)
    try:
        for query in ("github:acme/web#3", "acme/web#3", "Z3"):
            assert "acme/web#3" in client.get("/admin/lookup", query_string={"q": query}).text
    finally:
        sa_event.remove(engine, "before_cursor_execute", explain)
    assert plans and not [p for p in plans if p.startswith("SCAN links")], plans
