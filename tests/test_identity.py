"""Stable identity (issue #11): an item is the source's never-changing id, not its current name.

Unit tests of the GitHub ids and of the identity bindings, then the sync service in this process against
a real FakeZoho over HTTP (as in test_sync_guarantees.py): a repository rename, a transfer (in order,
reordered, duplicated), a new `external_id` template, another mapping instance, a routing change that moves
the issue, and a database upgraded from the old `acme/web#N` keys. Each checks the end state in Zoho: one
issue, the latest state, its external id updated, comments once.
"""

from __future__ import annotations

import pytest

from bridge import db
from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.sources.github import GitHubSource
from bridge.store import identities
from tests.factories import (
    comment_event,
    github_issue_id,
    github_request,
    issues_event,
    repository_id,
    transfer_events,
)
from tests.harness import GITHUB_SECRET

SOURCE = GitHubSource(GITHUB_SECRET)
WEB_ID = repository_id("acme/web")
ISSUE_ID = github_issue_id("acme/web", 1)


def parse(event: str, payload: dict) -> NormalizedEvent:
    body, headers = github_request(GITHUB_SECRET, event, payload)
    return SOURCE.parse(body, headers)


def renamed(action: str, **kwargs: object) -> dict:
    """acme/web renamed to acme/site: a new full_name, the same repository id and issue id."""
    return issues_event(action, repo="acme/site", repo_id=WEB_ID, issue_id=ISSUE_ID, **kwargs)  # type: ignore[arg-type]


def renamed_comment(action: str, **kwargs: object) -> dict:
    return comment_event(action, repo="acme/site", repo_id=WEB_ID, issue_id=ISSUE_ID, **kwargs)  # type: ignore[arg-type]


# -- the source: which ids a delivery carries ------------------------------------------------------------


def test_a_github_event_is_identified_by_the_issue_id():
    event = parse("issues", issues_event("opened"))
    assert (event.item_key, event.identity, event.previous_identity) == ("acme/web#1", str(ISSUE_ID), "")
    assert event.fields["issue_id"] == ISSUE_ID and event.fields["repository_id"] == WEB_ID
    comment = parse("issue_comment", comment_event("created", comment_id=9, text="hi", commented=1))
    assert comment.identity == str(ISSUE_ID)  # a comment belongs to the same item


def test_a_rename_keeps_the_identity_and_changes_only_the_name():
    before = parse("issues", issues_event("opened"))
    after = parse("issues", renamed("edited", updated=5))
    assert after.identity == before.identity and after.fields["repository_id"] == before.fields["repository_id"]
    assert (after.item_key, after.source_project) == ("acme/site#1", "acme/site")


def test_a_transfer_names_the_new_issue_and_the_old_one():
    transferred, opened = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    moved = parse("issues", transferred)
    new_id = str(github_issue_id("acme/api", 7))
    assert (moved.action, moved.event_name) == ("updated", "issues.transferred")
    assert (moved.identity, moved.previous_identity) == (new_id, str(ISSUE_ID))
    assert (moved.item_key, moved.source_project, moved.fields["number"]) == ("acme/api#7", "acme/api", 7)
    assert moved.fields["html_url"] == "https://github.com/acme/api/issues/7"  # the new issue's fields
    reopened = parse("issues", opened)  # the new repository's own delivery names the old issue too
    assert (reopened.action, reopened.identity, reopened.previous_identity) == ("created", new_id, str(ISSUE_ID))
    assert NormalizedEvent.from_json(moved.to_json()) == moved


def test_a_transfer_whose_new_issue_is_missing_or_unnamed_is_refused_or_ignored():
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    del transferred["changes"]["new_repository"]
    with pytest.raises(BadDelivery, match=r"changes\.new_issue, changes\.new_repository"):
        parse("issues", transferred)
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    del transferred["changes"]["new_issue"]["id"]
    with pytest.raises(IgnoredEvent, match="without the issues' ids"):
        parse("issues", transferred)
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    transferred["changes"]["new_issue"]["id"] = "not a number"
    with pytest.raises(BadDelivery, match=r"changes\.new_issue\.id"):
        parse("issues", transferred)


def test_a_body_without_an_issue_id_keeps_the_name_as_its_identity():
    payload = issues_event("opened")
    del payload["issue"]["id"]
    event = parse("issues", payload)
    assert (event.item_key, event.identity) == ("acme/web#1", "")


# -- the bindings: which item handle a delivery is filed under -------------------------------------------


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/ids.db")
    db.ensure_schema(engine)
    yield engine
    engine.dispose()


def _resolve(engine, event: NormalizedEvent) -> str:
    with engine.begin() as conn:
        return identities.resolve(conn, event).item_key


def test_bindings_follow_renames_and_transfers_in_any_order(engine):
    assert _resolve(engine, parse("issues", issues_event("opened"))) == "acme/web#1"
    assert _resolve(engine, parse("issues", renamed("edited", updated=2))) == "acme/web#1"  # renamed: same item
    transferred, opened = transfer_events(
        old_repo="acme/site", new_repo="acme/api", new_number=7, updated=3, issue_id=None
    )
    transferred["issue"]["id"] = opened["changes"]["old_issue"]["id"] = ISSUE_ID  # the renamed one moves
    assert _resolve(engine, parse("issues", opened)) == "acme/web#1"  # the new repository's delivery first
    assert _resolve(engine, parse("issues", transferred)) == "acme/web#1"
    later = issues_event("edited", repo="acme/api", number=7, updated=4)
    assert _resolve(engine, parse("issues", later)) == "acme/web#1"
    # Another issue #1 in a new repository that took the old name is another item.
    other = issues_event("opened", repo="acme/web", repo_id=123, issue_id=999)
    assert _resolve(engine, parse("issues", other)) == "acme/web#1 (id 999)"


def test_an_identity_seen_once_costs_one_read_and_no_write(engine):
    _resolve(engine, parse("issues", issues_event("opened")))
    statements: list[str] = []
    with engine.begin() as conn:
        from sqlalchemy import event as sa_event

        sa_event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
        identities.resolve(conn, parse("issues", renamed("edited", updated=2)))
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
