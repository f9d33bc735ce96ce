"""The operator's admin pages (`/admin`): server-rendered, behind ADMIN_TOKEN.

Disabled (404 for every /admin URL) unless ADMIN_TOKEN is set. The login form takes the token (compared in
constant time) and sets Flask's signed session cookie (HttpOnly, SameSite=Lax, path /admin). The signing key
is derived from the token with HMAC, so every gunicorn worker and host agrees on it without another setting,
and rotating the token logs every session out. Every POST form carries a per-session CSRF token in a hidden
field. Pages render through autoescaped Jinja templates, never a secret: the raw delivery's headers are the
ones intake kept (no signature, no auth header).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from bridge import store
from bridge.outbound.budget import Budgets, blocked_until
from bridge.process.runtime import Runtime
from bridge.settings import Settings
from bridge.store import operator as store_operator
from bridge.store import pages as store_pages
from bridge.targets.zoho.ratelimit import BUDGET as ZOHO_BUDGET
from bridge.web import admin_guard, charts

log = logging.getLogger("bridge.admin")
bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

SESSION_HOURS = 12
RECENT_LIMIT = 50
FAILED_PAGE = 200
SOURCES = ("github", "bugzilla", "bugherd")  # lets the lookups by item key or external id use their indexes
RAW_BODY_LIMIT = 100_000  # characters of a raw delivery shown on its page
PUBLIC_ENDPOINTS = ("admin.login",)
SECURITY_HEADERS = {
    # No script at all; inline CSS only; forms post back to us; never framed.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def session_key(admin_token: str) -> str:
    """Flask's SECRET_KEY, derived from the admin token: the same in every process, new when it rotates."""
    return hmac.new(admin_token.encode(), b"issue-bridge admin session v1", hashlib.sha256).hexdigest()


def init_app(app: Flask, settings: Settings) -> None:
    """Register the admin pages; they answer 404 unless ADMIN_TOKEN is set."""
    configure(app, settings)
    if settings.admin_token:
        if len(settings.admin_token) < 24:
            log.warning("ADMIN_TOKEN is short: use at least 24 random characters (e.g. `openssl rand -hex 24`)")
        log.info("admin pages enabled at /admin")
    app.register_blueprint(bp)


def configure(app: Flask, settings: Settings) -> None:
    """The session settings for ADMIN_TOKEN (again after a settings reload: a new token ends every session)."""
    if settings.admin_token:
        app.config.update(
            SECRET_KEY=session_key(settings.admin_token),
            SESSION_COOKIE_NAME="bridge_admin",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            SESSION_COOKIE_PATH="/admin",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        )


# -- helpers ----------------------------------------------------------------------------------------------


def _runtime() -> Runtime:
    return current_app.extensions["bridge"]


