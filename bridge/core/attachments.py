"""Attachments (mapping `attachments: true`): which files an item has, fetching them safely, and copying
each to its Zoho issue exactly once.

A reporter writes the URLs in a GitHub body or a BugHerd task, so a URL is fetched only from the source's
own hosts (BUGZILLA_URL's host; GitHub's image hosts and the repository's own host; ATTACHMENT_HOSTS,
where BugHerd's screenshot host is listed), never from an address in a private, loopback or link-local range unless the
host is one the administrator configured, and never beyond ATTACHMENT_MAX_BYTES or the timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import requests
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from bridge.events import NormalizedEvent, SourceUnavailable
from bridge.settings import Settings
from bridge.store import schema as db
from bridge.store.clock import db_now
from bridge.targets.zoho.errors import ZohoPermanentError

log = logging.getLogger("bridge.attachments")

GITHUB_HOSTS = frozenset(
    {"github.com", "user-images.githubusercontent.com", "private-user-images.githubusercontent.com"}
)
# BugHerd's documents (seed 002) do not name the host of `screenshot_url`: the administrator lists it in
# ATTACHMENT_HOSTS as it appears in their tasks, rather than the bridge trusting a guessed one.
BUGHERD_HOSTS: frozenset[str] = frozenset()
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
TOTAL_SECONDS = 60.0  # a slow drip cannot hold a worker longer than this
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
# `![alt](url "title")` and `<img src="url">` in a GitHub body.
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


class AttachmentRefused(Exception):
    """Not fetched, for good (foreign or private host, bad URL): skipped with `reason` as the note."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AttachmentTooLarge(AttachmentRefused):
    pass


@dataclass(frozen=True)
class AttachmentRef:
    key: str  # unique within the item: "attachment:12", "screenshot:<sha>", "image:<sha>"
    url: str
    file_name: str
    size: int | None = None  # when the source states it (Bugzilla)
    bugzilla_json: bool = False  # the URL answers Bugzilla's JSON with the content in base64


@dataclass(frozen=True)
class Fetched:
    file_name: str
    content_type: str
    data: bytes


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def _name_from(url: str, default: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).strip()
    return name[:200] or default


def refs_of(settings: Settings, event: NormalizedEvent) -> list[AttachmentRef]:
    """The attachments an event names: a Bugzilla attachment, a BugHerd screenshot, images in a GitHub body."""
    fields = event.fields
    if event.source == "bugzilla":
        raw = fields.get("attachment")
        if not isinstance(raw, dict) or raw.get("id") is None or not settings.bugzilla_url:
            return []
        base = settings.bugzilla_url.rstrip("/")
        size = raw.get("size")
        return [
            AttachmentRef(
                key=f"attachment:{raw['id']}",
                url=f"{base}/rest/bug/attachment/{raw['id']}",
                file_name=str(raw.get("file_name") or f"attachment-{raw['id']}"),
                size=int(size) if isinstance(size, int | float) and not isinstance(size, bool) else None,
                bugzilla_json=True,
            )
        ]
    if event.source == "bugherd":
        url = fields.get("screenshot_url")
        if not isinstance(url, str) or not url.strip():
            return []
        url = url.strip()
        return [AttachmentRef(f"screenshot:{_digest(url)}", url, _name_from(url, "screenshot.png"))]
    if event.source == "github":
        body = fields.get("body")
        if not isinstance(body, str):
            return []
        urls = list(dict.fromkeys(m.group(1) for rx in (_MD_IMAGE, _HTML_IMAGE) for m in rx.finditer(body)))
        return [AttachmentRef(f"image:{_digest(u)}", u, _name_from(u, "image.png")) for u in urls]
    return []


