"""Every call the bridge makes to BugHerd's API v2, declared once (see `bridge/outbound/calls.py`).

Paths are relative to `BUGHERD_API_URL`; seed 002 is BugHerd's API v2 page.

Budget `bugherd`: every call, "an average of 60 requests per minute, with bursts of up to 10 in quick
succession" (002:29), one budget for the API key shared by beat, every worker and a backfill (a rate with
bursts, `bridge/outbound/budget.py`). A 429 anyway (another client of the same key) blocks it for every
process: its `Retry-After` when it sends one (002 documents none), else 10 s doubling while refused.
"""

from __future__ import annotations

from bridge.outbound.budget import Limit
from bridge.outbound.calls import Call, CallTable

P = "/api_v2/projects/{project}"
TASK = P + "/tasks/{task}"
H = ("bugherd",)
LIMITS = (Limit("bugherd", count=60, window=60.0, burst=10),)

TABLE = CallTable(
    "bugherd",
    (
        Call("tasks.list", "GET", P + "/tasks.json", "002:81-92 (List tasks; 100 a page, meta.count)", True, H),
        Call("task.get", "GET", TASK + ".json", "002:93-112 (Show task)", safe=True, budgets=H),
        Call("task.update", "PUT", TASK + ".json", "002:136-164 (Update task)", safe=True, budgets=H),
        Call("comments.list", "GET", TASK + "/comments.json", "002:177-179 (List comments)", True, H),
        Call(
            "comment.create",
            "POST",
            TASK + "/comments.json",
            "002:180-185 (Create comment)",
            safe=False,
            budgets=H,
            creates=True,
        ),
        Call("webhooks.list", "GET", "/api_v2/webhooks.json", "002:207-209 (List webhooks)", True, H),
        Call("webhook.create", "POST", "/api_v2/webhooks.json", "002:210-214 (Create webhook)", safe=False, budgets=H),
    ),
)
