"""Every call the bridge makes to Bugzilla's REST API, declared once (see `bridge/outbound/calls.py`).

Paths are relative to `BUGZILLA_URL`. Seed 003 is Bugzilla's `bug.rst` (the bug resource); the comment and
attachment reads are Bugzilla's `comment.rst` and `attachment.rst`, which the seeds do not hold (003:1928
refers to the comments resource by name).

Budget `bugzilla`: every call. Bugzilla documents no rate; an installation in front of a proxy answers 429 or
503 with `Retry-After`, which blocks the budget for every process (capped), and a network error, a timeout
or a 5xx opens its outage breaker.
"""

from __future__ import annotations

from bridge.outbound.budget import Limit
from bridge.outbound.calls import Call, CallTable

B = ("bugzilla",)
LIMITS = (Limit("bugzilla"),)

TABLE = CallTable(
    "bugzilla",
    (
        Call("bug.get", "GET", "/rest/bug/{bug}", "003:1101-1125 (Get Bug), 003:1214-1217 (include_fields)", True, B),
        Call("bugs.search", "GET", "/rest/bug", "003:1498-1631 (Search Bugs; limit/offset 003:1563-1573)", True, B),
        # A PUT carries a comment (003:1909-1922), which is not idempotent: never repeated blindly.
        Call("bug.update", "PUT", "/rest/bug/{bug}", "003:1813-2176 (Update Bug)", safe=False, budgets=B),
        Call(
            "comments.list",
            "GET",
            "/rest/bug/{bug}/comment",
            "not in the seeds: Bugzilla REST comment.rst (Get Comments; 003:1928 names it)",
            safe=True,
            budgets=B,
        ),
        Call(
            "attachment.get",
            "GET",
            "/rest/bug/attachment/{attachment}",
            "not in the seeds: Bugzilla REST attachment.rst (Get Attachment); read by the client's fetch_attachment",
            safe=True,
            budgets=B,
        ),
    ),
)
