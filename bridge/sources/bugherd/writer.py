"""Writing to BugHerd (back-links, copied Zoho comments, closing the loop) through `BugHerdClient`.

BugHerd API v2 as seed 002 documents it: `POST …/tasks/{t}/comments.json` with `{"comment": {"text",
"email"}}` (002:180-185) and `PUT …/tasks/{t}.json` with `{"task": {"status"}}` (002:136-164). Every
documented comment names its author (`user_id` or `email`): the bridge writes as BUGHERD_BRIDGE_EMAIL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.bugherd.api import BugHerdClient, BugHerdError, _unwrap
from bridge.sources.http import item_hold
from bridge.sources.writers import WriteRefused, plain_marker
from bridge.store import Link
from bridge.store import reverse as state

BUGHERD_STATUS_IDS = {"backlog": 0, "todo": 1, "doing": 2, "done": 4, "closed": 5}  # seed 002:112


class BugHerdWriter:
    source = "bugherd"

    def __init__(self, settings: Settings, engine: Engine, budgets: Budgets, via: str = "comment") -> None:
        self.engine = engine
        self.email = settings.bugherd_bridge_email
        self.client = BugHerdClient(
            settings.bugherd_api_key,
            budgets=budgets,
            base_url=settings.bugherd_api_url,
            hold=item_hold(settings.item_lease_seconds),
        )

    @staticmethod
    def _task(fields: dict[str, Any]) -> str:
        return f"projects/{fields['project_id']}/tasks/{fields['task_id']}"

    def post_comment(self, link: Link, fields: dict[str, Any], text: str, kind: str) -> str:
        body = {"comment": {"text": f"{text}\n\n{plain_marker(kind, link)}", "email": self.email}}
        answer = self._write("POST", f"{self._task(fields)}/comments.json", body)
        comment = _unwrap(answer, "comment") or {}
        if comment.get("id") is None:  # the seed documents no answer: look the comment up by its marker
            return self.find_comment(link, fields, kind) or "comment"
        comment_id = str(comment["id"])
        state.record_write(self.engine, self.source, link.external_id, "comment", comment_id)
        return comment_id

    def find_comment(self, link: Link, fields: dict[str, Any], kind: str) -> str | None:
        needle = plain_marker(kind, link)
        for comment in self.client.task_comments(fields["project_id"], fields["task_id"]):
            if needle in str(comment.get("text") or ""):
                state.record_write(self.engine, self.source, link.external_id, "comment", str(comment["id"]))
                return str(comment["id"])
        return None

    def apply(self, link: Link, fields: dict[str, Any], actions: dict[str, Any]) -> list[str]:
        wanted = str(actions.get("status") or "")
        if not wanted:
            return []
        current = self.client.task(fields["project_id"], fields["task_id"])
        if (current.get("status") or "feedback") == wanted:
            return []
        # The echo (`task_update`) changes the column and its id; both are ours.
        state.record_write(self.engine, self.source, link.external_id, "state", f"status={wanted}")
        if wanted in BUGHERD_STATUS_IDS and current.get("status_id") != BUGHERD_STATUS_IDS[wanted]:
            state.record_write(
                self.engine, self.source, link.external_id, "state", f"status_id={BUGHERD_STATUS_IDS[wanted]}"
            )
        self._write("PUT", f"{self._task(fields)}.json", {"task": {"status": wanted}})
        return [f"status {wanted}"]

    def _write(self, method: str, path: str, body: dict[str, Any]) -> Any:
        try:
            return self.client.request(method, path, body)
        except BugHerdError as exc:
            if exc.status in (404, 422):  # the task is gone, or BugHerd will not take what was written
                raise WriteRefused(exc.reason, status=exc.status) from None
            raise
