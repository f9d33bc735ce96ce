"""Every call the bridge makes to Zoho, declared once (see `bridge/outbound/calls.py`).

Paths are relative to the API root (`ZOHO_API_BASE`; the accounts server for `zoho.accounts`). Seed lines:
001 = Zoho Projects REST API v3, 000 = Zoho BugTracker. Every API call spends the shared `zoho` budget; the
token endpoint has its own rule (10 access tokens per 10 minutes, 001:484-491), kept by `auth.py`.
"""

from __future__ import annotations

from bridge.outbound.calls import Call, CallTable

V3 = "/api/v3/portal/{portal}"
ISSUES = V3 + "/projects/{project}/issues"
ISSUE = ISSUES + "/{issue}"
BUGS = V3 + "/projects/{project}/bugs"
BUG = BUGS + "/{bug}"
Z = ("zoho",)

PROJECTS = CallTable(
    "zoho.projects",
    (
        Call("portals.list", "GET", "/api/v3/portals", "001:745-779", safe=True, budgets=Z),
        Call("projects.list", "GET", V3 + "/projects", "001:1002-1080", safe=True, budgets=Z),
        Call("fields.list", "GET", V3 + "/settings/fields", "001:17082-17171", safe=True, budgets=Z),
        Call(
            "options.list",
            "GET",
            "/restapi/portal/{portal}/projects/{project}/bugs/defaultfields",
            "no seed: Zoho's own wrapper (zoho-facts.md, option ids)",
            safe=True,
            budgets=Z,
        ),
        Call("users.list", "GET", V3 + "/projects/{project}/users", "001:13526-13626", safe=True, budgets=Z),
        Call("users.one", "GET", V3 + "/projects/{project}/users/{email}", "001:13627-13661", safe=True, budgets=Z),
        Call("issues.list", "GET", ISSUES, "001:3467-3555", safe=True, budgets=Z),
        Call("issue.create", "POST", ISSUES, "001:3590-3777", safe=False, budgets=Z, creates=True),
        Call("issue.get", "GET", ISSUE, "001:3555-3589", safe=True, budgets=Z),
        Call("issue.update", "PATCH", ISSUE, "001:3778-3939", safe=True, budgets=Z),
        Call("issue.delete", "DELETE", ISSUE, "001:3940-3969", safe=True, budgets=Z),
        Call("issue.description", "GET", ISSUE + "/description", "001:3970-4006", safe=True, budgets=Z),
        Call("issue.move", "POST", ISSUE + "/move", "001:4007-4062", safe=False, budgets=Z),
        Call("issue.attachments", "GET", ISSUE + "/attachments", "001:5130-5194", safe=True, budgets=Z),
        Call("issue.attach", "POST", ISSUE + "/attachments", "001:5195-5241", safe=False, budgets=Z),
        Call("comments.list", "GET", ISSUE + "/comments", "001:5278-5350", safe=True, budgets=Z),
        Call("comment.create", "POST", ISSUE + "/comments", "001:5438-5514", safe=False, budgets=Z, creates=True),
        Call("comment.update", "PATCH", ISSUE + "/comments/{comment}", "001:5514-5590", safe=True, budgets=Z),
        Call("comment.delete", "DELETE", ISSUE + "/comments/{comment}", "001:5590-5624", safe=True, budgets=Z),
        Call("attachment.upload", "POST", V3 + "/attachments", "001:12288-12361", safe=False, budgets=Z),
    ),
)

BUGTRACKER = CallTable(
    "zoho.bugtracker",
    (
        Call("portals.list", "GET", "/api/v3/portals", "000:437", safe=True, budgets=Z),
        Call("projects.list", "GET", V3 + "/projects", "000:34", safe=True, budgets=Z),
        Call(
            "options.list",
            "GET",
            "/restapi/portal/{portal}/projects/{project}/bugs/defaultfields",
            "no seed: Zoho's own wrapper (zoho-facts.md, option ids)",
            safe=True,
            budgets=Z,
        ),
        Call("users.list", "GET", V3 + "/projects/{project}/users", "000:39", safe=True, budgets=Z),
        Call("bugs.list", "GET", BUGS, "000:147, 1267-1298", safe=True, budgets=Z),
        Call("bugs.search", "GET", BUGS + "/search", "000:563-583", safe=True, budgets=Z),
        Call("bug.create", "POST", BUGS, "000:149, 157-250", safe=False, budgets=Z, creates=True),
        Call("bug.get", "GET", BUG, "000:148", safe=True, budgets=Z),
        Call("bug.update", "PUT", BUG, "000:150, 251-343", safe=True, budgets=Z),
        Call("bug.delete", "DELETE", BUG, "000:151", safe=True, budgets=Z),
        Call("comments.list", "GET", BUG + "/comments", "000:352", safe=True, budgets=Z),
        Call("comment.create", "POST", BUG + "/comments", "000:354", safe=False, budgets=Z, creates=True),
        Call("comment.update", "PUT", BUG + "/comments/{comment}", "000:355", safe=True, budgets=Z),
        Call("comment.delete", "DELETE", BUG + "/comments/{comment}", "000:356", safe=True, budgets=Z),
        Call("bug.attachments", "GET", BUG + "/attachments", "000:387", safe=True, budgets=Z),
        Call("bug.attach", "POST", BUG + "/attachments", "000:382-428", safe=False, budgets=Z),
    ),
)

ACCOUNTS = CallTable(
    "zoho.accounts",
    (
        # The consent page: the operator's browser opens it from the URL `zoho connect` (or /admin/zoho) gives;
        # the bridge itself never requests it.
        Call("grant.consent", "GET", "/oauth/v2/auth", "001:264-281", safe=True),
        Call("token", "POST", "/oauth/v2/token", "001:404-493, 000:682-720", safe=False),
        Call("revoke", "POST", "/oauth/v2/token/revoke", "001:457-476", safe=True),
    ),
)

TABLES = {"projects": PROJECTS, "bugtracker": BUGTRACKER}