def _engine():  # type: ignore[no-untyped-def]
    return _runtime().engine


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def _safe_next(target: str | None, default: str) -> str:
    """Only a path of ours: never an absolute or scheme-relative URL (no open redirect)."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@bp.app_template_filter("when")
def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


@bp.app_template_filter("pretty_json")
def _pretty_json(value: Any) -> str:
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "dry_run": _runtime().settings.dry_run,
        "statuses": store.EVENT_STATUSES,
        "logged_in": bool(session.get("admin")),
    }


@bp.before_request
def _guard() -> Response | None:
    if not _runtime().settings.admin_token:
        abort(404)  # disabled: indistinguishable from no admin pages at all
    if request.method == "POST":
        given = request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
            log.warning("admin form refused: bad or missing CSRF token", extra={"path": request.path})
            abort(400, description="The form expired or did not come from this page: reload it and try again.")
    if request.endpoint not in PUBLIC_ENDPOINTS and not _session_is_live():
        if session.get("admin"):
            session.clear()  # ended by a logout elsewhere or a token change: forget it
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    return None


def _session_is_live() -> bool:
    """Logged in, and not ended since by a logout (anywhere) or a token change."""
    if not session.get("admin"):
        return False
    fingerprint = admin_guard.token_fingerprint(_runtime().settings.admin_token)
    if session.get("token") != fingerprint:
        return False
    return session.get("epoch") == admin_guard.current_epoch(_engine())


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.errorhandler(400)
def _bad_request(exc: Any) -> tuple[str, int]:
    return render_template("admin/error.html", code=400, message=getattr(exc, "description", "Bad request")), 400


# -- login ------------------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
    next_url = _safe_next(request.values.get("next"), url_for("admin.dashboard"))
    if request.method == "GET":
        return render_template("admin/login.html", next_url=next_url, error=None)
    client = request.remote_addr or "unknown"
    verdict = admin_guard.check(_engine(), client)
    if not verdict.allowed:
        wait = max(1, round(verdict.retry_after))
        log.warning("admin login refused: too many wrong tokens", extra={"remote": client, "retry_after": wait})
        error = f"Too many wrong tokens: try again in {wait} s."
        page = render_template("admin/login.html", next_url=next_url, error=error)
        return page, 429, {"Retry-After": str(wait)}
    given = request.form.get("token", "")
    expected = _runtime().settings.admin_token
    if not hmac.compare_digest(given.encode(), expected.encode()):
        delay = admin_guard.failed(_engine(), client)
        log.warning("admin login refused", extra={"remote": client, "next_attempt_in": delay})
        return render_template("admin/login.html", next_url=next_url, error="Wrong token."), 401
    admin_guard.succeeded(_engine(), client)
    session.clear()  # a fresh session (and CSRF token) at every login
    session.permanent = True
    session["admin"] = True
    session["token"] = admin_guard.token_fingerprint(expected)
    session["epoch"] = admin_guard.current_epoch(_engine())
    csrf_token()
    log.info("admin login", extra={"remote": request.remote_addr})
    return redirect(next_url)


@bp.post("/logout")
def logout() -> Response:
    # One operator identity (one token): logging out ends every session, so a copied cookie dies too.
    admin_guard.end_every_session(_engine())
    session.clear()
    flash("Logged out.")
    return redirect(url_for("admin.login"))


# -- pages ------------------------------------------------------------------------------------------------


@bp.get("/", strict_slashes=False)  # `/admin` too: no HTML redirect before the guard answers
def dashboard() -> str:
    engine = _engine()
    status = request.args.get("status") or None
    if status not in store.EVENT_STATUSES:
        status = None
    source = request.args.get("source") or None
    before = request.args.get("before", type=int)
    events = store_pages.page_events(engine, status=status, source=source, before_id=before, limit=RECENT_LIMIT)
    counts = store_pages.status_counts(engine)
    problems = sum(len(p) for p in _runtime().registry.problems.values())
    _left, until, reason = blocked_until(engine, ZOHO_BUDGET)
    from bridge.core import budget_view

    budgets = budget_view.view(engine, _runtime().settings)
    return render_template(
        "admin/dashboard.html",
        zoho_block={"until": until, "reason": reason} if until else None,
        counts=counts,
        events=events,
        status=status,
        source=source,
        mapping_problems=problems,
        page_size=RECENT_LIMIT,
        budgets=budgets,
        charts=charts,
        sources=SOURCES,
        mapping_files=sorted(os.path.basename(m.path) for m in _runtime().registry.all()),
    )


def _zoho_reason(event_id: int) -> dict[str, Any] | None:
    """The last Zoho call of an event that Zoho refused (its status and answer), if any."""
    refused = [c for c in store.calls_for_event(_engine(), event_id) if c["status"] and c["status"] >= 400]
    return refused[-1] if refused else None


@bp.post("/zoho/unblock")
def zoho_unblock() -> Response:
    """The button beside "blocked until …": lift the shared Zoho block (as `issue-bridge zoho unblock`)."""
    lifted = Budgets(_engine()).unblock(ZOHO_BUDGET)
    log.info("admin lifted the Zoho block", extra={"lifted": lifted})
    flash("Zoho block lifted: workers call Zoho again." if lifted else "No Zoho block was in force.")
    return redirect(url_for("admin.dashboard"))


@bp.get("/failed")
def failed() -> str:
    before = request.args.get("before", type=int)
    events = store_pages.page_events(_engine(), status=store.FAILED, before_id=before, limit=FAILED_PAGE)
    rows = [(ev, _zoho_reason(ev.id)) for ev in events]
    return render_template("admin/failed.html", rows=rows, page_size=FAILED_PAGE)


@bp.get("/events/<int:event_id>")
def event_detail(event_id: int) -> str:
    engine = _engine()
    ev = store.get_event(engine, event_id)
    if ev is None:
        abort(404)
    raw = store.get_raw_delivery(engine, event_id)
    headers, payload = raw if raw else ({}, b"")
    body = payload.decode("utf-8", errors="replace")
    return render_template(
        "admin/event.html",
        ev=ev,
        headers=headers,
        body=body[:RAW_BODY_LIMIT],
        body_cut=len(body) > RAW_BODY_LIMIT,
        normalized=ev.event.to_json(),
        attempts=store.attempts_for_event(engine, event_id),
        calls=store.calls_for_event(engine, event_id),
    )


def _replay(ids: list[int]) -> int:
    engine = _engine()
    events = [ev for ev in (store.get_event(engine, i) for i in ids) if ev is not None]
    count = store.reset_for_replay(engine, [ev.id for ev in events])
    publisher = current_app.extensions["publisher"]
    for source, item_key in sorted({(ev.source, ev.item_key) for ev in events}):
        publisher.wake(source, item_key)  # best effort: the beat job re-enqueues pending events anyway
    log.info("admin replay", extra={"events": [ev.id for ev in events], "count": count})
    return count


@bp.post("/events/<int:event_id>/replay")
def replay(event_id: int) -> Response:
    if store.get_event(_engine(), event_id) is None:
        abort(404)
    _replay([event_id])
    flash(f"Event {event_id} is back in the queue.")
    return redirect(_safe_next(request.form.get("next"), url_for("admin.event_detail", event_id=event_id)))


@bp.post("/failed/replay")
def replay_failed() -> Response:
    count = sum(_replay([ref.id for ref in b]) for b in store_pages.id_batches(_engine(), store.FAILED))
    flash(f"{count} failed event(s) are back in the queue.")
    return redirect(url_for("admin.failed"))


@bp.get("/lookup")
def lookup() -> str:
    """An item key, external id, source URL, Zoho issue id or key → the item(s): link, events, its story's page."""
    from bridge.core.story import find_items

    query = (request.args.get("q") or "").strip()
    results: list[tuple[store.Link | None, list[store.StoredEvent], str, str]] = []
    if query:
        engine = _engine()
        items = find_items(engine, query)[:20]
        # One connection at a time: a second one opened inside the first would wait on SQLite's lock.
        with engine.connect() as conn:
            histories = {
                (source, item_key): store_operator.item_history(conn, source, item_key, limit=200)
                for source, item_key in items
            }
            links = {(source, item_key): store_operator.live_link(conn, source, item_key) for source, item_key in items}
        results = [(links[key], histories[key], key[0], key[1]) for key in histories]
    return render_template("admin/lookup.html", query=query, results=results)


