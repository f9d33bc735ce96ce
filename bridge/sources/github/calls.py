"""Every call the bridge makes to GitHub's REST API, declared once (see `bridge/outbound/calls.py`).

Paths are relative to the API root (`GITHUB_API_URL`: `https://api.github.com`, or `https://<host>/api/v3`
on GitHub Enterprise). GitHub is not in the seed documents: each call names its page in GitHub's public REST
reference ("GitHub REST: <section> / <endpoint>"), and the limits follow "Rate limits for the REST API".

Budgets (all shared by every process through the database, `bridge/outbound/budget.py`):
- `github`: every call. It has no count of its own (the primary limit is the token's, 5,000 an hour, and
  GitHub says how much is left on every answer): an answer with `X-RateLimit-Remaining: 0`, or a 403/429
  for it, blocks it until `X-RateLimit-Reset`; a secondary limit (403/429) blocks it for its `Retry-After`,
  or without one for 60 s, doubling while refused ("wait at least one minute ... exponentially increasing");
- `github.content`: every write (POST, PATCH, PUT, DELETE), at most one a second ("wait at least one second
  between each request" for mutative requests);
- `github.content.minute`, `github.content.hour`: requests that create content (a comment), at most 80 a
  minute and 500 an hour (the secondary limit for content-generating requests).
"""

from __future__ import annotations

from bridge.outbound.budget import Limit
from bridge.outbound.calls import Call, CallTable

REPO = "/repos/{owner}/{repo}"
ISSUE = REPO + "/issues/{number}"
READ = ("github",)
WRITE = ("github", "github.content")
CREATE = (*WRITE, "github.content.minute", "github.content.hour")
LIMITS = (
    Limit("github"),
    Limit("github.content", count=1, window=1.0, burst=1),
    Limit("github.content.minute", count=80, window=60.0),
    Limit("github.content.hour", count=500, window=3600.0),
)

TABLE = CallTable(
    "github",
    (
        Call("repo.get", "GET", REPO, "GitHub REST: Repositories / Get a repository", safe=True, budgets=READ),
        Call("issues.list", "GET", REPO + "/issues", "GitHub REST: Issues / List repository issues", True, READ),
        Call("issue.get", "GET", ISSUE, "GitHub REST: Issues / Get an issue", safe=True, budgets=READ),
        # The same body twice leaves the issue as once: a state change is safe to repeat.
        Call("issue.update", "PATCH", ISSUE, "GitHub REST: Issues / Update an issue", safe=True, budgets=WRITE),
        Call(
            "comments.list",
            "GET",
            ISSUE + "/comments",
            "GitHub REST: Issues / Comments / List issue comments",
            safe=True,
            budgets=READ,
        ),
        Call(
            "repo_comments.list",
            "GET",
            REPO + "/issues/comments",
            "GitHub REST: Issues / Comments / List issue comments for a repository",
            safe=True,
            budgets=READ,
        ),
        Call(
            "comment.create",
            "POST",
            ISSUE + "/comments",
            "GitHub REST: Issues / Comments / Create an issue comment",
            safe=False,
            budgets=CREATE,
            creates=True,
        ),
        # Adding a label the issue has changes nothing; removing one it lacks answers 404 (read as done).
        Call(
            "labels.add",
            "POST",
            ISSUE + "/labels",
            "GitHub REST: Issues / Labels / Add labels to an issue",
            safe=True,
            budgets=WRITE,
        ),
        Call(
            "label.remove",
            "DELETE",
            ISSUE + "/labels/{name}",
            "GitHub REST: Issues / Labels / Remove a label from an issue",
            safe=True,
            budgets=WRITE,
        ),
    ),
)