def allowed_hosts(settings: Settings, event: NormalizedEvent) -> tuple[frozenset[str], frozenset[str]]:
    """(hosts this event's attachments may come from, the configured ones among them, which may be private)."""
    configured = set(settings.attachment_hosts)
    if event.source == "bugzilla" and settings.bugzilla_url:
        configured.add((urlsplit(settings.bugzilla_url).hostname or "").lower())
    hosts = set(configured)
    if event.source == "github":
        hosts |= GITHUB_HOSTS
        own = urlsplit(str(event.fields.get("html_url") or "")).hostname
        if own:
            hosts.add(own.lower())  # GitHub Enterprise serves its images from its own host
    if event.source == "bugherd":
        hosts |= BUGHERD_HOSTS
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
    headers: dict[str, str] | None = None,
    resolve: Resolver = _resolve,
) -> Fetched:
    """Download one attachment within the limits; redirects are followed only to allowed hosts."""
    if ref.size is not None and ref.size > max_bytes:
        raise AttachmentTooLarge(f"{ref.file_name} is {ref.size} bytes, over ATTACHMENT_MAX_BYTES ({max_bytes})")
    session = session or requests.Session()
    # Bugzilla answers JSON with the file in base64: a third larger than the file itself.
    cap = max_bytes * 4 // 3 + 64 * 1024 if ref.bugzilla_json else max_bytes
    deadline = time.monotonic() + TOTAL_SECONDS
    url = ref.url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, hosts, configured, resolve)
        try:
            response = session.get(
                url,
                headers=headers if urlsplit(url).hostname in configured else None,
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
        if ref.bugzilla_json:
            return _from_bugzilla(ref, data, max_bytes)
        return Fetched(ref.file_name, ctype or "application/octet-stream", data)
    raise AttachmentRefused(f"fetching {ref.file_name}: more than {MAX_REDIRECTS} redirects")


def _from_bugzilla(ref: AttachmentRef, body: bytes, max_bytes: int) -> Fetched:
    """`GET /rest/bug/attachment/{id}`: `{"attachments": {"<id>": {"data": base64, "file_name", ...}}}`."""
    try:
        payload = json.loads(body)
        item = next(iter(payload["attachments"].values()))
        data = base64.b64decode(item["data"], validate=True)
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
        raise AttachmentRefused(f"Bugzilla answered no attachment content for {ref.file_name}") from None
    if len(data) > max_bytes:
        raise AttachmentTooLarge(f"{ref.file_name} is {len(data)} bytes, over ATTACHMENT_MAX_BYTES ({max_bytes})")
    name = str(item.get("file_name") or ref.file_name)
    return Fetched(name, str(item.get("content_type") or "application/octet-stream"), data)


# -- exactly once per attachment: the attachment_links table ----------------------------------------------

FETCHING, UPLOADED, ASSOCIATED, SKIPPED = "fetching", "uploaded", "associated", "skipped"


@dataclass(frozen=True)
class AttachmentLink:
    state: str
    zoho_attachment_id: str | None
    note: str | None


def get_link(engine: Engine, source: str, external_id: str, key: str) -> AttachmentLink | None:
    t = db.attachment_links
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.state, t.c.zoho_attachment_id, t.c.note).where(
                t.c.source == source, t.c.external_id == external_id, t.c.attachment_key == key
            )
        ).first()
    return AttachmentLink(row.state, row.zoho_attachment_id, row.note) if row else None


RowWrite = Callable[[Callable[[Connection, float], object]], object]  # runs fn(conn, db time) in one transaction


def unfenced(engine: Engine) -> RowWrite:
    """Each write in a transaction of its own (tools and tests; the delivery core passes its fenced step)."""

    def write(fn: Callable[[Connection, float], object]) -> object:
        with engine.begin() as conn:
            return fn(conn, db_now(conn))

    return write


def save_link(
    write: RowWrite,
    source: str,
    external_id: str,
    key: str,
    state: str,
    *,
    zoho_attachment_id: str | None = None,
    note: str | None = None,
) -> None:
    t = db.attachment_links

    def save(conn: Connection, now: float) -> None:
        values: dict[str, Any] = {"state": state, "updated_at": now, "note": note}
        if zoho_attachment_id is not None:
            values["zoho_attachment_id"] = zoho_attachment_id
        where = (t.c.source == source, t.c.external_id == external_id, t.c.attachment_key == key)
        if not conn.execute(update(t).where(*where).values(**values)).rowcount:  # one writer: the item's holder
            conn.execute(insert(t).values(source=source, external_id=external_id, attachment_key=key, **values))

    write(save)


class Uploader(Protocol):
    """What `sync_attachments` needs from Zoho (bridge/targets/zoho/attachments.py: `ZohoAttachments`)."""

    @property
    def associates(self) -> bool: ...

    def upload(self, portal: str, project: str, issue_id: str, file: Fetched) -> str: ...

    def associate(self, portal: str, project: str, issue_id: str, attachment_id: str) -> None: ...

    def on_issue(self, portal: str, project: str, issue_id: str) -> list[dict[str, Any]]: ...