# -- one item: its story, and steering it -------------------------------------------------------------------------

ITEM_EVENTS = 300  # events whose story the item page shows by default (all of them with ?all=1)
ITEM_ACTIONS = ("resync", "resync-source", "pause", "resume", "unlink", "link")
ADMIN_HOLD = 5.0  # seconds a page waits for a source's budget (a command waits longer): then it says to try again


@bp.get("/items/<source>/<path:item_key>")
def item_page(source: str, item_key: str) -> str:
    from bridge.core import story

    if source not in SOURCES:
        abort(404)
    every = request.args.get("all") == "1"
    told = story.tell(
        _engine(), source, item_key, registry=_runtime().registry, limit=None if every else ITEM_EVENTS
    )  # fmt: skip
    if not told.events_total and told.link is None and not told.entries:
        abort(404)
    return render_template("admin/item.html", story=told, every=every, actions=ITEM_ACTIONS)


@bp.post("/act/<action>/<source>/<path:item_key>")
def item_action(action: str, source: str, item_key: str) -> Response:
    """Steer one item from its page; each is recorded in its story (operator_actions)."""
    from bridge.core import steer
    from bridge.store import operator
    from bridge.targets.zoho.errors import ZohoError

    if source not in SOURCES or action not in ITEM_ACTIONS:
        abort(404)
    engine, runtime = _engine(), _runtime()
    back = url_for("admin.item_page", source=source, item_key=item_key)
    target = steer.Target("item", item_key, source)
    try:
        if action == "resync":
            done = operator.resync(engine, item_key, source, actor="admin")
            flash(f"Queued event {done.event_id}: the item's newest state is applied again.")
        elif action == "resync-source":
            fetched = steer.resync_from_source(runtime.settings, engine, source, item_key, "admin", hold=ADMIN_HOLD)
            flash(f"Fetched from {source}: {fetched.stored} event(s) stored ({fetched.comments} comment(s)).")
        elif action == "pause":
            steer.pause(engine, runtime.registry, target, "admin")
            flash("Stopped: deliveries are stored, nothing is sent for this item until it is resumed.")
        elif action == "resume":
            steer.resume(engine, target, "admin")
            flash("Syncing again: what waited is sent as the budgets allow.")
        elif action == "unlink":
            operator.unlink(engine, item_key, source, actor="admin")
            flash("Link forgotten: the next event finds the issue again by its marker (or creates it if it is gone).")
        elif action == "link":
            issue = (request.form.get("issue") or "").strip()
            if not issue:
                abort(400, description="Give the Zoho issue's id.")
            linked = steer.link_item(
                engine, runtime.registry, runtime.zoho, source, item_key, issue, "admin",
                project=(request.form.get("project") or "").strip() or None,
            )  # fmt: skip
            flash(f"Linked to Zoho issue {linked.issue_id}; an update writes the item's state and marker to it.")
    except (steer.SteerError, operator.NotFound) as exc:
        flash(f"Not done: {exc}")
        return redirect(back)
    except ZohoError as exc:
        flash(f"Not done: Zoho could not be asked: {exc.reason}")
        return redirect(back)
    current_app.extensions["publisher"].wake(source, item_key)  # best effort: the sweeper wakes it anyway
    log.info("admin steered an item", extra={"action": action, "source": source, "item": item_key})
    return redirect(back)


