"""Writing to the source: one small class per tracker, each turning reverse actions into its API calls.

Every write the bridge makes is recorded in `source_writes` before its echo can matter: comments by the
source's comment id (and, for the race where the webhook outruns our bookkeeping, a hidden marker that the
code appends, not the admin's template), state changes by the value written.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from bridge.reverse import state
from bridge.settings import Settings
from bridge.store import Link

log = logging.getLogger("bridge.reverse")
MARKER_PREFIX = "<!-- issue-bridge:"


def hidden_marker(kind: str, link: Link) -> str:
    """An HTML comment: invisible in GitHub's rendering, and not part of any template an admin edits."""
    return f"{MARKER_PREFIX}{kind} {link.external_id} -->"


class SourceWriter(Protocol):
    source: str

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str: ...

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None: ...

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]: ...


class GitHubWriter:
    source = "github"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        from bridge.sources.github_api import GitHubClient

        self.engine = engine
        self.client = GitHubClient(settings.github_token, base_url=settings.github_api_url, max_wait=60.0)

    @staticmethod
    def _where(fields: dict[str, Any]) -> tuple[str, int]:
        return str(fields["repository"]), int(fields["number"])

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        repo, number = self._where(fields)
        comment = self.client.add_comment(repo, number, f"{text}\n\n{hidden_marker(kind, link)}")
        comment_id = str(comment["id"])
        state.record_write(self.engine, self.source, link.external_id, "comment", comment_id)
        return comment_id

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None:
        repo, number = self._where(fields)
        needle = hidden_marker(kind, link)
        for comment in self.client.issue_comments(repo, number):
            if needle in str(comment.get("body") or ""):
                state.record_write(self.engine, self.source, link.external_id, "comment", str(comment["id"]))
                return str(comment["id"])
        return None

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
        """Make the issue match `actions`; only what differs from its current state is sent."""
        repo, number = self._where(fields)
        current = self.client.get_issue(repo, number)  # the source's state now, not our memory of it
        labels = {str(lb.get("name")) for lb in current.get("labels") or [] if isinstance(lb, dict)}
        done: list[str] = []
        if "close" in actions and current.get("state") != "closed":
            state.record_write(self.engine, self.source, link.external_id, "state", "state=closed")
            self.client.set_state(repo, number, "closed", actions["close"])
            done.append(f"closed ({actions['close']})")
        if actions.get("reopen") and current.get("state") != "open":
            state.record_write(self.engine, self.source, link.external_id, "state", "state=open")
            self.client.set_state(repo, number, "open", "reopened")
            done.append("reopened")
        if actions.get("add_label") and actions["add_label"] not in labels:
            state.record_write(self.engine, self.source, link.external_id, "state", f"labels+={actions['add_label']}")
            self.client.add_labels(repo, number, [actions["add_label"]])
            done.append(f"label {actions['add_label']} added")
        if actions.get("remove_label") and actions["remove_label"] in labels:
            state.record_write(
                self.engine, self.source, link.external_id, "state", f"labels-={actions['remove_label']}"
            )
            self.client.remove_label(repo, number, actions["remove_label"])
            done.append(f"label {actions['remove_label']} removed")
        return done


def writer_for(source: str, settings: Settings, engine: Engine) -> SourceWriter | None:
    if source == "github":
        return GitHubWriter(settings, engine)
    return None  # Bugzilla and BugHerd writers: not built yet (see the closing note of issue 16)


def missing_credential(source: str, settings: Settings) -> str | None:
    """What `mappings check` reports when a mapping asks to talk back but the token is missing."""
    needs = {
        "github": ("GITHUB_TOKEN", settings.github_token),
        "bugzilla": ("BUGZILLA_API_KEY", settings.bugzilla_api_key),
    }
    needs["bugherd"] = ("BUGHERD_API_KEY", settings.bugherd_api_key)
    name, value = needs.get(source, ("", "x"))
    return f"{name} is not set: back-links and reverse sync need it" if not value else None
