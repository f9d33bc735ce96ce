"""Behind a reverse proxy (TRUSTED_PROXIES): the login lockout counts the real client, the front page shows the
public URL, the admin cookie is Secure over HTTPS, and nothing is believed from an untrusted peer.

The real nginx in front of real processes is tests/test_deploy_kit.py; here the Flask test client sets the
connection's address (REMOTE_ADDR) and scheme the way gunicorn would.
"""

from __future__ import annotations

import pytest

from bridge.settings import SettingsError, load_settings
from bridge.web import admin_guard
from bridge.web.proxy import TrustedProxies
from tests.test_admin import TOKEN, csrf_of, make_app

PROXY = "10.0.0.5"
FREE = admin_guard.CLIENT_FREE_FAILURES


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path, ADMIN_TOKEN=TOKEN, TRUSTED_PROXIES="10.0.0.0/24, 127.0.0.1")
    yield app
    app.extensions["bridge"].engine.dispose()


def _login(client, token: str, *, peer: str, headers: dict[str, str] | None = None, https: bool = False):
    base = "https://bridge.internal" if https else "http://bridge.internal"
    environ = {"REMOTE_ADDR": peer}
    page = client.get("/admin/login", base_url=base, environ_base=environ, headers=headers)
    return client.post(
        "/admin/login",
        base_url=base,
        data={"token": token, "csrf_token": csrf_of(page.text), "next": "/admin/"},
        environ_base=environ,
        headers=headers,
    )


def _xff(client_address: str) -> dict[str, str]:
    return {"X-Forwarded-For": client_address}


def test_the_lockout_counts_the_client_behind_a_trusted_proxy_not_the_proxy(app):
    for _ in range(FREE + 1):
        assert _login(app.test_client(), "guess", peer=PROXY, headers=_xff("198.51.100.7")).status_code == 401
    assert _login(app.test_client(), TOKEN, peer=PROXY, headers=_xff("198.51.100.7")).status_code == 429
    # Another client through the same proxy is not held up.
    assert _login(app.test_client(), TOKEN, peer=PROXY, headers=_xff("198.51.100.8")).status_code == 302


def test_a_spoofed_forwarded_for_through_the_proxy_does_not_rotate_the_lockout_key(app):
    """nginx appends the real client ($proxy_add_x_forwarded_for): what the attacker wrote stays to its left."""
    for i in range(FREE + 1):
        spoofed = _xff(f"203.0.113.{i}, 198.51.100.7")
        assert _login(app.test_client(), "guess", peer=PROXY, headers=spoofed).status_code == 401
    assert _login(app.test_client(), TOKEN, peer=PROXY, headers=_xff("192.0.2.99, 198.51.100.7")).status_code == 429


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(app):
    """Straight from the internet: an attacker rotating X-Forwarded-For is still one address to the lockout."""
    for i in range(FREE + 1):
        assert _login(app.test_client(), "guess", peer="203.0.113.50", headers=_xff(f"10.9.9.{i}")).status_code == 401
    assert _login(app.test_client(), TOKEN, peer="203.0.113.50", headers=_xff("10.9.9.200")).status_code == 429


def test_the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy():
    proxies = TrustedProxies(lambda environ, start: [], (*load_settings_networks("10.0.0.0/8, ::1"),))
    assert proxies.client_address("10.0.0.5", "198.51.100.7") == "198.51.100.7"
    assert proxies.client_address("10.0.0.5", "1.2.3.4, 198.51.100.7, 10.0.0.9") == "198.51.100.7"
    assert proxies.client_address("10.0.0.5", "10.1.1.1, 10.0.0.9") == "10.1.1.1"  # all proxies: the farthest
    assert proxies.client_address("10.0.0.5", "") == "10.0.0.5"  # no header: the proxy itself
    assert proxies.client_address("10.0.0.5", "1.2.3.4, not-an-address, 10.0.0.9") == "10.0.0.9"
    assert proxies.client_address("::ffff:10.0.0.5", "2001:db8::7") == "2001:db8::7"  # v4-mapped peer
    assert proxies.client_address("203.0.113.9", "198.51.100.7") == "203.0.113.9"  # untrusted peer