@bp.post("/pauses/<action>")
def pause_action(action: str) -> Response:
    """Pause or resume a source or a mapping file from the front page."""
    from bridge.core import steer

    if action not in ("pause", "resume"):
        abort(404)
    runtime = _runtime()
    name = (request.form.get("name") or "").strip()
    try:
        target = steer.target_of(_engine(), runtime.registry, name)
        if target.kind == "item":
            raise steer.SteerError("pause one item from its own page")
        if action == "pause":
            _fresh, waiting = steer.pause(_engine(), runtime.registry, target, "admin")
            flash(f"{target.describe()} paused: {waiting} pending event(s) wait.")
        else:
            _was, items = steer.resume(_engine(), target, "admin")
            for source, item_key in items:
                current_app.extensions["publisher"].wake(source, item_key)
            flash(f"{target.describe()} resumed: {len(items)} item(s) woken.")
    except steer.SteerError as exc:
        flash(f"Not done: {exc}")
    return redirect(url_for("admin.dashboard"))


@bp.get("/mappings")
def mappings() -> str:
    registry = _runtime().registry
    registry.reload_if_changed()
    problems = [p for file_problems in registry.problems.values() for p in file_problems]
    return render_template(
        "admin/mappings.html",
        problems=problems,
        mappings=registry.all(),
        directory=registry.directory,
    )


