"""Login limiting and session revocation for the admin pages, shared across processes through the database.

Login limiting: failures are counted per client address and globally (in the `kv` table, timed by the
database's clock). Past a few free failures every further one doubles the wait before the next attempt is
even looked at (the right token included, or guessing would just continue): per client up to
CLIENT_MAX_DELAY, globally (many addresses guessing at once) up to GLOBAL_MAX_DELAY. A success clears
the client's count; counts fade after FORGET_AFTER seconds without a failure.

Sessions: each login cookie carries the session epoch and a fingerprint of ADMIN_TOKEN. Logging out
bumps the epoch, which ends every session (there is one operator identity: one token); changing the
token changes the fingerprint (and the cookie's signing key), which ends them too. A cookie captured
before either no longer opens anything.

The cookie: `Secure` whenever the request came over HTTPS, directly or through a trusted proxy's
X-Forwarded-Proto (TRUSTED_PROXIES, bridge/web/proxy.py), so a browser never sends it over plain HTTP.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bridge.store import admin_logins
from bridge.store.clock import db_now

CLIENT_FREE_FAILURES = 5
CLIENT_MAX_DELAY = 900.0
GLOBAL_FREE_FAILURES = 50
GLOBAL_MAX_DELAY = 120.0
FORGET_AFTER = 3600.0
EPOCH_KEY = "admin:session-epoch"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0


def _key(client: str) -> str:
    return "admin:login:client:" + hashlib.sha256(client.encode()).hexdigest()[:32]


GLOBAL_KEY = "admin:login:global"


def _read(conn: Connection, key: str, *, lock: bool = False) -> dict[str, float] | None:
    raw = admin_logins.read(conn, key, lock=lock)
    return json.loads(raw) if raw else None


def _write(conn: Connection, key: str, state: dict[str, float], existed: bool) -> None:
    admin_logins.write(conn, key, json.dumps(state), existed=existed)


def check(engine: Engine, client: str) -> Verdict:
    """May `client` try a token now? (Read only: the attempt itself is recorded by `failed`/`succeeded`.)"""
    with engine.connect() as conn:
        now = db_now(conn)
        waits = [
            state["blocked_until"] - now
            for state in (_read(conn, _key(client)), _read(conn, GLOBAL_KEY))
            if state and state.get("blocked_until", 0) > now
        ]
    return Verdict(False, max(waits)) if waits else Verdict(True)


def _bump(conn: Connection, key: str, now: float, free: int, cap: float) -> float:
    state = _read(conn, key, lock=True)
    existed = state is not None
    if not state or now - state.get("last", 0) > FORGET_AFTER:
        state = {"failures": 0, "blocked_until": 0}
    failures = int(state["failures"]) + 1
    delay = 0.0 if failures <= free else min(cap, 2.0 ** (failures - free - 1))
    _write(conn, key, {"failures": failures, "last": now, "blocked_until": now + delay}, existed)
    return delay


def failed(engine: Engine, client: str) -> float:
    """Record a wrong token; returns the wait before this client may try again."""
    for _ in range(3):  # two processes inserting the first row at once: the loser retries as an update
        try:
            with engine.begin() as conn:
                now = db_now(conn)
                own = _bump(conn, _key(client), now, CLIENT_FREE_FAILURES, CLIENT_MAX_DELAY)
                shared = _bump(conn, GLOBAL_KEY, now, GLOBAL_FREE_FAILURES, GLOBAL_MAX_DELAY)
                return max(own, shared)
        except IntegrityError:
            continue
    return 0.0


def succeeded(engine: Engine, client: str) -> None:
    with engine.begin() as conn:
        admin_logins.forget(conn, _key(client))


# -- sessions -----------------------------------------------------------------------------------------------


def token_fingerprint(admin_token: str) -> str:
    return hashlib.sha256(b"issue-bridge admin token\n" + admin_token.encode()).hexdigest()[:32]


def current_epoch(engine: Engine) -> int:
    with engine.connect() as conn:
        raw = admin_logins.read(conn, EPOCH_KEY)
    return int(raw) if raw else 0


def end_every_session(engine: Engine) -> int:
    """Bump the epoch: every cookie issued before is dead. Returns the new epoch."""
    for _ in range(3):
        try:
            with engine.begin() as conn:
                raw = admin_logins.read(conn, EPOCH_KEY, lock=True)
                epoch = (int(raw) if raw else 0) + 1
                admin_logins.write(conn, EPOCH_KEY, str(epoch), existed=raw is not None)
                return epoch
        except IntegrityError:
            continue
    return current_epoch(engine)


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, marked `Secure` when this request came over HTTPS.

    `request.is_secure` reads the scheme the trusted-proxy middleware settled: the connection's own, or a
    trusted proxy's X-Forwarded-Proto; an untrusted peer's header changes nothing.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)
