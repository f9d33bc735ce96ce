"""Shared pieces of the benchmarks: webhook bodies, a bounded load generator, servers, stores, profiles.

Everything here talks to 127.0.0.1 only, and every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, BridgeStack, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"
PYTHON = sys.executable
GITHUB_PATH = "/webhooks/github"
BODY_BYTES = 5_400  # a GitHub `issues` delivery is ~5 KB; the padding goes into the issue's body text
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PAD_TEXT = (
    "Steps to reproduce: open the login page on Safari 17, type a valid user and password, press the "
    "button. Expected: the dashboard. Actual: nothing happens and the console shows no error. "
)


# -- reporting ------------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)" if dirty else ""),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
    }


def print_header(title: str) -> dict[str, str]:
    info = machine_info()
    print(f"== {title}")
    print("   " + "  ".join(f"{k}: {v}" for k, v in info.items()))
    sys.stdout.flush()
    return info


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"results written to {path}")


# -- webhook bodies ---------------------------------------------------------------------------------------


def padded_issue_payload(
    number: int,
    *,
    action: str = "opened",
    body_bytes: int = BODY_BYTES,
    title: str | None = None,
    updated: float = 0.0,
    repo: str = "acme/web",
    labels: tuple[str, ...] = ("bug", "area:ui"),
) -> dict[str, Any]:
    """A GitHub `issues` payload (testkit/factories.py) whose JSON is about `body_bytes` long."""
    title = title or f"Login button does nothing (#{number})"
    payload = issues_event(action, number=number, title=title, body="", labels=labels, updated=updated, repo=repo)
    missing = max(0, body_bytes - len(json.dumps(payload)))
    payload["issue"]["body"] = (PAD_TEXT * (missing // len(PAD_TEXT) + 1))[:missing]
    return payload


def github_webhook(number: int, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    """A signed `issues` delivery with a unique X-GitHub-Delivery."""
    return github_request(GITHUB_SECRET, "issues", padded_issue_payload(number, **kwargs), delivery=str(uuid.uuid4()))


def http_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The raw bytes of one HTTP/1.1 POST (keep-alive is HTTP/1.1's default)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def github_requests(port: int, count: int, *, first_number: int) -> list[bytes]:
    """`count` signed `issues.opened` deliveries for distinct issues, ready to send."""
    out = []
    for n in range(first_number, first_number + count):
        body, headers = github_webhook(n)
        out.append(http_request(port, GITHUB_PATH, body, headers))
    return out


# -- the code measured: this tree, or an older revision beside it ------------------------------------------


@contextlib.contextmanager
def code_tree(ref: str) -> Iterator[Path]:
    """The bridge's code at git revision `ref`, extracted into a scratch folder (removed at the end): put it first
    on PYTHONPATH (and run from elsewhere) to measure the old code against this tree in the same run."""
    with temp_dir(f"bench-code-{ref.replace('/', '_')[:20]}-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp


# -- a bounded load generator: one thread and one connection per sender ------------------------------------


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group (CpuMeter)

    def cpu_ms_per_request(self, group: str) -> float:
        return 1000 * self.cpu.get(group, float("nan")) / max(1, self.completed)

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "completed": self.completed,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50, 2),
            "p99_ms": round(self.p99, 2),
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "connections": self.connections,
            "cpu_seconds": {k: round(v, 3) for k, v in self.cpu.items()},
        }


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bool]:
    """Read one response from `sock` (leftover bytes stay in `buf`); returns (status, server closes)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(lines[0].split(" ", 2)[1])
    close = lines[0].startswith("HTTP/1.0")
    length: int | None = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
    if length is None:  # body delimited by the close
        while chunk := sock.recv(65536):
            buf += chunk
        buf.clear()
        return status, True
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the middle of the body")
        buf += chunk
    del buf[:length]
    return status, close


