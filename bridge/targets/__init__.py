"""Where issues go: one package per target system, each offering the delivery core the `Target` port.

The core (bridge/core) speaks only these verbs; a target's package holds everything about its system:
its client and call table, its dialects, its auth, its budget and its self-test. Zoho (Projects v3 and
BugTracker) is the one target today (`bridge/targets/zoho`).
"""

from __future__ import annotations

from typing import Any, Protocol

from bridge.mapping.model import IssueDraft


class Target(Protocol):
    """What the delivery core asks of a target. Every write is one declared call; a create is never repeated
    blindly (a create in doubt is found by its marker first: `find_issue`, `find_marked_issues`)."""

    dry_run: bool
    dialect: str

    # the item's issue
    def create_issue(self, draft: IssueDraft) -> str: ...

    def update_issue(
        self,
        draft: IssueDraft,
        issue_id: str,
        *,
        applied_tags: tuple[str, ...] | None = None,
        omit: frozenset[str] | set[str] = frozenset(),
    ) -> None: ...

    def close_issue(self, draft: IssueDraft, issue_id: str, status_name: str) -> None: ...

    def delete_issue(self, portal: str, project: str, issue_id: str) -> None: ...

    def move_issue(self, portal: str, project: str, issue_id: str, to_project: str) -> None: ...

    def get_issue(self, portal: str, project: str, issue_id: str) -> dict[str, Any] | None: ...

    # found by the marker every issue carries (the crash window, late copies, adoption)
    def find_issue(self, draft: IssueDraft, *, created_after: float | None = None) -> str | None: ...

    def find_marked_issues(self, draft: IssueDraft, *, created_after: float | None) -> list[str]: ...

    # comments
    def add_comment(
        self, portal: str, project: str, issue_id: str, text: str, *, source_url: str | None = None
    ) -> str: ...

    def update_comment(
        self, portal: str, project: str, issue_id: str, comment_id: str, text: str, *, source_url: str | None = None
    ) -> None: ...

    def delete_comment(self, portal: str, project: str, issue_id: str, comment_id: str) -> None: ...

    def find_comment(self, portal: str, project: str, issue_id: str, needle: str) -> str | None: ...

    def comments_of(self, portal: str, project: str, issue_id: str) -> list[tuple[str, str]]: ...


__all__ = ["Target"]