# -- Connect Zoho (the browser flow of `issue-bridge zoho connect`) ------------------------------------------------

CONNECT_SECONDS = 600.0  # a started connect must come back within this (the grant code itself lives a minute)
CONNECT_KEY = "zoho.connect."  # kv: pending connects by the state's hash; the secret is never in the cookie


def _connect_choices() -> list[tuple[str, str, str]]:
    """(value, label, accounts server): the documented data centres, and the configured server if it is another."""
    from bridge.targets.zoho import grant as oauth

    settings = _runtime().settings
    choices = [
        (dc, f"{region} (accounts.zoho.{dc})", oauth.accounts_url(dc)) for dc, region in oauth.DATA_CENTRES.items()
    ]
    if settings.zoho_accounts_url not in [c[2] for c in choices]:
        choices.insert(0, ("configured", f"as configured ({settings.zoho_accounts_url})", settings.zoho_accounts_url))
    return choices


def _copies_attachments() -> bool:
    from bridge.targets.zoho import grant as oauth

    return oauth.copies_attachments(_runtime().registry.all())


@bp.get("/zoho")
def zoho_connect_page() -> Response:
    from bridge.targets.zoho import grant as oauth

    settings = _runtime().settings
    choices = _connect_choices()
    current = oauth.data_centre_of(settings.zoho_accounts_url) or "configured"
    page = render_template(
        "admin/zoho.html",
        choices=choices,
        current=current,
        settings=settings,
        scopes=oauth.scopes_for(settings.zoho_dialect, attachments=_copies_attachments()),
        callback=url_for("admin.zoho_callback", _external=True),
        connected=None,
    )
    response = current_app.make_response(page)
    # The form posts here, and its answer sends the browser on to the accounts server: allow exactly those.
    origins = " ".join(sorted({_origin(url) for _, _, url in choices}))
    response.headers["Content-Security-Policy"] = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {origins}"
    )
    return response


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@bp.post("/zoho/connect")
def zoho_connect_start() -> Response:
    """Start the grant: remember the client (server side, keyed by a fresh `state` bound to this admin session)
    and send the browser to the accounts server's consent page with the dialect's scopes."""
    from bridge.store.clock import engine_now
    from bridge.targets.zoho import grant as oauth

    settings = _runtime().settings
    chosen = next((c for c in _connect_choices() if c[0] == request.form.get("dc")), None)
    client_id = request.form.get("client_id", "").strip()
    client_secret = request.form.get("client_secret", "").strip()
    if chosen is None or not client_id or not client_secret:
        abort(400, description="Choose a data centre and give the client id and secret.")
    dc = chosen[0] if chosen[0] != "configured" else None
    accounts = chosen[2]
    api_base = oauth.api_base(dc, settings.zoho_dialect) if dc else settings.zoho_api_base
    state = secrets.token_urlsafe(32)
    callback = url_for("admin.zoho_callback", _external=True)
    pending = {
        "client_id": client_id,
        "client_secret": client_secret,
        "accounts": accounts,
        "api_base": api_base,
        "dc": dc,
        "redirect_uri": callback,
        "at": engine_now(_engine()),
    }
    store.kv_set(_engine(), CONNECT_KEY + _state_key(state), json.dumps(pending))
    session["zoho_state"] = state
    log.info("admin started Connect Zoho", extra={"accounts": accounts})
    return redirect(
        oauth.grant_url(accounts, client_id, settings.zoho_dialect, callback, state, attachments=_copies_attachments())
    )


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@bp.get("/zoho/callback")
def zoho_callback() -> tuple[str, int] | str:
    """Where the accounts server sends the browser back: the state must be the one this session started (once),
    then the code is exchanged, the refresh token stored in the home's .env and the portals listed."""
    from bridge.settings import env_file, write_env_values
    from bridge.store.clock import engine_now
    from bridge.targets.zoho import grant as oauth

    state = request.args.get("state", "")
    expected = str(session.pop("zoho_state", ""))
    if not state or not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        log.warning("Connect Zoho callback refused: state not started by this session", extra={"path": request.path})
        abort(400, description="This Connect Zoho answer was not started from this admin session: start again.")
    key = CONNECT_KEY + _state_key(state)
    raw = store.kv_get(_engine(), key)
    store.kv_set(_engine(), key, "")  # once only
    pending = json.loads(raw) if raw else None
    if not pending or engine_now(_engine()) - float(pending["at"]) > CONNECT_SECONDS:
        abort(400, description="This Connect Zoho attempt expired: start again.")
    if request.args.get("error"):
        return _connect_result(error=f"Zoho answered {request.args['error']}: the access was not granted."), 400
    accounts = pending["accounts"]
    server = request.args.get("accounts-server", "")
    if server and oauth.is_zoho_accounts(server):  # the person's own data centre (seed 001:254-256)
        accounts = server
    try:
        granted = oauth.exchange_code(
            accounts,
            pending["client_id"],
            pending["client_secret"],
            request.args.get("code", ""),
            redirect_uri=pending["redirect_uri"],
            data_centre=pending["dc"],
        )
    except oauth.GrantError as exc:
        return _connect_result(error=str(exc)), 400
    settings = _runtime().settings
    values = {
        "ZOHO_CLIENT_ID": pending["client_id"],
        "ZOHO_CLIENT_SECRET": pending["client_secret"],
        "ZOHO_REFRESH_TOKEN": granted.refresh_token,
        "ZOHO_ACCOUNTS_URL": accounts,
        "ZOHO_API_BASE": pending["api_base"],
    }
    path = env_file(settings)
    try:
        write_env_values(path, values)
    except OSError as exc:
        error = f"cannot write {path} ({exc.strerror}): run `issue-bridge zoho connect` on the host instead"
        return _connect_result(error=error), 500
    log.info("admin connected Zoho", extra={"accounts": accounts, "env": str(path)})
    live = settings.with_overrides(
        zoho_client_id=pending["client_id"],
        zoho_client_secret=pending["client_secret"],
        zoho_refresh_token=granted.refresh_token,
        zoho_accounts_url=accounts,
        zoho_api_base=pending["api_base"],
    )
    portals = _portals(live)
    session["zoho_portals"] = [pid for pid, _ in portals]
    if len(portals) == 1:
        write_env_values(path, {"ZOHO_PORTAL_ID": portals[0][0]})
    missing = oauth.missing_scopes(granted.scope, settings.zoho_dialect, attachments=_copies_attachments())
    return _connect_result(path=str(path), portals=portals, chosen=portals[0][0] if len(portals) == 1 else None,
                           missing=missing)  # fmt: skip


