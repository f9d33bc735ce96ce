"""The OAuth access token, shared by every process through the database.

Zoho allows 10 access tokens per 10 minutes per refresh token, and the 11th deletes the oldest (seed
001:484-491), so a token is refreshed only when it has expired (or Zoho rejected it), by one process at a
time under a lease; the others wait and read the new one. A token Zoho refuses right after it was issued is
not an expired token but a configuration error (scopes, data centre): it is reported once, and no process
refreshes again for a whole token window, so retries never spend the token budget.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid

import requests
from sqlalchemy.engine import Engine

from bridge import store
from bridge.process.logs import redactor
from bridge.settings import Settings
from bridge.store import tokens
from bridge.store.clock import db_now
from bridge.targets.zoho.errors import ZohoConfigError, ZohoTransientError

log = logging.getLogger("bridge.zoho.auth")
EXPIRY_MARGIN = 60.0  # refresh a minute early: a call must not start with a token about to die
LEASE = "zoho-token-refresh"
CONFIG_ERROR_KEY = "zoho.config_error"  # "<until> <fp:credentials> <message>": no refresh before `until` (DB clock)
TOKEN_WINDOW = 600.0
CONFIG_CHECK_SECONDS = 2.0  # seed 001:487-491: 10 access tokens per 10 minutes
CONFIG_HINT = (
    "check that the refresh token was granted the OAuth scopes this dialect needs (README, 'Configure Zoho') "
    "and that ZOHO_ACCOUNTS_URL and ZOHO_API_BASE are in the same Zoho data centre"
)


# The token endpoint's refusals only a changed setting fixes (seed 001:367-389). Any other refusal it answers
# (unsupported_grant_type, invalid_redirect_uri, a proxy's JSON) is a configuration error too, except its
# "too many requests" (a wait).
_TOKEN_HINTS = {
    "invalid_client": "the client id or secret is wrong, or the client was registered in another data centre; ",
    "invalid_code": "the refresh token is wrong or was revoked; ",
    "invalid_grant": "the refresh token is wrong, revoked or from another data centre; ",
}


class TokenProvider:
    def __init__(self, settings: Settings, engine: Engine, session: requests.Session) -> None:
        self._settings = settings
        self._engine = engine
        self._session = session
        self._key = hashlib.sha256(f"{settings.zoho_client_id}:{settings.zoho_refresh_token}".encode()).hexdigest()[:32]
        creds = f"{settings.zoho_client_id}:{settings.zoho_client_secret}:{settings.zoho_refresh_token}"
        creds += f":{settings.zoho_accounts_url}:{settings.zoho_api_base}"
        self._fingerprint = "fp:" + hashlib.sha256(creds.encode()).hexdigest()[:16]
        self._cached: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self.refreshes = 0  # refreshes this process made (tests and metrics)
        self._reported = False
        self._clean_until = 0.0  # monotonic time until which "no configuration error" is trusted
        self._local = threading.local()

    def get(self) -> str:
        self._local.refreshed = False
        cached = self._cached
        if cached and cached[1] - EXPIRY_MARGIN > time.monotonic():
            return cached[0]
        with self._lock:
            stored = self._read()
            if stored and stored[1] > EXPIRY_MARGIN:
                return self._cache(*stored)
            token = self._refresh(stale=stored[0] if stored else None)
            return token

    def just_refreshed(self) -> bool:
        """True when the last `get()` in this thread refreshed the token itself: a refusal of that token is
        a configuration error, not an expiry (a second refresh would only burn the token budget)."""
        return bool(getattr(self._local, "refreshed", False))

    def refused_fresh(self, detail: str) -> ZohoConfigError:
        """Zoho refused a token it had just issued: record it (every process stops refreshing for a token
        window), log it once, and return the error to raise."""
        return self._record_config_error(f"Zoho refused a freshly issued access token ({detail}): {CONFIG_HINT}")

    def _record_config_error(self, message: str, status: int = 401) -> ZohoConfigError:
        """Every process stops asking (the API and the accounts server) for a token window; logged once here."""
        with self._engine.connect() as conn:
            until = db_now(conn) + TOKEN_WINDOW
        current = store.kv_get(self._engine, CONFIG_ERROR_KEY)
        store.kv_set(self._engine, CONFIG_ERROR_KEY, f"{until!r} {self._fingerprint} {message}")
        self._clean_until = 0.0
        if current is None or not self._reported:
            log.error("%s", message)
            self._reported = True
        return ZohoConfigError(message, status=status)

    def config_error(self) -> str | None:
        """The recorded configuration error while it still stands, else None. Asked before every call, so
        a clean answer is trusted for CONFIG_CHECK_SECONDS (a refresh asks the database every time)."""
        if time.monotonic() < self._clean_until:
            return None
        found = self._config_error()
        if found is None:
            self._clean_until = time.monotonic() + CONFIG_CHECK_SECONDS
        return found

    def _config_error(self) -> str | None:
        raw = store.kv_get(self._engine, CONFIG_ERROR_KEY)
        if not raw:
            return None
        until, _, message = raw.partition(" ")
        if message.startswith("fp:"):
            fingerprint, _, message = message.partition(" ")
            if fingerprint != self._fingerprint:  # met with other credentials: these are tried afresh
                return None
        with self._engine.connect() as conn:
            return message if float(until) > db_now(conn) else None

    def clear_config_error(self) -> None:
        """An admin fixed the configuration (`zoho verify` succeeded): refresh again."""
        store.kv_set(self._engine, CONFIG_ERROR_KEY, "")
        self._clean_until = 0.0

    def invalidate(self, token: str) -> None:
        """Zoho rejected `token`: expire it for everyone, unless another process already replaced it."""
        self._cached = None
        with self._engine.begin() as conn:
            tokens.expire(conn, self._key, token)

    def _read(self) -> tuple[str, float] | None:
        """The shared token and its seconds left, by the database's clock (the one every host shares)."""
        with self._engine.connect() as conn:
            row = tokens.read(conn, self._key)
            return None if row is None else (row[0], row[1] - db_now(conn))

    def _cache(self, token: str, seconds_left: float) -> str:
        """This process keeps the token until its own monotonic clock says it is due: no host clock involved."""
        self._cached = (token, time.monotonic() + seconds_left)
        return token

    def _refresh(self, stale: str | None) -> str:
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + 30.0
        while True:
            if store.acquire_lease(self._engine, LEASE, holder, ttl=30.0):
                try:
                    stored = self._read()
                    if stored and stored[0] != stale and stored[1] > EXPIRY_MARGIN:
                        return self._cache(*stored)
                    refused = self._config_error()
                    if refused:  # a fresh token was refused: another refresh would only burn the budget
                        raise ZohoConfigError(refused, status=401)
                    token, expires_in = self._grant()
                    self._local.refreshed = True
                    self._write(token, expires_in)
                    return self._cache(token, expires_in)
                finally:
                    store.release_lease(self._engine, LEASE, holder)
            # Someone else is refreshing: wait for their token rather than spending one of the 10.
            time.sleep(0.1)
            stored = self._read()
            if stored and stored[0] != stale and stored[1] > EXPIRY_MARGIN:
                return self._cache(*stored)
            if time.monotonic() > deadline:
                raise ZohoTransientError("timed out waiting for another process to refresh the Zoho token")

    def _grant(self) -> tuple[str, float]:
        s = self._settings
        url = f"{s.zoho_accounts_url}/oauth/v2/token"
        try:
            # Form body, not the query string: secrets in URLs end up in access logs.
            resp = self._session.post(
                url,
                data={
                    "refresh_token": s.zoho_refresh_token,
                    "client_id": s.zoho_client_id,
                    "client_secret": s.zoho_client_secret,
                    "grant_type": "refresh_token",
                },
                timeout=s.zoho_timeout_seconds,
            )
        except requests.RequestException as exc:
            raise ZohoTransientError(f"Zoho accounts unreachable: {type(exc).__name__}") from None
        if resp.status_code >= 500:
            raise ZohoTransientError(f"Zoho accounts answered {resp.status_code}", status=resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            raise ZohoTransientError(f"Zoho accounts answered {resp.status_code} without JSON") from None
        if not isinstance(data, dict):  # a proxy or a wrong ZOHO_ACCOUNTS_URL answering JSON of another shape
            raise ZohoTransientError(f"Zoho accounts answered {resp.status_code} with unexpected JSON")
        if "access_token" not in data:
            error = str(data.get("error") or f"HTTP {resp.status_code}")
            if "too many" in str(data.get("error_description", "")).lower() or error == "Access Denied":
                raise ZohoTransientError(f"Zoho token refresh refused: {error}", retry_after=60.0)
            raise self._record_config_error(
                f"Zoho token refresh refused: {error}: {_TOKEN_HINTS.get(error, '')}check ZOHO_CLIENT_ID, "
                "ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, and that ZOHO_ACCOUNTS_URL is the data centre the client "
                "and refresh token were made in (`issue-bridge zoho verify` tries again at once)",
                status=resp.status_code,
            )
        self.refreshes += 1
        redactor.add(str(data["access_token"]))
        expires_in = float(data.get("expires_in") or 3600)
        if expires_in > 100_000:  # some answers give milliseconds (expires_in: 3600000)
            expires_in /= 1000.0
        log.info("zoho token refreshed", extra={"expires_in": expires_in})
        return str(data["access_token"]), expires_in

    def _write(self, token: str, expires_in: float) -> None:
        """Shared with every process as an expiry by the database's clock."""
        with self._engine.begin() as conn:
            now = db_now(conn)
            tokens.save(conn, self._key, token, now + expires_in, now)
