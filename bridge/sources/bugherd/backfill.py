"""Backfill reader for BugHerd: a project's tasks (archived ones included) and their comments.

`GET /api_v2/projects/{id}/tasks.json?page=N` (100 a page, `meta.count` the total, 002:81-92) and, per
task, `GET …/tasks/{id}/comments.json` (002:177-179), both paged until an empty page or the count. Every
request spends the `bugherd` budget that beat and every worker share (60 a minute, bursts of 10, 002:29),
so a backfill of N tasks takes about 2N seconds of BugHerd time beside live work, never its own sixty; a
wait (the budget, a 429 another client of the key caused) is waited out in place and reported once.

Task and comment objects are wrapped in the webhooks' bodies and normalized by `bridge.sources.bugherd`.
A listed task without its description and status (a shortened list) is fetched whole first.
Dedup keys: `backfill:task:<id>:<updated_at>` and `backfill:task-comment:<id>:<updated_at>`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine

from bridge.backfill.runner import Batch, Item, ReadEvent
from bridge.events import NormalizedEvent
from bridge.outbound.budget import Budgets
from bridge.settings import Settings
from bridge.sources.bugherd.api import BugHerdClient, BugHerdError
from bridge.sources.bugherd.webhook import NAME, BugHerdSource
from bridge.sources.spec import SourceReadError

NOTE = "backfilled from BugHerd"
_NORMALIZER = BugHerdSource("backfill: parse only, never verifies")


class BugHerdReader:
    source = NAME

    def __init__(self, client: BugHerdClient, project_id: int) -> None:
        self.client, self.project_id = client, project_id
        self.calls = 0
        self._ids: set[str] = set()  # tasks read by this run

    @property
    def source_calls(self) -> int:
        return self.calls

    def scope(self) -> dict[str, Any]:
        return {"project": self.project_id}

    def batches(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Pages until an empty page or `meta.count` tasks (a short page is not the last when the count says
        more); a task already read (pages shift while tasks are added) is not read again."""
        cursor = dict(cursor or {"page": 1, "seen": 0})
        while True:
            self.calls += 1
            tasks, total = self.client.tasks_page(self.project_id, cursor["page"])
            fresh = [t for t in tasks if str(t.get("id")) not in self._ids]
            if not fresh:
                return
            self._ids.update(str(t.get("id")) for t in fresh)
            items = [self._item(task) for task in fresh]
            cursor["page"] += 1
            cursor["seen"] += len(fresh)
            yield Batch(items, dict(cursor), len(fresh), total)
            if total is not None and cursor["seen"] >= total:
                return

    def _item(self, listed: dict[str, Any]) -> Item:
        task = {"project_id": self.project_id, **listed}
        if "description" not in task and "status" not in task:
            self.calls += 1
            task = {"project_id": self.project_id, **self.client.task(self.project_id, task["id"])}
        body = {"task": task}
        event = _normalize(body, "task_update")
        events = [ReadEvent(event, f"backfill:task:{task['id']}:{task.get('updated_at')}", body)]
        self.calls += 1
        for comment in self.client.task_comments(self.project_id, task["id"]):
            comment_body = {"comment": {**comment, "task": task}}
            updated = comment.get("updated_at") or comment.get("created_at")
            key = f"backfill:task-comment:{comment['id']}:{updated}"
            events.append(ReadEvent(_normalize(comment_body, "comment"), key, comment_body))
        return Item(str(task["id"]), events)


def _normalize(body: dict[str, Any], event_hint: str) -> NormalizedEvent:
    event = _NORMALIZER.parse(json.dumps(body).encode(), {}, event_hint)
    return dataclasses.replace(event, event_name=f"backfill.{event_hint}", notes=(*event.notes, NOTE))


def read_item(
    settings: Settings, engine: Engine, budgets: Budgets, item_key: str, fields: dict[str, Any], hold: float
) -> list[ReadEvent]:
    """One task now, its state and its comments (`issue-bridge resync`); its project from its stored events."""
    if not settings.bugherd_api_key:
        raise SourceReadError("BUGHERD_API_KEY is not set: the task is read through BugHerd's API")
    project = fields.get("project_id")
    if not project:
        raise SourceReadError(f"no stored event of task {item_key} names its BugHerd project")
    try:
        client = BugHerdClient(settings.bugherd_api_key, budgets=budgets, base_url=settings.bugherd_api_url,
                               hold=hold)  # fmt: skip
        task = client.task(project, item_key)
        return list(BugHerdReader(client, int(project))._item(task).events)
    except BugHerdError as exc:
        raise SourceReadError(str(exc)) from None