class Sender:
    """One sender: one connection at a time, kept alive unless the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.connections = 0

    def send(self, request: bytes, timeout: float = 30.0) -> int:
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf.clear()
                self.connections += 1
            self.sock.sendall(request)
            status, close = _read_response(self.sock, self.buf)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def run_load(port: int, requests: Sequence[bytes], concurrency: int, max_seconds: float) -> LoadResult:
    """Send every request once (bounded by count and by `max_seconds`) from `concurrency` senders."""
    index = itertools.count()
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    deadline = [0.0]

    def sender() -> None:
        conn = Sender(port)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            i = next(index)
            if i >= len(requests):
                break
            started = time.perf_counter()
            try:
                status = conn.send(requests[i])
            except OSError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] += 1
        conn.close()
        with lock:
            result.latencies_ms.extend(latencies)
            result.statuses.update(statuses)
            result.errors.update(errors)
            result.connections += conn.connections

    threads = [threading.Thread(target=sender, name=f"sender-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + max_seconds
    started = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(max_seconds + 60)
    result.seconds = time.perf_counter() - started
    return result


def _load_child(conn: Any, port: int, requests: Sequence[bytes], concurrency: int, max_seconds: float) -> None:
    started = time.process_time()
    result = run_load(port, requests, concurrency, max_seconds)
    result.cpu["load generator"] = time.process_time() - started
    conn.send(result)
    conn.close()


def run_load_forked(port: int, requests: Sequence[bytes], concurrency: int, max_seconds: float) -> LoadResult:
    """`run_load` in a forked child process: the load generator shares no GIL with this process
    (which may host FakeZoho). Its CPU time comes back as `cpu["load generator"]`."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_load_child, args=(sender, port, requests, concurrency, max_seconds), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(max_seconds + 120):
            raise RuntimeError("the load generator did not report in time")
        result: LoadResult = receiver.recv()
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join(5)
    return result


class Numbers:
    """Hands out issue numbers so that every delivery of a run is for a new issue."""

    def __init__(self, start: int = 1) -> None:
        self.next = start

    def take(self, count: int) -> int:
        first, self.next = self.next, self.next + count
        return first


def send_paced(port: int, requests: Sequence[bytes], rate: float, max_seconds: float) -> list[tuple[float, int]]:
    """Send in order from one sender at `rate` per second; returns (wall time sent, status) per request."""
    conn = Sender(port)
    out: list[tuple[float, int]] = []
    started = time.monotonic()
    for i, request in enumerate(requests):
        due = started + i / rate if rate > 0 else 0.0
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        if time.monotonic() - started > max_seconds:
            break
        sent = time.time()
        try:
            status = conn.send(request)
        except OSError as exc:
            print(f"   send failed: {type(exc).__name__}: {exc}")
            status = 0
        out.append((sent, status))
    conn.close()
    return out


# -- servers and stores ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreConfig:
    """Which database and broker the bridge uses: the embedded default, or Redis + PostgreSQL."""

    name: str
    database_url: str = ""
    broker_url: str = ""


@contextlib.contextmanager
def store_config(name: str, redis_db: int) -> Iterator[StoreConfig]:
    """`embedded` (SQLite + the private Redis in the data folder) or `redis-pg` (a fresh PostgreSQL
    database, dropped at the end, and Redis db `redis_db`, which must be empty and is flushed at the end)."""
    if name == "embedded":
        yield StoreConfig("embedded (SQLite + private redis-server on a unix socket)")
        return
    if name != "redis-pg":
        raise ValueError(f"unknown config {name!r}: embedded or redis-pg")
    with redis_database(redis_db) as broker_url, postgres_database() as database_url:
        yield StoreConfig(f"Redis (TCP, db {redis_db}) + PostgreSQL", database_url, broker_url)


@contextlib.contextmanager
def redis_database(number: int) -> Iterator[str]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    size = client.dbsize()
    if size:
        raise SystemExit(f"Redis db {number} on {REDIS_HOST}:{REDIS_PORT} holds {size} keys: pick another --redis-db")
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"bench_bridge_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A scratch folder (data, logs), removed at the end unless BENCH_KEEP=1 (to read the logs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"   kept {path} (BENCH_KEEP=1)")
        else:
            shutil.rmtree(path, ignore_errors=True)


