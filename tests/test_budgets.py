"""The budgets every outside system shares (bridge/outbound/budget.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from bridge.outbound.budget import Budgets, Limit, blocked_until
from bridge.outbound.errors import LimitWait
from bridge.store import schema as db
from bridge.store.clock import engine_now
from testkit.dbs import engine  # noqa: F401  - the fixture: a fresh database of each kind


def test_a_budget_of_sixty_thousand_a_minute_works(engine):  # noqa: F811
    """Today's limiter made every slot in one INSERT: past PostgreSQL's 65,535 parameters nothing synced."""
    budgets = Budgets(engine)
    budgets.register(Limit("big", count=60_000, window=60.0))
    started = time.monotonic()
    for _ in range(20):
        assert budgets.take(["big"], hold=0) == 0.0
    assert time.monotonic() - started < 30
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).where(db.budget_slots.c.budget == "big")).scalar() == 60_000


def test_a_rate_with_bursts_lets_ten_through_then_one_a_second(engine):  # noqa: F811
    """BugHerd: "an average of 60 requests per minute, with bursts of up to 10" (seed 002:29)."""
    budgets = Budgets(engine)
    budgets.register(Limit("bugherd", count=60, window=60.0, burst=10))
    for _ in range(10):
        budgets.take(["bugherd"], hold=0)
    with pytest.raises(LimitWait) as wait:
        budgets.take(["bugherd"], hold=0)
    assert 0.5 < (wait.value.retry_after or 0) <= 1.0
    other = Budgets(engine)  # another process: the same budget, not its own sixty
    other.register(Limit("bugherd", count=60, window=60.0, burst=10))
    waited = other.take(["bugherd"], hold=3)
    assert 0.5 < waited < 1.6


def test_a_call_spends_all_its_budgets_or_none(engine):  # noqa: F811
    budgets = Budgets(engine)
    budgets.register(Limit("a", count=2, window=30.0), Limit("b", count=1, window=30.0))
    budgets.take(["a", "b"], hold=0)
    with pytest.raises(LimitWait):
        budgets.take(["a", "b"], hold=0)  # b is spent: a must not be spent either
    budgets.take(["a"], hold=0)  # a still has its second call


def test_a_block_is_capped_and_lifted_by_hand(engine):  # noqa: F811
    budgets = Budgets(engine, max_block=120.0)
    until = budgets.block("zoho", 31_536_000, "Retry-After: one year")
    assert until == pytest.approx(engine_now(engine) + 120.0, abs=2)
    with pytest.raises(LimitWait):
        budgets.take(["zoho"], hold=0)
    assert budgets.unblock("zoho") is True
    assert blocked_until(engine, "zoho")[1] is None
    assert budgets.take(["zoho"], hold=0) == 0.0


def test_an_outage_opens_a_breaker_every_process_waits_on(engine):  # noqa: F811
    first, second = Budgets(engine, max_outage=8.0), Budgets(engine, max_outage=8.0)
    pauses = [first.outage("github", "GitHub unreachable") for _ in range(5)]
    assert pauses == [2.0, 4.0, 8.0, 8.0, 8.0]
    with pytest.raises(LimitWait) as wait:
        second.take(["github"], hold=0)
    assert "GitHub unreachable" in wait.value.reason
    Budgets(engine).recovered("github")  # a process that never saw the outage writes nothing
    assert blocked_until(engine, "github")[1] is not None
    first.recovered("github")  # one that did closes the breaker
    assert blocked_until(engine, "github")[1] is None
    assert second.take(["github"], hold=0) == 0.0
