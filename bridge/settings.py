"""One settings object, read from the environment once and validated at start-up.

Every variable is documented in `.env.example`. A missing or invalid value fails with one line
naming the variable (`SettingsError`), not at the first webhook.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlparse

DIALECTS = ("projects", "bugtracker")
# Each dialect's documented API root (seed 001:10, seed 000:7-8); ZOHO_API_BASE overrides.
DEFAULT_API_BASE = {"projects": "https://projectsapi.zoho.com", "bugtracker": "https://bugtracker.zoho.com"}
# Projects v3: "up to 100 times within 2 minutes", then 30 minutes blocked (seed 001:737-739).
PROJECTS_LIMIT, PROJECTS_WINDOW, PROJECTS_BLOCK = 100, 120.0, 1800.0
# BugTracker plans: (calls per minute, calls per day), by the names the document gives them (seed 000:761-765).
PLANS = {"free": (100, 5000), "premium": (200, 25000), "enterprise": (500, 100000)}
# The longest a provider's block is honoured before a call is tried again: twice the longest lockout the
# documents (001:737-739: 30 minutes) and live portals (15-30 minutes, zoho-facts.md) name, so a mistaken
# `Retry-After: 31536000` costs an hour, not a year (`issue-bridge zoho unblock` lifts a block sooner).
RATE_BLOCK_MAX = 3600.0
# BugTracker documents no sorted or filtered bug list, so its reverse poll reads every bug of a linked project:
# the poll is paced to spend at most this share of the plan's daily quota (the rest is forward sync's).
ZOHO_POLL_SHARE = 0.2


class SettingsError(Exception):
    """An invalid setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str  # "" means: the private Redis the bridge starts itself
    mappings_dir: Path
    zoho_api_base: str = "https://projectsapi.zoho.com"
    zoho_accounts_url: str = "https://accounts.zoho.com"
    zoho_client_id: str = ""
    zoho_client_secret: str = ""
    zoho_refresh_token: str = ""
    zoho_portal_id: str = ""
    zoho_dialect: str = "projects"
    zoho_rate_limit_per_minute: int = 100
    zoho_timeout_seconds: float = 20.0
    zoho_rate_window_seconds: float = 60.0  # Zoho's window; shorter only in tests and benchmarks
    github_webhook_secret: str = ""
    bugzilla_webhook_secret: str = ""
    bugzilla_webhook_header: str = "Authorization"
    bugherd_webhook_token: str = ""
    bugzilla_url: str = ""
    bugzilla_api_key: str = ""
    bugherd_api_key: str = ""
    bugherd_bridge_email: str = ""  # the BugHerd member the bridge comments as (back-links, Zoho comments)
    github_token: str = ""
    max_webhook_bytes: int = 5 * 1024 * 1024
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    coalesce_ms: int = 300
    stale_after_seconds: float = 60.0
    item_lease_seconds: float = 60.0
    log_level: str = "INFO"
    metrics_token: str = ""
    bugzilla_poll_products: tuple[str, ...] = ()  # products to poll on a Bugzilla without webhooks
    bugzilla_poll_seconds: float = 60.0
    admin_token: str = ""  # the admin pages (/admin) are disabled (404) unless it is set
    extra: Mapping[str, str] = field(default_factory=dict)
    home: Path = field(default_factory=Path.cwd)  # where .env is read and relative paths resolve (find_home)
    home_reason: str = "the working directory"  # how `home` was found, for "where I looked" messages
    zoho_plan: str = "free"  # BugTracker plan: its per-minute and per-day budget
    zoho_rate_block_seconds: float = PROJECTS_BLOCK  # the wait after a 429 that names no reset time
    zoho_daily_limit: int = 0  # calls per UTC day (BugTracker plans); 0 = no daily quota
    rate_block_max_seconds: float = RATE_BLOCK_MAX  # a block a provider names (minutes, Retry-After) is capped here
    zoho_poll_share: float = ZOHO_POLL_SHARE  # BugTracker: the most of the daily quota the reverse poll may spend
    event_max_age_seconds: float = 7 * 86400.0  # an event still pending this long after intake ends `failed`
    duplicate_recheck_seconds: float = 120.0  # after a create in doubt, look again this much later for a late copy
    retention_days: float = 30.0  # finished events, their attempts and Zoho calls are pruned after this (0: never)
    retention_payload_days: float = 7.0  # raw bodies of finished events are dropped after this (0: never)
    github_api_url: str = "https://api.github.com"  # GitHub Enterprise: https://<host>/api/v3
    bugherd_api_url: str = "https://www.bugherd.com"
    backfill_budget_share: float = 0.5  # the most of the Zoho budget a backfill may use (live gets the rest)
    adopt_existing: bool = False  # before a create: adopt an existing issue naming the item (bridge/core/adopt.py)
    zoho_poll_seconds: float = 60.0  # how often linked Zoho projects are polled for changes made in Zoho
    zoho_webhook_token: str = ""  # the URL token of POST /webhooks/zoho/<token>; "" disables the endpoint
    attachment_max_bytes: int = 10 * 1024 * 1024  # larger attachments are skipped with a note
    attachment_hosts: tuple[str, ...] = ()  # extra hosts attachments may be fetched from (trusted, may be private)
    # Reverse proxies whose X-Forwarded-For / -Proto / -Host are believed (bridge/web/proxy.py); none by default.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    port: int = 8000  # `issue-bridge run`'s web port (the Procfile's gunicorn takes $PORT itself)
    web_concurrency: int = 2  # gunicorn worker processes
    web_threads: int = 64  # threads per gunicorn worker
    from_environment: bool = False  # read from the process environment and .env: a SettingsWatcher may reload it
    env_stamp: tuple[int, int] | None = None  # the .env read then (mtime_ns, size): later edits are the watcher's

    @property
    def dry_run(self) -> bool:
        """Without Zoho credentials the bridge runs end to end and records the calls it would make."""
        return not (self.zoho_client_id and self.zoho_client_secret and self.zoho_refresh_token)

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"redis+socket://{self.redis_socket}"

    def enabled_sources(self) -> dict[str, bool]:
        """A source whose secret or token is unset is disabled, not open."""
        return {
            "github": bool(self.github_webhook_secret),
            "bugzilla": bool(self.bugzilla_webhook_secret),
            "bugherd": bool(self.bugherd_webhook_token),
        }

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [
            self.zoho_client_secret,
            self.zoho_refresh_token,
            self.github_webhook_secret,
            self.bugzilla_webhook_secret,
            self.bugherd_webhook_token,
            self.bugzilla_api_key,
            self.bugherd_api_key,
            self.github_token,
            self.metrics_token,
            self.admin_token,
        ]
        return [v for v in values if v and len(v) >= 4]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf": no use as a timeout or delay
        raise SettingsError(f"{name}: expected a finite number, got {raw!r}")
    if value < 0:
        raise SettingsError(f"{name}: must not be negative, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        raise SettingsError(f"{name}: expected a URL starting with {' or '.join(schemes)}, got {raw!r}")
    return raw.rstrip("/")


def _is_bridge_home(folder: Path) -> bool:
    """A checkout of this project, or a folder set up to run it (a `.env` beside a `mappings/` folder)."""
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            if 'name = "issue-bridge"' in pyproject.read_text(errors="replace"):
                return True
        except OSError:
            pass
    return (folder / ".env").is_file() and (folder / "mappings").is_dir()


def find_home(env: Mapping[str, str], cwd: Path | None = None) -> tuple[Path, str]:
    """The bridge's home folder, the same from any working directory (README, "Where the bridge keeps its data").

    1. `BRIDGE_HOME` (the CLI's `--home` sets it); 2. the nearest folder at or above the working directory
    that is a bridge home; 3. the checkout this code was installed from (`pip install -e`); 4. the working
    directory.
    """
    cwd = (cwd or Path.cwd()).resolve()
    explicit = env.get("BRIDGE_HOME", "").strip()
    if explicit:
        home = Path(explicit).expanduser()
        if not home.is_dir():
            raise SettingsError(f"BRIDGE_HOME: no such folder: {explicit!r}")
        return home.resolve(), "BRIDGE_HOME"
    for folder in (cwd, *cwd.parents):
        if _is_bridge_home(folder):
            return folder, f"found above the working directory {cwd}" if folder != cwd else "the working directory"
    installed = Path(__file__).resolve().parent.parent
    if _is_bridge_home(installed):
        return installed, "the checkout issue-bridge is installed from"
    return cwd, "the working directory (no bridge home found above it)"


def load_settings(env: Mapping[str, str] | None = None, *, read_dotenv: bool = True) -> Settings:
    """Read and validate every setting. `env` defaults to the process environment (plus the home's `.env`)."""
    home, home_reason = find_home(os.environ if env is None else env)
    from_environment = env is None
    env_stamp = _stamp(home / ".env") if from_environment else None
    if env is None:
        if read_dotenv:
            from dotenv import load_dotenv

            before = set(os.environ)
            load_dotenv(home / ".env", override=False)
            _DOTENV_APPLIED.update({k: os.environ[k] for k in set(os.environ) - before})
        env = os.environ
    data_dir = (home / (env.get("BRIDGE_DATA_DIR", "").strip() or "var")).resolve()
    database_url = env.get("DATABASE_URL", "").strip() or f"sqlite:///{data_dir / 'bridge.db'}"
    if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise SettingsError(f"DATABASE_URL: expected sqlite:/// or postgresql://, got {database_url!r}")
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://") :]
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    broker_url = env.get("BROKER_URL", "").strip()
    if broker_url and not broker_url.startswith(("redis://", "rediss://", "redis+socket://", "amqp://")):
        raise SettingsError(f"BROKER_URL: expected redis://… or amqp://…, got {broker_url!r}")
    _check_driver("DATABASE_URL", database_url)
    _check_driver("BROKER_URL", broker_url)
    dialect = env.get("ZOHO_DIALECT", "").strip() or "projects"
    if dialect not in DIALECTS:
        raise SettingsError(f"ZOHO_DIALECT: expected one of {', '.join(DIALECTS)}, got {dialect!r}")
    plan = (env.get("ZOHO_PLAN", "").strip() or "free").lower()
    if plan not in PLANS:
        hint = " (the plan with 200 calls a minute is premium)" if plan == "standard" else ""
        raise SettingsError(f"ZOHO_PLAN: expected one of {', '.join(PLANS)} (seed 000:761-765), got {plan!r}{hint}")
    block_max = _float(env, "RATE_BLOCK_MAX_SECONDS", RATE_BLOCK_MAX)
    if block_max < 1:
        raise SettingsError(f"RATE_BLOCK_MAX_SECONDS: must be at least 1 second, got {block_max:g}")
    header = env.get("BUGZILLA_WEBHOOK_HEADER", "").strip() or "Authorization"
    if not header.replace("-", "").isalnum():
        raise SettingsError(f"BUGZILLA_WEBHOOK_HEADER: not a valid header name: {header!r}")
    log_level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    zoho_creds = [env.get(n, "").strip() for n in ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN")]
    if any(zoho_creds) and not all(zoho_creds):
        missing = [
            n
            for n, v in zip(("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"), zoho_creds, strict=True)
            if not v
        ]
        raise SettingsError(f"{missing[0]}: required when any Zoho credential is set (or unset all for dry-run)")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        mappings_dir=(home / (env.get("MAPPINGS_DIR", "").strip() or "mappings")).resolve(),
        zoho_api_base=_url(env, "ZOHO_API_BASE", DEFAULT_API_BASE[dialect], ("http", "https")),
        zoho_accounts_url=_url(env, "ZOHO_ACCOUNTS_URL", "https://accounts.zoho.com", ("http", "https")),
        zoho_client_id=zoho_creds[0],
        zoho_client_secret=zoho_creds[1],
        zoho_refresh_token=zoho_creds[2],
        zoho_portal_id=env.get("ZOHO_PORTAL_ID", "").strip(),
        zoho_dialect=dialect,
        zoho_rate_limit_per_minute=_int(
            env, "ZOHO_RATE_LIMIT_PER_MINUTE", PROJECTS_LIMIT if dialect == "projects" else PLANS[plan][0]
        ),
        zoho_timeout_seconds=_positive(env, "ZOHO_TIMEOUT_SECONDS", 20.0),
        zoho_rate_window_seconds=_positive(
            env, "ZOHO_RATE_WINDOW_SECONDS", PROJECTS_WINDOW if dialect == "projects" else 60.0
        ),
        github_webhook_secret=env.get("GITHUB_WEBHOOK_SECRET", ""),
        bugzilla_webhook_secret=env.get("BUGZILLA_WEBHOOK_SECRET", ""),
        bugzilla_webhook_header=header,
        bugherd_webhook_token=env.get("BUGHERD_WEBHOOK_TOKEN", ""),
        bugzilla_url=_url(env, "BUGZILLA_URL", "", ("http", "https")),
        bugzilla_api_key=env.get("BUGZILLA_API_KEY", ""),
        bugherd_api_key=env.get("BUGHERD_API_KEY", ""),
        bugherd_bridge_email=env.get("BUGHERD_BRIDGE_EMAIL", "").strip(),
        github_token=env.get("GITHUB_TOKEN", ""),
        max_webhook_bytes=_int(env, "MAX_WEBHOOK_BYTES", 5 * 1024 * 1024, minimum=1024),
        max_attempts=_int(env, "MAX_ATTEMPTS", 8, minimum=1),
        retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 2.0),
        retry_max_seconds=_float(env, "RETRY_MAX_SECONDS", 300.0),
        coalesce_ms=_int(env, "COALESCE_MS", 300),
        stale_after_seconds=_float(env, "STALE_AFTER_SECONDS", 60.0),
        item_lease_seconds=max(2.0, _float(env, "ITEM_LEASE_SECONDS", 60.0)),
        log_level=log_level,
        metrics_token=env.get("METRICS_TOKEN", "").strip(),
        bugzilla_poll_products=tuple(p.strip() for p in env.get("BUGZILLA_POLL_PRODUCTS", "").split(",") if p.strip()),
        bugzilla_poll_seconds=max(10.0, _float(env, "BUGZILLA_POLL_SECONDS", 60.0)),
        admin_token=env.get("ADMIN_TOKEN", "").strip(),
        home=home,
        home_reason=home_reason,
        zoho_plan=plan,
        zoho_rate_block_seconds=_float(env, "ZOHO_RATE_BLOCK_SECONDS", PROJECTS_BLOCK),
        zoho_daily_limit=PLANS[plan][1] if dialect == "bugtracker" else 0,
        rate_block_max_seconds=block_max,
        zoho_poll_share=_share(env, "ZOHO_POLL_SHARE", ZOHO_POLL_SHARE),
        event_max_age_seconds=max(60.0, _float(env, "EVENT_MAX_AGE_SECONDS", 7 * 86400.0)),
        duplicate_recheck_seconds=max(0.0, _float(env, "DUPLICATE_RECHECK_SECONDS", 120.0)),
        github_api_url=_url(env, "GITHUB_API_URL", "https://api.github.com", ("http", "https")),
        bugherd_api_url=_url(env, "BUGHERD_API_URL", "https://www.bugherd.com", ("http", "https")),
        backfill_budget_share=_share(env, "BACKFILL_BUDGET_SHARE", 0.5),
        adopt_existing=_switch("ADOPT_EXISTING", env.get("ADOPT_EXISTING", "")),
        zoho_poll_seconds=max(2.0, _float(env, "ZOHO_POLL_SECONDS", 60.0)),
        zoho_webhook_token=env.get("ZOHO_WEBHOOK_TOKEN", "").strip(),
        retention_days=_float(env, "RETENTION_DAYS", 30.0),
        retention_payload_days=_float(env, "RETENTION_PAYLOAD_DAYS", 7.0),
        attachment_max_bytes=_int(env, "ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024, minimum=1024),
        attachment_hosts=tuple(h.strip().lower() for h in env.get("ATTACHMENT_HOSTS", "").split(",") if h.strip()),
        trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
        port=_port(env, "PORT", 8000),
        web_concurrency=_int(env, "WEB_CONCURRENCY", 2, minimum=1),
        web_threads=_int(env, "WEB_THREADS", 64, minimum=1),
        from_environment=from_environment,
        env_stamp=env_stamp,
    )


def _switch(name: str, raw: str) -> bool:
    value = raw.strip().lower() or "off"
    if value not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name}: expected on or off, got {value!r}")
    return value in ("on", "true", "1", "yes")


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma- or space-separated addresses or CIDRs (`10.0.0.0/8, 127.0.0.1`); a bare address is one host."""
    networks = []
    for part in env.get(name, "").replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(
                f"{name}: not an IP address or CIDR: {part!r} (expected e.g. 127.0.0.1 or 10.0.0.0/8, comma-separated)"
            ) from None
    return tuple(networks)


# What `load_dotenv` put into os.environ at start-up ({name: value}): the real environment is the rest, and it
# wins over .env (override=False), at start-up and at every reload alike.
_DOTENV_APPLIED: dict[str, str] = {}


def real_environment() -> dict[str, str]:
    """This process's environment without what it took from `.env`: what a process it starts must inherit, so that
    the child reads `.env` itself and follows its edits (given as environment, `.env`'s values would win over
    `.env` in the child: an edit of a key present at start-up would never reach it)."""
    return {k: v for k, v in os.environ.items() if _DOTENV_APPLIED.get(k) != v}


# URL scheme -> (module, what to install): the drivers the optional URLs need.
DRIVERS = {
    "postgresql+psycopg": ("psycopg", "pip install 'issue-bridge[postgres]'"),
    "amqp": ("amqp", "pip install 'issue-bridge[amqp]' (py-amqp)"),
    "redis": ("redis", "pip install redis"),
    "rediss": ("redis", "pip install redis"),
}


def _check_driver(name: str, url: str) -> None:
    """A URL whose driver is not installed fails here, in one line naming what to install, not as a traceback
    (`No module named 'psycopg'`) from the first connection."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in DRIVERS:
        return
    module, install = DRIVERS[scheme]
    try:
        importlib.import_module(module)
    except ImportError:
        raise SettingsError(f"{name}: the {module!r} driver is not installed: {install}") from None