PRODUCTION_TIMINGS = {
    # testkit/harness.py shortens these for the test suite; the benchmarks run the product's defaults.
    "COALESCE_MS": "300",
    "STALE_AFTER_SECONDS": "60",
    "RETRY_BASE_SECONDS": "2",
    "RETRY_MAX_SECONDS": "300",
}


def make_stack(
    tmp: Path, config: StoreConfig, fake: FakeZoho | None, extra_env: dict[str, str] | None = None
) -> BridgeStack:
    return BridgeStack(
        tmp,
        fake,
        broker_url=config.broker_url,
        database_url=config.database_url,
        extra_env={"LOG_LEVEL": "INFO", **PRODUCTION_TIMINGS, **(extra_env or {})},
    )


class OldBridgeStack(BridgeStack):
    """A BridgeStack running the code extracted by `code_tree` (an older revision): its processes start in that
    folder with it first on PYTHONPATH, so they import that `bridge`, not this tree's."""

    def __init__(
        self,
        code: Path,
        tmp: Path,
        config: StoreConfig,
        extra_env: dict[str, str] | None = None,
        fake: FakeZoho | None = None,
    ) -> None:
        super().__init__(
            tmp,
            fake,
            broker_url=config.broker_url,
            database_url=config.database_url,
            extra_env={"LOG_LEVEL": "INFO", **PRODUCTION_TIMINGS, **(extra_env or {}), "PYTHONPATH": str(code)},
        )
        self.code = code

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=self.code,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc


def start_workers(stack: BridgeStack, count: int, concurrency: int) -> None:
    for i in range(count):
        stack.start_worker(f"worker{i + 1}", concurrency=concurrency)


