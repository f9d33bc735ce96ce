"""What the core's helpers (rules, talk-back, side work) ask of the applier that calls them: the few verbs it
offers, as a Protocol, so they depend on it without importing it (`bridge/core/apply.py` imports them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bridge.core.claim import ClaimedItem
from bridge.settings import Settings
from bridge.store import Link, StoredEvent
from bridge.targets.zoho.client import ZohoClient

T = TypeVar("T")


class Acting(Protocol):
    settings: Settings
    client: ZohoClient

    @property
    def dry_run(self) -> bool: ...

    def note(self, item: ClaimedItem, ev: StoredEvent, *notes: str) -> None: ...

    def keep_link(self, item: ClaimedItem, link: Link, **values: Any) -> None: ...

    def send(
        self,
        item: ClaimedItem,
        kind: str,
        send: Callable[[], T],
        *,
        ref: str = "",
        payload: dict[str, Any] | None = None,
        result: Callable[[T], str | None] | None = None,
    ) -> T: ...

    def apply_comment(self, item: ClaimedItem, ev: StoredEvent, mapping: Any) -> None: ...
