"""Behind a reverse proxy: believe `X-Forwarded-For` / `-Proto` / `-Host` only from `TRUSTED_PROXIES`.

A WSGI middleware in front of the Flask app. When the connection comes from a trusted proxy:

- the client address (`REMOTE_ADDR`, which the admin login lockout counts) is the rightmost address in
  `X-Forwarded-For` that is not itself a trusted proxy. Whatever a client writes into that header itself sits
  to the left of the address its own proxy appended, so it is never reached: rotating a spoofed header does
  not rotate the lockout key. An entry that is not an address stops the walk at the last trusted hop.
- the scheme (`wsgi.url_scheme`: the admin cookie's `Secure` flag, the front page's URLs) is the last
  `X-Forwarded-Proto` value, if it is `http` or `https`;
- the host (the front page's URLs) is the last `X-Forwarded-Host` value, if it looks like a host name (a port
  that is the scheme's default is dropped).

From any other peer the headers are ignored: the address, scheme and host are the connection's own. gunicorn's
own belief in forwarded headers is switched off (bridge/process/gunicorn_conf.py), so this is the only place
that decides. The peer's own address stays in the environ as `bridge.proxy.peer`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("bridge.web")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# A host name or address with an optional port: no path, no user info, no spaces.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def parse_address(text: str) -> Address | None:
    """An address as the proxies write it (IPv4-mapped IPv6 taken as the IPv4 address), else None."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _last(value: str | None) -> str:
    """The value the nearest proxy wrote: the last of a comma-separated list."""
    return (value or "").rsplit(",", 1)[-1].strip()


class TrustedProxies:
    def __init__(self, app: WSGIApp, networks: tuple[Network, ...] | Callable[[], tuple[Network, ...]]) -> None:
        """`networks`: the trusted proxies, or where to read them each request (the settings a `.env` edit
        replaces: TRUSTED_PROXIES applies without a restart, like every setting but the few that cannot)."""
        self.app = app
        self._networks = networks
        self._warned = False

    @property
    def networks(self) -> tuple[Network, ...]:
        return self._networks() if callable(self._networks) else self._networks

    def trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: str) -> str:
        """The rightmost hop that is not a trusted proxy (the peer itself when it is not trusted)."""
        current = parse_address(peer)
        if not self.trusted(current):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # garbage from some hop: stop at the last trusted one we know
            current = address
            if not self.trusted(address):
                break
        return str(current)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = str(environ.get("REMOTE_ADDR") or "")
        environ["bridge.proxy.peer"] = peer
        if self.trusted(parse_address(peer)):
            environ["REMOTE_ADDR"] = self.client_address(peer, str(environ.get("HTTP_X_FORWARDED_FOR") or ""))
            proto = _last(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
            if proto in DEFAULT_PORTS:
                environ["wsgi.url_scheme"] = proto
            host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
            if host and _HOST.fullmatch(host):
                name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
                if port == DEFAULT_PORTS.get(environ["wsgi.url_scheme"]):
                    host = name
                environ["HTTP_HOST"] = host
        elif not self._warned and environ.get("HTTP_X_FORWARDED_FOR"):
            self._warned = True
            log.warning(
                "a request from %s carries X-Forwarded-For, but %s is not in TRUSTED_PROXIES: its forwarded headers "
                "are ignored (login lockout and front page see the proxy, not the client). If it is your reverse "
                "proxy, add its address to TRUSTED_PROXIES",
                peer or "a unix socket",
                peer or "it",
            )
        return self.app(environ, start_response)
