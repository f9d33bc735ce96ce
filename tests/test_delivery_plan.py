"""The planning step and the retry policy are pure functions: no database, no HTTP, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.core import retry
from bridge.core.plan import plan_batch
from bridge.events import Comment, NormalizedEvent
from bridge.store import DONE, SKIPPED, SUPERSEDED, Link, StoredEvent


def ev(
    event_id: int,
    action: str = "updated",
    ts: float = 0.0,
    *,
    comment: str | None = None,
    state: bool = True,
    **fields: object,
) -> StoredEvent:
    when = datetime.fromtimestamp(1_700_000_000 + ts, UTC)
    normalized = NormalizedEvent(
        source="github",
        item_kind="issue",
        item_key="acme/web#1",
        action=action,
        event_name=f"issues.{action}",
        source_ts=when,
        fields=dict(fields),
        comment=Comment(id=comment, body="text", created_at=when) if comment else None,
        has_state=state,
    )
    return StoredEvent(
        id=event_id,
        source="github",
        dedup_key=str(event_id),
        event_name=normalized.event_name,
        item_key="acme/web#1",
        action=action,
        source_ts=when.timestamp(),
        received_at=0.0,
        status="pending",
        attempts=0,
        next_attempt_at=0.0,
        last_error=None,
        notes=None,
        event=normalized,
    )


def link(state: str = "linked", ts: float = 0.0, **kw: object) -> Link:
    values: dict = dict(
        source="github",
        external_id="github:acme/web#1",
        item_key="acme/web#1",
        portal="p",
        project="1",
        zoho_issue_id="42" if state != "creating" else None,
        state=state,
        last_state_ts=1_700_000_000 + ts,
        applied_hash="h",
        last_fields={"title": "old"},
    )
    values.update(kw)
    return Link(**values)


def test_newest_state_wins_older_are_superseded_and_their_fields_kept():
    events = [ev(1, "created", 0, title="a", body="b"), ev(3, ts=9, title="c"), ev(2, ts=5, labels=["x"])]
    plan = plan_batch(events, None, comments_enabled=True)
    assert plan.state is not None and plan.state.event.id == 3 and plan.state.action == "create"
    assert not plan.state.in_doubt
    assert plan.state.fields == {"title": "c", "body": "b", "labels": ["x"]}
    assert sorted((e.id, status) for e, status, _ in plan.finish_now) == [(1, SUPERSEDED), (2, SUPERSEDED)]


def test_a_deletion_wins_a_tie_and_stays_terminal():
    plan = plan_batch([ev(2, "deleted", 5), ev(1, "updated", 5)], link(), comments_enabled=True)
    assert plan.state is not None and plan.state.event.id == 2 and plan.state.action == "delete"
    later_reopen = plan_batch([ev(3, "updated", 50)], link(state="deleted", ts=5), comments_enabled=True)
    assert later_reopen.state is not None and later_reopen.state.action == "skip"
    assert "terminal" in (later_reopen.state.note or "")


def test_a_deletion_while_a_create_is_in_doubt_looks_for_the_issue_and_one_never_synced_is_remembered():
    events = [ev(1, "created", 0), ev(2, "deleted", 3)]
    doubt = plan_batch(events, link(state="creating"), comments_enabled=True, create_in_doubt=True)
    assert doubt.state is not None and (doubt.state.action, doubt.state.in_doubt) == ("delete", True)
    # a create intent that never left (its budget said wait): nothing can be in Zoho, the deletion is kept
    unsent = plan_batch(events, link(state="creating"), comments_enabled=True, create_in_doubt=False)
    assert unsent.state is not None and unsent.state.action == "tombstone"
    never = plan_batch([ev(1, "created", 0), ev(2, "deleted", 3)], None, comments_enabled=True)
    assert never.state is not None and never.state.action == "tombstone"  # nothing sent, the deletion kept
    # the tombstone (a deleted link without an issue) keeps an older redelivery from creating the item
    tombstone = link(state="deleted", ts=3, zoho_issue_id=None)
    redelivered = plan_batch([ev(3, "created", 0)], tombstone, comments_enabled=True)
    assert redelivered.state is not None and redelivered.state.action == "skip"


def test_a_deletion_is_terminal_whatever_its_body_timestamps_say():
    """A BugHerd destroy carries `deleted_at: null`: its time can be older than a comment event's state that
    arrived with it. The deletion still wins, in one batch and after the item's newer state was applied."""
    batch = plan_batch([ev(1, "updated", 9, title="commented"), ev(2, "deleted", 3)], link(ts=5), comments_enabled=True)
    assert batch.state is not None and (batch.state.event.id, batch.state.action) == (2, "delete")
    later = plan_batch([ev(2, "deleted", 3)], link(ts=9), comments_enabled=True)
    assert later.state is not None and later.state.action == "delete"


