"""A source's file host (Bugzilla's REST API, BugHerd's screenshot host, GitHub's image host) for attachment
tests: a real loopback HTTP server serving `routes` and recording every path asked for."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from testkit.fakes.server import FakeServer


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        files = self.server.fake
        files.hits.append(self.path)
        status, headers, body = files.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers and not headers.get("_no_length"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FileServer(FakeServer):
    """A source's file host: path -> (status, headers, body); records every path asked for."""

    handler = _FileHandler

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