class GunicornServer:
    """gunicorn with the Procfile's settings (`-c python:bridge.process.gunicorn_conf`) serving `app`.

    Its environment is the bridge's: the config's post_fork hook builds the bridge app in each worker
    whatever `app` is (once, at boot; never on the request path).
    """

    def __init__(self, app: str, env: dict[str, str], log_path: Path) -> None:
        self.app = app
        self.port = free_port()
        self.env = {**env, "PYTHONPATH": str(REPO)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GunicornServer:
        log = open(self.log_path, "ab")  # lives as long as the process
        bind = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "python:bridge.process.gunicorn_conf", "-b", bind, self.app],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: http_get_ok(self.port, "/healthz"), 30, what=f"{self.app} (see {self.log_path})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class BareServer(GunicornServer):
    """bench/bare_app.py (200, no work) under the same gunicorn settings as the bridge."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__("bench.bare_app:app", env, log_path)


def http_get_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# -- CPU accounting ------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        tree += children
        frontier = children
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """user + system CPU seconds used so far by these processes (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """{thread id: nanoseconds on a CPU so far} for the live threads of `pid`, from the scheduler's own count
    (`/proc/PID/task/TID/schedstat`): exact, where `/proc/PID/stat` counts in 10 ms clock ticks."""
    found: dict[int, int] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return found


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


class CpuMeter:
    """CPU seconds used during a `with` block by named groups of processes, this process, and the machine."""

    def __init__(self, groups: dict[str, Sequence[int]], self_name: str = "this process") -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.self_name = self_name
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        self._self = time.process_time()
        self._sys = system_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        for name, pids in self.groups.items():
            self.used[name] = cpu_seconds(pids) - self._start[name]
        self.used[self.self_name] = time.process_time() - self._self
        busy, total = system_busy()
        self.used["machine busy %"] = 100 * (busy - self._sys[0]) / max(1.0, total - self._sys[1])


# -- profiles (py-spy) -----------------------------------------------------------------------------------


class PySpy:
    """`py-spy record --pid PID --subprocesses` for the duration of a `with` block (raw stacks)."""

    def __init__(self, pid: int, out: Path, *, idle: bool = False, rate: int = 250, max_seconds: int = 120) -> None:
        binary = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        if not Path(binary).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.args = [binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
        # BENCH_PROFILE_GIL=1: sample only the thread holding the GIL (where the Python CPU goes under threads)
        self.args += ["--gil"] if os.environ.get("BENCH_PROFILE_GIL") else []
        self.args += ["--idle"] if idle else []  # without it: on-CPU samples only (waits, GIL waits excluded)
        self.args += ["--nolineno", "--format", "raw", "--rate", str(rate), "--duration", str(max_seconds)]
        self.args += ["--output", str(out)]
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach to every process
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            print(f"   py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    frames = stack.split(";")
    if frames and frames[0].startswith("process "):
        frames = frames[1:]
    if frames and frames[0].startswith("thread "):
        frames = frames[1:]
    return frames, int(count)


def profile_split(path: Path, roots: dict[str, str], *, title: str = "") -> dict[str, float]:
    """Print and return the share of all samples whose stack holds each root (e.g. one per thread)."""
    if not path.exists():
        return {}
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip() or not line[-1].isdigit():
            continue
        frames, count = _frames(line)
        total += count
        for name, root in roots.items():
            if any(root in f for f in frames):
                counts[name] += count
                break
        else:
            counts["other"] += count
    shares = {name: 100 * n / max(1, total) for name, n in counts.most_common()}
    print(f"   profile {title or path.name}: {total} samples; " + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items()))
    return shares


def summarize_profile(
    path: Path, root: str, *, top: int = 18, title: str = "", focus: Sequence[str] = ()
) -> list[tuple[str, float, float]]:
    """Print where samples whose stack contains `root` spend their time: inclusive and self shares.

    `root` is a substring of a frame as py-spy writes it, e.g. "SyncWorker.handle (" for the time
    spent on a connection; `focus` names functions (substrings) whose inclusive share is printed too.
    """
    if not path.exists():
        return []
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = in_root = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip() or not line[-1].isdigit():
            continue
        frames, count = _frames(line)
        total += count
        cut = next((i for i, f in enumerate(frames) if root in f), None)
        if cut is None:
            continue
        in_root += count
        below = frames[cut:]
        for frame in set(below):
            inclusive[_short(frame)] += count
        self_time[_short(below[-1])] += count
    if not in_root:
        print(f"   profile {path.name}: no sample under {root!r}")
        return []
    print(f"   profile {title or path.name}: {in_root} samples under {root!r} ({100 * in_root / total:.0f}% of all)")
    print(f"   {'inclusive':>9} {'self':>6}  function")
    rows = []
    for name, count in inclusive.most_common(top):
        share, own = 100 * count / in_root, 100 * self_time.get(name, 0) / in_root
        rows.append((name, share, own))
        print(f"   {share:8.1f}% {own:5.1f}%  {name}")
    print("   top self time:")
    for name, count in self_time.most_common(8):
        print(f"   {'':9} {100 * count / in_root:5.1f}%  {name}")
    if focus:
        print("   focus (inclusive): " + "; ".join(f"{f} {_share(inclusive, f, in_root):.1f}%" for f in focus))
    sys.stdout.flush()
    return rows


def _share(inclusive: Counter[str], needle: str, total: int) -> float:
    """Inclusive share of the function(s) matching `needle` (the largest one: they nest)."""
    return max((100 * n / total for name, n in inclusive.items() if needle in name), default=0.0)


def _short(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py)` → `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", where.rstrip(")"))
    where = where.removeprefix(f"{REPO}/")
    return f"{name} ({where})" if where else name


def store_pids(stack: BridgeStack) -> dict[str, list[int]]:
    """The broker's and the database's server processes serving this stack (for CpuMeter)."""
    groups: dict[str, list[int]] = {}
    settings = stack.settings
    if settings.embedded_broker:
        with contextlib.suppress(OSError, ValueError):
            groups["redis"] = [int((settings.data_dir / "redis.pid").read_text().strip())]
    else:
        import redis

        client = redis.Redis.from_url(settings.broker_url)
        groups["redis (shared server)"] = [int(client.info("server")["process_id"])]
        client.close()
    if settings.database_url.startswith("postgresql"):
        import psycopg

        name = settings.database_url.rsplit("/", 1)[1]
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
        groups["postgres backends"] = [int(r[0]) for r in rows]
    return groups
