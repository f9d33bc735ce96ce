"""The admin page's "Connect Zoho": the browser flow of `zoho connect` against the fake accounts server: a state
bound to the admin session (once, CSRF-safe), the code exchanged, the token stored in the home's .env, the portal
set; a forged or replayed callback stores nothing."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from dotenv import dotenv_values
from flask.testing import FlaskClient

from bridge.settings import load_settings
from bridge.targets.zoho.grant import SCOPES
from bridge.web import create_app
from testkit.fakes.zoho import FakeZoho

TOKEN = "admin-token-0123456789abcdef"
CALLBACK = "http://localhost/admin/zoho/callback"  # the test client's host


@pytest.fixture
def fake():
    with FakeZoho(redirect_uris=(CALLBACK,)) as server:
        yield server


@pytest.fixture
def app(tmp_path: Path, fake: FakeZoho):
    (tmp_path / "mappings").mkdir()
    env = {
        "BRIDGE_HOME": str(tmp_path),
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ADMIN_TOKEN": TOKEN,
        "ZOHO_ACCOUNTS_URL": fake.base_url,
        "ZOHO_API_BASE": fake.base_url,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
    }
    app = create_app(load_settings(env, read_dotenv=False))
    app.config["TESTING"] = True
    yield app
    app.extensions["bridge"].engine.dispose()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _login(client: FlaskClient) -> None:
    page = client.get("/admin/login")
    answer = client.post("/admin/login", data={"token": TOKEN, "csrf_token": _csrf(page.text), "next": "/admin/"})
    assert answer.status_code == 302


def _start(client: FlaskClient, fake: FakeZoho, secret: str | None = None) -> str:
    """Submit the Connect form; returns the accounts server URL the browser is sent to."""
    page = client.get("/admin/zoho")
    assert page.status_code == 200 and ",".join(SCOPES["projects"]) in page.text and CALLBACK in page.text
    assert fake.base_url in page.headers["Content-Security-Policy"]  # the form may lead to the accounts server
    form = {"csrf_token": _csrf(page.text), "dc": "configured", "client_id": fake.client_id}
    answer = client.post("/admin/zoho/connect", data=form | {"client_secret": secret or fake.client_secret})
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def test_connect_zoho_in_the_browser_stores_the_token_and_sets_the_portal(app, fake: FakeZoho, tmp_path: Path) -> None:
    client = app.test_client()
    _login(client)
    grant_url = _start(client, fake)
    query = parse_qs(urlsplit(grant_url).query)
    assert grant_url.startswith(fake.base_url + "/oauth/v2/auth?")
    assert query["scope"] == [",".join(SCOPES["projects"])] and query["redirect_uri"] == [CALLBACK]
    assert query["access_type"] == ["offline"] and len(query["state"][0]) >= 32
    consent = requests.get(grant_url, allow_redirects=False, timeout=10)  # the admin accepts at Zoho
    back = consent.headers["Location"]
    assert back.startswith(CALLBACK + "?")
    done = client.get(back.removeprefix("http://localhost"))
    assert done.status_code == 200 and 'id="connected"' in done.text, done.text
    stored = dotenv_values(tmp_path / ".env")
    assert stored["ZOHO_REFRESH_TOKEN"] and stored["ZOHO_REFRESH_TOKEN"] not in done.text
    assert stored["ZOHO_CLIENT_SECRET"] == fake.client_secret and stored["ZOHO_PORTAL_ID"] == fake.portal_id
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert fake.client_secret not in client.get_cookie("bridge_admin", path="/admin").value  # never in the cookie
    # The callback is good once: a replay (or a second tab) stores nothing more.
    (tmp_path / ".env").unlink()
    assert client.get(back.removeprefix("http://localhost")).status_code == 400
    assert not (tmp_path / ".env").exists()


def test_a_callback_this_session_did_not_start_is_refused(app, fake: FakeZoho, tmp_path: Path) -> None:
    victim, attacker = app.test_client(), app.test_client()
    _login(victim)
    _login(attacker)
    grant_url = _start(attacker, fake)  # the attacker's own grant, with the attacker's state
    back = requests.get(grant_url, allow_redirects=False, timeout=10).headers["Location"]
    refused = victim.get(back.removeprefix("http://localhost"))  # lured into the victim's browser
    assert refused.status_code == 400 and "not started from this admin session" in refused.text
    forged = victim.get("/admin/zoho/callback?code=1000.x&state=guessed")
    assert forged.status_code == 400
    assert app.test_client().get(back.removeprefix("http://localhost")).status_code == 302  # logged out: login
    assert not (tmp_path / ".env").exists()
    no_csrf = victim.post("/admin/zoho/connect", data={"dc": "configured", "client_id": "x", "client_secret": "y"})
    assert no_csrf.status_code == 400


def test_a_wrong_secret_or_a_refusal_is_shown_in_one_line(app, fake: FakeZoho, tmp_path: Path) -> None:
    client = app.test_client()
    _login(client)
    back = requests.get(_start(client, fake, secret="wrong"), allow_redirects=False, timeout=10).headers["Location"]
    page = client.get(back.removeprefix("http://localhost"))
    assert page.status_code == 400 and "invalid_client from" in page.text
    fake.deny_next_consent()
    back = requests.get(_start(client, fake), allow_redirects=False, timeout=10).headers["Location"]
    page = client.get(back.removeprefix("http://localhost"))
    assert page.status_code == 400 and "access_denied" in page.text
    assert not (tmp_path / ".env").exists()
