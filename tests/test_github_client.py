"""The GitHub REST client: declared calls only, pagination, and GitHub's limits as waits every process shares
(blocks in the database), never failures; an outage opens the breaker; only safe calls are repeated."""

from __future__ import annotations

import time

import pytest
import responses
from responses import matchers

from bridge.events import SourceUnavailable
from bridge.outbound.budget import Budgets, blocked_until, budget_status
from bridge.outbound.errors import LimitWait, UndeclaredCall
from bridge.sources.github.api import GitHubClient, GitHubError, issue_number_of
from bridge.sources.http import SourceBusy
from bridge.store import schema as db

API = "https://ghe.example.org/api/v3"
ISSUES = f"{API}/repos/acme/web/issues"
COMMENTS = f"{ISSUES}/7/comments"


@pytest.fixture
def budgets(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    yield Budgets(engine)
    engine.dispose()


def _issue(number: int, *, pr: bool = False) -> dict:
    issue = {"id": 100 + number, "number": number, "title": f"t{number}", "comments": 0}
    if pr:
        issue["pull_request"] = {"url": "x"}
    return issue


def _client(budgets: Budgets, waits: list | None = None, *, hold: float = 0.0) -> GitHubClient:
    on_wait = (lambda s, why: waits.append((round(s), why))) if waits is not None else None
    return GitHubClient("ghp_token", budgets=budgets, base_url=API, hold=hold, on_wait=on_wait)


@responses.activate
def test_follows_link_pagination_and_skips_pull_requests(budgets):
    responses.get(
        ISSUES,
        match=[matchers.query_param_matcher({"state": "all"}, strict_match=False)],
        json=[_issue(1), _issue(2, pr=True)],
        headers={"Link": f'<{ISSUES}?state=all&page=2>; rel="next", <{ISSUES}?state=all&page=2>; rel="last"'},
    )
    responses.get(ISSUES, json=[_issue(3)], match=[matchers.query_param_matcher({"state": "all", "page": "2"})])
    client = _client(budgets)
    numbers = [i["number"] for i in client.iter_issues("acme/web", state="all")]
    assert numbers == [1, 3]
    assert client.calls == 2
    first = responses.calls[0].request
    assert "per_page=100" in first.url and "state=all" in first.url and "sort=created" in first.url
    assert first.headers["Authorization"] == "Bearer ghp_token"


@responses.activate
def test_an_undeclared_call_is_never_sent(budgets):
    client = _client(budgets)
    with pytest.raises(UndeclaredCall, match="GET /user: not a declared GitHub call"):
        client.send("GET", "/user")
    with pytest.raises(UndeclaredCall):
        client.get("https://elsewhere.example.org/api/v3/repos/acme/web/issues")
    assert len(responses.calls) == 0


@responses.activate
def test_no_calls_left_blocks_every_process_until_the_reset(budgets):
    """`X-RateLimit-Remaining: 0` on an answer: the next call of any process waits for the reset."""
    reset = int(time.time()) + 40
    responses.get(ISSUES, json=[_issue(1)], headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
    assert [i["number"] for i in _client(budgets).issues_page("acme/web").items] == [1]
    left, _, reason = blocked_until(budgets.engine, "github")
    assert 30 < left <= 42 and "X-RateLimit-Remaining is 0" in str(reason)
    other = Budgets(budgets.engine)  # another process: it waits too, and says how long
    with pytest.raises(SourceBusy) as info:
        _client(other).issues_page("acme/web")
    assert isinstance(info.value, LimitWait) and 30 < (info.value.retry_after or 0) <= 42
    assert len(responses.calls) == 1


@responses.activate
def test_a_primary_limit_answer_is_waited_out_in_place_and_reported_once(budgets):
    reset = int(time.time()) + 2
    responses.get(
        ISSUES,
        status=403,
        json={"message": "API rate limit exceeded for user ID 1."},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    responses.get(ISSUES, json=[_issue(5)])
    waits: list = []
    page = _client(budgets, waits, hold=6.0).issues_page("acme/web")
    assert [i["number"] for i in page.items] == [5]
    assert len(waits) == 1 and "primary rate limit" in waits[0][1]


@pytest.mark.parametrize("status", [403, 429])
@responses.activate
def test_a_secondary_limit_blocks_for_its_retry_after_then_repeats(budgets, status):
    responses.get(
        ISSUES,
        status=status,
        json={"message": "You have exceeded a secondary rate limit."},
        headers={"Retry-After": "2"},
    )
    responses.get(ISSUES, json=[_issue(9)])
    waits: list = []
    started = time.monotonic()
    page = _client(budgets, waits, hold=5.0).issues_page("acme/web")
    assert [i["number"] for i in page.items] == [9]
    assert 1.5 < time.monotonic() - started < 4.5
    assert [why for _, why in waits] == [f"GitHub secondary rate limit ({status}, Retry-After)"]


@responses.activate
def test_a_secondary_limit_without_retry_after_waits_a_minute_doubling_while_refused(budgets):
    for _ in range(2):
        responses.get(ISSUES, status=403, json={"message": "You have exceeded a secondary rate limit."})
    responses.get(ISSUES, json=[])
    client = _client(budgets)
    with pytest.raises(SourceBusy) as first:
        client.issues_page("acme/web")
    assert first.value.retry_after == 60.0
    budgets.unblock("github")  # the minute passes
    with pytest.raises(SourceBusy) as second:
        client.issues_page("acme/web")
    assert second.value.retry_after == 120.0  # "exponentially increasing"
    budgets.unblock("github")
    client.issues_page("acme/web")  # answered: the next refusal starts at a minute again
    responses.get(ISSUES, status=429, json={"message": "secondary rate limit"})
    with pytest.raises(SourceBusy) as third:
        client.issues_page("acme/web")
    assert third.value.retry_after == 60.0


@responses.activate
def test_a_retry_after_of_a_year_is_a_capped_wait_never_a_failure(budgets):
    """Was: a Retry-After over 60 s failed the attempt (and a year blocked a worker for a year)."""
    responses.get(ISSUES, status=429, json={"message": "secondary rate limit"}, headers={"Retry-After": "31536000"})
    with pytest.raises(SourceBusy) as info:
        _client(budgets).issues_page("acme/web")
    assert isinstance(info.value, LimitWait)  # a wait in every lane, never an attempt
    assert info.value.retry_after == budgets.max_block
    assert blocked_until(budgets.engine, "github")[0] == pytest.approx(budgets.max_block, abs=5)


@responses.activate
def test_401_names_the_token(budgets):
    responses.get(ISSUES, status=401, json={"message": "Bad credentials"})
    with pytest.raises(GitHubError, match=r"GITHUB_TOKEN.*401: Bad credentials"):
        _client(budgets).issues_page("acme/web")


@responses.activate
def test_404_is_an_unknown_repository(budgets):
    responses.get(ISSUES, status=404, json={"message": "Not Found"})
    with pytest.raises(GitHubError, match="unknown repository 'acme/web'"):
        _client(budgets).issues_page("acme/web")


@responses.activate
def test_a_read_is_repeated_after_an_outage_pause_a_comment_post_never(budgets):
    responses.get(ISSUES, status=502, body="bad gateway")
    responses.get(ISSUES, json=[_issue(1)])
    started = time.monotonic()
    assert [i["number"] for i in _client(budgets, hold=5.0).issues_page("acme/web").items] == [1]
    assert time.monotonic() - started >= 1.5  # the breaker's first pause, shared by every process
    budgets.unblock("github")
    responses.post(COMMENTS, status=502, body="bad gateway")
    responses.post(COMMENTS, status=201, json={"id": 1})
    with pytest.raises(SourceUnavailable, match="not repeated") as info:
        _client(budgets, hold=30.0).add_comment("acme/web", 7, "Tracked in EC1-I4")
    assert not isinstance(info.value, LimitWait)  # in doubt: its caller looks it up by its marker
    assert len([c for c in responses.calls if c.request.method == "POST"]) == 1


@responses.activate
def test_a_timed_out_comment_post_is_not_repeated(budgets):
    import requests

    responses.post(COMMENTS, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(SourceUnavailable, match=r"ReadTimeout.*not repeated"):
        _client(budgets, hold=30.0).add_comment("acme/web", 7, "Tracked in EC1-I4")
    assert len(responses.calls) == 1
    assert blocked_until(budgets.engine, "github")[1] is not None  # the breaker is open for everyone


@responses.activate
def test_writes_are_paced_one_a_second_and_comments_spend_the_content_windows(budgets):
    for _ in range(3):
        responses.post(COMMENTS, status=201, json={"id": 1})
    client = _client(budgets, hold=5.0)
    started = time.monotonic()
    for n in range(3):
        client.add_comment("acme/web", 7, f"comment {n}")
    assert time.monotonic() - started >= 1.8  # at most one content request a second
    used = {s.key: s.used_in_window for s in budget_status(budgets.engine, budgets.limits)}
    assert used["github.content.minute"] == 3 and used["github.content.hour"] == 3


def test_a_missing_token_is_a_clear_error(budgets):
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set"):
        GitHubClient("", budgets=budgets)


def test_issue_number_of_a_comment():
    assert issue_number_of({"issue_url": "https://api.github.com/repos/a/b/issues/42"}) == 42
    assert issue_number_of({}) is None
