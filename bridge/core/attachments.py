"""Attachments (mapping `attachments: true`): which files an item has, fetching them safely, and copying
each to its Zoho issue exactly once.

A reporter writes the URLs in a GitHub body or a BugHerd task, so a URL is fetched only from the source's
own hosts (BUGZILLA_URL's host; GitHub's image hosts and the repository's own host; ATTACHMENT_HOSTS,
where BugHerd's screenshot host is listed), never from an address in a private, loopback or link-local range unless the
host is one the administrator configured, and never beyond ATTACHMENT_MAX_BYTES or the timeouts.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
from sqlalchemy.engine import Engine

from bridge.events import NormalizedEvent, SourceUnavailable
from bridge.settings import Settings
from bridge.sources import SOURCES
from bridge.sources.spec import AttachmentRef, AttachmentRefused, AttachmentTooLarge, Fetched

__all__ = ["AttachmentRef", "AttachmentRefused", "AttachmentTooLarge", "Fetched", "fetch", "fetch_for", "listed"]

log = logging.getLogger("bridge.attachments")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
TOTAL_SECONDS = 60.0  # a slow drip cannot hold a worker longer than this
MAX_REDIRECTS = 3
CHUNK = 64 * 1024


def refs_of(settings: Settings, event: NormalizedEvent) -> list[AttachmentRef]:
    """The attachments an event names, as its source reads them (a Bugzilla attachment, a BugHerd screenshot,
    images in a GitHub body)."""
    spec = SOURCES.get(event.source)
    return spec.attachments(settings, event) if spec is not None else []


def allowed_hosts(settings: Settings, source: str, html_url: str | None) -> tuple[frozenset[str], frozenset[str]]:
    """(hosts an item's attachments may come from, the configured ones among them, which may be private)."""
    spec = SOURCES.get(source)
    own, own_configured = spec.attachment_hosts(settings, html_url) if spec is not None else (set(), set())
    configured = set(settings.attachment_hosts) | own_configured
    hosts = configured | own
    hosts.discard("")
    configured.discard("")
    return frozenset(hosts), frozenset(configured)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


Resolver = Callable[[str, int], Iterable[str]]


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise SourceUnavailable(f"cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str, hosts: frozenset[str], configured: frozenset[str], resolve: Resolver = _resolve) -> None:
    """Refuse a URL the bridge must not fetch: not http(s), a host not the source's, or (for a host the
    administrator did not configure) one whose name resolves to a private, loopback or link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AttachmentRefused(f"not an http(s) URL: {url[:120]}")
    if parts.username or parts.password:
        raise AttachmentRefused(f"URL with credentials refused: {parts.hostname}")
    host = parts.hostname.lower()
    if host not in hosts:
        raise AttachmentRefused(f"host {host} is not one of the source's own hosts: not fetched")
    if host in configured:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = list(resolve(host, port))
    private = [a for a in addresses if not _public(a)]
    if private or not addresses:
        raise AttachmentRefused(f"host {host} resolves to a private or local address ({', '.join(private)}): refused")


def _peer_of(response: requests.Response) -> str | None:
    """The address the connection really went to (a name may resolve differently the second time)."""
    try:
        sock = response.raw.connection.sock  # type: ignore[union-attr]  # urllib3 2: the live connection of a streamed response
        return str(sock.getpeername()[0])
    except Exception:  # not available on every transport: the resolution check stands
        return None


def fetch(
    ref: AttachmentRef,
    hosts: frozenset[str],
    configured: frozenset[str],
    *,
    max_bytes: int,
    session: requests.Session | None = None,
    resolve: Resolver = _resolve,
) -> Fetched:
    """Download one attachment within the limits; redirects are followed only to allowed hosts."""
    if ref.size is not None and ref.size > max_bytes:
        raise AttachmentTooLarge(f"{ref.file_name} is {ref.size} bytes, over ATTACHMENT_MAX_BYTES ({max_bytes})")
    session = session or requests.Session()
    cap = max_bytes
    deadline = time.monotonic() + TOTAL_SECONDS
    url = ref.url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, hosts, configured, resolve)
        try:
            response = session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as exc:
            raise SourceUnavailable(f"fetching {ref.file_name}: {type(exc).__name__}") from None
        with response:
            host = (urlsplit(url).hostname or "").lower()
            peer = _peer_of(response)
            if peer is not None and host not in configured and not _public(peer):
                raise AttachmentRefused(f"host {host} connected to a private address ({peer}): refused")
            if response.is_redirect:
                url = urljoin(url, response.headers.get("Location", ""))
                continue
            if response.status_code in (429,) or response.status_code >= 500:
                raise SourceUnavailable(f"fetching {ref.file_name}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise AttachmentRefused(f"fetching {ref.file_name}: HTTP {response.status_code}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise AttachmentTooLarge(f"{ref.file_name} is {length} bytes, over ATTACHMENT_MAX_BYTES ({max_bytes})")
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_content(CHUNK):
                total += len(chunk)
                if total > cap:
                    raise AttachmentTooLarge(f"{ref.file_name} is over ATTACHMENT_MAX_BYTES ({max_bytes})")
                if time.monotonic() > deadline:
                    raise SourceUnavailable(f"fetching {ref.file_name}: slower than {TOTAL_SECONDS:.0f}s")
                chunks.append(chunk)
            data = b"".join(chunks)
            ctype = response.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
        return Fetched(ref.file_name, ctype or "application/octet-stream", data)
    raise AttachmentRefused(f"fetching {ref.file_name}: more than {MAX_REDIRECTS} redirects")


# -- copying one attachment: the journal's `zoho.attachment` operation (bridge/core/sidework.py) --------------


class Uploader(Protocol):
    """What copying needs from Zoho (bridge/targets/zoho/attachments.py: `ZohoAttachments`)."""

    @property
    def associates(self) -> bool: ...

    def upload(self, portal: str, project: str, issue_id: str, file: Fetched) -> str: ...

    def associate(self, portal: str, project: str, issue_id: str, attachment_id: str) -> None: ...

    def on_issue(self, portal: str, project: str, issue_id: str) -> list[dict[str, Any]]: ...


def listed(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(id, name, size) of each attachment Zoho lists, whichever shape the dialect answers with."""
    out = []
    for item in items:
        nested = item.get("file_info")
        info: dict[str, Any] = nested if isinstance(nested, dict) else item
        ident = item.get("attachment_id") or item.get("id")
        out.append((str(ident), str(info.get("name") or item.get("name") or ""), str(info.get("size") or "")))
    return out


def fetch_for(
    settings: Settings,
    source: str,
    html_url: str | None,
    ref: AttachmentRef,
    *,
    session: requests.Session | None = None,
    resolve: Resolver = _resolve,
    engine: Engine | None = None,
) -> Fetched:
    """Fetch one of an item's attachments within the limits: one its source reads through its API by the
    source's client (`engine`: the shared budgets it spends), any other from the hosts its source allows."""
    spec = SOURCES.get(source)
    if ref.via_api:
        if spec is None or not spec.fetch_attachment or engine is None:
            raise AttachmentRefused(f"{source} cannot read attachment {ref.file_name} through its API")
        if ref.size is not None and ref.size > settings.attachment_max_bytes:
            raise AttachmentTooLarge(
                f"{ref.file_name} is {ref.size} bytes, over ATTACHMENT_MAX_BYTES ({settings.attachment_max_bytes})"
            )
        from bridge.outbound.budget import shared_budgets

        fetched: Fetched = spec.load(spec.fetch_attachment)(
            settings, shared_budgets(engine), ref, settings.attachment_max_bytes
        )
        return fetched
    hosts, configured = allowed_hosts(settings, source, html_url)
    return fetch(
        ref, hosts, configured, max_bytes=settings.attachment_max_bytes, session=session,
        resolve=resolve,
    )  # fmt: skip