def load_settings_networks(value: str):
    return load_settings({"TRUSTED_PROXIES": value}, read_dotenv=False).trusted_proxies


def test_the_front_page_shows_the_public_url_the_trusted_proxy_names(app):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bridge.example.com:443", **_xff("198.51.100.7")}
    page = app.test_client().get(
        "/", base_url="http://127.0.0.1:8000", environ_base={"REMOTE_ADDR": PROXY}, headers=headers
    )
    assert "https://bridge.example.com/webhooks/github" in page.text
    assert "127.0.0.1:8000" not in page.text
    other_port = {**headers, "X-Forwarded-Host": "bridge.example.com:8443"}
    page = app.test_client().get("/", environ_base={"REMOTE_ADDR": PROXY}, headers=other_port)
    assert "https://bridge.example.com:8443/webhooks/github" in page.text


def test_the_front_page_ignores_an_untrusted_peers_host_and_scheme(app):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.net"}
    page = app.test_client().get(
        "/", base_url="http://bridge.internal:8000", environ_base={"REMOTE_ADDR": "203.0.113.50"}, headers=headers
    )
    assert "http://bridge.internal:8000/webhooks/github" in page.text and "evil" not in page.text


@pytest.mark.parametrize("bad_host", ["evil.example.net/path", "a b", "user@evil", ""])
def test_a_malformed_forwarded_host_is_not_believed(app, bad_host):
    headers = {"X-Forwarded-Host": bad_host}
    page = app.test_client().get(
        "/", base_url="http://bridge.internal", environ_base={"REMOTE_ADDR": PROXY}, headers=headers
    )
    assert "http://bridge.internal/webhooks/github" in page.text


def _cookie(response) -> str:
    cookies = [v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith("bridge_admin=")]
    assert cookies, response.headers
    return cookies[-1]


def test_the_admin_cookie_is_secure_over_https_directly(app):
    response = _login(app.test_client(), TOKEN, peer="198.51.100.7", https=True)
    assert response.status_code == 302
    assert "; Secure" in _cookie(response) and "HttpOnly" in _cookie(response)


def test_the_admin_cookie_is_secure_behind_a_trusted_proxy_that_terminated_tls(app):
    headers = {"X-Forwarded-Proto": "https", **_xff("198.51.100.7")}
    response = _login(app.test_client(), TOKEN, peer=PROXY, headers=headers)
    assert response.status_code == 302 and "; Secure" in _cookie(response)


def test_the_admin_cookie_is_not_secure_over_plain_http_nor_on_an_untrusted_peers_word(app):
    plain = _login(app.test_client(), TOKEN, peer="198.51.100.7")
    assert plain.status_code == 302 and "Secure" not in _cookie(plain)
    claimed = _login(app.test_client(), TOKEN, peer="203.0.113.50", headers={"X-Forwarded-Proto": "https"})
    assert claimed.status_code == 302 and "Secure" not in _cookie(claimed)


@pytest.mark.parametrize("value", ["10.0.0.0/33", "proxy.internal", "10.0.0.1-10.0.0.9", "::1/129"])
def test_an_invalid_trusted_proxies_value_is_one_line_naming_the_setting(value):
    with pytest.raises(SettingsError) as refused:
        load_settings({"TRUSTED_PROXIES": value}, read_dotenv=False)
    message = str(refused.value)
    assert message.startswith("TRUSTED_PROXIES:") and value in message and "\n" not in message


def test_trusted_proxies_accepts_addresses_and_cidrs():
    networks = load_settings_networks("127.0.0.1, 10.0.0.0/8 ::1 fd00::/8")
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
    assert load_settings_networks("") == ()