def _listed(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(id, name, size) of each attachment Zoho lists, whichever shape the dialect answers with."""
    out = []
    for item in items:
        nested = item.get("file_info")
        info: dict[str, Any] = nested if isinstance(nested, dict) else item
        ident = item.get("attachment_id") or item.get("id")
        out.append((str(ident), str(info.get("name") or item.get("name") or ""), str(info.get("size") or "")))
    return out


def sync_attachments(
    engine: Engine,
    settings: Settings,
    uploader: Uploader,
    event: NormalizedEvent,
    *,
    external_id: str,
    portal: str,
    project: str,
    issue_id: str,
    session: requests.Session | None = None,
    resolve: Resolver = _resolve,
    write: RowWrite | None = None,
) -> list[str]:
    """Copy the event's attachments to the issue, each exactly once; returns notes for the event.

    Per attachment the row goes fetching → uploaded → associated (BugTracker: fetching → associated), or
    skipped (too large, refused host). A retry after a crash resumes from the row: an uploaded file is
    associated without a second upload, and before repeating a step whose answer was lost the issue's
    attachments are listed first. Transient failures (source or Zoho) raise, for the caller's retry.
    """
    notes: list[str] = []
    write = write or unfenced(engine)  # the delivery core's: a worker that lost the item records nothing
    hosts, configured = allowed_hosts(settings, event)
    headers = (
        {"X-BUGZILLA-API-KEY": settings.bugzilla_api_key}
        if event.source == "bugzilla" and settings.bugzilla_api_key
        else None
    )
    for ref in refs_of(settings, event):
        try:
            note = _copy_one(engine, write, settings, uploader, event, ref, external_id, portal, project, issue_id,
                             hosts, configured, headers, session, resolve)  # fmt: skip
        except ZohoPermanentError as exc:  # Zoho refuses this file (type, size): the rest still goes
            save_link(write, event.source, external_id, ref.key, SKIPPED, note=f"Zoho refused it: {exc}")
            note = f"attachment {ref.file_name} not copied: Zoho refused it: {exc}"
        if note:
            notes.append(note)
    return notes


def _associated(uploader: Uploader, portal: str, project: str, issue_id: str, attachment_id: str) -> bool:
    return any(i == attachment_id for i, _, _ in _listed(uploader.on_issue(portal, project, issue_id)))


def _copy_one(
    engine: Engine,
    write: RowWrite,
    settings: Settings,
    uploader: Uploader,
    event: NormalizedEvent,
    ref: AttachmentRef,
    external_id: str,
    portal: str,
    project: str,
    issue_id: str,
    hosts: frozenset[str],
    configured: frozenset[str],
    headers: dict[str, str] | None,
    session: requests.Session | None,
    resolve: Resolver,
) -> str | None:
    """One attachment through its states; returns the note for the event, if any."""
    link = get_link(engine, event.source, external_id, ref.key)
    if link is not None and link.state in (ASSOCIATED, SKIPPED):
        return None
    attachment_id = link.zoho_attachment_id if link is not None and link.state == UPLOADED else None
    if attachment_id is None:
        try:
            file = fetch(
                ref,
                hosts,
                configured,
                max_bytes=settings.attachment_max_bytes,
                session=session,
                headers=headers,
                resolve=resolve,
            )
        except AttachmentRefused as exc:
            save_link(write, event.source, external_id, ref.key, SKIPPED, note=exc.reason)
            log.warning("attachment skipped: %s", exc.reason, extra={"item": event.item_key})
            return f"attachment {ref.file_name} not copied: {exc.reason}"
        retrying = link is not None and link.note == "sending"
        if retrying and not uploader.associates:
            # The last attempt may have stored the file on the bug before its answer was lost.
            same = [
                i
                for i, name, size in _listed(uploader.on_issue(portal, project, issue_id))
                if name == file.file_name and size in ("", str(len(file.data)))
            ]
            if same:
                save_link(write, event.source, external_id, ref.key, ASSOCIATED, zoho_attachment_id=same[0])
                return f"attachment {file.file_name} found on the Zoho bug already"
        save_link(write, event.source, external_id, ref.key, FETCHING, note="sending")
        attachment_id = uploader.upload(portal, project, issue_id, file)
        if not uploader.associates:
            save_link(write, event.source, external_id, ref.key, ASSOCIATED, zoho_attachment_id=attachment_id)
            return f"attachment {file.file_name} copied to Zoho"
        save_link(write, event.source, external_id, ref.key, UPLOADED, zoho_attachment_id=attachment_id)
    elif (
        link is not None
        and link.note == "associating"
        and _associated(uploader, portal, project, issue_id, attachment_id)
    ):
        # The association happened before its answer was lost: do not repeat it.
        save_link(write, event.source, external_id, ref.key, ASSOCIATED, zoho_attachment_id=attachment_id)
        return None
    save_link(write, event.source, external_id, ref.key, UPLOADED, zoho_attachment_id=attachment_id, note="associating")
    uploader.associate(portal, project, issue_id, attachment_id)
    save_link(write, event.source, external_id, ref.key, ASSOCIATED, zoho_attachment_id=attachment_id)
    return f"attachment {ref.file_name} copied to Zoho"
