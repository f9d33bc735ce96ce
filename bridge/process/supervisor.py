"""`issue-bridge run`: web, worker and beat (and the private Redis) as one unit that starts and stops whole.

- Each child runs in its own session, so a closed terminal (SIGHUP) or a Ctrl-C (SIGINT) reaches only this
  supervisor, which then stops every child's whole process group and the private Redis.
- A child that dies on its own takes the others down; the supervisor exits non-zero with a one-line reason.
- A lock file in the data folder keeps a second `run` on the same data from starting.
- The port is checked before anything starts, so a busy port is named (with `PORT=` to change it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bridge.settings import Settings, real_environment

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WATCH_SECONDS = 60.0  # between looks at the children when no SIGCHLD came (tests: a killed worker is seen at once)
GRACE_SECONDS = 15.0


class SupervisorError(Exception):
    """Why `run` could not start or had to stop; one line for the admin."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _tool(name: str) -> list[str]:
    """The console script next to this interpreter, else `python -m name`.

    Celery restarts itself on SIGHUP by re-executing sys.argv; under `python -m celery` argv[0] is
    celery/__main__.py, which fails as a script ("attempted relative import"). The console script does not.
    """
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def commands(settings: Settings, host: str, port: int, concurrency: int) -> dict[str, list[str]]:
    level = settings.log_level
    return {
        "web": [
            *_tool("gunicorn"),
            "-c",
            "python:bridge.process.gunicorn_conf",
            "-b",
            f"{host}:{port}",
            "bridge.web.wsgi:app",
        ],
        "worker": [
            *_tool("celery"),
            "-A",
            "workers",
            "worker",
            "-c",
            str(concurrency),
            "--loglevel",
            level,
            "-Q",
            "bridge",
            # No worker-to-worker chatter (nothing uses it; it kept an idle worker busy): as in the Procfile.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        "beat": [*_tool("celery"), "-A", "workers", "beat", "--loglevel", level],
    }


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is not "busy"
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SupervisorError(
                    f"port {port} on {host} is already in use by another program; "
                    f"start on another port with PORT={port + 1} issue-bridge run (or --port)"
                ) from None
            raise SupervisorError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def acquire_run_lock(data_dir: Path) -> IO[str]:
    """Held for the life of this process (the kernel drops it if we die, so it never goes stale)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "run.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open on purpose until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise SupervisorError(
            f"issue-bridge is already running (pid {pid}) on the data in {data_dir}; stop it first (Ctrl-C there, "
            f"or kill {pid})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _die_with_parent() -> None:
    """In the child, before exec: a SIGKILLed supervisor still takes its children down (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        concurrency: int,
        say: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.concurrency = concurrency
        self.say = say
        self.warn = warn
        self.children: list[Child] = []
        self.stop_signal: int | None = None

    # The handlers take no lock (a handler runs between two bytecodes of the main thread, maybe while it holds
    # one): the watch loop is woken by the byte Python's C handler writes to the wakeup socket for every signal.
    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    def _on_child(self, _signum: int, _frame: object) -> None:
        pass  # the wakeup byte is the message: a child exited

    def run(self) -> int:
        """Start everything, watch it, stop it all; the exit code for the command."""
        from bridge.process.broker import ensure_embedded_redis

        lock = acquire_run_lock(self.settings.data_dir)
        wake, wake_writer = socket.socketpair()
        for end in (wake, wake_writer):
            end.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_child)
        try:
            check_port_free(self.host, self.port)
            if self.settings.embedded_broker:
                ensure_embedded_redis(self.settings)
            for name, cmd in commands(self.settings, self.host, self.port, self.concurrency).items():
                # children find the same home, and read its .env themselves (they follow its edits)
                env = {**real_environment(), "BRIDGE_HOME": str(self.settings.home)}
                proc = subprocess.Popen(cmd, cwd=self.settings.home, env=env, preexec_fn=_die_with_parent)
                self.children.append(Child(name, proc))
            return self._watch(wake)
        finally:
            self._stop_children()
            if self.settings.embedded_broker:
                from bridge.process.broker import stop_embedded_redis

                stop_embedded_redis(self.settings)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            wake.close()
            wake_writer.close()
            lock.close()

    def _watch(self, wake: socket.socket) -> int:
        announced = False
        started = time.monotonic()
        while self.stop_signal is None:
            for child in self.children:
                code = child.proc.poll()
                if code is not None:
                    self.warn(self._death_reason(child, code, time.monotonic() - started))
                    return code if code > 0 else 1
            if not announced and self._web_answers():
                mode = (
                    "DRY-RUN (no Zoho credentials: calls are recorded, not sent)" if self.settings.dry_run else "live"
                )
                self.say(f"issue-bridge running on http://{self.host}:{self.port}/ ({mode}); Ctrl-C stops it")
                announced = True
            # Quick until the web answers (the "running on" line). Then a signal wakes the loop (a child's exit is
            # SIGCHLD), and the timed look is only a safety net: an idle bridge is quiet (issue #24). A signal
            # that comes after the look above has written its byte already: the select returns at once.
            select.select([wake], [], [], WATCH_SECONDS if announced else 0.2)
            with contextlib.suppress(BlockingIOError):
                while wake.recv(512):
                    pass
        self.say(f"stopping on {signal.Signals(self.stop_signal).name}")
        return 0

    def _death_reason(self, child: Child, code: int, age: float) -> str:
        reason = f"{child.name} {describe_exit(code)}; stopping the others"
        if child.name == "web" and age < 30:
            try:
                check_port_free(self.host, self.port)
            except SupervisorError as exc:
                return f"web could not start: {exc}"
        return reason

    def _web_answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _stop_children(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.warn(f"{child.name} did not stop in {GRACE_SECONDS:.0f}s; killing it")
            # the whole group: a celery worker's pool processes, gunicorn's workers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        self.children.clear()
