"""Admin login limiting (per client and global, growing delay, shared through the database) and revocable
sessions (logout and a token change end every session, a captured cookie included)."""

from __future__ import annotations

import time

import pytest

from bridge.web import admin_guard
from tests.test_admin import TOKEN, csrf_of, login, make_app


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path, ADMIN_TOKEN=TOKEN)
    yield app
    app.extensions["bridge"].engine.dispose()


def _try(client, token: str, remote: str = "203.0.113.7"):
    page = client.get("/admin/login", environ_base={"REMOTE_ADDR": remote})
    return client.post(
        "/admin/login",
        data={"token": token, "csrf_token": csrf_of(page.text), "next": "/admin/"},
        environ_base={"REMOTE_ADDR": remote},
    )


def test_wrong_tokens_make_a_client_wait_even_with_the_right_one(app):
    client = app.test_client()
    for _ in range(admin_guard.CLIENT_FREE_FAILURES + 1):
        assert _try(client, "guess").status_code == 401
    blocked = _try(client, TOKEN)
    assert blocked.status_code == 429 and "Too many wrong tokens" in blocked.text
    assert int(blocked.headers["Retry-After"]) >= 1
    # Another address is not held up by this one.
    assert _try(app.test_client(), TOKEN, remote="198.51.100.9").status_code == 302
    time.sleep(float(blocked.headers["Retry-After"]) + 0.2)
    assert _try(client, TOKEN).status_code == 302  # the wait is over: the right token works again


def test_the_delay_grows_and_is_capped(app):
    engine = app.extensions["bridge"].engine
    delays = [admin_guard.failed(engine, "192.0.2.1") for _ in range(admin_guard.CLIENT_FREE_FAILURES + 12)]
    free = admin_guard.CLIENT_FREE_FAILURES
    assert delays[:free] == [0.0] * free
    assert delays[free : free + 4] == [1.0, 2.0, 4.0, 8.0]
    assert delays == sorted(delays)
    assert max(delays) <= admin_guard.CLIENT_MAX_DELAY
    admin_guard.succeeded(engine, "192.0.2.1")
    assert admin_guard.check(engine, "192.0.2.1").allowed


def test_the_limit_is_shared_by_every_process_on_the_database(tmp_path):
    first = make_app(tmp_path, ADMIN_TOKEN=TOKEN)
    second = make_app(tmp_path, ADMIN_TOKEN=TOKEN)  # another gunicorn worker or host: same database
    for _ in range(admin_guard.CLIENT_FREE_FAILURES + 1):
        assert _try(first.test_client(), "guess").status_code == 401
    assert _try(second.test_client(), TOKEN).status_code == 429


def test_many_addresses_guessing_at_once_trip_the_global_limit(app):
    client = app.test_client()
    for i in range(admin_guard.GLOBAL_FREE_FAILURES + 1):
        assert _try(client, "guess", remote=f"10.0.{i // 250}.{i % 250}").status_code == 401
    r = _try(client, TOKEN, remote="192.0.2.200")  # a fresh address
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_logout_ends_every_session_including_a_captured_cookie(app):
    browser = app.test_client()
    assert login(browser).status_code == 302
    cookie = browser.get_cookie("bridge_admin", path="/admin")
    thief = app.test_client()
    thief.set_cookie(cookie.key, cookie.value, path="/admin")
    assert thief.get("/admin/").status_code == 200  # the copy works while the session lives
    other = app.test_client()
    assert login(other).status_code == 302  # a second session, elsewhere
    page = browser.get("/admin/")
    assert browser.post("/admin/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
    assert thief.get("/admin/").status_code == 302
    assert other.get("/admin/").status_code == 302
    assert browser.get("/admin/").status_code == 302
    assert login(browser).status_code == 302 and browser.get("/admin/").status_code == 200  # a new login works


def test_a_token_change_ends_every_session(tmp_path):
    before = make_app(tmp_path, ADMIN_TOKEN=TOKEN)
    browser = before.test_client()
    assert login(browser).status_code == 302
    cookie = browser.get_cookie("bridge_admin", path="/admin")
    after = make_app(tmp_path, ADMIN_TOKEN="a-new-admin-token-9876543210fedcba")
    client = after.test_client()
    client.set_cookie(cookie.key, cookie.value, path="/admin")
    assert client.get("/admin/").status_code == 302
    # Even with the old signing key, a session carrying the old token's fingerprint is refused.
    forged = after.test_client()
    with forged.session_transaction() as sess:
        sess.update({"admin": True, "token": admin_guard.token_fingerprint(TOKEN), "epoch": 0})
    assert forged.get("/admin/").status_code == 302