def _data_centre(url: str) -> str | None:
    """The Zoho data centre a URL points at ("com", "eu", "in", "com.au", "com.cn"),
    or None for a host that is not Zoho's (a fake, a proxy)."""
    host = (urlparse(url).hostname or "").lower()
    for suffix in ("zoho.com.au", "zoho.com.cn", "zoho.eu", "zoho.in", "zoho.com"):  # the documented ones
        if host == suffix or host.endswith("." + suffix):
            return suffix.split("zoho", 1)[1].lstrip(".") or "com"
    return None


def datacentre_mismatch(settings: Settings) -> str | None:
    """A warning when ZOHO_ACCOUNTS_URL and ZOHO_API_BASE are in different data centres (seed 001:344-349,
    423-428): tokens from one data centre are refused by the other, which looks like an expired token."""
    accounts, api = _data_centre(settings.zoho_accounts_url), _data_centre(settings.zoho_api_base)
    if accounts is None or api is None or accounts == api:
        return None
    return (
        f"ZOHO_ACCOUNTS_URL ({settings.zoho_accounts_url}) is in the .{accounts} data centre but ZOHO_API_BASE "
        f"({settings.zoho_api_base}) is in .{api}: Zoho will refuse every token; use one data centre for both"
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name}: must be above 0, got {value:g}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default, minimum=1)
    if value > 65535:
        raise SettingsError(f"{name}: expected a TCP port from 1 to 65535, got {value}")
    return value


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value <= 1:
        raise SettingsError(f"{name}: expected a share above 0 and at most 1 (e.g. 0.5), got {value}")
    return value


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._:/@+,=-]*$")