def test_older_than_applied_is_not_applied_and_a_create_sent_unconfirmed_means_doubt():
    stale = plan_batch([ev(1, ts=3, title="old")], link(ts=10), comments_enabled=True)
    assert stale.state is not None and stale.state.action == "skip"
    doubt = plan_batch([ev(1, "created", 0, title="t")], link(state="creating"), comments_enabled=True,
                       create_in_doubt=True)  # fmt: skip
    assert doubt.state is not None and doubt.state.action == "create" and doubt.state.in_doubt
    # only a create actually handed to the network can be in doubt: an intent alone is not
    planned = plan_batch([ev(1, "created", 0, title="t")], link(state="creating"), comments_enabled=True)
    assert planned.state is not None and planned.state.action == "create" and not planned.state.in_doubt
    update = plan_batch([ev(1, ts=20, title="new")], link(ts=10), comments_enabled=True)
    assert update.state is not None and update.state.action == "update"
    assert update.state.fields == {"title": "new"}


def test_comments_go_in_comment_order_stateless_events_are_skipped_and_comments_can_be_off():
    events = [
        ev(5, "comment_created", 9, comment="b", state=False),
        ev(4, "comment_created", 2, comment="a", state=False),
        ev(6, ts=1, state=False),
    ]
    plan = plan_batch(events, link(), comments_enabled=True)
    assert plan.state is None
    assert [c.id for c in plan.comments] == [4, 5]
    assert [(e.id, s) for e, s, _ in plan.finish_now] == [(6, SKIPPED)]
    off = plan_batch(events, link(), comments_enabled=False)
    assert off.comments == [] and {(e.id, s) for e, s, _ in off.finish_now} >= {(4, DONE), (5, DONE)}


POLICY = retry.RetryPolicy(max_attempts=3, base_seconds=2.0, max_seconds=60.0, max_age_seconds=3600.0)


@pytest.mark.parametrize(("failures", "low", "high"), [(1, 1.0, 2.0), (2, 2.0, 4.0), (3, 4.0, 8.0), (9, 30.0, 60.0)])
def test_backoff_grows_per_item_failure_and_is_capped(failures, low, high):
    assert low <= retry.backoff(POLICY, failures, retry_after=None, jitter=0.0) <= high
    assert low <= retry.backoff(POLICY, failures, retry_after=None, jitter=0.999) <= high


def test_a_servers_retry_after_is_respected():
    assert retry.backoff(POLICY, 1, retry_after=30.0, jitter=0.5) == 30.0


def test_attempts_and_age_end_an_event_and_a_wait_is_not_an_attempt():
    assert not retry.after_attempt(POLICY, attempts=2, received_at=0.0, now=10.0, reason="x").give_up
    verdict = retry.after_attempt(POLICY, attempts=3, received_at=0.0, now=10.0, reason="500")
    assert verdict.give_up and "gave up after 3 attempts: 500" in verdict.reason
    assert not retry.after_wait(POLICY, received_at=0.0, now=3000.0, reason="budget").give_up
    assert retry.after_wait(POLICY, received_at=0.0, now=3601.0, reason="budget").give_up
    assert retry.after_attempt(POLICY, attempts=1, received_at=0.0, now=3601.0, reason="x").give_up
