"""`issue-bridge run` as a user runs it: a real supervisor with real gunicorn, celery worker, beat and private Redis.

Closing the terminal (SIGHUP), SIGTERM, a killed worker and a busy port must each end with no process and no
socket left behind, and say what happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from testkit.harness import GITHUB_SECRET, REPO, free_port, wait_for

pytestmark = pytest.mark.e2e
SCRIPT = Path(sys.executable).parent / "issue-bridge"


def _home(tmp: Path) -> dict[str, str]:
    (tmp / "mappings").mkdir()
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", tmp / "mappings" / "github.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "GITHUB_", "BUGZILLA_", "BUGHERD_"))}
    for name in ("BROKER_URL", "DATABASE_URL", "BRIDGE_DATA_DIR", "MAPPINGS_DIR", "PORT"):
        env.pop(name, None)
    env.update({"BRIDGE_HOME": str(tmp), "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "PYTHONUNBUFFERED": "1"})
    return env


def _start(tmp: Path, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    out = open(tmp / "run.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(SCRIPT), "run", "--port", str(port)],
        cwd="/",  # from anywhere: BRIDGE_HOME says where the bridge lives
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal's session: the test signals only the supervisor
    )


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _running(tmp: Path, proc: subprocess.Popen[str], port: int) -> tuple[set[int], int]:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"run exited with {proc.returncode}:\n{(tmp / 'run.log').read_text()}")
        return "issue-bridge running on" in (tmp / "run.log").read_text()

    wait_for(up, 90, what="issue-bridge run to announce itself")
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    names = {"gunicorn": False, "worker": False, "beat": False}

    def all_started() -> bool:
        for pid in _descendants(proc.pid):
            line = _cmdline(pid)
            for name in names:
                names[name] = names[name] or name in line
        return all(names.values())

    wait_for(all_started, 60, what=f"web, worker and beat under the supervisor ({names})")
    redis_pid = int((tmp / "var" / "redis.pid").read_text())
    return _descendants(proc.pid), redis_pid


def _assert_nothing_left(tmp: Path, pids: set[int], redis_pid: int, port: int) -> None:
    wait_for(lambda: not [p for p in pids if _alive(p)], 20, what="every child process to be gone")
    assert not _alive(redis_pid), "the private Redis is still running"
    assert not (tmp / "var" / "redis.sock").exists(), "the private Redis left its socket"
    assert not _listening(port), f"something still listens on {port}"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_stop_signal_stops_every_child_and_the_private_redis(tmp_path, signum):
    env = _home(tmp_path)
    port = free_port()
    proc = _start(tmp_path, env, port)
    try:
        pids, redis_pid = _running(tmp_path, proc, port)
        assert len(pids) >= 3
        # A second run on the same data says one is running, and changes nothing.
        second = subprocess.run(
            [str(SCRIPT), "run", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0
        assert f"already running (pid {proc.pid})" in second.stderr
        assert _listening(port)

        proc.send_signal(signum)
        assert proc.wait(40) == 0
        assert f"stopping on {signum.name}" in (tmp_path / "run.log").read_text()
        _assert_nothing_left(tmp_path, pids, redis_pid, port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_storm_of_signals_never_wedges_the_supervisor(tmp_path):
    """The signal handlers take no lock: a handler runs between two bytecodes of the main thread, maybe while
    that thread holds the very lock (a threading.Event's, in wait or clear) the handler would take."""
    env = _home(tmp_path)
    port = free_port()
    proc = _start(tmp_path, env, port)
    try:
        pids, redis_pid = _running(tmp_path, proc, port)
        for _ in range(100_000):  # what children exiting in a burst send, many times over
            os.kill(proc.pid, signal.SIGCHLD)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        _assert_nothing_left(tmp_path, pids, redis_pid, port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_killed_worker_takes_the_rest_down_with_a_reason(tmp_path):
    env = _home(tmp_path)
    port = free_port()
    proc = _start(tmp_path, env, port)
    try:
        pids, redis_pid = _running(tmp_path, proc, port)
        # the worker's main process: the supervisor's child (its pool processes are the worker's children)
        worker = next(p for p in _direct_children(proc.pid) if "celery" in _cmdline(p) and " worker " in _cmdline(p))
        os.kill(worker, signal.SIGKILL)
        code = proc.wait(40)  # seen at its SIGCHLD: the timed look comes only every WATCH_SECONDS (60 s)
        assert code != 0
        log = (tmp_path / "run.log").read_text()
        assert "worker was killed by SIGKILL; stopping the others" in log
        _assert_nothing_left(tmp_path, pids, redis_pid, port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _direct_children(pid: int) -> list[int]:
    return [p for p in _descendants(pid) if _parent(p) == pid]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_busy_port_is_named_with_the_setting_to_change_it(tmp_path):
    env = _home(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [str(SCRIPT), "run"], env={**env, "PORT": str(port)}, capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"PORT={port + 1}" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "var" / "redis.sock").exists()  # nothing was started


def test_a_worker_restarted_by_sighup_comes_back_and_processes_deliveries(tmp_path):
    """Celery restarts itself on SIGHUP by re-executing its command line; under `python -m celery` that crashed
    (`attempted relative import`) and left events pending. The supervisor starts the console script instead."""
    from testkit.factories import github_request, issues_event

    env = _home(tmp_path)
    port = free_port()
    proc = _start(tmp_path, env, port)
    try:
        _running(tmp_path, proc, port)
        # Celery installs its SIGHUP handler as it starts; before that the signal just kills it.
        wait_for(lambda: "ready." in (tmp_path / "run.log").read_text(), 60, what="the worker to be ready")
        worker = next(p for p in _direct_children(proc.pid) if "celery" in _cmdline(p) and " worker " in _cmdline(p))
        os.kill(worker, signal.SIGHUP)
        time.sleep(3)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert "attempted relative import" not in (tmp_path / "run.log").read_text()
        body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened", number=3))
        answer = requests.post(f"http://127.0.0.1:{port}/webhooks/github", data=body, headers=headers, timeout=10)
        assert answer.json()["status"] == "accepted"
        status = [str(SCRIPT), "events", "list", "--json"]

        def processed() -> bool:
            out = subprocess.run(status, env=env, capture_output=True, text=True, timeout=60).stdout
            return '"status": "done"' in out

        wait_for(processed, 60, what="the restarted worker to process the delivery")
        assert _alive(worker)  # the same process, re-executed in place
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(40)


def test_an_edit_of_a_dotenv_value_set_at_start_reaches_the_running_processes(tmp_path):
    """`.env` is each child's to read: the supervisor hands them its real environment, not what it took from `.env`
    (given as environment, the start-up value won over every later edit: `zoho connect` left a running bridge in
    dry-run, and a changed webhook secret kept the old one accepted)."""
    from bridge.settings import write_env_values
    from testkit.factories import github_request, issues_event

    env = _home(tmp_path)
    env.pop("GITHUB_WEBHOOK_SECRET")
    write_env_values(tmp_path / ".env", {"GITHUB_WEBHOOK_SECRET": "the-first-secret"})
    port = free_port()
    proc = _start(tmp_path, env, port)

    def post(secret: str, number: int) -> int:
        body, headers = github_request(secret, "issues", issues_event("opened", number=number))
        url = f"http://127.0.0.1:{port}/webhooks/github"
        return requests.post(url, data=body, headers=headers, timeout=10).status_code

    try:
        _running(tmp_path, proc, port)
        assert post("the-first-secret", 1) == 200
        write_env_values(tmp_path / ".env", {"GITHUB_WEBHOOK_SECRET": "the-second-secret"})
        wait_for(lambda: post("the-second-secret", 2) == 200, 30, what="the web process to take the new secret")
        assert post("the-first-secret", 3) == 401
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(40)
