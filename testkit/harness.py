"""Real processes for end-to-end tests: gunicorn (web), celery worker(s), celery beat, a broker.

Everything runs from the repository with the same commands as the Procfile, in a temporary data
folder, pointed at a FakeZoho (a real HTTP server) for both the accounts URL and the API base.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from bridge.process.broker import stop_embedded_redis
from bridge.settings import load_settings
from bridge.store import schema as db
from testkit.factories import github_request
from testkit.fakes.zoho import FakeZoho

REPO = Path(__file__).resolve().parent.parent
GITHUB_SECRET = "It's a Secret to Everybody"


def in_process_env(tmp: Path, fake: FakeZoho, *mappings: str, **extra: str) -> dict[str, str]:
    """Settings for running the sync service in the test process (no broker, no Celery) against `fake`."""
    folder = tmp / "mappings"
    folder.mkdir(exist_ok=True)
    for name in mappings or ("github",):
        shutil.copy(REPO / "mappings" / "examples" / f"{name}.yaml", folder / f"{name}.yaml")
    return {
        "BRIDGE_DATA_DIR": str(tmp / "var"),
        "MAPPINGS_DIR": str(folder),
        "BROKER_URL": "redis://127.0.0.1:1/0",  # never used in the test process
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "ZOHO_API_BASE": fake.base_url,
        "ZOHO_ACCOUNTS_URL": fake.base_url,
        "ZOHO_CLIENT_ID": fake.client_id,
        "ZOHO_CLIENT_SECRET": fake.client_secret,
        "ZOHO_REFRESH_TOKEN": fake.refresh_token,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        "COALESCE_MS": "0",
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_MAX_SECONDS": "0.2",
        **extra,
    }


_PORT_BLOCK = 800  # ports per test process
_next_port = itertools.count()


def free_port() -> int:
    """A port for a server a test starts, that no other test process picks meanwhile. A port the OS hands out for
    port 0 is free only until the server binds it, and with several xdist processes two stacks got the same one
    (a test then talked to another test's web server). So each test process takes ports from its own block below
    Linux's ephemeral range (32768+, which port-0 binds and outgoing connections use), checked free in turn: gw0
    20000-20799, gw1 20800-21599 ... gw13; a run without xdist (or beside one) the block after them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) % 14 if worker[2:].isdigit() else 14
    base = 20000 + index * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = base + next(_next_port) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still closing: the next one
        return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BLOCK - 1}")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})")


def _own_broker_db(url: str) -> str:
    """Under pytest-xdist each test process gets its own Redis database (the given one + its index), so one
    process's flush or workers never touch another's queue."""
    from urllib.parse import urlparse

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not url.startswith("redis://") or not worker.startswith("gw"):
        return url
    parsed = urlparse(url)
    db_number = int((parsed.path or "/0").lstrip("/") or "0") + int(worker[2:])
    return parsed._replace(path=f"/{db_number}").geturl()


