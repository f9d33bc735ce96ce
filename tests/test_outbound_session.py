"""The Zoho client's HTTP session reads the environment's proxy settings once per host: the same settings as
`requests.Session`, without scanning `os.environ` on every call."""

from __future__ import annotations

import pytest
import requests

from bridge.outbound.session import EnvCachedSession

URLS = ("https://projectsapi.zoho.com/api/v3/x", "https://internal.example:8443/y", "http://plain.example/z")


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY",
                 "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3129")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca.pem")


@pytest.mark.usefixtures("proxied")
def test_same_settings_as_requests_for_each_host_and_call() -> None:
    cached, plain = EnvCachedSession(), requests.Session()
    for url in URLS * 2:  # the second round comes from the cache
        for verify in (None, False):
            assert cached.merge_environment_settings(url, {}, None, verify, None) == (
                plain.merge_environment_settings(url, {}, None, verify, None)
            )
    assert cached.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"] == {
        "https": "http://proxy.example:3128",
        "http": "http://proxy.example:3129",
        "no": "internal.example",
    }


@pytest.mark.usefixtures("proxied")
def test_a_caller_changing_the_answer_does_not_change_the_next_one() -> None:
    session = EnvCachedSession()
    first = session.merge_environment_settings(URLS[0], {}, None, None, None)
    first["proxies"]["https"] = "http://elsewhere:1"
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == (
        "http://proxy.example:3128"
    )


@pytest.mark.usefixtures("proxied")
def test_per_call_proxies_and_the_sessions_own_settings_are_honoured() -> None:
    session = EnvCachedSession()
    session.merge_environment_settings(URLS[0], {}, None, None, None)
    given = session.merge_environment_settings(URLS[0], {"https": "http://given:9"}, None, None, None)
    assert given["proxies"]["https"] == "http://given:9"
    plain = requests.Session()
    for changed in (session, plain):  # a setting changed after the first call is seen, as requests sees it
        changed.proxies = {"ftp": "http://own:7"}
    assert session.merge_environment_settings(URLS[0], {}, None, None, None) == (
        plain.merge_environment_settings(URLS[0], {}, None, None, None)
    )
    session.trust_env = False
    assert "no" not in session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]
