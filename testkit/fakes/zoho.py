"""FakeZoho: a real HTTP server playing Zoho Accounts (OAuth) and the Zoho Projects / BugTracker APIs.

End-to-end tests start it in a background thread on 127.0.0.1 (random free port) and point the product at
``fake.base_url`` for both the accounts URL and the API base. It is deliberately STRICT: everything not in
the seed documents is rejected the way Zoho rejects it, so the product is caught sending unknown fields,
wrong methods, option values not given as ``{"id": ...}``, a missing ``name``, missing or expired tokens...

Ground truth (the seed documents in /work/shared/seeds):

* ``001_f6d22badf61347f1.txt`` (Zoho Projects API v3): error shapes lines 39-125, OAuth and token limits
  lines 126-493, custom field value formats lines 494-740, portals lines 741-790, Issues lines 3375-5624
  (list 3467, get 3555, create 3590, update 3778, delete 3940, comments 5274-5624), module fields 17088.
* ``000_8e624fe291c28676.txt`` (Zoho BugTracker API): bug fields by name (section "2. Bugs"), comments,
  search (section "9. Search & Filters"), ``X-RateLimit-*`` headers ("Rate Limits"), error codes 6001-6010
  and the ``{"code", "message", "details": {"field", "error"}}`` error shape ("Error Codes").

Where the documents are silent the fake has switchable VARIANTS (constructor arguments, see ``VARIANTS``):
``custom_field`` (issue custom fields by API name: ``accepted`` / ``ignored`` silently / ``refused`` with 400),
``filter_api_name`` (an issue-list filter naming a field by API name: ``accepted`` / ``refused``; by ``cfid``
is documented and always accepted), ``status_key`` (the v1 defaultfields status list under
``status_details`` or Zoho's own wrapper's ``status_deatils``), ``date_only_due`` (a ``YYYY-MM-DD`` due date
on v3: ``accepted`` / ``refused``; the documented timestamp is always accepted). ``host_dialect`` makes the
server one dialect's host only (BugTracker lives on its own host, seed 000:7-8). ``refuse_tokens`` answers
every API call as if the token were invalid (a scope or data-centre mistake). Projects v3 rate limiting
follows seed 001:737-739: ``v3_limit`` calls per ``v3_window`` seconds, then every request answers a
header-less 429 for ``block_seconds``.

Option ids are the same in every project: ``1752587000000000000 + 10000 * F + i`` where ``i`` is the
0-based position of the option in its list and ``F`` is status=1, severity=2, classification=3, module=4,
priority=5, is_it_reproducible=6 (so status "Open" is "1752587000000010000", "Closed" is
"1752587000000010004"). Users get zpuids "1752587000000090001", ...; custom fields get ids
"1752587000000080001", ...; issues, bugs and comments get ids from "1752587000000100001" upwards (one
counter, never reused, not even after ``reset()``).
"""

from __future__ import annotations

import contextlib
import copy
import http
import json
import math
import random
import re
import secrets
import sys
import threading
import time
import traceback
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlsplit

from bridge.targets.zoho import calls as zoho_calls
from testkit.fakes.server import FakeServer

DEFAULT_PROJECTS = {"1752587000000097024": {"name": "Web"}, "1752587000000098001": {"name": "API"}}
DEFAULT_OPTIONS = {
    "status": ["Open", "In Progress", "To be Tested", "Reopened", "Closed"],
    "severity": ["None", "Minor", "Major", "Critical", "Blocker"],
    "classification": ["None", "Bug", "Security", "Enhancement", "Performance", "Feature(New)"],
    "module": ["None", "Authentication", "UI", "Checkout", "API"],
    "priority": ["None", "Low", "Medium", "High", "Critical"],
    "is_it_reproducible": ["Always", "Sometimes", "Rarely", "Unable", "Not applicable"],
}
FIELD_INDEX = {f: i + 1 for i, f in enumerate(DEFAULT_OPTIONS)}  # status=1 ... is_it_reproducible=6
DEFAULT_USERS = [
    {"zpuid": "1752587000000090001", "name": "Alice Admin", "email": "alice@example.com", "role": "admin"},
    {"zpuid": "1752587000000090002", "name": "Bob Dev", "email": "bob@example.com", "role": "Employee"},
]
ID_BASE = 1752587000000000000
DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN = "test-secret", "1000.refresh.test"
FAULT_DEFAULTS = dict(error_500_rate=0.0, error_429_rate=0.0, slow_rate=0.0, slow_seconds=0.0)
FAULT_DEFAULTS.update(retry_after_seconds=1, error_500_after_commit_rate=0.0)
INTERNAL_MSG = "Internal server error. Please contact support for further details."
API_DOMAIN = "https://www.zohoapis.com"
ACCESS_DENIED = "You have made too many requests continuously. Please try again after some time."
SCOPE = "ZohoProjects.portals.ALL ZohoProjects.projects.ALL ZohoProjects.bugs.ALL ZohoProjects.users.ALL "
SCOPE += "ZohoProjects.custom_fields.ALL ZohoBugtracker.projects.ALL ZohoBugtracker.bugs.ALL"
TOKENS_PER_WINDOW, TOKEN_WINDOW_SECONDS = 10, 600  # seed 001 lines 487-491
VARIANTS = {
    "custom_field": ("accepted", "ignored", "refused"),
    "filter_api_name": ("accepted", "refused"),
    "status_key": ("status_details", "status_deatils"),
    "date_only_due": ("accepted", "refused"),
    # `GET …/bugs/{id}` (seed 000:148) documents no answer: wrapped like the create's, or the bug itself
    "bug_answer": ("wrapped", "bare"),
    # How Projects v3 throttles: the documented header-less 429 (001:737-739), or as live portals do
    # (zoho-facts.md): HTTP 400 or even 200 with URL_ROLLING_THROTTLES_LIMIT_EXCEEDED naming the minutes.
    "throttle": ("429", "400", "200"),
    # The issue list's page_info: as documented (001:3554: per_page, page, sort_by; no has_next_page), or
    # with has_next_page as other v3 lists carry it (comments 001:5348, users 001:13626).
    "issue_page_info": ("documented", "has_next_page"),
    # The 11th access token within 10 minutes: deletes the oldest (001:486, 491), or is refused as some
    # accounts servers answer a burst ("Access Denied", too many requests).
    "token_limit": ("delete_oldest", "refuse"),
    # `settings/fields`: the field shape 001:16991 shows (`…/module/{id}/fields`: api_name, id, display_name,
    # type), the empty object 001:17171 shows for settings/fields itself, or an extended shape (is_default,
    # column_name) no seed shows.
    "fields_answer": ("module_fields", "empty", "extended"),
    # BugTracker search (000:563-583) documents no answer: bugs as the list shows them (no description), or
    # with their description.
    "bt_search_fields": ("brief", "full"),
    # A missing issue or bug: 404 (v3: INVALID_PARAMETER_VALUE on `issue`; BugTracker 6006), or the same with
    # HTTP 400, which the documents do not rule out (001:39-125 lists 400 for invalid parameter values).
    "missing_issue": ("404", "400"),
}
V3_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$")
RATE_WINDOW_SECONDS = 60.0
BT_DEFAULT_LIMIT = 100  # seed 000 "API Call Limits": Free plan, 100 calls per minute

# Projects v3 issue keys. Create: seed 001 lines 3600-3720; update (PATCH): lines 3788-3895.
V3_CREATE_KEYS = {"name", "description", "flag", "associated_teams", "assignee", "status", "due_date"}
V3_CREATE_KEYS |= {"release_milestone", "affected_milestone", "severity", "is_it_reproducible", "module"}
V3_CREATE_KEYS |= {"classification", "attachments", "tags", "followers", "reminder", "rate_per_hour"}
V3_CREATE_KEYS = frozenset(V3_CREATE_KEYS | {"cost_rate_per_hour"})
V3_UPDATE_KEYS = V3_CREATE_KEYS - {"attachments", "followers", "reminder"}
V3_TYPED_KEYS = dict(description=str, due_date=str, attachments=list, followers=list, reminder=dict)
V3_OPTION_KEYS = ("status", "severity", "is_it_reproducible", "classification", "module")
V3_COMMENT_KEYS = frozenset({"comment", "notify_users", "attachment_ids"})  # seed 001 lines 5438-5520
# BugTracker bug fields by name: seed 000 "Bug Fields"; resolution_comments appears in its update example.
BT_CREATE_KEYS = {"title", "description", "priority", "severity", "status", "assignee", "reporter", "module"}
BT_CREATE_KEYS |= {"classification", "reproducible", "milestone", "affected_version", "fix_version"}
BT_CREATE_KEYS = frozenset(BT_CREATE_KEYS | {"flag", "due_date"})
BT_UPDATE_KEYS = BT_CREATE_KEYS | {"resolution_comments"}
BT_TEXT_KEYS = ("description", "milestone", "affected_version", "fix_version", "resolution_comments")
BT_FLAGS = ("Bug", "Feature", "Enhancement", "Task")
BT_COMMENT_KEYS = frozenset({"content", "is_private"})


