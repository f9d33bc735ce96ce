"""Session-wide checks.

Every request a fake receives is matched against the bridge's declared call tables (testkit/fakes/server.py);
a request no table declares is written to one log for the whole session (xdist workers included), and the
session fails listing them: the bridge made a call its tables (and so its documents) do not have.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from _pytest.logging import catching_logs

from testkit.fakes.server import UNDECLARED_LOG

# pytest's log capture, on entering each test phase, walks `logging`'s table of loggers without `logging`'s lock.
# Threads our in-process tests leave running (an app's wake-up publisher reaching for its broker, a fake server's
# handler) create loggers lazily as they first import a module; when one did during that walk, the phase failed
# with "dictionary changed size during iteration" (tests/test_source_bugzilla.py, once in five runs). Entering
# under the lock that `logging.getLogger` itself takes makes the walk and a new logger one after the other.
_enter_unlocked = catching_logs.__enter__


def _enter_locked(self: catching_logs) -> Any:
    with logging._lock:  # type: ignore[attr-defined]  # an RLock: the handler calls inside take it again
        return _enter_unlocked(self)


catching_logs.__enter__ = _enter_locked  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if UNDECLARED_LOG not in os.environ:  # the controller: its workers inherit the same file
        handle, name = tempfile.mkstemp(prefix="bridge-undeclared-", suffix=".jsonl")
        os.close(handle)
        os.environ[UNDECLARED_LOG] = name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        return
    log = Path(os.environ.get(UNDECLARED_LOG, ""))
    if not log.is_file():
        return
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    log.unlink()
    if not entries:
        return
    seen = sorted({(e["fake"], e["method"], e["path"], e["test"]) for e in entries})
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{fake}: {method} {path}  ({test})" for fake, method, path, test in seen[:50]]
    message = "calls no table declares (bridge/targets/zoho/calls.py, bridge/sources/*/calls.py):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_sep("=", "undeclared outside calls", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


DURATIONS = Path(__file__).with_name("durations.json")  # seconds per test that took 3 s or more, from a past run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest first: the tests `durations.json` knows as long (longest first), then the other slow runs,
    the other end-to-end tests and the in-process ones, so that under xdist the short tests fill the cores around
    the long ones instead of one long test finishing the run alone. A stable sort, the same in every worker
    (xdist requires one order). A stale or missing file only makes the order worse, never the outcome."""
    known: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}

    def weight(item: pytest.Item) -> tuple[float, int]:
        tier = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("e2e") else 2
        return (-known.get(item.nodeid, 0.0), tier)

    items.sort(key=weight)


@pytest.fixture
def probing_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For tests of the fakes themselves, which send calls the bridge never makes on purpose (a 405, an unknown
    path): their requests go to a log of their own, not the session's."""
    log = tmp_path / "undeclared-probes.jsonl"
    monkeypatch.setenv(UNDECLARED_LOG, str(log))
    return log