def env_file(settings: Settings) -> Path:
    """The `.env` the settings are read from: the home folder's."""
    return settings.home / ".env"


def write_env_values(path: Path, values: Mapping[str, str]) -> None:
    """Set `values` in a `.env` file (created if missing): each key's first assignment is replaced in place, later
    ones dropped, new keys appended; everything else (comments, other keys) is kept. The file is written whole
    (a temporary file renamed over it) with mode 600: it holds secrets."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(values)
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        match = _ENV_LINE.match(line)
        key = match.group(1) if match else None
        if key is None or key not in values:
            out.append(line)
            continue
        if key not in seen:
            out.append(f"{key}={_env_quote(values[key])}")
            seen.add(key)
            pending.pop(key, None)
    if pending and out and out[-1].strip():
        out.append("")
    out += [f"{key}={_env_quote(value)}" for key, value in pending.items()]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(out) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _env_quote(value: str) -> str:
    if _PLAIN_VALUE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Settings a running process cannot take over: the connections, folders and schedules it set up at start-up.
# An edit to one of them is announced ("restart needed") and the process keeps the value it started with.
RESTART_NEEDED = {
    "database_url": "DATABASE_URL",
    "broker_url": "BROKER_URL",
    "data_dir": "BRIDGE_DATA_DIR",
    "mappings_dir": "MAPPINGS_DIR",
    "home": "BRIDGE_HOME",
    "log_level": "LOG_LEVEL",
    "bugzilla_poll_seconds": "BUGZILLA_POLL_SECONDS",
    "zoho_poll_seconds": "ZOHO_POLL_SECONDS",
    "port": "PORT",
    "web_concurrency": "WEB_CONCURRENCY",
    "web_threads": "WEB_THREADS",
}
log = logging.getLogger("bridge.settings")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class SettingsWatcher:
    """Re-reads the home's `.env` when it changes (one stat per look: every task, every request) or when asked
    (`request`, e.g. on SIGHUP), with the rule the mapping files have: an edit that does not validate is refused
    with one line naming the setting and the last good settings stay in force. The real environment still wins
    over `.env`, as at start-up. Settings in RESTART_NEEDED keep their start-up value, announced once per edit."""

    def __init__(self, settings: Settings, *, min_interval: float = 0.0) -> None:
        self.settings = settings
        self.path = settings.home / ".env"
        self.min_interval = min_interval
        self.problem: str | None = None  # the refused edit, while it stands
        self.pending_restart: list[str] = []  # settings edited that only a restart applies
        self._stamp = settings.env_stamp
        self._checked = time.monotonic()
        self._requested = False
        self._lock = threading.Lock()

    def request(self) -> None:
        """Re-read at the next `check`, changed or not (SIGHUP)."""
        self._requested = True

    def check(self) -> Settings | None:
        """The new settings when `.env` changed and the edit was accepted; else None."""
        if not self.settings.from_environment:
            return None  # built from an explicit mapping (tests, tools): nothing to re-read
        now = time.monotonic()
        if not self._requested and now - self._checked < self.min_interval:
            return None
        # The look itself takes no lock: under load every request thread makes one, and queueing them behind one
        # another's stat cost more than the stat. Only a change (or a request) is taken over under the lock.
        if _stamp(self.path) == self._stamp and not self._requested:
            self._checked = now
            return None
        with self._lock:
            self._checked = now
            stamp = _stamp(self.path)
            if stamp == self._stamp and not self._requested:
                return None  # another thread took this edit over meanwhile
            self._stamp, self._requested = stamp, False
            return self._reload()

    def _reload(self) -> Settings | None:
        from dotenv import dotenv_values

        try:
            values = {k: v for k, v in dotenv_values(self.path).items() if v is not None} if self._stamp else {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._refuse(f"cannot read it: {exc}")
            return None
        real = {k: v for k, v in os.environ.items() if _DOTENV_APPLIED.get(k) != v}
        try:
            fresh = load_settings({**values, **real, "BRIDGE_HOME": str(self.settings.home)}, read_dotenv=False)
        except SettingsError as exc:
            self._refuse(str(exc))
            return None
        old = self.settings
        restart = [
            env for field_name, env in RESTART_NEEDED.items() if getattr(fresh, field_name) != getattr(old, field_name)
        ]
        kept = {field_name: getattr(old, field_name) for field_name in RESTART_NEEDED}
        fresh = replace(fresh, home_reason=old.home_reason, from_environment=True, env_stamp=self._stamp, **kept)
        # os.environ follows .env too (for code that reads it, and for child processes), the real environment
        # still winning; keys removed from .env leave it.
        for key, value in list(_DOTENV_APPLIED.items()):
            if os.environ.get(key) == value and key not in values:
                del os.environ[key]
                del _DOTENV_APPLIED[key]
        for key, value in values.items():
            if key not in real:
                os.environ[key] = value
                _DOTENV_APPLIED[key] = value
        self.problem = None
        if restart != self.pending_restart and restart:
            log.warning(
                "%s: %s changed: restart needed; this process keeps the value it started with",
                self.path,
                ", ".join(restart),
            )
        self.pending_restart = restart
        changed = sorted(
            f.name for f in fields(Settings) if f.name != "env_stamp" and getattr(fresh, f.name) != getattr(old, f.name)
        )
        if not changed:
            return None
        log.info("%s: settings reloaded (%s)", self.path, ", ".join(changed))
        self.settings = fresh
        return fresh

    def _refuse(self, reason: str) -> None:
        line = f"{self.path}: edit refused: {reason}; the last good settings stay in force"
        if line != self.problem:
            log.error("%s", line)
        self.problem = line
