"""Writing to GitHub (back-links, copied Zoho comments, closing the loop) through `GitHubClient`.

A comment is `POST …/issues/{n}/comments` with a hidden marker; a state is `PATCH …/issues/{n}`; labels are
added and removed. Only what differs from the issue now is sent. Every write is paced by the shared GitHub
budgets (one write a second; 80 comments a minute, 500 an hour) and recorded in `source_writes` first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.github.api import GitHubClient, GitHubError
from bridge.sources.http import item_hold
from bridge.sources.writers import WriteRefused, hidden_marker
from bridge.store import Link
from bridge.store import reverse as state

REFUSED = (404, 410, 422)  # gone, deleted, or a body GitHub will not take: repeating cannot help


class GitHubWriter:
    source = "github"

    def __init__(self, settings: Settings, engine: Engine, budgets: Budgets, via: str = "comment") -> None:
        self.engine = engine
        self.client = GitHubClient(
            settings.github_token,
            budgets=budgets,
            base_url=settings.github_api_url,
            hold=item_hold(settings.item_lease_seconds),
        )

    @staticmethod
    def _where(fields: dict[str, Any]) -> tuple[str, int]:
        return str(fields["repository"]), int(fields["number"])

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        repo, number = self._where(fields)
        try:
            comment = self.client.add_comment(repo, number, f"{text}\n\n{hidden_marker(kind, link)}")
        except GitHubError as exc:
            raise _refused(exc) from None
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
        try:
            return self._apply(link, fields, actions)
        except GitHubError as exc:
            raise _refused(exc) from None

    def _apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
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


def _refused(exc: GitHubError) -> Exception:
    """A refusal of what was written (the issue is gone, the body invalid) is `WriteRefused`; a refused token or
    permission stays a `GitHubError` (fixing the setting fixes it)."""
    if exc.status in REFUSED:
        return WriteRefused(exc.reason, status=exc.status)
    return exc