def _portals(settings: Settings) -> list[tuple[str, str]]:
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    try:
        found = ZohoClient(settings, _engine()).portals()
    except ZohoError as exc:
        log.warning("Connect Zoho: portals not listed: %s", exc.reason)
        return []
    out = []
    for portal in found:
        ids = [str(portal[k]) for k in ("id", "id_string", "zsoid") if portal.get(k) not in (None, "")]
        if ids:
            out.append((ids[0], str(portal.get("portal_name") or portal.get("name") or "")))
    return out


def _connect_result(**values: Any) -> str:
    values.setdefault("error", None)
    return render_template("admin/zoho.html", connected=values, choices=[], current=None, scopes=(), callback="")


@bp.post("/zoho/portal")
def zoho_portal() -> Response:
    """Pick the portal when the connected account has several (only one the callback listed)."""
    from bridge.settings import env_file, write_env_values

    portal = request.form.get("portal", "")
    if portal not in session.get("zoho_portals", []):
        abort(400, description="Not one of the portals Zoho listed: connect again.")
    write_env_values(env_file(_runtime().settings), {"ZOHO_PORTAL_ID": portal})
    session.pop("zoho_portals", None)
    flash(f"ZOHO_PORTAL_ID is now {portal}.")
    return redirect(url_for("admin.zoho_connect_page"))
