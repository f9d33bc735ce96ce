"""What a source is to the rest of the bridge: one `SourceSpec`, declared in the source's own package.

The port a source offers: parse a delivery (its webhook), fetch what a delivery lacked (`enricher`), read past
items (`backfill`), write back (`writer`), and the attachments its items name. The core, the mapping engine and
the CLI read these specs (`bridge/sources/__init__.py` `SOURCES`); none of them names a source. Adding a source
is its package (with a `SPEC`) and one line in `SOURCES`.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from bridge.events import NormalizedEvent
from bridge.settings import Settings


class Source(Protocol):
    """A source's intake: verify the raw bytes, parse into the one event shape, the dedup key."""

    name: str
    fields: frozenset[str]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> NormalizedEvent: ...

    def dedup_key(self, body: bytes, headers: Mapping[str, str], event_hint: str | None = None) -> str: ...


class PathTokenSource(Source, Protocol):
    """A source authenticated by a token in the URL path (BugHerd signs nothing), one URL per event.

    `verify` also takes the path token; `path_events` are the event names the URL may carry.
    """

    display_name: str
    path_events: tuple[str, ...]

    def verify(self, body: bytes, headers: Mapping[str, str], path_token: str | None = None) -> None: ...


@dataclass(frozen=True)
class AttachmentRef:
    key: str  # unique within the item: "attachment:12", "screenshot:<sha>", "image:<sha>"
    url: str
    file_name: str
    size: int | None = None  # when the source states it (Bugzilla)
    via_api: bool = False  # read through the source's own client (`SourceSpec.fetch_attachment`), not downloaded


class SourceReadError(Exception):
    """Reading an item from its source failed in a way the operator must fix (credentials, a malformed key),
    or the source answered an error: the message says which."""


@dataclass(frozen=True)
class Fetched:
    """An attachment's content, ready to upload."""

    file_name: str
    content_type: str
    data: bytes


class AttachmentRefused(Exception):
    """Not fetched, for good (foreign or private host, bad URL, the source has no such file): skipped, with
    `reason` as the note."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AttachmentTooLarge(AttachmentRefused):
    pass


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def file_name_of(url: str, default: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).strip()
    return name[:200] or default


def _none(*_args: Any) -> list[AttachmentRef]:
    return []


@dataclass(frozen=True)
class SourceSpec:
    name: str  # "github": the events' `source`, the mapping files' `source:`
    fields: frozenset[str]  # the fields its events carry (mapping templates and `from:` keys are checked against it)
    project_field: str  # the field naming the item's source project (routing, and finding a linked item's mapping)
    label_field: str  # the list `when:` label conditions match
    webhook: Callable[[Settings], Source | None]  # its intake when its secret is set; None: disabled, not open
    # `reverse.status` actions it can carry out: name -> a type, or the allowed values
    reverse_actions: dict[str, type | tuple[str, ...]] = field(default_factory=dict)
    writer: str = ""  # "module:Class" of its writer (talking back), "" when it has none
    writer_settings: tuple[tuple[str, str], ...] = ()  # (environment name, Settings attribute) the writer needs
    hidden_markers: bool = False  # the source renders HTML comments invisibly: the bridge's markers are hidden
    enricher: str = ""  # "module:function" completing an event its delivery reduced, "" when none is needed
    # (settings, event) -> the attachments an event names
    attachments: Callable[[Settings, NormalizedEvent], list[AttachmentRef]] = _none
    # (settings, the item's html_url) -> (hosts its attachments may come from, the configured ones among them)
    attachment_hosts: Callable[[Settings, str | None], tuple[set[str], set[str]]] = lambda s, u: (set(), set())
    # "module:function" reading a `via_api` attachment through its client (declared, budgeted, its throttles
    # honoured by every process): (settings, budgets, ref, max_bytes) -> `Fetched`; raises `AttachmentRefused`
    # (for good), `SourceBusy`/`SourceUnavailable` (later)
    fetch_attachment: str = ""
    see_also: bool = False  # back-links may go to a "See Also" field instead of a comment (Bugzilla)
    # "module:function" reading one item now (state and comments) for `resync`:
    # (settings, engine, budgets, item_key, the item's last stored fields, hold) -> its read events;
    # raises `SourceReadError` with what the operator must fix
    read_item: str = ""
    call_table: str = ""  # "module:NAME" of its `CallTable` (every call it makes; `docs/calls.md` lists them)
    backfill_command: str = ""  # "module:NAME" of its `BackfillCommand` (`issue-bridge backfill <name>`)
    cli_group: str = ""  # "module:name" of a click group of its own commands (`issue-bridge <name> …`), "" when none
    # "module:function" polling for changes where the source sends no webhooks: (engine, settings) -> the
    # (source, item_key) pairs that got new events; raises `SourceUnavailable` when it cannot be asked now
    poll: str = ""
    poll_every: Callable[[Settings], float] = lambda s: 0.0  # seconds between polls; 0: not polled
    # (settings) -> (calls a minute its documents allow, how the budget charts describe the limit)
    rate: Callable[[Settings], tuple[float | None, str]] = lambda s: (None, "")

    def load(self, target: str) -> Any:
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)