def _iso(t: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def v3_error(status, title, message=None, field_name=None, error_type="FIELDS_VALIDATION_ERROR") -> dict:
    """Projects v3 error body, seed 001 lines 39-125."""
    detail = {"message": message, "field_name": field_name}
    detail = {k: v for k, v in detail.items() if v is not None}
    err = {"status_code": str(status), "title": title, "error_type": error_type, "details": [detail]}
    return {"error": err}


THROTTLE_TITLE = "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED"


def throttle_body(minutes: float | None, *, limit: int = 100, window_minutes: int = 2) -> dict:
    """The throttle as live portals answer it (zoho-facts.md, quoting several clients and a field report):
    HTTP 400 (once even 200), the title URL_ROLLING_THROTTLES_LIMIT_EXCEEDED, `details` an object whose
    message names the lockout in minutes ("Try again after 22 minutes."); `minutes=None` names none."""
    message = f"Cannot execute more than {limit} requests per API in {window_minutes} minutes."
    if minutes is not None:
        message += f" Try again after {minutes:g} minutes."
    err = {"status_code": 400, "title": THROTTLE_TITLE, "error_type": "OPERATIONAL_VALIDATION_ERROR"}
    return {"error": {**err, "details": {"message": message}}}


def bt_error(code: int, message: str, field: str = "", error: str = "") -> dict:
    """BugTracker error body, seed 000 "Error Response Format"."""
    return {"code": code, "message": message, "details": {"field": field, "error": error}}


class ApiError(Exception):
    throttled = False

    def __init__(self, status: int, body: dict | None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, v3_error(400, "INVALID_PARAMETER_VALUE", message, field))


def _bt_bad(field: str, error: str) -> ApiError:
    return ApiError(400, bt_error(6008, "Validation Failed", field, error))


def _is_scalar(v) -> bool:
    return isinstance(v, str | int | float | bool)


_P = r"^/api/v3/portal/(?P<portal>[^/]+)"
_PP = _P + r"/projects/(?P<project>[^/]+)"
_I, _B = _PP + r"/issues/(?P<issue>[^/]+)", _PP + r"/bugs/(?P<issue>[^/]+)"
_C = r"/comments/(?P<comment>[^/]+)/?$"
_R = r"^/restapi/portal/(?P<portal>[^/]+)/projects/(?P<project>[^/]+)"
_ROUTE_SPECS = [  # (path regex, dialect, "METHOD:handler ..."); the first matching regex wins
    (r"^/api/v3/portals/?$", "projects", "GET:_portals"),
    (_P + r"/projects/?$", "projects", "GET:_projects"),
    (_PP + r"/users/?$", "projects", "GET:_users"),
    (_PP + r"/users/(?P<user>[^/]+)/?$", "projects", "GET:_user_detail"),
    (_P + r"/settings/fields/?$", "projects", "GET:_fields"),
    (_PP + r"/issues/?$", "projects", "GET:_v3_list POST:_v3_create"),
    (_I + r"/?$", "projects", "GET:_v3_get PATCH:_v3_update DELETE:_delete"),
    (_I + r"/description/?$", "projects", "GET:_v3_description"),
    (_I + r"/move/?$", "projects", "POST:_v3_move"),
    (_I + r"/comments/?$", "projects", "GET:_v3_comments POST:_v3_comment_create"),
    (_I + _C, "projects", "GET:_comment_get PATCH:_v3_comment_update DELETE:_comment_delete"),
    (_R + r"/bugs/defaultfields/?$", "projects", "GET:_defaultfields"),
    (_PP + r"/bugs/?$", "bugtracker", "GET:_bt_list POST:_bt_create"),
    (_PP + r"/bugs/search/?$", "bugtracker", "GET:_bt_search"),
    (_B + r"/?$", "bugtracker", "GET:_bt_get PUT:_bt_update DELETE:_delete"),
    (_B + r"/comments/?$", "bugtracker", "GET:_bt_comments POST:_bt_comment_create"),
    (_B + _C, "bugtracker", "GET:_comment_get PUT:_bt_comment_update DELETE:_comment_delete"),
]
ROUTES = [(re.compile(p), d, dict(x.split(":") for x in m.split())) for p, d, m in _ROUTE_SPECS]


class _Ctx:
    """One API request as the handlers see it."""

    def __init__(self, method, params, query, raw, ctype, dialect):
        self.method, self.params, self.query, self.raw, self.ctype = method, params, query, raw, ctype
        self.dialect = dialect
        self.portal, self.project = params.get("portal"), params.get("project")
        self.issue, self.comment = params.get("issue"), params.get("comment")
        self.user = params.get("user")

    def q(self, name: str) -> str | None:
        vals = self.query.get(name)
        return vals[-1] if vals else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeZoho/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: stop() never waits on idle keep-alives

    def log_message(self, format, *args):  # silence the default stderr request log
        pass

    def __getattr__(self, name):  # every method (GET, PATCH, COPY, ...) reaches the router (it answers 405s)
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        status, payload, headers = self.server.fake._handle(self.command, self.path, raw, self.headers)
        if status is None:  # an outage that does not answer at all: the connection is closed unanswered
            self.close_connection = True
            return
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        if status != 204:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and status != 204 and self.command != "HEAD":
            self.wfile.write(data)


class _KeepAliveHandler(_Handler):
    """HTTP/1.1 with persistent connections, as Zoho's servers answer (`FakeZoho(keep_alive=True)`: the benchmarks,
    where a new connection per call would be the client's biggest cost and not one production pays)."""

    protocol_version = "HTTP/1.1"
    # The status line and headers go out before the body, in writes of their own: with Nagle's algorithm on, the
    # body would wait for the client's delayed ACK (40 ms) on a kept connection.
    disable_nagle_algorithm = True


# ---------------------------------------------------------------------------------------------------------------
# Attachments (issue #17), self-contained: routes, state and handlers of the attachment calls only.
#   v3:  POST /api/v3/portal/{p}/attachments  multipart `upload_file` (seed 001:12288-12361) -> {"attachment": [..]}
#        POST …/issues/{id}/attachments       form `attachment_ids` = JSON array of uploaded ids (001:5195-5241)
#        GET  …/issues/{id}/attachments       {"attachments": [...]} (001:5136-5190)
#   BT:  POST …/bugs/{id}/attachments          multipart `file` (seed 000:382-428); GET lists them
# ---------------------------------------------------------------------------------------------------------------


def _multipart_parts(ctx) -> dict:
    """{name: (filename or None, bytes)} of a multipart/form-data body; {} when it is not one."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if "multipart/form-data" not in ctx.ctype.lower():
        return {}
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctx.ctype.encode() + b"\r\n\r\n" + ctx.raw)
    parts = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


class AttachmentsFake:
    """Mixed into FakeZoho: portal uploads and per-issue attachments. `reset()` leaves them (issue ids are
    never reused, so they cannot show up on a new issue)."""

    def _attachment_state(self):
        if not hasattr(self, "_att_uploads"):
            self._att_uploads, self._att_on_issue = {}, {}  # id -> file; issue id -> [file]
        return self._att_uploads, self._att_on_issue

    def attachments(self, issue_id) -> list[dict]:
        """The files associated with (or uploaded to) an issue or bug: {"id", "name", "size", "data"}."""
        with self._lock:
            return copy.deepcopy(self._attachment_state()[1].get(str(issue_id), []))

    def hold_associations(self):
        """The next associations wait (inside the call, the change not yet made) until the returned event is
        set: a test kills the worker meanwhile, like a crash between upload and association. `associations_held`
        is set once one waits."""
        import threading

        self._att_hold, self.associations_held = threading.Event(), threading.Event()
        return self._att_hold

    def portal_uploads(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self._attachment_state()[0].values()))

    def _att_file(self, ctx, field):
        filename, data = _multipart_parts(ctx).get(field, (None, None))
        if not filename or data is None:
            bt = ctx.dialect == "bugtracker"
            msg = f"expected a multipart/form-data body with a file in `{field}`"
            raise ApiError(
                400,
                bt_error(6003, "Invalid Data", field, msg) if bt else v3_error(400, "INVALID_INPUTSTREAM", msg, field),
            )
        return {"id": self._new_id(), "name": filename, "size": str(len(data)), "data": data.decode("latin-1")}

    def _v3_upload(self, ctx):
        file = self._att_file(ctx, "upload_file")
        self._attachment_state()[0][file["id"]] = file
        self._after_commit("projects")
        out = {k: file[k] for k in ("name", "size")}
        return 200, {"attachment": [{"attachment_id": file["id"], "entity_id": "-1", **out}]}, {}

    def _v3_associate(self, ctx):
        hold = getattr(self, "_att_hold", None)
        if hold is not None:
            self.associations_held.set()
            hold.wait(60)
        self._record(ctx)
        uploads, on_issue = self._attachment_state()
        # seed 001:5195-5241: `--form 'attachment_ids = [23806000097533241]'`: a multipart form field holding a
        # JSON array (an urlencoded body is not what the document sends)
        raw = (_multipart_parts(ctx).get("attachment_ids") or (None, b""))[1]
        try:
            ids = [str(i) for i in json.loads(raw)]
        except ValueError:
            ids = None
        if not ids or any(i not in uploads for i in ids):
            raise _bad("attachment_ids", f"attachment_ids must be a JSON array of uploaded ids, got {raw[:80]!r}")
        files = on_issue.setdefault(ctx.issue, [])
        for i in ids:
            if all(f["id"] != i for f in files):  # associating twice keeps one attachment
                files.append(uploads[i])
        self._after_commit("projects")
        return (
            200,
            {"attachments": [{"id": f["id"], "file_info": {"name": f["name"], "size": f["size"]}} for f in files]},
            {},
        )

    def _att_list(self, ctx):
        self._record(ctx)
        files = self._attachment_state()[1].get(ctx.issue, [])
        return (
            200,
            {"attachments": [{"id": f["id"], "file_info": {"name": f["name"], "size": f["size"]}} for f in files]},
            {},
        )

    def _bt_upload(self, ctx):
        self._record(ctx)
        file = self._att_file(ctx, "file")
        self._attachment_state()[1].setdefault(ctx.issue, []).append(file)
        self._after_commit("bugtracker")
        return 201, {"attachments": [{"id": file["id"], "name": file["name"], "size": file["size"]}]}, {}


ROUTES[:0] = [
    (re.compile(p), d, dict(x.split(":") for x in m.split()))
    for p, d, m in [
        (_P + r"/attachments/?$", "projects", "POST:_v3_upload"),
        (_I + r"/attachments/?$", "projects", "GET:_att_list POST:_v3_associate"),
        (_B + r"/attachments/?$", "bugtracker", "GET:_att_list POST:_bt_upload"),
    ]
]


class FakeZoho(AttachmentsFake, FakeServer):
    handler = _Handler
    tables = (zoho_calls.PROJECTS, zoho_calls.BUGTRACKER, zoho_calls.ACCOUNTS)

    """Zoho Accounts + Zoho Projects v3 + BugTracker on one loopback port. See the module docstring.

    Every public method and property is thread-safe; inspection returns deep copies.
    """

    def __init__(
        self,
        *,
        portal_id="739121528",
        projects=None,
        client_id="1000.TESTCLIENT",
        client_secret=DEFAULT_CLIENT_SECRET,
        refresh_token=DEFAULT_REFRESH_TOKEN,
        token_ttl_seconds=3600,
        custom_fields=("external_id",),
        users=None,
        options=None,
        rate_limit_per_minute=None,
        seed=0,
        custom_field="accepted",
        filter_api_name="accepted",
        status_key="status_details",
        date_only_due="accepted",
        host_dialect=None,
        refuse_tokens=False,
        v3_limit=None,
        v3_window=120.0,
        block_seconds=1800.0,
        redirect_uris=(),
        throttle="429",
        throttle_retry_after=False,
        issue_page_info="documented",
        token_limit="delete_oldest",  # noqa: S107 - a variant name, not a secret
        fields_answer="module_fields",
        bt_search_fields="brief",
        bt_retry_after=False,
        search_lag=0.0,
        missing_issue="404",
        refuse_assignees=(),
        keep_alive=False,
    ):
        if keep_alive:
            self.handler = _KeepAliveHandler
        variants = dict(custom_field=custom_field, filter_api_name=filter_api_name, status_key=status_key)
        variants["date_only_due"] = date_only_due
        variants["bug_answer"] = "wrapped"  # switched with set_variant
        variants.update(throttle=throttle, issue_page_info=issue_page_info, token_limit=token_limit)
        variants.update(fields_answer=fields_answer, bt_search_fields=bt_search_fields, missing_issue=missing_issue)
        # users Zoho refuses as an assignee (inactive, or not allowed in the project): 400 naming `assignee`
        self.refuse_assignees = {e.lower() for e in refuse_assignees}
        for name, value in variants.items():
            if value not in VARIANTS[name]:
                raise ValueError(f"{name}: expected one of {VARIANTS[name]}, got {value!r}")
        self.variants = variants
        self.host_dialect, self.refuse_tokens = host_dialect, refuse_tokens
        self.v3_limit, self.v3_window, self.block_seconds = v3_limit, v3_window, block_seconds
        # a throttle answer also carries `Retry-After` (one client saw it); BugTracker 429s carry it or only
        # the documented X-RateLimit-Reset (000:777-783); the search index lags behind writes this long
        self.throttle_retry_after, self.bt_retry_after, self.search_lag = (
            throttle_retry_after,
            bt_retry_after,
            search_lag,
        )
        self.portal_id = str(portal_id)
        self.projects = {str(k): dict(v) for k, v in (projects or DEFAULT_PROJECTS).items()}
        self.client_id, self.client_secret, self.refresh_token = client_id, client_secret, refresh_token
        # OAuth grant (seed 001:126-493): the client's registered redirect URIs, grant codes, refresh tokens issued
        self.redirect_uris = tuple(redirect_uris)
        self._grants, self._refresh_tokens, self._deny_consent = {}, {refresh_token: ""}, False
        self.token_ttl_seconds = token_ttl_seconds
        self.custom_fields = tuple(custom_fields)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.users, self._user_by_id = [], {}  # users: [{"zpuid", "name", "email", "role"}]
        for i, u in enumerate(users or DEFAULT_USERS):
            u = {"zpuid": str(ID_BASE + 90001 + i), "role": "Employee", **u}
            u["zpuid"], u["zuid"] = str(u["zpuid"]), 70000001 + i
            self.users.append(u)
            first, _, last = u["name"].partition(" ")
            self._user_by_id[u["zpuid"]] = dict(zuid=u["zuid"], zpuid=u["zpuid"], name=u["name"])
            self._user_by_id[u["zpuid"]].update(email=u["email"], first_name=first, last_name=last)
        # options: field -> [{"id", "name", "is_closed_type"}]; items are names or {"name", "is_closed_type"}
        self._options = {}
        for fname, items in {**DEFAULT_OPTIONS, **(options or {})}.items():
            extra = 70000 + 1000 * len([f for f in self._options if f not in FIELD_INDEX])  # other fields
            base = ID_BASE + (FIELD_INDEX[fname] * 10000 if fname in FIELD_INDEX else extra)
            opts = self._options[fname] = []
            for i, item in enumerate(items):
                item = {"name": item} if isinstance(item, str) else dict(item)
                closed = bool(item.get("is_closed_type", item["name"].lower() == "closed"))
                opt_id = str(item.get("id", base + i))
                opts.append({"id": opt_id, "name": item["name"], "is_closed_type": closed})
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._next_id = ID_BASE + 100001
        self._faults = dict(FAULT_DEFAULTS)
        self._clear_state()

    # ------------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------------ configuration / fault injection
    def set_faults(
        self,
        *,
        error_500_rate=0.0,
        error_429_rate=0.0,
        slow_rate=0.0,
        slow_seconds=0.0,
        retry_after_seconds=1,
        error_500_after_commit_rate=0.0,
    ) -> None:
        """Random faults for API requests (never OAuth); each call replaces all previous settings.

        Per request one draw picks 500 (``error_500_rate``), else 429 (``error_429_rate``) with
        ``Retry-After`` and ``X-RateLimit-Reset``; neither changes any state. Independently ``slow_rate``
        sleeps ``slow_seconds`` before answering normally. ``error_500_after_commit_rate`` applies to issue,
        bug and comment creates: the create IS stored and THEN answered 500 (the answer was "lost").
        """
        faults = {k: v for k, v in locals().items() if k in FAULT_DEFAULTS}
        with self._lock:
            self._faults = faults

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` authenticated, not rate-limited API requests answer ``status``, changing nothing."""
        with self._lock:
            self._fail_queue.extend([int(status)] * n)

    def fail_matching(self, method: str, pattern: str, n: int = 1, status: int = 500) -> None:
        """The next ``n`` authenticated API requests with this method whose path matches ``pattern`` (a regular
        expression searched in the path) answer ``status``, changing nothing: a fault at one point of a flow."""
        with self._lock:
            self._fail_matching.append([method.upper(), re.compile(pattern), int(n), int(status)])

    def block(self, seconds: float) -> None:
        """Projects v3 throttles every request for ``seconds`` from now, in the ``throttle`` variant's form."""
        with self._lock:
            self.blocked_until = time.time() + seconds
            self._block_length = seconds

    def spend(self, calls: int) -> None:
        """Another client of the same Zoho user spends ``calls`` of the v3 window (``v3_limit``): the budget is
        shared with whatever else the user runs, so Zoho may block although the bridge kept its own count."""
        with self._lock:
            now = time.time()
            self._v3_calls.extend([now] * calls)
            self.other_calls += calls

    def outage(self, seconds: float, mode: str = "503") -> None:
        """For ``seconds`` from now every request (API and accounts) answers 503 (``mode="503"``) or gets no
        answer at all: the connection is closed unanswered (``mode="drop"``). Nothing changes meanwhile."""
        if mode not in ("503", "drop"):
            raise ValueError(f"outage mode: expected 503 or drop, got {mode!r}")
        with self._lock:
            self.outage_until, self.outage_mode = time.time() + seconds, mode

    def _throttle(self, now: float) -> ApiError:
        """The answer to a call during a block, in the ``throttle`` variant's form."""
        self._rate_limited += 1
        form = self.variants["throttle"]
        left = max(0.0, self.blocked_until - now)
        if form == "429":  # seed 001:737-739: no header, no time named
            refusal = ApiError(429, v3_error(429, "TOO_MANY_REQUESTS", "Too many requests", None, "LIMIT_ERROR"))
        else:
            minutes = max(1, math.ceil(self._block_length / 60.0))  # what live portals name: whole minutes
            headers = {"Retry-After": math.ceil(left)} if self.throttle_retry_after else {}
            refusal = ApiError(int(form), throttle_body(minutes), headers)
        refusal.throttled = True  # the request log marks it (a 200-form throttle is a 200 all the same)
        return refusal

    def reset_rate_window(self) -> None:
        """Forget the calls counted in BugTracker's per-minute window (a test's own set-up calls)."""
        with self._lock:
            self._window.clear()

    def set_variant(self, **variants) -> None:
        """Switch variants at run time (see ``VARIANTS``)."""
        for name, value in variants.items():
            if value not in VARIANTS[name]:
                raise ValueError(f"{name}: expected one of {VARIANTS[name]}, got {value!r}")
        with self._lock:
            self.variants.update(variants)

    def expire_tokens(self) -> None:
        """Every access token issued so far becomes invalid (401 on next use)."""
        with self._lock:
            self._tokens.clear()

    def mint_token(self) -> str:
        """Extra helper: a valid access token without an OAuth round trip (not counted in token_refreshes)."""
        with self._lock:
            tok = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            self._tokens[tok] = time.time() + self.token_ttl_seconds
            return tok

    def option_id(self, field: str, name: str) -> str:
        """Extra helper: the id of option ``name`` of ``field`` (same in every project)."""
        for o in self._options[field]:
            if o["name"] == name:
                return o["id"]
        raise KeyError(f"{field}: no option {name!r}")

    @property
    def options(self) -> dict:
        """Extra: ``{field: {name: id}}``."""
        return {f: {o["name"]: o["id"] for o in opts} for f, opts in self._options.items()}

    def reset(self) -> None:
        """Forget issues, comments, the request log, tokens, counters and pending ``fail_next``; keep config
        (including ``set_faults``). The id counter keeps counting so ids are never reused."""
        with self._lock:
            self._clear_state()

    def _clear_state(self):
        with self._lock:
            # _issues: id -> {"dialect", "project_id", "obj"}; _comments: issue id -> [comment];
            # _seq: (dialect, project) -> last number used in prefix/key; _tokens: token -> expiry
            self._issues, self._comments, self._seq, self._log, self._tokens = {}, {}, {}, [], {}
            self._issued, self._window, self._fail_queue = deque(), deque(), deque()
            self._fail_matching: list[list] = []  # [method, compiled path pattern, remaining, status]
            self.slowed: list[tuple[str, str]] = []  # (method, path) of each request `slow_rate` held, on arrival
            self._refreshes = self._refreshes_denied = self._rate_limited = self.tokens_deleted = 0
            self._v3_calls, self.blocked_until, self._block_length = deque(), 0.0, self.block_seconds
            self.outage_until, self.outage_mode, self.other_calls = 0.0, "503", 0
            self._search_index = {}  # bug id -> [(ready_at, searchable text)]: the search index lags (search_lag)
            self.person_changes = []  # what tests changed "as a person" (see People working in Zoho)

    # ------------------------------------------------------------------ inspection
    def issues(self, project_id=None, dialect=None) -> list[dict]:
        """Stored issues (``dialect="projects"``) and bugs (``"bugtracker"``), oldest first: the object the
        API returns plus ``project_id`` and ``dialect`` keys."""
        with self._lock:
            project_id = None if project_id is None else str(project_id)
            recs = [r for _, r in sorted(self._issues.items()) if dialect is None or r["dialect"] == dialect]
            return [self._snapshot(r) for r in recs if project_id in (None, r["project_id"])]

    def issue(self, issue_id) -> dict:
        with self._lock:
            return self._snapshot(self._issues[str(issue_id)])

    def comments(self, issue_id) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._comments.get(str(issue_id), []))

    @staticmethod
    def _snapshot(rec):
        return {**copy.deepcopy(rec["obj"]), "project_id": rec["project_id"], "dialect": rec["dialect"]}

    @property
    def requests_log(self) -> list[dict]:
        """Every request: {"t", "method", "path", "query", "json", "status", "auth", "oauth", "dialect"};
        ``auth`` is True when the request carried a valid access token; ``oauth`` marks Accounts calls."""
        with self._lock:
            return copy.deepcopy(self._log)

    token_refreshes = property(lambda self: self._refreshes, doc="Successful refresh-token grants.")
    token_refreshes_denied = property(
        lambda self: self._refreshes_denied, doc="Refreshes beyond 10 / 10 min refused (token_limit='refuse')."
    )
    rate_limited = property(lambda self: self._rate_limited, doc="429s of rate_limit_per_minute (not injected).")

    def api_calls(self, method=None, path_contains=None) -> list[dict]:
        calls = [e for e in self.requests_log if not e["oauth"]]
        calls = [e for e in calls if method is None or e["method"] == method.upper()]
        return [e for e in calls if path_contains is None or path_contains in e["path"]]

    def max_calls_in_window(self, window_seconds=60.0, statuses=None) -> int:
        """Most API requests received within any half-open window [t, t + window_seconds)."""
        times = sorted(e["t"] for e in self.api_calls() if statuses is None or e["status"] in statuses)
        best = j = 0
        for i, t in enumerate(times):
            while t - times[j] >= window_seconds:
                j += 1
            best = max(best, i - j + 1)
        return best

    # ------------------------------------------------------------------ request entry point
    def _handle(self, method, target, raw, headers):
        t = time.time()
        self.declared(method, target)
        split = urlsplit(target)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        ctype = headers.get("Content-Type") or ""
        try:
            body = json.loads(raw) if raw and "json" in ctype.lower() else None
        except ValueError:
            body = None
        entry = dict(t=t, method=method, path=path, json=body, status=None, auth=False, dialect=None, throttled=False)
        entry.update(query={k: v[0] if len(v) == 1 else v for k, v in query.items()})
        entry["oauth"] = path.startswith("/oauth/")
        with self._lock:
            down = t < self.outage_until and self.outage_mode
        try:
            if down == "drop":
                status, payload, out = None, None, {}
            elif down:
                raise ApiError(503, {"code": 503, "message": "Service Unavailable"})
            elif entry["oauth"]:
                status, payload, out = self._oauth(method, path, query, raw, ctype)
            else:
                status, payload, out = self._api(method, path, query, raw, ctype, headers, entry)
        except ApiError as e:
            status, payload, out = e.status, e.body, dict(e.headers)
            entry["throttled"] = e.throttled
        except Exception:  # a bug in the fake itself: make it loud
            traceback.print_exc(file=sys.stderr)
            status, payload, out = 500, {"fake_zoho_internal_error": traceback.format_exc()}, {}
        with self._lock:
            if entry["dialect"] == "bugtracker":  # seed 000 "Rate Limit Headers": on every BugTracker answer
                self._prune_window(time.time())
                limit = self.rate_limit_per_minute or BT_DEFAULT_LIMIT
                out.setdefault("X-RateLimit-Limit", limit)
                out.setdefault("X-RateLimit-Remaining", max(0, limit - len(self._window)))
                oldest = self._window[0] if self._window else time.time()
                out.setdefault("X-RateLimit-Reset", math.ceil(oldest + RATE_WINDOW_SECONDS))
            entry["status"] = status
            if method == "POST" and isinstance(payload, dict) and payload.get("id"):  # what a create made
                entry["answer_id"] = str(payload["id"])
            self._log.append(entry)
        return status, payload, out

    # ------------------------------------------------------------------ OAuth (seed 001 lines 126-493)
    def self_client_code(self, scopes, ttl_seconds=120.0) -> str:
        """The Self Client console's "Generate Code" (seed 001:285-296): a grant code for ``scopes`` (a list or a
        comma-separated string), valid once for ``ttl_seconds`` (the console offers 3 to 10 minutes; 2 by
        default, seed 001:479), bound to no redirect URI. Invalid scopes raise ValueError ('Enter a valid scope')."""
        scope = ",".join(scopes) if isinstance(scopes, list | tuple) else str(scopes)
        if self._bad_scope(scope):
            raise ValueError(f"Enter a valid scope: {scope!r}")
        return self._new_grant(scope, redirect_uri=None, ttl=ttl_seconds, offline=True)

    def expire_grant_codes(self) -> None:
        """Every grant code issued so far expires now (as if its minutes had passed)."""
        with self._lock:
            for grant in self._grants.values():
                grant["expires"] = 0.0

    def deny_next_consent(self) -> None:
        """The next person at the consent page clicks Reject: the redirect carries ``error=access_denied``."""
        with self._lock:
            self._deny_consent = True

    @staticmethod
    def _bad_scope(scope: str) -> bool:
        names = [s.strip() for s in scope.split(",")]
        # service_name.scope_name.operation_type (seed 001:185); WorkDrive's for uploads (seed 001:12298)
        pattern = re.compile(r"^(Zoho[A-Za-z]+|WorkDrive)\.[A-Za-z_]+\.(ALL|READ|CREATE|UPDATE|DELETE)$")
        return not names or any(not pattern.match(n) for n in names)

    def _new_grant(self, scope, *, redirect_uri, ttl, offline) -> str:
        code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with self._lock:
            self._grants[code] = dict(scope=scope, redirect_uri=redirect_uri, expires=time.time() + ttl)
            self._grants[code].update(offline=offline, used=False)
        return code

    def _authorize(self, method, query):
        """``GET {accounts}/oauth/v2/auth?scope&client_id&response_type=code&access_type&redirect_uri[&state]``
        (seed 001:214-262): the person logs in and accepts (this fake accepts at once, unless told to reject), and
        the browser is sent to ``redirect_uri`` with ``code``, ``location``, ``accounts-server`` (and ``state``).
        A redirect-flow grant code is valid once, for one minute (seed 001:379). Errors (seed 001:264-281) are
        shown by Accounts itself, never sent to the redirect URI."""
        if method != "GET":
            return 405, {"error": "invalid_request", "error_description": "use GET"}, {}
        q = {k: v[-1] for k, v in query.items()}
        if q.get("response_type") != "code":
            return 400, {"error": "ERROR_invalid_response_type"}, {}
        if q.get("client_id") != self.client_id:
            return 400, {"error": "ERROR_invalid_client"}, {}
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return 400, {"error": "ERROR_invalid_redirect_uri"}, {}
        if self._bad_scope(q.get("scope", "")):
            return 400, {"error": "ERROR_invalid_scope"}, {}
        with self._lock:
            denied, self._deny_consent = self._deny_consent, False
        answer = {"error": "access_denied"} if denied else {}
        if not denied:
            offline = q.get("access_type", "online") == "offline"
            code = self._new_grant(q["scope"], redirect_uri=redirect_uri, ttl=60.0, offline=offline)
            answer = {"code": code, "location": "us", "accounts-server": self.base_url}
        if "state" in q:
            answer["state"] = q["state"]
        separator = "&" if "?" in redirect_uri else "?"
        return 302, None, {"Location": redirect_uri + separator + urlencode(answer)}

    def _oauth(self, method, path, query, raw, ctype):
        """``POST /oauth/v2/token`` with ``grant_type=refresh_token`` (seed 001 lines 430-460) or
        ``authorization_code`` (lines 330-420); parameters may come in the query or an urlencoded form body.
        Zoho answers errors with 200 and ``{"error": …}``: ``invalid_client`` for a wrong client id or secret
        (or another data centre's), ``invalid_code`` for an expired, used or unknown grant code or refresh token,
        ``invalid_redirect_uri`` for a redirect URI other than the grant's."""
        if path.rstrip("/") == "/oauth/v2/auth":
            return self._authorize(method, query)
        if path.rstrip("/") != "/oauth/v2/token":
            return 404, {"error": "invalid_request", "error_description": "unknown accounts URL"}, {}
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "use POST"}, {}
        params = {k: v[-1] for k, v in query.items()}
        if raw and "json" not in ctype.lower():
            params.update({k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return 200, {"error": "invalid_client"}, {}
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(params)
        if grant_type != "refresh_token":
            return 200, {"error": "unsupported_grant_type"}, {}
        with self._lock:
            known = params.get("refresh_token") in self._refresh_tokens
        if not known:
            return 200, {"error": "invalid_code"}, {}
        return self._access_token(scope=SCOPE)

    def _exchange_code(self, params):
        now = time.time()
        with self._lock:
            grant = self._grants.get(params.get("code", ""))
            if grant is None or grant["used"] or grant["expires"] <= now:
                return 200, {"error": "invalid_code"}, {}
            if grant["redirect_uri"] is not None and params.get("redirect_uri") != grant["redirect_uri"]:
                return 200, {"error": "invalid_redirect_uri"}, {}
            grant["used"] = True
        status, answer, headers = self._access_token(scope=grant["scope"].replace(",", " "), refresh=False)
        if "access_token" in answer and grant["offline"]:
            refresh = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            with self._lock:
                self._refresh_tokens[refresh] = grant["scope"]
            answer["refresh_token"] = refresh
        return status, answer, headers

    def _access_token(self, scope, refresh=True):
        now = time.time()
        with self._lock:
            while self._issued and now - self._issued[0][0] >= TOKEN_WINDOW_SECONDS:
                self._issued.popleft()
            if len(self._issued) >= TOKENS_PER_WINDOW and self.variants["token_limit"] == "refuse":
                self._refreshes_denied += 1
                return 200, {"error": "Access Denied", "error_description": ACCESS_DENIED}, {}
            if len(self._issued) >= TOKENS_PER_WINDOW:  # seed 001:486, 491: the 11th deletes the oldest
                _, oldest = self._issued.popleft()
                self._tokens.pop(oldest, None)
                self.tokens_deleted += 1
            self._refreshes += int(refresh)  # token_refreshes counts refresh-token grants only
            tok = self.mint_token()
            self._issued.append((now, tok))
        answer = dict(access_token=tok, scope=scope, api_domain=API_DOMAIN, token_type="Bearer")
        return 200, {**answer, "expires_in": self.token_ttl_seconds}, {}

    # ------------------------------------------------------------------ API pipeline
    def _prune_window(self, now):
        while self._window and now - self._window[0] >= RATE_WINDOW_SECONDS:
            self._window.popleft()

    def _fault(self, dialect, status, retry_after):
        """The answer for an injected (or rate-limit) failure in the request's dialect."""
        bt, headers, kind = dialect == "bugtracker", {}, "OPERATIONAL_VALIDATION_ERROR"
        if status == 429 and bt:  # seed 000:777-783: BugTracker names its reset time (Retry-After: not documented)
            headers = {"X-RateLimit-Reset": math.ceil(time.time() + retry_after)}
            if self.bt_retry_after:
                headers["Retry-After"] = retry_after
            msg = f"Too many API calls; retry after {retry_after}s"
            body = bt_error(6009, "Rate Limit Exceeded", "", msg)
        elif status == 429:  # v3 documents no header (seed 001:737-739): the block is the client's to know
            body = v3_error(429, "TOO_MANY_REQUESTS", "Too many requests", error_type=kind)
        elif status == 500 and bt:
            body = {"code": 500, "message": "Internal Server Error"}
        elif status == 500:  # seed 001 lines 117-125
            body = v3_error(500, "INTERNAL_SERVER_ERROR", INTERNAL_MSG, error_type=kind)
            body["error"]["details"][0]["message_key"] = "zp.general.error"
        else:
            phrase = http.HTTPStatus(status).phrase
            title = phrase.upper().replace(" ", "_")
            body = {"code": status, "message": phrase} if bt else v3_error(status, title, phrase, None, kind)
        return ApiError(status, body, headers)

    def _api(self, method, path, query, raw, ctype, headers, entry):
        route = next(((mt, d, m) for rx, d, m in ROUTES if (mt := rx.match(path))), None)
        bt = route[1] == "bugtracker" if route else (path.startswith("/api/v3/") and "/bugs" in path)
        dialect = entry["dialect"] = "bugtracker" if bt else "projects"
        # 1. auth: "Authorization: Zoho-oauthtoken <token>" (seed 001 lines 19-27, 463)
        authz = (headers.get("Authorization") or "").strip()
        tok = authz[len("Zoho-oauthtoken ") :].strip() if authz.startswith("Zoho-oauthtoken ") else None
        now = time.time()
        with self._lock:
            valid = tok is not None and self._tokens.get(tok, 0) > now
        if not valid and bt:
            msg = "Invalid or expired access token"
            raise ApiError(401, bt_error(6004, "Authentication Failed", "Authorization", msg))
        if valid and self.refuse_tokens and bt:
            raise ApiError(401, bt_error(6004, "Authentication Failed", "Authorization", "Invalid access token"))
        if not valid or self.refuse_tokens:  # seed 001:76-84: INVALID_OAUTHTOKEN comes with HTTP 400
            raise ApiError(400, v3_error(400, "INVALID_OAUTHTOKEN", "Invalid OAuth access token."))
        entry["auth"] = True
        shared = path.startswith("/api/v3/portals") or path.rstrip("/").endswith(("/projects", "/users"))
        if self.host_dialect is not None and dialect != self.host_dialect and not shared:
            if self.host_dialect == "bugtracker":  # a BugTracker host has no Projects /issues, and the other way round
                raise ApiError(404, bt_error(6001, "Invalid URL", "url", f"No API at {path}"))
            raise ApiError(400, v3_error(400, "URL_RULE_NOT_CONFIGURED", "Given URL is wrong"))
        # 2. rate limit, 3. fail_next / random faults
        with self._lock:
            if not bt and now < self.blocked_until:  # seed 001:737-739: restricted for 30 minutes
                raise self._throttle(now)
            if not bt and self.v3_limit:
                while self._v3_calls and now - self._v3_calls[0] >= self.v3_window:
                    self._v3_calls.popleft()
                if len(self._v3_calls) >= self.v3_limit:
                    self.blocked_until, self._block_length = now + self.block_seconds, self.block_seconds
                    self._v3_calls.clear()  # a fresh window after the block
                    raise self._throttle(now)
                self._v3_calls.append(now)
            self._prune_window(now)
            if self.rate_limit_per_minute and len(self._window) >= self.rate_limit_per_minute:
                self._rate_limited += 1
                wait = max(1, math.ceil(self._window[0] + RATE_WINDOW_SECONDS - now))
                raise self._fault(dialect, 429, wait)
            self._window.append(now)
            f = self._faults
            forced = self._fail_queue.popleft() if self._fail_queue else None
            for rule in self._fail_matching if forced is None else ():
                if rule[2] > 0 and rule[0] == method and rule[1].search(path):
                    rule[2] -= 1
                    forced = rule[3]
                    break
            if forced is None:
                r = self._rng.random()
                if r < f["error_500_rate"]:
                    forced = 500
                elif r < f["error_500_rate"] + f["error_429_rate"]:
                    forced = 429
                slow = f["slow_rate"] > 0 and self._rng.random() < f["slow_rate"]
                if slow:
                    self.slowed.append((method, path))
            else:
                slow = False
            retry_after, slow_seconds = f["retry_after_seconds"], f["slow_seconds"]
        if forced is not None:
            raise self._fault(dialect, forced, retry_after)
        if slow:
            time.sleep(slow_seconds)
        # 4. routing
        if route is None and bt:
            raise ApiError(404, bt_error(6001, "Invalid URL", "url", f"No API at {path}"))
        if route is None:
            raise ApiError(400, v3_error(400, "URL_RULE_NOT_CONFIGURED", "Given URL is wrong"))
        match, _, methods = route
        if method not in methods and bt:
            raise ApiError(405, bt_error(6002, "Invalid Method", "method", f"use {', '.join(methods)}"))
        if method not in methods:
            raise ApiError(405, v3_error(405, "INVALID_METHOD", "Invalid request method", method))
        ctx = _Ctx(method, match.groupdict(), query, raw, ctype, dialect)
        if ctx.portal is not None and ctx.portal != self.portal_id:
            raise self._not_found(bt, "portal", ctx.portal)
        if ctx.project is not None and ctx.project not in self.projects:
            raise self._not_found(bt, "project", ctx.project)
        with self._lock:
            return getattr(self, methods[method])(ctx)

    def _not_found(self, bt, field, value):
        status = 400 if field in ("issue", "bug") and self.variants["missing_issue"] == "400" else 404
        if bt:
            return ApiError(status, bt_error(6006, "Resource Not Found", field, f"No {field} with id {value}"))
        msg = f"Given {field} id {value} is invalid"
        return ApiError(status, v3_error(status, "INVALID_PARAMETER_VALUE", msg, field))

    def _json_object(self, ctx) -> dict:
        """POST/PATCH/PUT bodies: ``Content-Type: application/json`` and a JSON object (seed 001 line 504)."""
        body = None
        if "application/json" in ctx.ctype.lower():
            try:
                body = json.loads(ctx.raw or b"null")
            except ValueError:
                body = None
        msg = "expected a JSON object body with Content-Type: application/json"
        if not isinstance(body, dict) and ctx.dialect == "bugtracker":
            raise ApiError(400, bt_error(6003, "Invalid Data", "body", msg))
        if not isinstance(body, dict):
            raise ApiError(400, v3_error(400, "INVALID_INPUTSTREAM", msg))
        return body

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id - 1)

    def _record(self, ctx) -> dict:
        rec = self._issues.get(ctx.issue)
        if rec is None or rec["project_id"] != ctx.project or rec["dialect"] != ctx.dialect:
            bt = ctx.dialect == "bugtracker"
            raise self._not_found(bt, "bug" if bt else "issue", ctx.issue)
        return rec

    def _find_comment(self, ctx) -> dict:
        self._record(ctx)
        for c in self._comments.get(ctx.issue, []):
            if c["id"] == ctx.comment:
                return c
        raise self._not_found(ctx.dialect == "bugtracker", "comment", ctx.comment)

    def _after_commit(self, dialect):
        """``error_500_after_commit_rate``: the change is stored, then the answer is "lost" as a 500."""
        if self._rng.random() < self._faults["error_500_after_commit_rate"]:
            raise self._fault(dialect, 500, 0)

    def _assignable(self, zpuid, *, bt):
        if self._user_by_id[str(zpuid)]["email"].lower() in self.refuse_assignees:
            msg = f"User {zpuid} cannot be assigned in this project"
            raise _bt_bad("assignee", msg) if bt else _bad("assignee", msg)

    def _is_user(self, zpuid):
        return isinstance(zpuid, str | int) and not isinstance(zpuid, bool) and str(zpuid) in self._user_by_id

    def _bt_page(self, ctx):
        """BugTracker ``index`` (1-based) and ``range`` (at most 100, seed 000:1267-1298)."""
        out = []
        for name, default, top in (("index", 1, None), ("range", 100, 100)):
            raw = ctx.q(name)
            try:
                val = default if raw is None else int(raw)
            except ValueError:
                raise _bt_bad(name, f"{name} must be an integer, got {raw!r}") from None
            if val < 1 or (top and val > top):
                raise _bt_bad(name, f"{name} out of range: {val}")
            out.append(val)
        return out

    def _page(self, ctx, required):
        """``page``/``per_page`` query parameters (required for issue lists, seed 001 lines 3481-3495)."""
        out = []
        for name, default in (("page", 1), ("per_page", 100)):
            raw = ctx.q(name)
            if raw is None:
                if required:
                    raise _bad(name, f"{name} is required")
                out.append(default)
                continue
            try:
                val = int(raw)
            except ValueError:
                raise _bad(name, f"{name} must be an integer, got {raw!r}") from None
            if val < 1 or (name == "per_page" and val > 200):
                raise _bad(name, f"{name} out of range: {val}")
            out.append(val)
        return out

    @staticmethod
    def _paginate(items, page, per_page):
        chunk = items[(page - 1) * per_page : page * per_page]
        info = dict(page=page, per_page=per_page, has_next_page=len(items) > page * per_page)
        return chunk, {**info, "count": len(chunk)}

    # ------------------------------------------------------------------ portal / project / metadata
    def _portals(self, ctx):
        """Seed 001 lines 745-780: a JSON array of portals."""
        portal = dict(id=self.portal_id, id_string=self.portal_id, portal_name="fakeportal", org_name="fake")
        return 200, [{**portal, "is_default_portal": True, "timezone": "UTC", "owner": self._user()}], {}

    def _projects(self, ctx):
        page, per_page = self._page(ctx, required=False)
        items = [{"id": k, "name": p.get("name", k), "status": "active"} for k, p in self.projects.items()]
        chunk, _ = self._paginate(items, page, per_page)
        return 200, chunk, {}  # seed 001:1002-1080: a top-level JSON array

    def _project_user(self, u):
        """A project user as seed 001:13526-13626 shows it: ``id``, ``email``, names, role; no ``zpuid`` key."""
        first, _, last = u["name"].partition(" ")
        role = {"name": "Administrator" if u["role"] == "admin" else u["role"], "id": "103368000000048005"}
        out = dict(id=u["zpuid"], email=u["email"], full_name=u["name"], display_name=first, first_name=first)
        out.update(last_name=last, zuid=str(u["zuid"]), is_active=True, user_type="1", status="1")
        return {**out, "role": {**role, "type": "1"}}

    def _users(self, ctx):
        if self.host_dialect == "bugtracker" or ctx.q("index") is not None:
            # seed 000:39 names the call, no answer; a user appears in 000 only as {id, name, email} (owner,
            # assignee, reporter: 000:129-133, 306-315), so that is what this host answers
            index, rng = self._bt_page(ctx)
            users = [{"id": u["zpuid"], "name": u["name"], "email": u["email"]} for u in self.users]
            return 200, {"users": users[index - 1 : index - 1 + rng]}, {}
        page, per_page = self._page(ctx, required=False)
        chunk, info = self._paginate([self._project_user(u) for u in self.users], page, per_page)
        return 200, {"page_info": info, "users": chunk}, {}

    def _user(self, zpuid=None):
        """A user as v3 renders it (default: the token's owner, the first user)."""
        return dict(self._user_by_id[str(zpuid or self.users[0]["zpuid"])])

    def _user_detail(self, ctx):
        """``GET …/users/{ZPUID | EMAILID}`` (seed 001:13627-13661): one user object, ``id`` not ``zpuid``."""
        key = ctx.user.lower()
        for u in self.users:
            if key in (u["zpuid"], u["email"].lower()):
                return 200, self._project_user(u), {}
        raise _bad("user", f"Given user {ctx.user} is not a user of this project")

    def _fields(self, ctx):
        """Module field info, seed 001 lines 17088-17140: ``module``, ``page``, ``per_page`` required."""
        module = ctx.q("module")
        if module is None or module.strip('"').lower() not in ("issues", "issue", "bugs"):
            raise _bad("module", f"module must be Issues, got {module!r}")
        page, per_page = self._page(ctx, required=True)
        defaults = (("name", "singleline"), ("description", "multiline"), ("status", "picklist"))
        fields = []
        for i, (n, t) in enumerate((*defaults, ("severity", "picklist"))):
            fields.append(dict(api_name=n, id=str(ID_BASE + 80101 + i), display_name=n.title(), type=t))
            fields[-1]["is_default"] = True
        for i, n in enumerate(self.custom_fields):
            label = n.replace("_", " ").title()
            fields.append(dict(api_name=n, id=str(ID_BASE + 80001 + i), display_name=label))
            fields[-1].update(type="singleline", is_default=False, column_name=f"UDF_NCHAR{i + 1}")
        form = self.variants["fields_answer"]
        if form == "empty":  # the sample 001:17171 shows for settings/fields: `200{ }`
            return 200, {}, {}
        if form == "module_fields":  # the field shape 001:16991 shows: api_name, id, display_name, type
            fields = [{k: f[k] for k in ("api_name", "id", "display_name", "type") if k in f} for f in fields]
        chunk, info = self._paginate(fields, page, per_page)
        return 200, {"fields": chunk, "page_info": info}, {}

    def _defaultfields(self, ctx):
        """v1 restapi ``GET /restapi/portal/{p}/projects/{p}/bugs/defaultfields/``."""
        out = {}
        for fname in ("severity", "status", "classification", "module", "priority", "is_it_reproducible"):
            p = "reproducible" if fname == "is_it_reproducible" else fname
            key = self.variants["status_key"] if fname == "status" else f"{p}_details"
            out[key] = [{f"{p}_id": o["id"], f"{p}_name": o["name"]} for o in self._options[fname]]
        return 200, {"defaultfields": out}, {}

    # ------------------------------------------------------------ Projects v3 issues (seed 001 3375-5624)
    def _v3_option(self, key, val):
        """Option fields must be ``{"id": "<option id>"}`` (seed 001 create sample, line 3730)."""
        opts = self._options[key]
        ok = isinstance(val, dict) and set(val) == {"id"} and isinstance(val["id"], str | int)
        for o in opts if ok and not isinstance(val["id"], bool) else ():
            if o["id"] == str(val["id"]) and key == "status":
                out = dict(id=o["id"], name=o["name"], is_closed_type=o["is_closed_type"])
                return {**out, "is_default": o["id"] == opts[0]["id"], "color": "statuscol_blue"}
            if o["id"] == str(val["id"]):
                return {"id": o["id"], "value": o["name"]}
        valid = ", ".join(f"{o['id']} ({o['name']})" for o in opts)
        raise _bad(key, f'Invalid {key} {json.dumps(val)}: expected {{"id": "<id>"}}, one of {valid}')

    def _v3_fields(self, body, allowed, current=None) -> dict:
        """Validate a create/update body against the seed's parameter table and render the stored values."""
        for key in body:
            if key not in allowed and key not in self.custom_fields:
                raise _bad(key, "Unknown field")
        out = {}
        for key, val in body.items():
            if key == "name":
                if not isinstance(val, str) or not val.strip():
                    raise _bad("name", f"name must be a non-empty string, got {json.dumps(val)}")
                if len(val) > 65000:
                    raise _bad("name", "name exceeds max length 65000")
                out[key] = val
            elif key == "due_date":
                date_only = isinstance(val, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", val)
                if not (isinstance(val, str) and V3_TIMESTAMP.match(val)) and not (
                    date_only and self.variants["date_only_due"] == "accepted"
                ):
                    msg = f"due_date must be a timestamp like 2025-12-12T02:12:00.000Z, got {json.dumps(val)}"
                    raise _bad(key, msg)
                out[key] = val
            elif key in V3_TYPED_KEYS:
                if not isinstance(val, V3_TYPED_KEYS[key]):
                    raise _bad(key, f"{key} must be a JSON {V3_TYPED_KEYS[key].__name__}: {json.dumps(val)}")
                out[key] = val
            elif key == "flag":
                if not isinstance(val, str) or val.lower() not in ("internal", "external"):
                    raise _bad(key, f"Invalid flag {json.dumps(val)}: accepted values Internal or External")
                out[key] = val.capitalize()
            elif key in V3_OPTION_KEYS:
                out[key] = self._v3_option(key, val)
            elif key == "assignee":
                if not (isinstance(val, dict) and set(val) == {"zpuid"} and self._is_user(val["zpuid"])):
                    ids = ", ".join(self._user_by_id)
                    raise _bad(key, f'Invalid assignee {json.dumps(val)}: expected {{"zpuid": one of {ids}}}')
                self._assignable(val["zpuid"], bt=False)
                out[key] = self._user(val["zpuid"])
            elif key in ("associated_teams", "release_milestone", "affected_milestone"):
                if not (isinstance(val, dict) and _is_scalar(val.get("id"))):
                    raise _bad(key, f'{key} must be an object {{"id": ...}}, got {json.dumps(val)}')
                out[key] = {"id": str(val["id"])}
            elif key == "tags":
                out[key] = self._v3_tags(val, None if current is None else current.get("tags", []))
            elif key in ("rate_per_hour", "cost_rate_per_hour"):
                if isinstance(val, bool) or not re.fullmatch(r"-?\d+(\.\d+)?", str(val)):
                    raise _bad(key, f"{key} must be a number, got {json.dumps(val)}")
                out[key] = val
            else:  # configured custom field (singleline text: max 200 characters, seed 001 lines 508-518)
                mode = self.variants["custom_field"]  # seed 001:499: API names are for Tasks and Projects only
                if mode == "refused":
                    raise _bad(key, f"Invalid field {key}: API names of custom fields are not supported here")
                if not _is_scalar(val) or (isinstance(val, str) and len(val) > 200):
                    raise _bad(key, f"custom field {key} takes a string (max 200), number or bool: {val!r}")
                if mode == "accepted":
                    out[key] = val
        return out

    @staticmethod
    def _v3_tags(val, current):
        """``[{"id"}]`` replaces; on PATCH ``[{"add": [{"id"}], "remove": [{"id"}]}]`` edits (seed 3886)."""
        if not isinstance(val, list):
            raise _bad("tags", f"tags must be a JSON array, got {json.dumps(val)}")
        ids = None if any(isinstance(t, dict) and ("add" in t or "remove" in t) for t in val) else []
        if ids is None and current is None:
            raise _bad("tags", "tags add/remove is only accepted when updating an issue")
        if ids is not None and current is not None:  # seed 001:3843-3847, 3911: PATCH documents add/remove
            raise _bad("tags", 'on update, tags take the form [{"add": [{"id"}], "remove": [{"id"}]}]')
        cur = [t["id"] for t in current or []]
        for t in val:
            if not isinstance(t, dict):
                raise _bad("tags", f"tag entries must be objects, got {json.dumps(t)}")
            if ids is not None:
                if not _is_scalar(t.get("id")):
                    raise _bad("tags", f'tag entries must be {{"id": ...}}, got {json.dumps(t)}')
                ids.append(str(t["id"]))
                continue
            for op in ("add", "remove"):
                items = t.get(op, [])
                if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
                    raise _bad("tags", f'tags {op} must be a list of {{"id": ...}}, got {json.dumps(items)}')
                for i in items:
                    if op == "add" and str(i["id"]) not in cur:
                        cur.append(str(i["id"]))
                    elif op == "remove" and str(i["id"]) in cur:
                        cur.remove(str(i["id"]))
        return [{"id": i} for i in (cur if ids is None else ids)]

    def _v3_create(self, ctx):
        """``POST .../issues`` (seed 001 lines 3590-3776); answers 200 with the issue object."""
        body = self._json_object(ctx)
        fields = self._v3_fields(body, V3_CREATE_KEYS)
        if "name" not in body:
            raise _bad("name", "name is required")
        now, project = _iso(), self.projects[ctx.project]
        n = self._seq[("projects", ctx.project)] = self._seq.get(("projects", ctx.project), 0) + 1
        obj = dict(id=self._new_id(), prefix=f"{project.get('prefix', 'EC1')}-I{n}", name="", description="")
        obj.update(flag="Internal", created_time=now, last_updated_time=now, created_by=self._user())
        obj["project"] = {"id": ctx.project, "name": project.get("name", "")}
        obj["status"] = self._v3_option("status", {"id": self._options["status"][0]["id"]})  # default: Open
        for key in ("severity", "classification", "module"):  # Zoho shows the "None" option when unset
            none = [o for o in self._options[key] if o["name"] == "None"]
            if none:
                obj[key] = {"id": none[0]["id"], "value": "None"}
        obj.update(fields)
        self._issues[obj["id"]] = {"dialect": "projects", "project_id": ctx.project, "obj": obj}
        self._comments[obj["id"]] = []
        self._after_commit("projects")
        return 200, copy.deepcopy(obj), {}

    def _v3_get(self, ctx):
        obj = copy.deepcopy(self._record(ctx)["obj"])
        obj.pop("description", None)  # the detail sample shows none either (seed 001:3555-3589)
        return 200, obj, {}

    def _v3_description(self, ctx):
        """``GET …/issues/{id}/description`` (seed 001:3970-4006)."""
        return 200, {"description": self._record(ctx)["obj"].get("description", "")}, {}

    def _v3_move(self, ctx):
        """``POST …/issues/{id}/move {"to_project"}`` -> 204 (seed 001:4007-4062)."""
        rec = self._record(ctx)
        to = self._json_object(ctx).get("to_project")
        if str(to) not in self.projects:
            raise _bad("to_project", f"Given project id {to} is invalid")
        rec["project_id"] = str(to)
        rec["obj"]["project"] = {"id": str(to), "name": self.projects[str(to)].get("name", "")}
        return 204, None, {}

    def _v3_update(self, ctx):
        """``PATCH .../issues/{id}`` (seed 001 lines 3778-3938): keys of the seed's update table only."""
        obj = self._record(ctx)["obj"]
        fields = self._v3_fields(self._json_object(ctx), V3_UPDATE_KEYS, current=obj)
        obj.update(fields)
        obj["last_updated_time"] = _iso()
        return 200, copy.deepcopy(obj), {}

    def _delete(self, ctx):
        """``DELETE .../issues/{id}`` and ``DELETE .../bugs/{id}``: 204, comments go too."""
        self._record(ctx)
        del self._issues[ctx.issue]
        self._comments.pop(ctx.issue, None)
        return 204, None, {}

    def _v3_filter(self, raw):
        """``filter`` (seed 001 lines 3497-3530):
        ``{"criteria": [{"api_name", "criteria_condition", "value"}], "pattern"}`` or a list wrapping one
        such object. Supported: api_name = a custom field or ``name``; conditions ``is``/``equals`` (exact)
        and ``contains`` (case-insensitive). Criteria are ANDed; ``pattern`` is not interpreted."""
        try:
            spec = json.loads(raw)
        except ValueError:
            raise _bad("filter", f"filter is not valid JSON: {raw!r}") from None
        if isinstance(spec, list) and len(spec) == 1:
            spec = spec[0]
        if not isinstance(spec, dict) or not isinstance(spec.get("criteria"), list) or not spec["criteria"]:
            raise _bad("filter", f'filter must be {{"criteria": [...], "pattern": ...}}, got {raw!r}')
        crits = []
        cfids = {str(ID_BASE + 80001 + i): n for i, n in enumerate(self.custom_fields)}
        for c in spec["criteria"]:
            c = c if isinstance(c, dict) else {}
            if c.get("cfid") is not None and c.get("api_name") in (None, "-"):  # documented: by cfid
                api = cfids.get(str(c["cfid"]))
                if api is None:
                    raise _bad("filter", f"unknown cfid {c['cfid']!r}")
            else:
                api = c.get("api_name")
                if self.variants["filter_api_name"] == "refused":
                    raise _bad("filter", "filter criteria name fields by cfid")
            if api not in (*self.custom_fields, "name"):
                raise _bad("filter", f"unsupported filter api_name {api!r}")
            cond = c.get("criteria_condition")
            if cond not in ("is", "equals", "contains"):
                raise _bad("filter", f"unsupported criteria_condition {cond!r}")
            val = c.get("value")
            if isinstance(val, str) and val.startswith("["):
                with contextlib.suppress(ValueError):
                    val = json.loads(val)
            vals = [str(v) for v in (val if isinstance(val, list) else [val]) if v is not None]
            if not vals:
                raise _bad("filter", f"criteria value missing for {api!r}")
            crits.append((api, cond, vals))
        return crits

    def _v3_list(self, ctx):
        """``GET .../issues?page&per_page[&filter]`` (seed 001 lines 3467-3553). Answers 200
        ``{"issues": [...], "page_info": {...}}``, oldest first; when nothing matches (or the page is past
        the end) Zoho answers **204 No Content with an empty body**, and so does this fake."""
        page, per_page = self._page(ctx, required=True)
        crits = self._v3_filter(ctx.q("filter")) if ctx.q("filter") else []

        def ok(obj):
            for api, cond, vals in crits:
                have = obj.get(api)
                if have is None:
                    return False
                have = str(have)
                if cond == "contains" and not any(v.lower() in have.lower() for v in vals):
                    return False
                if cond != "contains" and have not in vals:
                    return False
            return True

        recs = [r for _, r in sorted(self._issues.items()) if r["dialect"] == "projects"]
        items = [copy.deepcopy(r["obj"]) for r in recs if r["project_id"] == ctx.project and ok(r["obj"])]
        sort = ctx.q("sort_by")
        if sort:
            m = re.fullmatch(r"(ASC|DESC)\((created_time|last_modified_time|due_date)\)", sort.strip('"'))
            if not m:
                raise _bad("sort_by", f"sort_by must be ASC(field) or DESC(field), got {sort!r}")
            key = "last_updated_time" if m[2] == "last_modified_time" else m[2]
            items.sort(key=lambda o: (str(o.get(key) or ""), o["id"]), reverse=m[1] == "DESC")
        for item in items:  # the list documents no description (seed 001:3467-3553): GET …/description
            item.pop("description", None)
        chunk, info = self._paginate(items, page, per_page)
        if not chunk:
            return 204, None, {}
        if self.variants["issue_page_info"] == "documented":  # 001:3554: per_page, page, sort_by only
            info = {"per_page": per_page, "page": page}
            if m_sort := re.fullmatch(r"(ASC|DESC)\((\w+)\)", (sort or "").strip('"')):
                order = "DESCENDING" if m_sort[1] == "DESC" else "ASCENDING"
                info["sort_by"] = [{"field_names": [m_sort[2]], "order_by": order}]
        return 200, {"issues": chunk, "page_info": info}, {}

    def _v3_comment_body(self, ctx):
        body = self._json_object(ctx)
        for key in body:
            if key not in V3_COMMENT_KEYS:
                raise _bad(key, "Unknown field")
        text = body.get("comment")
        if not isinstance(text, str) or not text.strip():
            raise _bad("comment", f"comment is required, a non-empty string; got {json.dumps(text)}")
        for key in ("notify_users", "attachment_ids"):
            if key in body and not isinstance(body[key], list):
                raise _bad(key, f"{key} must be a JSON array, got {json.dumps(body[key])}")
        return text

    def _v3_comment_create(self, ctx):
        """``POST .../issues/{id}/comments`` (seed 001 lines 5438-5512) -> 200 ``{"comments": [c]}``."""
        self._record(ctx)
        text, now, user = self._v3_comment_body(ctx), _iso(), self._user()
        c = dict(id=self._new_id(), comment=text, created_time=now, last_modified_time=now, added_by=user)
        c.update(last_modified_by=user, added_via="API", can_edit_comment=True, can_delete_comment=True)
        self._comments.setdefault(ctx.issue, []).append(c)
        self._after_commit("projects")
        return 200, {"comments": [copy.deepcopy(c)]}, {}

    def _v3_comments(self, ctx):
        """``GET .../issues/{id}/comments`` (seed 001 lines 5278-5348); an empty list answers 200 here."""
        self._record(ctx)
        page, per_page = self._page(ctx, required=False)
        chunk, info = self._paginate(copy.deepcopy(self._comments.get(ctx.issue, [])), page, per_page)
        return 200, {"comments": chunk, "page_info": info}, {}

    def _comment_get(self, ctx):
        return 200, {"comments": [copy.deepcopy(self._find_comment(ctx))]}, {}

    def _comment_delete(self, ctx):
        self._comments[ctx.issue].remove(self._find_comment(ctx))
        return 204, None, {}

    def _v3_comment_update(self, ctx):
        """``PATCH .../comments/{cid}`` (seed 001 lines 5514-5588): ``comment`` required."""
        c = self._find_comment(ctx)
        c["comment"] = self._v3_comment_body(ctx)
        c["last_modified_time"] = _iso()
        return 200, {"comments": [copy.deepcopy(c)]}, {}

    # ------------------------------------------------------------------ BugTracker bugs (seed 000)
    def _bt_choices(self, key):
        """Valid names per BugTracker field (seed 000 "Bug Fields"), taken from the option table."""
        names = {k: [o["name"] for o in self._options[k]] for k in ("status", "severity", "classification")}
        names["module"] = [o["name"] for o in self._options["module"]]
        names["priority"] = [o["name"] for o in self._options["priority"] if o["name"] != "None"]
        names["reproducible"] = [o["name"] for o in self._options["is_it_reproducible"]] + ["Never"]
        names["flag"] = list(BT_FLAGS)
        return names.get(key)

    def _bt_fields(self, body, allowed) -> dict:
        for key in body:  # seed 000:158-173 documents no custom fields in a bug body
            if key not in allowed:
                raise _bt_bad(key, f"Unknown field {key!r}")
        out = {}
        for key, val in body.items():
            choices = self._bt_choices(key)
            if key == "title":
                if not isinstance(val, str) or not val.strip():
                    raise _bt_bad("title", "Title is required and cannot be empty")
                out[key] = val
            elif choices is not None:
                if not isinstance(val, str) or val not in choices:
                    raise _bt_bad(key, f"Invalid {key} {json.dumps(val)}. Valid: {', '.join(choices)}")
                if key in ("classification", "module"):
                    out[key] = {"id": self.option_id(key, val), "name": val}
                else:
                    out[key] = val
            elif key in ("assignee", "reporter"):
                if not self._is_user(val):
                    raise _bt_bad(key, f"Unknown user {val!r}. Valid: {', '.join(self._user_by_id)}")
                if key == "assignee":
                    self._assignable(val, bt=True)
                u = self._user_by_id[str(val)]
                out[key] = {"id": u["zpuid"], "name": u["name"], "email": u["email"]}
            elif key == "due_date":
                try:
                    ok = bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", val) and datetime.strptime(val, "%Y-%m-%d"))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise _bt_bad(key, f"due_date must be YYYY-MM-DD, got {json.dumps(val)}")
                out[key] = val
            elif key in BT_TEXT_KEYS:
                if not isinstance(val, str):
                    raise _bt_bad(key, f"{key} must be a string, got {json.dumps(val)}")
                out[key] = val
            else:  # e.g. flag, reproducible without choices: a string
                if not isinstance(val, str):
                    raise _bt_bad(key, f"{key} must be a string, got {json.dumps(val)}")
                out[key] = val
        return out

    def _bt_create(self, ctx):
        """``POST .../bugs`` by NAME (seed 000 "Example - Create Bug") -> 201 ``{"bugs": [bug]}``."""
        fields = self._bt_fields(self._json_object(ctx), BT_CREATE_KEYS)
        if "title" not in fields:
            raise _bt_bad("title", "Title is required and cannot be empty")
        n = self._seq[("bugtracker", ctx.project)] = self._seq.get(("bugtracker", ctx.project), 0) + 1
        now = _iso()
        obj = dict(id=self._new_id(), key=f"{self.projects[ctx.project].get('key', 'PRJ')}-{n}", title="")
        obj.update(description="", status=self._options["status"][0]["name"])
        obj.update(dict.fromkeys(("severity", "priority", "classification", "module")))
        obj.update(created_time=now, modified_time=now)
        obj.update(fields)
        self._issues[obj["id"]] = {"dialect": "bugtracker", "project_id": ctx.project, "obj": obj}
        self._comments[obj["id"]] = []
        self._index_bug(obj)
        self._after_commit("bugtracker")
        return 201, {"bugs": [copy.deepcopy(obj)]}, {}

    def _bt_get(self, ctx):
        bug = copy.deepcopy(self._record(ctx)["obj"])
        return 200, ({"bugs": [bug]} if self.variants["bug_answer"] == "wrapped" else bug), {}

    def _bt_update(self, ctx):
        """``PUT .../bugs/{id}``: same fields, none required (plus ``resolution_comments``, seed example)."""
        obj = self._record(ctx)["obj"]
        obj.update(self._bt_fields(self._json_object(ctx), BT_UPDATE_KEYS))
        obj["modified_time"] = _iso()
        self._index_bug(obj)
        return 200, {"bugs": [copy.deepcopy(obj)]}, {}

    def _bt_all(self, ctx):
        recs = [r for _, r in sorted(self._issues.items()) if r["dialect"] == "bugtracker"]
        return [copy.deepcopy(r["obj"]) for r in recs if r["project_id"] == ctx.project]

    def _bt_list(self, ctx):
        index, rng = self._bt_page(ctx)
        return 200, {"bugs": self._bt_all(ctx)[index - 1 : index - 1 + rng]}, {}

    def _index_bug(self, obj):
        """What the search finds of a bug: its title and description as of now, once the index caught up."""
        entries = self._search_index.setdefault(obj["id"], [])
        entries.append((time.time() + self.search_lag, f"{obj.get('title', '')} {obj.get('description', '')}"))

    def _indexed_text(self, bug_id, now):
        ready = [text for at, text in self._search_index.get(bug_id, []) if at <= now]
        return ready[-1] if ready else None

    def _bt_search(self, ctx):
        """``GET .../bugs/search`` (seed 000 "9. Search & Filters"): ``search_text`` is a "text search in
        title/description" (000:583): a full-text search matches whole words (every word of the text, any case,
        punctuation ignored), through an index that lags behind writes by ``search_lag`` seconds.
        ``status``/``priority``/``severity`` take comma-separated names. 000 shows no answer: the bugs as the
        list shows them, without their description (``bt_search_fields="full"``: with it)."""
        bugs = self._bt_all(ctx)
        text = ctx.q("search_text")
        if text:
            wanted, now = set(re.findall(r"\w+", text.lower())), time.time()
            found = []
            for b in bugs:
                indexed = self._indexed_text(b["id"], now)
                if indexed is not None and wanted <= set(re.findall(r"\w+", indexed.lower())):
                    found.append(b)
            bugs = found
        for key in ("status", "priority", "severity"):
            if ctx.q(key):
                wanted = {v.strip() for v in ctx.q(key).split(",")}
                bugs = [b for b in bugs if b.get(key) in wanted]
        index, rng = self._bt_page(ctx)
        if self.variants["bt_search_fields"] == "brief":
            bugs = [{k: v for k, v in b.items() if k != "description"} for b in bugs]
        return 200, {"bugs": bugs[index - 1 : index - 1 + rng]}, {}

    def _bt_comment_body(self, ctx):
        body = self._json_object(ctx)
        for key in body:
            if key not in BT_COMMENT_KEYS:
                raise _bt_bad(key, f"Unknown field {key!r}")
        if not isinstance(body.get("content"), str) or not body["content"].strip():
            raise _bt_bad("content", "content is required and cannot be empty")
        if "is_private" in body and not isinstance(body["is_private"], bool):
            raise _bt_bad("is_private", f"is_private must be a boolean, got {json.dumps(body['is_private'])}")
        return body

    def _bt_comment_create(self, ctx):
        """``POST .../bugs/{id}/comments`` with ``content``/``is_private`` (seed 000 "3. Comments") -> 201."""
        self._record(ctx)
        body, now = self._bt_comment_body(ctx), _iso()
        u = self.users[0]
        c = dict(id=self._new_id(), content=body["content"], is_private=body.get("is_private", False))
        c.update(created_time=now, modified_time=now, added_by={k: u[k] for k in ("name", "email")})
        c["added_by"]["id"] = u["zpuid"]
        self._comments.setdefault(ctx.issue, []).append(c)
        self._after_commit("bugtracker")
        return 201, {"comments": [copy.deepcopy(c)]}, {}

    def _bt_comments(self, ctx):
        self._record(ctx)
        index, rng = self._bt_page(ctx)
        return 200, {"comments": copy.deepcopy(self._comments.get(ctx.issue, []))[index - 1 : index - 1 + rng]}, {}

    def _bt_comment_update(self, ctx):
        c = self._find_comment(ctx)
        body = self._bt_comment_body(ctx)
        c.update(content=body["content"], modified_time=_iso())
        if "is_private" in body:
            c["is_private"] = body["is_private"]
        return 200, {"comments": [copy.deepcopy(c)]}, {}

    # ------------------------------------------------------------------ People working in Zoho (issue 16)
    # A test changes an issue as a person would in Zoho's UI (status, comment); the bridge learns of it only
    # through documented calls: the issue list with `sort_by` (seed 001 lines 3497-3500: created_time, due_date or
    # last_modified_time, optionally as ASC(...) / DESC(...); the issue's field is `last_updated_time`) and
    # GET of one issue. Anything else in `sort_by` is a 400, as an unknown parameter value is.
    SORT_BY = re.compile(r"^(?:(ASC|DESC)\()?(created_time|due_date|last_modified_time)\)?$")
    SORT_FIELD = {"created_time": "created_time", "due_date": "due_date", "last_modified_time": "last_updated_time"}

    def _sorted_issues(self, items, sort_by):
        if sort_by is None:
            return items
        m = self.SORT_BY.match(sort_by.strip().strip('"'))
        if not m or (m.group(1) is None) != (not sort_by.strip().endswith(")")):
            raise _bad("sort_by", f"sort_by must be created_time, due_date or last_modified_time, got {sort_by!r}")
        key = self.SORT_FIELD[m.group(2)]
        return sorted(items, key=lambda i: (str(i.get(key) or ""), i["id"]), reverse=m.group(1) == "DESC")

    def person_sets_status(self, issue_id, status_name, user_index=1):
        """A person (not the API token's owner) moves the issue to `status_name`, as in Zoho's UI."""
        with self._lock:
            rec = self._issues[str(issue_id)]
            opt = next(o for o in self._options["status"] if o["name"] == status_name)
            obj = rec["obj"]
            if rec["dialect"] == "bugtracker":
                obj["status"] = status_name
                obj["modified_time"] = _iso()  # a bug's time field (seed 000:135)
            else:
                obj["status"] = self._v3_option("status", {"id": opt["id"]})
                obj["last_updated_time"] = _iso()
                obj["last_updated_by"] = self._user(self.users[user_index]["zpuid"])
            self.person_changes.append({"issue": str(issue_id), "status": status_name, "t": time.time()})
            return self._snapshot(rec)

    def person_comments(self, issue_id, text, user_index=1):
        """A person adds a comment in Zoho's UI."""
        with self._lock:
            rec = self._record_by_id(issue_id)
            user, now = self._user(self.users[user_index]["zpuid"]), _iso()
            if rec["dialect"] == "bugtracker":  # seed 000 "3. Comments": content, is_private
                u = self.users[user_index]
                c = dict(id=self._new_id(), content=text, is_private=False, created_time=now, modified_time=now)
                c["added_by"] = {"id": u["zpuid"], "name": u["name"], "email": u["email"]}
                self._comments.setdefault(str(issue_id), []).append(c)
                rec["obj"]["modified_time"] = now
                return copy.deepcopy(c)
            c = dict(id=self._new_id(), comment=text, created_time=now, last_modified_time=now, added_by=user)
            c.update(last_modified_by=user, added_via="Web", can_edit_comment=True, can_delete_comment=True)
            self._comments.setdefault(str(issue_id), []).append(c)
            rec["obj"]["last_updated_time"] = now
            return copy.deepcopy(c)

    def _record_by_id(self, issue_id):
        return self._issues[str(issue_id)]

    def throttled_calls(self) -> list[dict]:
        """API requests answered with a throttle (in whichever form: 429, 400 or 200), oldest first."""
        return [c for c in self.api_calls() if c.get("throttled")]

    def writes(self):
        """Every API call that changes something (POST, PATCH, PUT, DELETE), oldest first."""
        return [c for c in self.api_calls() if c["method"] != "GET"]