def _flush_redis(url: str) -> None:
    """Start each stack on an empty broker database (messages of an earlier test must not leak in)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    db_number = (parsed.path or "/0").lstrip("/") or "0"
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=5) as s:
        s.sendall(f"SELECT {db_number}\r\nFLUSHDB\r\n".encode())
        s.recv(64)


class RedisServer:
    """A separately started redis-server on a TCP port (the `BROKER_URL=redis://…` path)."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install it (apt-get install -y redis-server)")
        self.binary = binary
        self.tmp = tmp
        self.port = free_port()
        self.start()

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self._answers, 10, what="redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class BridgeStack:
    def __init__(
        self,
        tmp: Path,
        fake: FakeZoho | None,
        *,
        broker_url: str = "",
        database_url: str = "",
        extra_env: dict[str, str] | None = None,
        mappings: list[Path] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.tmp = tmp
        self.fake = fake
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.mappings_dir = tmp / "mappings"
        self.mappings_dir.mkdir(parents=True, exist_ok=True)
        for path in mappings or [REPO / "mappings" / "examples" / "github.yaml"]:
            shutil.copy(path, self.mappings_dir / path.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "GITHUB_", "BUGZILLA_", "BUGHERD_"))}
        env.update(
            {
                "BRIDGE_DATA_DIR": str(tmp / "var"),
                "MAPPINGS_DIR": str(self.mappings_dir),
                "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
                "COALESCE_MS": "150",
                "STALE_AFTER_SECONDS": "3",
                "RETRY_BASE_SECONDS": "0.5",
                "RETRY_MAX_SECONDS": "5",
                "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("BROKER_URL", None)
        # The scale-out run of the suite: PostgreSQL + a real Redis + two worker processes.
        self._scratch_db: str | None = None
        if not database_url and os.environ.get("BRIDGE_TEST_DATABASE_URL"):
            database_url = self._create_database(os.environ["BRIDGE_TEST_DATABASE_URL"])
        if not broker_url and os.environ.get("BRIDGE_TEST_BROKER_URL"):
            broker_url = _own_broker_db(os.environ["BRIDGE_TEST_BROKER_URL"])
            if broker_url.startswith("redis://"):
                _flush_redis(broker_url)
        env.pop("DATABASE_URL", None)
        if broker_url:
            env["BROKER_URL"] = broker_url
        if database_url:
            env["DATABASE_URL"] = database_url
        if fake is not None and not dry_run:
            env.update(
                {
                    "ZOHO_API_BASE": fake.base_url,
                    "ZOHO_ACCOUNTS_URL": fake.base_url,
                    "ZOHO_CLIENT_ID": fake.client_id,
                    "ZOHO_CLIENT_SECRET": fake.client_secret,
                    "ZOHO_REFRESH_TOKEN": fake.refresh_token,
                    "ZOHO_PORTAL_ID": fake.portal_id,
                }
            )
        env.update(extra_env or {})
        self.env = env
        self.settings = load_settings(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self._engine = None

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        running = self.procs.get(name)
        if running is not None and running.poll() is None:
            # A second process under a live one's name would be orphaned by stop(): it would go on consuming
            # from the broker (a shared Redis database in the scale-out pass) and steal later tests' tasks.
            raise ValueError(f"{name} is still running: kill it first or give the new process another name")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_web(self) -> None:
        self._spawn(
            "web",
            [
                "gunicorn",
                "-c",
                "python:bridge.process.gunicorn_conf",
                "-b",
                f"127.0.0.1:{self.port}",
                "bridge.web.wsgi:app",
            ],
        )
        wait_for(self._web_up, 90, what=f"web on {self.base_url} (see {self.logs / 'web.log'})")

    def _web_up(self) -> bool:
        try:
            return requests.get(self.base_url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> None:
        self._spawn(
            name,
            [
                "celery",
                "-A",
                "workers",
                "worker",
                "-c",
                str(concurrency),
                "-Q",
                "bridge",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
        )

    def start_beat(self) -> None:
        self._spawn("beat", ["celery", "-A", "workers", "beat", "--loglevel", "INFO"])

    def _create_database(self, server_url: str) -> str:
        """A fresh PostgreSQL database per stack, dropped at stop()."""
        import uuid

        import psycopg

        name = f"bridge_test_{uuid.uuid4().hex[:10]}"
        base = server_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._scratch_db = name
        self._server_url = base
        return base.rsplit("/", 1)[0] + "/" + name

    def _drop_database(self) -> None:
        import psycopg

        if not self._scratch_db:
            return
        with psycopg.connect(self._server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self._scratch_db}" WITH (FORCE)')
        self._scratch_db = None

    def start(self, *, beat: bool = True, workers: int = 1) -> BridgeStack:
        workers = max(workers, int(os.environ.get("BRIDGE_TEST_WORKERS", "1")))
        self.start_web()
        for i in range(workers):
            self.start_worker(f"worker{i + 1}")
        if beat:
            self.start_beat()
        return self

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children (a celery worker's pool), like a crash."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                # The web server answers only after a delivery is committed, so it holds nothing to finish, and its
                # stop (even the quick one) takes seconds a test does not need; the rest stop as usual.
                os.killpg(proc.pid, signal.SIGKILL if name == "web" else signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()
        if self._engine is not None:
            self._engine.dispose()
        self._drop_database()
        if self.settings.embedded_broker:
            stop_embedded_redis(self.settings)

    def assert_alive(self) -> None:
        """A process that died on its own (not killed by the test) fails the test with its log."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log}")

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    # -- talking to it ------------------------------------------------------------------------------

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(self.base_url + path, data=body, headers=headers, timeout=10)

    def github(self, event: str, payload: dict[str, Any], *, delivery: str | None = None) -> requests.Response:
        body, headers = github_request(GITHUB_SECRET, event, payload, delivery=delivery)
        return self.post("/webhooks/github", body, headers)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        if self._engine is None:
            self._engine = db.make_engine(self.settings.database_url)
        return self._engine

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.events.c.status, func.count()).group_by(db.events.c.status)).all()
        return {s: int(n) for s, n in rows}

    def wait_idle(self, timeout: float = 60.0) -> dict[str, int]:
        """Until no event is pending (every delivery processed, failed or superseded) and no side work is
        planned or in doubt (back-links, copied comments, attachments, source writes: done or failed)."""

        def done() -> bool:
            self.assert_alive()
            return self.counts().get("pending", 0) == 0 and not self.side_work_open()

        wait_for(done, timeout, what="all events processed and side work finished")
        return self.counts()

    def side_work_open(self) -> int:
        """Side operations still planned or in doubt."""
        from bridge.core.journal import SIDE_KINDS

        t = db.operations
        with self.engine.connect() as conn:
            query = select(func.count()).where(t.c.kind.in_(SIDE_KINDS), t.c.state.in_(("planned", "sent")))
            return int(conn.execute(query).scalar() or 0)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
