"""The GitHub REST client the backfill reads through: pagination, limits (waits, not failures), clear errors."""

from __future__ import annotations

import time

import pytest
import responses
from responses import matchers

from bridge.events import SourceUnavailable
from bridge.sources.github.api import GitHubClient, GitHubError, issue_number_of

API = "https://ghe.example.org/api/v3"
ISSUES = f"{API}/repos/acme/web/issues"


def _issue(number: int, *, pr: bool = False) -> dict:
    issue = {"id": 100 + number, "number": number, "title": f"t{number}", "comments": 0}
    if pr:
        issue["pull_request"] = {"url": "x"}
    return issue


def _client(waits: list[float], **kwargs) -> GitHubClient:
    return GitHubClient("ghp_token", base_url=API, sleep=waits.append, **kwargs)


@responses.activate
def test_follows_link_pagination_and_skips_pull_requests():
    responses.get(
        ISSUES,
        match=[matchers.query_param_matcher({"state": "all"}, strict_match=False)],
        json=[_issue(1), _issue(2, pr=True)],
        headers={"Link": f'<{ISSUES}?state=all&page=2>; rel="next", <{ISSUES}?state=all&page=2>; rel="last"'},
    )
    responses.get(ISSUES, json=[_issue(3)], match=[matchers.query_param_matcher({"state": "all", "page": "2"})])
    waits: list[float] = []
    client = _client(waits)
    numbers = [i["number"] for i in client.iter_issues("acme/web", state="all")]
    assert numbers == [1, 3]
    assert client.calls == 2
    first = responses.calls[0].request
    assert "per_page=100" in first.url and "state=all" in first.url and "sort=created" in first.url
    assert first.headers["Authorization"] == "Bearer ghp_token"
    assert waits == []


@responses.activate
def test_waits_for_the_reset_when_no_calls_remain():
    reset = int(time.time()) + 30
    responses.get(
        ISSUES,
        match=[matchers.query_param_matcher({"state": "open"}, strict_match=False)],
        json=[_issue(1)],
        headers={
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
            "Link": f'<{ISSUES}?page=2>; rel="next"',
        },
    )
    responses.get(ISSUES, json=[_issue(2)], match=[matchers.query_param_matcher({"page": "2"})])
    waits: list[float] = []
    client = _client(waits)
    assert [i["number"] for i in client.iter_issues("acme/web")] == [1, 2]
    assert len(waits) == 1 and 25 <= waits[0] <= 32  # until the reset, before the next call


@responses.activate
def test_a_primary_limit_answer_waits_and_repeats():
    reset = int(time.time()) + 10
    responses.get(
        ISSUES,
        status=403,
        json={"message": "API rate limit exceeded for user ID 1."},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    responses.get(ISSUES, json=[_issue(5)])
    waits: list[float] = []
    page = _client(waits).issues_page("acme/web")
    assert [i["number"] for i in page.items] == [5]
    assert len(waits) == 1 and 5 <= waits[0] <= 12


@pytest.mark.parametrize("status", [403, 429])
@responses.activate
def test_a_secondary_limit_waits_retry_after_then_repeats(status):
    responses.get(
        ISSUES,
        status=status,
        json={"message": "You have exceeded a secondary rate limit."},
        headers={"Retry-After": "7"},
    )
    responses.get(ISSUES, json=[_issue(9)])
    waits: list[float] = []
    page = _client(waits).issues_page("acme/web")
    assert [i["number"] for i in page.items] == [9]
    assert waits == [7.0]


@responses.activate
def test_a_secondary_limit_without_retry_after_waits_a_minute():
    responses.get(ISSUES, status=403, json={"message": "You have exceeded a secondary rate limit."})
    responses.get(ISSUES, json=[])
    waits: list[float] = []
    _client(waits).issues_page("acme/web")
    assert waits == [60.0]


@responses.activate
def test_a_wait_over_the_maximum_stops_resumable_instead():
    responses.get(ISSUES, status=429, json={"message": "secondary rate limit"}, headers={"Retry-After": "7200"})
    with pytest.raises(SourceUnavailable) as info:
        _client([], max_wait=600).issues_page("acme/web")
    assert info.value.retry_after == 7200


@responses.activate
def test_401_names_the_token():
    responses.get(ISSUES, status=401, json={"message": "Bad credentials"})
    with pytest.raises(GitHubError, match=r"GITHUB_TOKEN.*401: Bad credentials"):
        _client([]).issues_page("acme/web")


@responses.activate
def test_404_is_an_unknown_repository():
    responses.get(ISSUES, status=404, json={"message": "Not Found"})
    with pytest.raises(GitHubError, match="unknown repository 'acme/web'"):
        _client([]).issues_page("acme/web")


@responses.activate
def test_5xx_is_retried_then_reported_unavailable():
    for _ in range(5):
        responses.get(ISSUES, status=502, body="bad gateway")
    waits: list[float] = []
    with pytest.raises(SourceUnavailable):
        _client(waits).issues_page("acme/web")
    assert len(waits) == 4


def test_a_missing_token_is_a_clear_error():
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set"):
        GitHubClient("")


def test_issue_number_of_a_comment():
    assert issue_number_of({"issue_url": "https://api.github.com/repos/a/b/issues/42"}) == 42
    assert issue_number_of({}) is None
