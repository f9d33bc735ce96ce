"""The shared Zoho budget and the shared OAuth token, within one process and across real processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from bridge.settings import load_settings
from bridge.store import schema as db
from bridge.store.clock import engine_now
from bridge.targets.zoho.auth import TokenProvider
from bridge.targets.zoho.ratelimit import RateLimiter, RateLimitTimeout, block_status
from testkit.fakes.zoho import FakeZoho

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/b.db"
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str):
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


# -- one process ------------------------------------------------------------------------------------------


def test_budget_then_wait_for_the_window(engine):
    limiter = RateLimiter(engine, 5, window=2.0, margin=0.1)
    waits = [limiter.acquire(timeout=5) for _ in range(5)]
    assert waits == [0.0] * 5  # within the budget: no call slept (however long the database took)
    waited = limiter.acquire(timeout=5)
    assert 1.7 <= waited <= 2.8  # the oldest slot frees one window (+ margin) after it was taken
    assert limiter.waited_seconds == pytest.approx(sum(waits) + waited, abs=0.01)


def test_acquire_gives_up_when_the_wait_exceeds_the_timeout(engine):
    limiter = RateLimiter(engine, 5, window=60.0, margin=0.1)
    for _ in range(5):
        limiter.acquire(timeout=1)
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout) as err:
        limiter.acquire(timeout=10)
    # fails at once: no point sleeping toward a certain timeout (10 s; the window frees a slot in 60 s)
    assert time.monotonic() - started < 5
    assert 50 <= err.value.wait <= 60.2


def test_a_block_makes_every_acquire_wait(engine):
    limiter = RateLimiter(engine, 5, window=2.0, margin=0.1)
    other = RateLimiter(engine, 5, window=2.0, margin=0.1)  # another worker on the same database
    until = limiter.block(0.4, "test")
    assert block_status(engine)[1] == pytest.approx(until)
    assert until == pytest.approx(engine_now(engine) + 0.4, abs=1.0)  # timed by the database clock
    limiter.block(0.01, "shorter")  # a shorter block never shortens the one in force
    assert block_status(engine)[1] == pytest.approx(until)
    with pytest.raises(RateLimitTimeout):
        other.acquire(timeout=0.1)
    waited = other.acquire(timeout=5)
    assert waited >= 0.2  # it waited out the block (the upper end is the machine's load, not the limiter's)
    assert engine_now(engine) >= until


def test_zero_budget_means_no_limiter(engine):
    limiter = RateLimiter(engine, 0)
    assert [limiter.acquire(timeout=0) for _ in range(50)] == [0.0] * 50


def test_lowering_the_budget_deletes_extra_slots(engine):
    RateLimiter(engine, 5, window=2.0, margin=0.1).acquire()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.budget_slots)).scalar() == 5
    lower = RateLimiter(engine, 3, window=2.0, margin=0.1)
    for _ in range(2):  # slot 0 is still busy from the first limiter; slots 1 and 2 are free
        assert lower.acquire(timeout=1) < 0.2
    with engine.connect() as conn:
        slots = conn.execute(select(db.budget_slots.c.slot)).scalars().all()
    assert sorted(slots) == [0, 1, 2]
    with pytest.raises(RateLimitTimeout):
        lower.acquire(timeout=0.5)  # only 3 slots now, all used within the window


def test_raising_the_budget_adds_slots(engine):
    RateLimiter(engine, 2, window=2.0, margin=0.1).acquire()
    higher = RateLimiter(engine, 4, window=2.0, margin=0.1)
    assert [higher.acquire(timeout=1) < 0.2 for _ in range(3)] == [True] * 3


# -- across processes --------------------------------------------------------------------------------------


def _take_slots(url: str, n: int, barrier, out) -> None:  # runs in a spawned process
    engine = db.make_engine(url)
    limiter = RateLimiter(engine, 6, window=1.5, margin=0.25)  # margin: slack between slot and clock read
    limiter.prepare()
    barrier.wait()
    grants = []
    for _ in range(n):
        limiter.acquire(timeout=30)
        grants.append(time.time())
    out.put(grants)
    engine.dispose()


def test_processes_share_one_budget(db_url):
    barrier = SPAWN.Barrier(2)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=_take_slots, args=(db_url, 6, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    grants = sorted(t for _ in procs for t in out.get(timeout=60))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert len(grants) == 12
    for i, t in enumerate(grants):
        in_window = [g for g in grants[i:] if g - t < 1.5]
        assert len(in_window) <= 6, f"{len(in_window)} grants within 1.5 s from {t}"
    assert grants[-1] - grants[0] >= 1.5  # 12 grants at 6 per window need two windows


def _get_token(env: dict[str, str], barrier, out) -> None:  # runs in a spawned process
    settings = load_settings(env)
    engine = db.make_engine(settings.database_url)
    provider = TokenProvider(settings, engine, requests.Session())
    barrier.wait()
    out.put((provider.get(), provider.refreshes))
    engine.dispose()


def test_processes_share_one_token_refresh(tmp_path, db_url):
    with FakeZoho() as fake:
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path / "var"),
            "DATABASE_URL": db_url,
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
        }
        barrier = SPAWN.Barrier(4)
        out = SPAWN.Queue()
        procs = [SPAWN.Process(target=_get_token, args=(env, barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        assert fake.token_refreshes == 1
        tokens = {token for token, _ in results}
        assert len(tokens) == 1
        assert sorted(refreshes for _, refreshes in results) == [0, 0, 0, 1]
        # ... and the token is one Zoho accepts.
        token = tokens.pop()
        r = requests.get(
            f"{fake.base_url}/api/v3/portal/{fake.portal_id}/projects",
            headers={"Authorization": f"Zoho-oauthtoken {token}"},
            timeout=5,
        )
        assert r.status_code == 200
