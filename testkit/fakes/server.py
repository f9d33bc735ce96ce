"""What every fake server shares: a real ThreadingHTTPServer on 127.0.0.1 (random port) in a thread."""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit

from bridge.outbound.calls import CallTable

# Where every fake of the test session writes the requests no call table declares (tests/conftest.py sets it
# and fails the session when the file is not empty): a call the bridge makes that the documents lack.
UNDECLARED_LOG = "BRIDGE_UNDECLARED_CALLS"


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn() reverse lookup, which can be slow in sandboxes
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeServer:
    """Start/stop and context management; subclasses set `handler` (its handler reads `self.server.fake`)."""

    handler: type[BaseHTTPRequestHandler]
    tables: tuple[CallTable, ...] = ()  # the calls this fake serves, as the bridge declares them
    # paths a test drives the fake through (its own controls), not calls the bridge makes
    control_prefixes: tuple[str, ...] = ()
    base_url = ""
    _server: LoopbackServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        self._server = LoopbackServer(("127.0.0.1", 0), self.handler)
        self._server.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def declared(self, method: str, raw_path: str) -> bool:
        """Whether a request is a call some table declares; an undeclared one is written to the session's log
        (the fake still answers it as the documents would, so the test sees the bridge's behaviour too)."""
        quoted = urlsplit(raw_path).path
        path = unquote(quoted)
        if not self.tables or path.startswith(self.control_prefixes):
            return True
        # The path as sent first: a parameter may hold an escaped slash (a GitHub label named "area/ui").
        if any(table.find(method, quoted) or table.find(method, path) for table in self.tables):
            return True
        log = os.environ.get(UNDECLARED_LOG)
        if log:
            entry = {"fake": type(self).__name__, "method": method, "path": path, "test": _current_test()}
            with open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")
        return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
