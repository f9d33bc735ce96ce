"""What `bridge/outbound/budget.py` gained for the sources, on SQLite and PostgreSQL: one `Budgets` per process
and database, and a block that doubles while a throttle that names no time keeps refusing."""

from __future__ import annotations

import pytest

from bridge.outbound.budget import Budgets, blocked_until, shared_budgets
from bridge.outbound.errors import LimitWait
from testkit.dbs import engine  # noqa: F401  - the fixture: a fresh database of each kind


def test_one_budgets_per_process_and_database(engine):  # noqa: F811
    assert shared_budgets(engine) is shared_budgets(engine)


def test_a_throttle_without_a_time_doubles_while_refused_across_processes(engine):  # noqa: F811
    first, second = Budgets(engine, max_block=300.0), Budgets(engine, max_block=300.0)
    assert first.escalate("github", 60.0, "secondary rate limit") == 60.0
    assert second.escalate("github", 60.0, "secondary rate limit") == 120.0  # counted in the database
    assert first.escalate("github", 60.0, "secondary rate limit") == 240.0
    assert first.escalate("github", 60.0, "secondary rate limit") == 300.0  # capped at max_block
    left, _, reason = blocked_until(engine, "github")
    assert left == pytest.approx(300.0, abs=5) and "#4 in a row" in str(reason)
    with pytest.raises(LimitWait):
        Budgets(engine).take(["github"], hold=0)
    first.unblock("github")
    first.calm("github")  # a call went through: the next refusal starts at the base again
    assert second.escalate("github", 60.0, "secondary rate limit") == 60.0
